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

// Why an open connection ended, in words, by close code and reason; and whether it is trouble.
function closedText(code, reason) {
  if (code === 1000) return ["You left the chat.", ""];
  if (code === 1008 && reason === "rate limit") {
    return ["Disconnected: you sent messages faster than the server allows, so it closed the connection. " +
      "Wait a moment, then join again.", "denied"];
  }
  if (code === 1008 && reason === "join first") return ["Disconnected: join before you speak.", "denied"];
  if (code === 1009) return ["Disconnected: that message was too big.", "denied"];
  if (code === 1013) return ["Disconnected: your connection fell too far behind. Join again.", "denied"];
  if (code === 1001 || code === 1012) {
    return ["The server stopped or is restarting. Join again when it is back.", "denied"];
  }
  if (code === 1006) return ["The connection to the server was lost. Join again.", "denied"];
  return [`Disconnected by the server (close code ${code}${reason ? ": " + reason : ""}).`, "denied"];
}

let socket = null;
let me = null;
let lastText = ""; // the last text sent from the message box, given back if the server refuses it
let pending = []; // our own messages sent but not yet echoed by the server: [{ text, item }], oldest first

function setStatus(text, kind = "") {
  $("status").textContent = text;
  $("status").className = "status " + kind;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

function addLine(className, parts, state = "") {
  const item = document.createElement("li");
  item.className = className;
  for (const [tag, cls, text] of parts) {
    const part = document.createElement(tag);
    part.className = cls;
    part.textContent = text; // never innerHTML: names and text come from other people
    item.append(part);
  }
  if (state) {
    const label = document.createElement("span");
    label.className = "state";
    label.textContent = state;
    item.append(label);
  }
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  item.append(time);
  $("log").append(item);
  item.scrollIntoView({ block: "nearest" });
  return item;
}

function setState(item, className, state) {
  item.className = className;
  const label = item.querySelector(".state");
  if (state) label.textContent = state;
  else label.remove();
}

// What the server will accept as "text": 1 to 500 characters once surrounding whitespace is stripped.
function plausible(text) {
  const length = [...text.trim()].length;
  return length >= 1 && length <= 500;
}

let members = []; // who the page last showed in the room

function setMembers(names) {
  members = names;
  $("members").replaceChildren(...names.map((name) => {
    const item = document.createElement("li");
    item.textContent = name === me ? `${name} (you)` : name;
    return item;
  }));
}

// The server sends who is in the room, merged (one list for a crowd arriving at once): tell what changed.
function membersChanged(names) {
  const arrived = names.filter((name) => !members.includes(name));
  const gone = members.filter((name) => !names.includes(name));
  if (arrived.length) addLine("notice", [["span", "text", `${listed(arrived)} joined.`]]);
  if (gone.length) addLine("notice", [["span", "text", `${listed(gone)} left.`]]);
  setMembers(names);
}

function listed(names) {
  if (names.length > 3) return `${names.slice(0, 3).join(", ")} and ${names.length - 3} more`;
  return names.join(", ");
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
    case "joined": // the answer to our own join (and to joining again)
      if (me === null) addLine("notice", [["span", "text", "You joined the room."]]);
      me = message.name;
      setStatus(`Connected as ${me}.`, "ok");
      $("join-form").hidden = true;
      $("chat").hidden = false;
      setChatEnabled(true);
      $("text").focus();
      setMembers(message.members);
      break;
    case "said":
      if (message.name === me && pending.length && pending[0].text === message.text) {
        setState(pending.shift().item, "said mine", ""); // the server echoed it: everyone got it
      } else {
        addLine(message.name === me ? "said mine" : "said", [["span", "who", message.name], ["span", "text", message.text]]);
      }
      break;
    case "members":
      membersChanged(message.members);
      break;
    case "missed":
      addLine("notice", [["span", "text", message.count === null ? "Some messages were lost." : `${message.count} message(s) were lost.`]]);
      break;
    case "error":
      showError(describeError(message));
      if (!$("text").value) $("text").value = lastText;
      if (pending.length && pending[pending.length - 1].text === lastText.trim()) pending.pop().item.remove();
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
      const [text, kind] = closedText(event.code, event.reason);
      setStatus(text, kind);
      // What the server never echoed back may not have reached the room: say so on each.
      for (const { item } of pending) setState(item, "said mine unconfirmed", "not confirmed");
      if (pending.length) {
        addLine("notice", [["span", "text", `${pending.length === 1 ? "A message" : pending.length + " messages"} ` +
          "marked \u201cnot confirmed\u201d may not have reached the room."]]);
      }
      if (me !== null) addLine("notice", [["span", "text", text]]);
      leftRoom();
      return;
    }
    // The handshake failed. Browsers hide the HTTP status (401, 403), so ask whether the server is up at all.
    fetch("/", { method: "HEAD", cache: "no-store" }).then(
      () => setStatus("Access denied: the server refused this token or this page's origin, " +
        "or this person already has too many connections open.", "denied"),
      () => setStatus("Cannot reach the server.", "denied"),
    );
  };
}

// Out of the room: nobody is listed, no error stands, nothing is pending.
function leftRoom() {
  me = null;
  pending = [];
  setMembers([]);
  showError("");
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
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  send(JSON.stringify({ type: "say", text: lastText })); // checked by the server, not here
  if (plausible(lastText)) { // shown at once, marked until the server echoes it
    const text = lastText.trim();
    const item = addLine("said mine pending", [["span", "who", me], ["span", "text", text]], "sending\u2026");
    pending.push({ text, item });
  }
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
