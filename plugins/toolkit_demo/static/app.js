// The demo chat's page: join with a token, chat, show the server's answers. No build step.
"use strict";

const $ = (id) => document.getElementById(id);
const WS_URL = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";

// What the validation error types of toolkit_messages mean here.
const PROBLEMS = {
  string_too_short: "the message is empty",
  string_too_long: "the message is longer than 500 characters",
  string_type: "the text must be a string",
  missing: "a field is missing",
  extra_forbidden: "it has a field the server does not know",
  union_tag_invalid: "unknown message type",
  union_tag_not_found: "the message has no \"type\"",
  dict_type: "a message must be a JSON object",
};

// Why the server closed an open connection, by close code and reason.
function closedText(code, reason) {
  if (code === 1000) return "You left the chat.";
  if (code === 1008 && reason === "rate limit") return "Disconnected: you sent messages too fast.";
  if (code === 1008 && reason === "join first") return "Disconnected: join before you speak.";
  if (code === 1009) return "Disconnected: that message was too big.";
  if (code === 1013) return "Disconnected: your connection fell too far behind.";
  if (code === 1001) return "Disconnected: the server is going away.";
  return `Disconnected (${code}${reason ? ": " + reason : ""}).`;
}

let socket = null;
let me = null;
let lastText = ""; // the last text sent from the message box, given back if the server refuses it

function setStatus(text, kind = "") {
  $("status").textContent = text;
  $("status").className = "status " + kind;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

function addLine(className, parts) {
  const item = document.createElement("li");
  item.className = className;
  for (const [tag, cls, text] of parts) {
    const part = document.createElement(tag);
    part.className = cls;
    part.textContent = text; // never innerHTML: names and text come from other people
    item.append(part);
  }
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  item.append(time);
  $("log").append(item);
  item.scrollIntoView({ block: "nearest" });
}

function setMembers(names) {
  $("members").replaceChildren(...names.map((name) => {
    const item = document.createElement("li");
    item.textContent = name === me ? `${name} (you)` : name;
    return item;
  }));
}

function describeError(message) {
  if (message.error === "invalid_json") return "Not sent: that is not valid JSON.";
  if (message.error === "invalid_message") {
    const problems = (message.errors || []).map((e) => PROBLEMS[e.type] || `${e.loc.join(".")}: ${e.type}`);
    return "Not sent: " + [...new Set(problems)].join("; ") + ".";
  }
  return `Refused: ${message.error}.`;
}

function handle(message) {
  switch (message.type) {
    case "joined":
      if (message.you) {
        me = message.name;
        setStatus(`Connected as ${me}.`, "ok");
        $("join-form").hidden = true;
        $("chat").hidden = false;
        setChatEnabled(true);
        $("text").focus();
        addLine("notice", [["span", "text", "You joined the room."]]);
      } else {
        addLine("notice", [["span", "text", `${message.name} joined.`]]);
      }
      setMembers(message.members);
      break;
    case "said":
      addLine(message.name === me ? "said mine" : "said", [["span", "who", message.name], ["span", "text", message.text]]);
      break;
    case "left":
      addLine("notice", [["span", "text", `${message.name} left.`]]);
      setMembers(message.members);
      break;
    case "missed":
      addLine("notice", [["span", "text", message.count === null ? "Some messages were lost." : `${message.count} message(s) were lost.`]]);
      break;
    case "error":
      showError(describeError(message));
      if (!$("text").value) $("text").value = lastText;
      break;
  }
}

function setChatEnabled(enabled) {
  for (const id of ["text", "send", "raw", "send-raw", "leave"]) $(id).disabled = !enabled;
}

function connect(token) {
  showError("");
  let opened = false;
  try {
    socket = new WebSocket(WS_URL, ["chat.v1", "bearer." + token]);
  } catch {
    // A token with characters a subprotocol cannot carry never leaves the page.
    setStatus("Access denied: that is not a valid token.", "denied");
    return;
  }
  setStatus("Connecting…");
  $("join").disabled = true;
  socket.onopen = () => {
    opened = true;
    socket.send(JSON.stringify({ type: "join" }));
  };
  socket.onmessage = (event) => handle(JSON.parse(event.data));
  socket.onclose = (event) => {
    socket = null;
    $("join").disabled = false;
    $("join-form").hidden = false;
    setChatEnabled(false);
    if (opened) {
      setStatus(closedText(event.code, event.reason), event.code === 1000 ? "" : "denied");
      return;
    }
    // The handshake failed. Browsers hide the HTTP status (401, 403), so ask whether the server is up at all.
    fetch("/", { method: "HEAD", cache: "no-store" }).then(
      () => setStatus("Access denied: the server refused this token or this page's origin.", "denied"),
      () => setStatus("Cannot reach the server.", "denied"),
    );
  };
}

function send(text) {
  if (socket && socket.readyState === WebSocket.OPEN) {
    showError("");
    socket.send(text);
  }
}

$("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (!socket) connect($("token").value.trim());
});

$("say-form").addEventListener("submit", (event) => {
  event.preventDefault();
  lastText = $("text").value;
  $("text").value = "";
  send(JSON.stringify({ type: "say", text: lastText })); // checked by the server, not here
});

$("raw-form").addEventListener("submit", (event) => {
  event.preventDefault();
  lastText = ""; // nothing to give back to the message box
  send($("raw").value);
});

$("leave").addEventListener("click", () => {
  if (socket) socket.close(1000);
});

// A link printed by the server carries the token after "#", which never leaves the browser.
const fromLink = /^#token=(.+)$/.exec(location.hash);
if (fromLink) {
  $("token").value = decodeURIComponent(fromLink[1]);
  history.replaceState(null, "", location.pathname);
  $("join").focus();
}
