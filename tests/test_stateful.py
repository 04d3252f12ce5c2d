"""A hypothesis state machine: a random app, client and plugin set over an in-memory server.

Each example is one connection. Rules are app operations (accept, receive, send, close,
deny, return, raise, be cancelled), client events (messages, disconnects, a vanished
peer) and, drawn per hook call, plugin behaviours (keep, replace, drop, close, raise,
garbage, and from async hooks: close the connection or send from inside the hook).
After every step the messages the server received are checked against the ASGI spec
and the close-code rules, and ``ws_close`` must have fired at most once (exactly once
by the end).

Every step runs to completion on its own event loop (``anyio.run``): the server never
waits, so nothing here can hang.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from starlette.responses import PlainTextResponse

import toolkit
from toolkit import DROP, Accept, Close, ClosedBy, DenialResponse, Message, WebSocket

T = TypeVar("T")
SECRET = "s3cr3t-exception-text"
FORBIDDEN_BELOW_3000 = {1004, 1005, 1006, 1015}
VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1011, 1014, 3000, 4000, 4999]
FORBIDDEN_CODES = [1005, 1006, 1015, 1004, 999, 0, 1016, 2000, 2999, 5000, 65535]
ANY_CODES = [*VALID_CODES, *FORBIDDEN_CODES]
# hypothesis favours the first options of sampled_from: where a choice matters, the demanding one comes first.
REASONS = ["", "bye", "é" * 61, "x" * 123, "🙂" * 30]
TEXTS = st.text(max_size=12)
ENDINGS = st.sampled_from(["disconnect", "return", "raise", "cancelled"])
ENDING_CODES = st.sampled_from([*FORBIDDEN_CODES, *VALID_CODES])
CANCELLED_WHILE_FINISHING = st.sampled_from([False, True])
BYTES = st.binary(max_size=12)


def sendable(code: object) -> bool:
    """Whether a close code may go out in a close frame (RFC 6455 7.4), written independently of the toolkit."""
    if type(code) is not int or code < 1000 or code > 4999:
        return False
    return code not in FORBIDDEN_BELOW_3000 and not 1016 <= code <= 2999


class WouldBlock(Exception):
    """The app asked for a message the client has not sent: on a server it would wait here."""


class AppError(Exception):
    pass


class Server:
    """An in-memory ASGI server side for one connection. Never waits."""

    def __init__(self) -> None:
        self.queue: list[Message] = [{"type": "websocket.connect"}]
        self.sent: list[Message] = []
        #: The peer is gone: every send raises, as ASGI 2.4 servers do.
        self.gone = False
        #: Sends are checkpoints, so a pending cancellation lands in them.
        self.checkpoint = False
        #: The client's disconnect has been handed to the app.
        self.disconnect_delivered = False

    def accepted(self) -> bool:
        return any(m["type"] == "websocket.accept" for m in self.sent)

    def denied(self) -> bool:
        return bool(self.sent) and not self.accepted()

    async def receive(self) -> Message:
        message = await self._receive()
        self.disconnect_delivered |= message["type"] == "websocket.disconnect"
        return message

    async def _receive(self) -> Message:
        if self.accepted():
            if self.queue:
                return self.queue.pop(0)
            raise WouldBlock
        # Before an accept, a server delivers the connect, then only a disconnect: never data.
        if self.queue and self.queue[0]["type"] == "websocket.connect":
            return self.queue.pop(0)
        for i, message in enumerate(self.queue):
            if message["type"] == "websocket.disconnect":
                del self.queue[: i + 1]
                return message
        if self.denied():
            return {"type": "websocket.disconnect", "code": 1006, "reason": ""}
        raise WouldBlock

    async def send(self, message: Message) -> None:
        if self.checkpoint:
            await anyio.lowlevel.checkpoint()
        if self.gone:
            raise ConnectionResetError("the peer is gone")
        self.sent.append(dict(message))


# --- ASGI and protocol checks -------------------------------------------------------------------


def check_headers(headers: object, *, accept: bool) -> None:
    assert isinstance(headers, (list, tuple)), headers
    for pair in headers:
        name, value = pair
        assert type(name) is bytes, pair
        assert type(value) is bytes, pair
        assert name == name.lower(), f"header names must be lowercased: {name!r}"
        assert b"\r" not in value, pair
        assert b"\n" not in value, pair
        if accept:
            assert name != b"sec-websocket-protocol", "use the subprotocol key"


def check_message(message: Message) -> None:
    kind = message.get("type")
    keys = set(message)
    if kind == "websocket.accept":
        assert keys <= {"type", "subprotocol", "headers"}, message
        subprotocol = message.get("subprotocol")
        assert subprotocol is None or isinstance(subprotocol, str), message
        check_headers(message.get("headers", []), accept=True)
    elif kind == "websocket.send":
        assert keys <= {"type", "bytes", "text"}, message
        data, text = message.get("bytes"), message.get("text")
        assert (data is None) != (text is None), f"exactly one of bytes and text: {message}"
        assert data is None or type(data) is bytes, message
        assert text is None or type(text) is str, message
    elif kind == "websocket.close":
        assert keys <= {"type", "code", "reason"}, message
        code = message.get("code", 1000)
        assert sendable(code), f"forbidden close code sent: {code!r}"
        reason = message.get("reason") or ""
        assert type(reason) is str, message
        assert len(reason.encode("utf-8")) <= 123, f"close reason over 123 bytes: {reason!r}"
    elif kind == "websocket.http.response.start":
        assert keys <= {"type", "status", "headers", "trailers"}, message
        assert type(message["status"]) is int, message
        assert 100 <= message["status"] <= 599, message
        check_headers(message.get("headers", []), accept=False)
    elif kind == "websocket.http.response.body":
        assert keys <= {"type", "body", "more_body"}, message
        assert type(message.get("body", b"")) is bytes, message
        assert type(message.get("more_body", False)) is bool, message
    else:
        raise AssertionError(f"not a message an app may send on a websocket: {message}")


def check_sequence(sent: Sequence[Message]) -> None:
    """Accept and denial are exclusive; nothing follows a close or the final denial body."""
    types = [m["type"] for m in sent]
    if not types:
        return
    assert types.count("websocket.accept") <= 1, types
    first, rest = types[0], types[1:]
    if first == "websocket.accept":
        assert set(rest) <= {"websocket.send", "websocket.close"}, types
        if "websocket.close" in rest:
            assert rest.index("websocket.close") == len(rest) - 1, f"sent after a close: {types}"
    elif first == "websocket.close":
        assert rest == [], f"sent after a close before accept: {types}"
    elif first == "websocket.http.response.start":
        assert set(rest) <= {"websocket.http.response.body"}, types
        finals = [i for i, m in enumerate(sent[1:]) if not m.get("more_body", False)]
        if finals:
            assert finals[0] == len(rest) - 1, f"sent after the final denial body: {types}"
    else:
        raise AssertionError(f"a connection cannot start with {first}: {types}")


def denial_status(sent: Sequence[Message]) -> int:
    """The HTTP status the client saw for a denied handshake."""
    return sent[0]["status"] if sent[0]["type"] == "websocket.http.response.start" else 403


# --- plugins whose behaviour is drawn at each call ----------------------------------------------


class Script:
    """Draws each plugin decision from the rule's data, so hypothesis explores (and shrinks) them."""

    def __init__(self) -> None:
        self.data: st.DataObject | None = None
        #: Plugin failures (raise, garbage, a failing action inside a hook): each must be logged once.
        self.failures = 0
        #: 0: plugins only keep, replace or drop (long conversations); 1: rarely worse; 2: anything goes.
        self.chaos = 2
        #: Async hook calls entered: each starts with a checkpoint, where a pending cancellation must land.
        self.checkpoints = 0

    async def checkpoint(self) -> None:
        self.checkpoints += 1
        await anyio.lowlevel.checkpoint()

    def action(self, calm: Sequence[str], rest: Sequence[str], label: str) -> str:
        """A plugin's next action: ``calm`` ones always possible, ``rest`` (ending or failing) by chaos level."""
        options: list[str] = list(calm)
        if self.chaos == 1:  # about one call in ten ends or fails
            options = [*options * -(-9 * len(rest) // len(calm)), *rest]
        elif self.chaos == 2:
            options = [*options, *rest]
        return self.choose(options, label)

    def choose(self, options: Sequence[T], label: str) -> T:
        if self.data is None:  # teardown: everything keeps
            return options[0]
        return self.data.draw(st.sampled_from(options), label=label)

    def draw(self, strategy: st.SearchStrategy[T], default: T) -> T:
        return default if self.data is None else self.data.draw(strategy)


MESSAGE_ACTIONS = ["keep", "replace-text", "replace-bytes", "drop"]
ENDING_MESSAGE_ACTIONS = ["close", "raise", "garbage"]
ACCEPT_ACTIONS = ["keep", "change"]
ENDING_ACCEPT_ACTIONS = ["deny", "raise", "garbage"]


class MessagePlugin(toolkit.Plugin):
    """Sync ws_accept / ws_receive / ws_send with drawn behaviour."""

    def __init__(self, name: str, script: Script) -> None:
        self.name = name
        self.script = script

    def fail(self, action: str) -> Any:
        self.script.failures += 1
        if action == "raise":
            raise RuntimeError(SECRET)
        return ["garbage", SECRET]

    def message(self, hook: str, data: str | bytes, action: str) -> Any:
        if action == "keep":
            return None
        if action == "replace-text":
            return self.script.draw(TEXTS, "replaced")
        if action == "replace-bytes":
            return self.script.draw(BYTES, b"replaced")
        if action == "drop":
            return DROP
        if action == "close":
            code = self.script.choose(VALID_CODES, "Close code")
            return Close(code, self.script.choose(REASONS, "Close reason"))
        return self.fail(action)

    def accept(self, accept: Accept, action: str) -> Any:
        if action == "keep":
            return None
        if action == "change":
            # Mixed case on purpose: ASGI wants lower-case names on the wire.
            return accept.replace(subprotocol=f"{self.name}-proto", headers=(*accept.headers, (b"X-Plugin", b"1")))
        if action == "deny":
            status = self.script.choose([400, 401, 403, 429, 500, 503], "denial status")
            return DenialResponse(status, self.script.choose(["", "no", "nein é"], "denial body"))
        return self.fail(action)

    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Any:
        return self.accept(accept, self.script.action(ACCEPT_ACTIONS, ENDING_ACCEPT_ACTIONS, f"{self.name}.ws_accept"))

    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Any:
        action = self.script.action(MESSAGE_ACTIONS, ENDING_MESSAGE_ACTIONS, f"{self.name}.ws_receive")
        return self.message("ws_receive", data, action)

    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> Any:
        action = self.script.action(MESSAGE_ACTIONS, ENDING_MESSAGE_ACTIONS, f"{self.name}.ws_send")
        return self.message("ws_send", data, action)


class AsyncMessagePlugin(MessagePlugin):
    """Async hooks that suspend, and may close the connection or send from inside the hook."""

    async def kick(self, websocket: WebSocket) -> None:
        try:
            await websocket.close(4000, "kicked")
        except Exception:  # e.g. the app already closed: the hook raises, a plugin failure
            self.script.failures += 1
            raise

    async def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Any:
        await self.script.checkpoint()
        action = self.script.action(ACCEPT_ACTIONS, ["kick", *ENDING_ACCEPT_ACTIONS], f"{self.name}.ws_accept")
        if action == "kick":
            await self.kick(websocket)
            return None
        return self.accept(accept, action)

    async def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Any:
        await self.script.checkpoint()
        action = self.script.action(
            [*MESSAGE_ACTIONS, "pong"], ["kick", *ENDING_MESSAGE_ACTIONS], f"{self.name}.ws_receive"
        )
        if action == "kick":
            await self.kick(websocket)
            return None
        if action == "pong":
            try:
                await websocket.send_text("pong")
            except Exception:  # the send closed or failed: the exception leaves the hook
                self.script.failures += 1
                raise
            return DROP
        return self.message("ws_receive", data, action)

    async def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> Any:
        await self.script.checkpoint()
        action = self.script.action(MESSAGE_ACTIONS, ["kick", *ENDING_MESSAGE_ACTIONS], f"{self.name}.ws_send")
        if action == "kick":
            await self.kick(websocket)
            return None
        return self.message("ws_send", data, action)


class PassThrough:
    """``wrapper=True`` around the message and accept hooks; records that it saw every call."""

    def __init__(self) -> None:
        self.calls = 0

    def wrap(self) -> Generator[None, Any, Any]:
        self.calls += 1
        return (yield)

    @toolkit.hookimpl(wrapper=True)
    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Generator[None, Any, Any]:
        return (yield from self.wrap())

    @toolkit.hookimpl(wrapper=True)
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Generator[None, Any, Any]:
        return (yield from self.wrap())

    @toolkit.hookimpl(wrapper=True)
    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> Generator[None, Any, Any]:
        return (yield from self.wrap())


class SwallowCancellation(PassThrough):
    """A wrapper that catches cancellation and returns a result anyway; the toolkit must re-raise it."""

    def wrap(self) -> Generator[None, Any, Any]:
        self.calls += 1
        try:
            return (yield)
        except Exception:
            raise
        except BaseException:
            return DROP

    @toolkit.hookimpl(wrapper=True)
    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Generator[None, Any, Any]:
        try:
            return (yield)
        except Exception:
            raise
        except BaseException:
            return accept


class Observer(toolkit.Plugin):
    """Records ws_close and ws_denial; may fail in either, or replace the denial."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.closes: list[tuple[int, str, ClosedBy]] = []
        self.denials: list[DenialResponse] = []

    def ws_close(self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None:
        self.closes.append((code, reason, closed_by))
        if self.script.choose(["ok", "raise"], "ws_close") == "raise":
            self.script.failures += 1
            raise RuntimeError(SECRET)


class DenialObserver(toolkit.Plugin):
    """Records ws_denial into the Observer; may replace the denial, raise, or return garbage."""

    def __init__(self, script: Script, observer: Observer) -> None:
        self.script = script
        self.observer = observer

    def ws_denial(self, *, websocket: WebSocket, response: DenialResponse) -> Any:
        self.observer.denials.append(response)
        action = self.script.choose(["keep", "replace", "raise", "garbage"], "ws_denial")
        if action == "replace":
            return DenialResponse(418, "replaced", ((b"X-Denial", b"1"),))
        if action == "raise":
            self.script.failures += 1
            raise RuntimeError(SECRET)
        if action == "garbage":
            self.script.failures += 1
            return 42
        return None


class Counter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


# --- the machine --------------------------------------------------------------------------------


class ConnectionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.script = Script()
        self.server = Server()
        self.observer = Observer(self.script)
        self.websocket: WebSocket | None = None
        self.backend = "asyncio"
        self.steps = 0
        self.min_steps = 0
        #: How the endpoint ends if no rule ended it first (drawn up front: teardown cannot draw).
        self.ending = ("return", 1000, False)
        self.finished = False
        self.client_left = False
        self.log = Counter()
        self.logger = logging.getLogger("toolkit")
        self.logger.addHandler(self.log)
        self.propagate = self.logger.propagate
        self.logger.propagate = False  # counted here; pytest's capture would keep every example's records

    @initialize(
        backend=st.sampled_from(["asyncio", "trio"]),
        extension=st.booleans(),
        kinds=st.lists(st.sampled_from(["sync", "async"]), min_size=1, max_size=3),
        wrapper=st.sampled_from(["swallow", "none", "pass"]),
        observers=st.fixed_dictionaries({"close_first": st.booleans(), "denial": st.booleans()}),
        accept_first=st.sampled_from([True, True, True, False]),
        min_steps=st.integers(0, 25),
        chaos=st.sampled_from([1, 0, 2]),
        ending=st.tuples(ENDINGS, ENDING_CODES, CANCELLED_WHILE_FINISHING),
        data=st.data(),
    )
    def start(
        self,
        *,
        backend: str,
        extension: bool,
        kinds: list[str],
        wrapper: str,
        observers: dict[str, bool],
        accept_first: bool,
        min_steps: int,
        chaos: int,
        ending: tuple[str, int, bool],
        data: st.DataObject,
    ) -> None:
        self.script.chaos = chaos
        self.ending = ending
        self.backend = backend
        self.min_steps = min_steps
        manager = toolkit.PluginManager()
        if observers["denial"]:
            manager.register(DenialObserver(self.script, self.observer))
        if observers["close_first"]:
            manager.register(self.observer)
        for i, kind in enumerate(kinds):
            plugin_class = AsyncMessagePlugin if kind == "async" else MessagePlugin
            manager.register(plugin_class(f"p{i}", self.script), name=f"p{i}")
        if wrapper != "none":
            manager.register(PassThrough() if wrapper == "pass" else SwallowCancellation())
        if not observers["close_first"]:
            manager.register(self.observer)
        scope: dict[str, Any] = {
            "type": "websocket",
            "path": "/ws",
            "query_string": b"",
            "headers": [(b"host", b"testserver")],
            "extensions": {"websocket.http.response": {}} if extension else {},
        }
        self.websocket = WebSocket(scope, self.server.receive, self.server.send, plugins=manager)
        if accept_first:  # most apps accept straight away; the rules may still try again (misuse)
            self.app_accept(data=data, subprotocol=None, headers=False, cancelled=False)

    # --- helpers ------------------------------------------------------------------------------

    @property
    def ws(self) -> WebSocket:
        assert self.websocket is not None
        return self.websocket

    def run(self, data: st.DataObject | None, operation: Callable[[], Awaitable[T]]) -> T:
        self.script.data = data
        try:
            return anyio.run(operation, backend=self.backend)
        finally:
            self.script.data = None

    def attempt(self, data: st.DataObject | None, operation: Callable[[], Awaitable[None]]) -> Exception | None:
        """Run ``operation``; return the exception it raised, if any, for the rule to check."""
        try:
            self.run(data, operation)
        except Exception as exc:
            return exc
        return None

    def ended(self) -> bool:
        return bool(self.observer.closes)

    def app_may_act(self) -> bool:
        return not self.finished

    def app_may_end(self) -> bool:
        """The endpoint returns or closes only after the example's drawn minimum of steps: longer conversations."""
        return not self.finished and self.steps >= self.min_steps

    def client_may_end(self) -> bool:
        """The client goes away only after the example's drawn minimum of steps, too."""
        return not self.client_left and self.steps >= self.min_steps

    def check_disconnect(self, exc: toolkit.WebSocketDisconnect) -> None:
        """When a plugin ended the connection, the app is told the close that ws_close reported.

        (A disconnect the server delivers, e.g. the client's reply to a close, carries the client's code.)
        """
        assert self.ended(), "the app saw the end of the connection before ws_close did"
        code, reason, closed_by = self.observer.closes[0]
        if closed_by is ClosedBy.PLUGIN and not self.server.disconnect_delivered:
            assert (exc.code, exc.reason) == (code, reason), (exc, self.observer.closes)

    # --- app operations -----------------------------------------------------------------------

    @precondition(app_may_act)
    @rule(data=st.data(), subprotocol=st.sampled_from([None, "chat"]), headers=st.booleans(), cancelled=st.booleans())
    def app_accept(self, data: st.DataObject, subprotocol: str | None, headers: bool, cancelled: bool) -> None:
        before = len(self.server.sent)
        state = self.ws.application_state
        checkpoints = self.script.checkpoints
        done: list[bool] = []

        async def accept() -> None:
            with anyio.CancelScope() as scope:
                if cancelled:
                    scope.cancel()  # lands in the first async ws_accept, if any
                await self.ws.accept(subprotocol, [(b"x-app", b"1")] if headers else None)
                done.append(True)

        outcome = self.attempt(data, accept)
        if isinstance(outcome, toolkit.WebSocketDenied):
            assert state is toolkit.WebSocketState.CONNECTING
            assert not self.server.accepted()
            assert (outcome.code, outcome.reason) == (1006, "")
            if not self.server.gone:
                assert self.server.sent, "denied without telling the client"
                assert outcome.status == denial_status(self.server.sent), "WebSocketDenied.status is not what was sent"
            return
        if isinstance(outcome, toolkit.WebSocketDisconnect):
            assert outcome.code == 1006
            assert self.server.gone  # the peer vanished while accepting
            return
        if isinstance(outcome, RuntimeError):
            assert state is not toolkit.WebSocketState.CONNECTING
            assert len(self.server.sent) == before, "a refused accept sent something"
            return
        assert outcome is None, repr(outcome)
        assert state is toolkit.WebSocketState.CONNECTING
        if done:
            assert self.server.sent[-1]["type"] == "websocket.accept"
            assert self.ws.application_state is toolkit.WebSocketState.CONNECTED
            if cancelled:
                assert self.script.checkpoints == checkpoints, "a cancelled accept went through: cancellation swallowed"
        else:  # cancelled inside a hook: nothing sent, still connecting
            assert len(self.server.sent) == before
            assert self.ws.application_state is toolkit.WebSocketState.CONNECTING

    @precondition(app_may_act)
    @rule(data=st.data(), high_level=st.booleans(), cancelled=st.booleans())
    def app_receive(self, data: st.DataObject, high_level: bool, cancelled: bool) -> None:
        before = len(self.server.sent)
        checkpoints = self.script.checkpoints

        async def receive() -> Message | None:
            with anyio.CancelScope() as scope:
                if cancelled:
                    scope.cancel()  # lands in the first async ws_receive, if any
                if not high_level:
                    return await self.ws.receive()
                return {"type": "websocket.receive", "text": await self.ws.receive_text()}
            return None

        try:
            message = self.run(data, receive)
        except toolkit.WebSocketDisconnect as exc:
            message = {"type": "websocket.disconnect", "code": exc.code, "reason": exc.reason}
        except (WouldBlock, RuntimeError, toolkit.UnexpectedFrameType):
            message = {"type": "no message"}
        if cancelled and self.script.checkpoints != checkpoints:
            assert message is None, "a cancelled receive went on: the cancellation was swallowed"
        if message is None:  # cancelled inside a hook: the message is gone, nothing was sent
            assert len(self.server.sent) == before
            return
        if message["type"] == "websocket.receive":
            assert (message.get("text") is None) != (message.get("bytes") is None), message
        elif message["type"] == "websocket.disconnect":
            assert type(message["code"]) is int
            self.check_disconnect(toolkit.WebSocketDisconnect(message["code"], message.get("reason")))
        else:
            assert message["type"] in ("websocket.connect", "no message"), message

    @precondition(app_may_act)
    @rule(
        data=st.data(),
        payload=st.one_of(TEXTS, BYTES),
        cancelled=st.booleans(),
        peer_vanishes=st.sampled_from([False, False, False, False, True]),
    )
    def app_send(self, data: st.DataObject, payload: str | bytes, cancelled: bool, peer_vanishes: bool) -> None:
        if peer_vanishes and self.client_may_end():  # just before this send: it fails, as would a plugin's close
            self.client_left = self.server.gone = True
        self.send(data, payload, cancelled)

    def send(self, data: st.DataObject, payload: str | bytes, cancelled: bool) -> bool:
        """Send as the app; True if the connection is still open for it."""
        before = len(self.server.sent)
        connected = self.ws.application_state is toolkit.WebSocketState.CONNECTED
        checkpoints = self.script.checkpoints
        done: list[bool] = []

        async def send() -> None:
            with anyio.CancelScope() as scope:
                if cancelled:
                    scope.cancel()  # lands in the first async ws_send, if any
                if isinstance(payload, str):
                    await self.ws.send_text(payload)
                else:
                    await self.ws.send_bytes(payload)
                done.append(True)

        try:
            self.run(data, send)
        except toolkit.WebSocketDisconnect as exc:
            assert connected
            self.check_disconnect(exc)
            return False
        except RuntimeError:
            assert not connected
            assert len(self.server.sent) == before
            return False
        new = self.server.sent[before:]
        if done:  # returned normally: the message went out (possibly replaced), or was dropped
            assert [m["type"] for m in new] in ([], ["websocket.send"]), new
            if cancelled:
                assert self.script.checkpoints == checkpoints, "a cancelled send went through: cancellation swallowed"
        else:  # cancelled inside a hook: nothing went out
            assert new == []
        return True

    @precondition(lambda self: self.app_may_act() and not self.client_left)
    @rule(data=st.data(), payloads=st.lists(st.one_of(TEXTS, BYTES), min_size=1, max_size=10))
    def echo(self, data: st.DataObject, payloads: list[str | bytes]) -> None:
        """A typical endpoint loop: the client sends, the app receives and sends each message back."""
        for payload in payloads:
            key = "text" if isinstance(payload, str) else "bytes"
            self.server.queue.append({"type": "websocket.receive", key: payload})

        async def receive() -> Message:
            return await self.ws.receive()

        for _ in payloads:
            try:
                message = self.run(data, receive)
            except toolkit.WebSocketDisconnect as exc:
                self.check_disconnect(exc)
                return
            except (WouldBlock, RuntimeError):
                return
            if message["type"] != "websocket.receive":
                return
            reply = message.get("text")
            if not self.send(data, message["bytes"] if reply is None else reply, cancelled=False):
                return

    @precondition(app_may_end)
    @rule(data=st.data(), code=st.sampled_from(ANY_CODES), reason=st.sampled_from([*REASONS, "é" * 62, "x" * 124]))
    def app_close(self, data: st.DataObject, code: int, reason: str) -> None:
        before = list(self.server.sent)
        closes_before = len(self.observer.closes)
        state = self.ws.application_state

        async def close() -> None:
            await self.ws.close(code, reason)

        outcome = self.attempt(data, close)
        if isinstance(outcome, ValueError):
            assert not sendable(code) or len(reason.encode()) > 123
            assert self.server.sent == before, "a refused close sent something"
            assert len(self.observer.closes) == closes_before
            assert self.ws.application_state is state
            return
        if isinstance(outcome, RuntimeError):
            assert state in (toolkit.WebSocketState.RESPONSE, toolkit.WebSocketState.DISCONNECTED)
            assert self.server.sent == before
            return
        if isinstance(outcome, toolkit.WebSocketDisconnect):
            assert outcome.code == 1006
            assert self.server.gone
            return
        assert outcome is None, repr(outcome)
        assert sendable(code)
        if state is toolkit.WebSocketState.DISCONNECTED:  # close() once closed is a no-op (Starlette raises)
            assert self.server.sent == before
            assert len(self.observer.closes) == closes_before
            return
        assert state in (toolkit.WebSocketState.CONNECTED, toolkit.WebSocketState.CONNECTING)
        assert len(self.observer.closes) == 1
        if state is toolkit.WebSocketState.CONNECTED:
            assert self.server.sent[-1] == {"type": "websocket.close", "code": code, "reason": reason}
            if closes_before == 0:
                assert self.observer.closes == [(code, reason, ClosedBy.APP)]

    @precondition(app_may_act)
    @rule(
        data=st.data(),
        kind=st.sampled_from(["toolkit", "starlette", "start", "body", "last body"]),
        status=st.sampled_from([401, 403, 451]),
    )
    def app_deny(self, data: st.DataObject, kind: str, status: int) -> None:
        """A denial: a response app (the toolkit's or Starlette's), or hand-written, possibly streamed, parts."""
        before = len(self.server.sent)
        state = self.ws.application_state

        async def deny() -> None:
            if kind == "toolkit":
                await self.ws.send_denial_response(DenialResponse(status, "nope"))
            elif kind == "starlette":
                await self.ws.send_denial_response(PlainTextResponse("nope", status_code=status))
            elif kind == "start":
                await self.ws.send({"type": "websocket.http.response.start", "status": status, "headers": []})
            else:
                more = kind == "body"
                await self.ws.send({"type": "websocket.http.response.body", "body": b"chunk", "more_body": more})

        try:
            self.run(data, deny)
        except (RuntimeError, OSError):
            assert len(self.server.sent) == before
            return
        if kind in ("toolkit", "starlette"):
            assert state is toolkit.WebSocketState.CONNECTING
            assert self.ws.has_denial_extension
            assert self.ended() or self.server.gone

    @precondition(app_may_end)
    @rule(
        data=st.data(),
        how=ENDINGS,
        code=ENDING_CODES,
        cancelled_while_finishing=CANCELLED_WHILE_FINISHING,
    )
    def app_ends(self, data: st.DataObject | None, how: str, code: int, cancelled_while_finishing: bool) -> None:
        """The endpoint returns or raises; WebSocketApp's ``async with`` finishes the connection."""
        self.finished = True
        self.server.checkpoint = cancelled_while_finishing
        was_connected = self.ws.application_state is toolkit.WebSocketState.CONNECTED
        client_gone = self.ws.client_state is toolkit.WebSocketState.DISCONNECTED
        before = len(self.server.sent)

        async def end() -> None:
            with anyio.CancelScope() as scope:
                if cancelled_while_finishing:
                    scope.cancel()  # lands in the first send WebSocketApp makes for the app
                async with self.ws:
                    if how == "raise":
                        raise AppError(SECRET)
                    if how == "disconnect":
                        raise toolkit.WebSocketDisconnect(code)
                    if how == "cancelled":
                        scope.cancel()
                        await anyio.lowlevel.checkpoint()

        try:
            self.run(data, end)
        except AppError:
            assert how == "raise"
        else:
            assert how != "raise" or cancelled_while_finishing
        assert len(self.observer.closes) == 1, "ws_close must fire exactly once when the app ends"
        new = self.server.sent[before:]
        if how == "cancelled" or cancelled_while_finishing or self.server.gone:
            assert new == []
        elif was_connected and how == "raise":
            assert new == [{"type": "websocket.close", "code": 1011, "reason": "internal error"}]
        elif was_connected and not client_gone:
            expected = code if how == "disconnect" and sendable(code) else 1000
            assert new == [{"type": "websocket.close", "code": expected, "reason": ""}]

    # --- the client ---------------------------------------------------------------------------

    @precondition(lambda self: not self.client_left)
    @rule(payload=st.one_of(TEXTS, BYTES))
    def client_sends(self, payload: str | bytes) -> None:
        key = "text" if isinstance(payload, str) else "bytes"
        self.server.queue.append({"type": "websocket.receive", key: payload})

    @precondition(client_may_end)
    @rule(
        code=st.sampled_from([None, 1000, 1001, 1006, 4000]),
        reason=st.sampled_from(["", "gone"]),
        how=st.sampled_from(["close frame, sends fail", "close frame", "vanished"]),
    )
    def client_disconnects(self, code: int | None, reason: str, how: str) -> None:
        self.client_left = True
        if how != "vanished":
            message: Message = {"type": "websocket.disconnect", "reason": reason}
            if code is not None:
                message["code"] = code
            self.server.queue.append(message)
        # A server fails sends once the peer is gone, possibly before the app reads the disconnect.
        self.server.gone = how != "close frame"

    @precondition(lambda self: self.finished)
    @rule()
    def idle(self) -> None:
        """Keeps a finished connection's example going (hypothesis needs a valid rule at every step)."""

    # --- invariants ---------------------------------------------------------------------------

    @invariant()
    def count_steps(self) -> None:
        self.steps += 1

    @invariant()
    def messages_are_valid(self) -> None:
        for message in self.server.sent:
            check_message(message)
        check_sequence(self.server.sent)
        assert SECRET not in repr(self.server.sent), "exception text reached the client"

    @invariant()
    def ws_close_at_most_once(self) -> None:
        assert len(self.observer.closes) <= 1, self.observer.closes

    @invariant()
    def accept_and_denial_are_exclusive(self) -> None:
        if self.server.accepted():
            assert self.observer.denials == [], "ws_denial fired on an accepted connection"
        if self.observer.denials:
            assert not self.server.accepted()

    @invariant()
    def ws_close_matches_the_close_sent(self) -> None:
        if not self.observer.closes or not self.server.sent:
            return
        code, reason, closed_by = self.observer.closes[0]
        if closed_by is ClosedBy.CLIENT:
            return
        last = self.server.sent[-1]
        if not self.server.accepted():
            assert (code, reason) == (1006, ""), "a denied connection reports 1006"
        elif code != 1006 and last["type"] == "websocket.close":
            assert (last["code"], last["reason"]) == (code, reason), (self.observer.closes, last)

    @invariant()
    def each_failure_logged_once(self) -> None:
        assert len(self.log.records) == self.script.failures, [r.getMessage() for r in self.log.records]
        for record in self.log.records:
            assert record.getMessage().startswith("plugin '"), record.getMessage()
            assert SECRET not in record.getMessage()

    def teardown(self) -> None:
        try:
            if self.websocket is not None and not self.finished:
                self.app_ends(None, *self.ending)  # the checks of app_ends, then the invariants once more
                self.messages_are_valid()
                self.accept_and_denial_are_exclusive()
                self.ws_close_matches_the_close_sent()
                self.each_failure_logged_once()
            if self.websocket is not None:
                assert len(self.observer.closes) == 1, "ws_close must fire exactly once per connection"
        finally:
            self.logger.removeHandler(self.log)
            self.logger.propagate = self.propagate


ConnectionMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestConnection = ConnectionMachine.TestCase
