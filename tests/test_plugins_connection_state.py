"""Issue 9: no first-party plugin keeps per-connection data on itself.

Each plugin object serves every connection at once; what it keeps per connection lives in
``websocket.plugin_state`` under keys of its own instance, and goes when the connection ends.
Checked here for the whole first-party stack at once:

- nothing per connection outlives the connection: every connection's plugin state is empty once
  it has ended, however it ended, and no plugin holds on to a connection (each ``WebSocket`` is
  garbage once the test drops it); the counts the plugins expose are exact while connections are
  open and back to zero after;
- two instances of one plugin class on one manager keep apart (per-instance keys).

Runs on asyncio and trio, every wait bounded.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import re
import weakref
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Final, Literal

import anyio
import anyio.lowlevel
import pytest
from pydantic import BaseModel
from toolkit_auth import AuthGate, Bearer, OriginGate, StaticTokens
from toolkit_limits import ConnectionLimit, MessageSizeLimit, OutboundSizeLimit, RateLimit
from toolkit_logging import ConnectionLogger
from toolkit_messages import Messages

import toolkit
from tests.support import DENIAL_EXTENSION, Transport, binary, connect, disconnect, make_scope, text
from tests.test_docs import ROOT, run_blocks
from toolkit import CloseCode, ClosedBy, Message, PluginManager, Scope, WebSocket, WebSocketApp

pytestmark = pytest.mark.anyio

BOUND: Final = 10.0
ALICE_TOKEN: Final = "alice-token"
TOKENS: Final = {ALICE_TOKEN: "alice", "bob-token": "bob"}
ORIGIN: Final = "https://app.example"
MAX_BYTES: Final = 1024
BURST: Final = 3


class Ping(BaseModel):
    type: Literal["ping"]
    n: int


class Pong(BaseModel):
    type: Literal["pong"]
    n: int


@dataclass
class Stack:
    """Every first-party plugin with per-connection state (and the stateless ones), on one manager."""

    messages: Messages[Ping, Pong] = field(default_factory=lambda: Messages(Ping, Pong))
    rate: RateLimit = field(default_factory=lambda: RateLimit(0.001, BURST))  # no refill during a test
    connections: ConnectionLimit = field(
        default_factory=lambda: ConnectionLimit(max_total=100, max_per_key=1, key=lambda ws: ws.headers.get("x-client"))
    )
    auth: AuthGate[str] = field(default_factory=lambda: AuthGate(StaticTokens(TOKENS), sources=[Bearer()]))
    logger: ConnectionLogger = field(default_factory=lambda: ConnectionLogger(logging.getLogger("test.state")))

    def plugins(self) -> PluginManager:
        return PluginManager(
            self.messages,
            MessageSizeLimit(MAX_BYTES),
            OutboundSizeLimit(MAX_BYTES),
            self.rate,
            self.connections,
            self.auth,
            OriginGate([ORIGIN]),
            self.logger,
        )

    def counts(self) -> dict[str, int]:
        return {
            "RateLimit.connections": self.rate.connections,
            "ConnectionLimit.total": self.connections.total,
            "AuthGate.open_connections": self.auth.open_connections,
            "ConnectionLogger.open_connections": self.logger.open_connections,
        }


def scope(path: str, *, token: str | None = ALICE_TOKEN, client: str | None = None) -> Scope:
    headers = [(b"host", b"testserver"), (b"origin", ORIGIN.encode())]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if client is not None:
        headers.append((b"x-client", client.encode()))
    return make_scope(path=path, headers=headers, extensions=DENIAL_EXTENSION)


def ping(n: int) -> Message:
    return text(json.dumps({"type": "ping", "n": n}))


@dataclass
class HeldTransport(Transport):
    """A scripted transport whose client leaves (its last message) only once ``finish`` is set."""

    finish: anyio.Event = field(default_factory=anyio.Event)

    async def receive(self) -> Message:
        await anyio.lowlevel.checkpoint()
        if len(self.incoming) == 1:
            await self.finish.wait()
        return await super().receive()


class App:
    """The endpoint, by path: ``/ws/echo`` answers pings until the client leaves; others end otherwise."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.sockets: list[WebSocket] = []
        self.accepted = 0
        self.waiting = anyio.Event()

    async def __call__(self, websocket: WebSocket) -> None:
        self.sockets.append(websocket)
        path = websocket.url.path
        await websocket.accept()
        self.accepted += 1
        channel = self.stack.messages.channel(websocket)
        if path == "/ws/return":
            await channel.send(Pong(type="pong", n=0))
            return
        if path == "/ws/raise":
            raise RuntimeError("app bug")
        if path == "/ws/huge":  # valid, so toolkit_messages lets it through; too big for OutboundSizeLimit
            await channel.send(Pong(type="pong", n=10 ** (MAX_BYTES + 1)))
        if path == "/ws/wait":
            self.waiting.set()
            await anyio.sleep_forever()
        async for message in channel:
            await channel.send(Pong(type="pong", n=message.n))


def assert_state_gone(app: App, stack: Stack) -> None:
    """Every connection's plugin state is empty, the counts are zero, and no plugin holds a connection."""
    assert app.sockets, "the test ran no connection"
    assert [dict.fromkeys(ws.plugin_state) for ws in app.sockets] == [{}] * len(app.sockets)
    assert stack.counts() == dict.fromkeys(stack.counts(), 0)
    assert stack.connections.count("shared") == 0
    refs = [weakref.ref(ws) for ws in app.sockets]
    app.sockets.clear()
    gc.collect()
    leaked = [ref for ref in refs if ref() is not None]
    assert not leaked, f"connections still referenced by: {[gc.get_referrers(ref()) for ref in leaked]}"


async def test_no_per_connection_state_outlives_its_connection_however_it_ends() -> None:
    stack = Stack()
    app = App(stack)
    asgi = WebSocketApp(app, plugins=stack.plugins())
    held = 4

    with anyio.fail_after(BOUND):
        # Connections that stay open together: the counts are exact while they are.
        finish = anyio.Event()
        transports = [HeldTransport([connect(), ping(1), disconnect(1000)], finish=finish) for _ in range(held)]
        async with anyio.create_task_group() as tasks:
            for i, transport in enumerate(transports):
                client = "shared" if i == 0 else f"client-{i}"
                tasks.start_soon(asgi, scope("/ws/echo", client=client), transport.receive, transport.send)
            while sum(len(t.sent) for t in transports) < 2 * held:  # each accepted and answered its ping
                await anyio.lowlevel.checkpoint()
            assert stack.counts() == dict.fromkeys(stack.counts(), held)
            assert stack.connections.count("shared") == 1
            # Over the per-client cap while the "shared" client is connected: denied, nothing kept.
            denied = Transport([connect()])
            await asgi(scope("/ws/echo", client="shared"), denied.receive, denied.send)
            assert denied.sent[0]["status"] == 429
            assert stack.counts() == dict.fromkeys(stack.counts(), held)
            finish.set()
        for transport in transports:
            assert [m["type"] for m in transport.sent] == ["websocket.accept", "websocket.send"]
        assert stack.counts() == dict.fromkeys(stack.counts(), 0)

        # One connection for each other way a connection ends.
        endings: list[tuple[str, Scope, list[Message], tuple[str, int]]] = [
            ("app returns", scope("/ws/return"), [connect()], ("close", CloseCode.NORMAL)),
            ("app raises", scope("/ws/raise"), [connect()], ("close", CloseCode.INTERNAL_ERROR)),
            ("app sends too much", scope("/ws/huge"), [connect()], ("close", CloseCode.INTERNAL_ERROR)),
            ("rate limit", scope("/ws/echo"), [connect(), *(ping(n) for n in range(BURST + 1))], ("close", 1008)),
            ("too big", scope("/ws/echo"), [connect(), text("x" * (MAX_BYTES + 1))], ("close", 1009)),
            ("wrong frame type", scope("/ws/echo"), [connect(), binary(b"{}")], ("close", 1003)),
            ("bad message answered", scope("/ws/echo"), [connect(), text("{"), disconnect(1001)], ("send", 0)),
            ("no credential", scope("/ws/echo", token=None), [connect()], ("status", 401)),
            ("wrong credential", scope("/ws/echo", token="wrong-token"), [connect()], ("status", 401)),
        ]
        for name, where, incoming, (kind, value) in endings:
            ending = Transport(incoming)
            raises = pytest.raises(RuntimeError, match="app bug") if name == "app raises" else contextlib.nullcontext()
            with raises:  # WebSocketApp closes with 1011, then re-raises for the server to log
                await asgi(where, ending.receive, ending.send)
            last = ending.sent[-1]
            if kind == "close":
                assert (last["type"], last["code"]) == ("websocket.close", value), name
            elif kind == "status":
                assert ending.sent[0]["status"] == value, name
            else:
                assert last["type"] == "websocket.send", name
            assert stack.counts() == dict.fromkeys(stack.counts(), 0), name

        # Cancelled while the app waits: nothing can be sent, ws_close still frees the state.
        waiting = Transport([connect()])
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(asgi, scope("/ws/wait"), waiting.receive, waiting.send)
            await app.waiting.wait()
            assert stack.counts() == {**dict.fromkeys(stack.counts(), 1), "RateLimit.connections": 0}
            tasks.cancel_scope.cancel()

    assert app.accepted == held + len(endings) - 2 + 1  # all but the two auth denials, and the cancelled one
    assert_state_gone(app, stack)


# --- two instances of one plugin class on one manager --------------------------------------------


class Left(BaseModel):
    n: int


class Right(BaseModel):
    n: int


async def test_two_messages_on_one_manager_hand_their_own_models_to_their_own_channels() -> None:
    left, right = Messages(Left, Left), Messages(Right, Right)
    got: list[object] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        messages = left if websocket.url.path == "/left" else right
        async for message in messages.channel(websocket):
            got.append(message)

    asgi = WebSocketApp(endpoint, plugins=PluginManager(left, right))
    for path in ("/left", "/right"):
        transport = Transport([connect(), text('{"n":1}'), text('{"n":2}'), disconnect()])
        await asgi(make_scope(path=path), transport.receive, transport.send)
    # Both hooks validate every message; each channel takes its own plugin's model, never the other's.
    assert [type(model) for model in got] == [Left, Left, Right, Right]
    assert got == [Left(n=1), Left(n=2), Right(n=1), Right(n=2)]


async def test_two_rate_limits_on_one_manager_keep_a_bucket_each() -> None:
    now = [0.0]
    first, second = RateLimit(1, BURST, clock=lambda: now[0]), RateLimit(1, BURST, clock=lambda: now[0])
    received: list[str] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        async for data in websocket.iter_text():
            received.append(data)
            assert (first.connections, second.connections) == (1, 1)

    transport = Transport([connect(), *(text(str(n)) for n in range(BURST + 1))])
    await WebSocketApp(endpoint, plugins=PluginManager(first, second))(make_scope(), transport.receive, transport.send)
    # Each message takes one token from each bucket: the burst passes, the next one closes.
    assert received == [str(n) for n in range(BURST)]
    assert transport.sent[-1] == {"type": "websocket.close", "code": 1008, "reason": "rate limit"}
    assert (first.connections, second.connections) == (0, 0)


async def test_two_connection_limits_on_one_manager_count_each_connection_once_each() -> None:
    total, per_client = ConnectionLimit(max_total=1), ConnectionLimit(max_per_key=5, key=lambda ws: "everyone")
    seen: list[tuple[int, int]] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        seen.append((total.total, per_client.count("everyone")))
        second = Transport([connect()])
        await inner(make_scope(extensions=DENIAL_EXTENSION), second.receive, second.send)  # while this one is open
        assert second.sent[0]["status"] == 429

    plugins = PluginManager(total, per_client)
    inner = WebSocketApp(endpoint, plugins=plugins)
    transport = Transport([connect()])
    await inner(make_scope(), transport.receive, transport.send)
    assert seen == [(1, 1)]
    assert (total.total, per_client.total, per_client.count("everyone")) == (0, 0, 0)


async def test_two_loggers_on_one_manager_name_and_count_each_connection_apart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    one, two = ConnectionLogger(logging.getLogger("test.one")), ConnectionLogger(logging.getLogger("test.two"))
    ids: list[tuple[str | None, str | None]] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        ids.append((one.conn_id(websocket), two.conn_id(websocket)))
        assert (one.open_connections, two.open_connections) == (1, 1)
        async for data in websocket.iter_text():
            await websocket.send_text(data)

    transport = Transport([connect(), text("a"), text("b"), disconnect()])
    await WebSocketApp(endpoint, plugins=PluginManager(one, two))(make_scope(), transport.receive, transport.send)
    [(first_id, second_id)] = ids
    assert first_id is not None
    assert second_id is not None
    assert first_id != second_id
    closes = {r.name: r for r in caplog.records if getattr(r, "ws_event", None) == "close"}
    for name, conn_id in (("test.one", first_id), ("test.two", second_id)):
        record = closes[name]
        assert [getattr(record, field) for field in ("ws_conn_id", "ws_msgs_in", "ws_msgs_out")] == [conn_id, 2, 2]
    assert (one.open_connections, two.open_connections) == (0, 0)


async def test_two_auth_gates_on_one_manager_keep_their_own_principals() -> None:
    words = AuthGate(StaticTokens(TOKENS))
    numbers = AuthGate(StaticTokens({token: len(name) for token, name in TOKENS.items()}))
    seen: list[tuple[str | None, int | None]] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        seen.append((words.principal(websocket), numbers.principal(websocket)))
        assert (words.open_connections, numbers.open_connections) == (1, 1)

    transport = Transport([connect()])
    await WebSocketApp(endpoint, plugins=PluginManager(words, numbers))(
        scope("/ws", token="bob-token"), transport.receive, transport.send
    )
    assert seen == [("bob", 3)]
    assert (words.open_connections, numbers.open_connections) == (0, 0)


# --- the keys are the plugins' own ---------------------------------------------------------------


async def test_plugin_state_keys_are_per_instance_and_named_for_their_plugin() -> None:
    stack = Stack()
    keys: list[set[str]] = []

    class Peek(toolkit.Plugin):
        def ws_close(self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None:
            keys.append({key.name for key in websocket.plugin_state})  # ws_close runs before the state is emptied

    plugins = stack.plugins()
    plugins.register(Peek())
    app = App(stack)
    transport = Transport([connect(), ping(1), disconnect()])
    await WebSocketApp(app, plugins=plugins)(scope("/ws/echo", client="c"), transport.receive, transport.send)
    assert keys == [
        {
            "toolkit_messages",
            "toolkit_limits.RateLimit",
            "toolkit_limits.ConnectionLimit",
            "toolkit_auth.AuthGate",
            "toolkit_logging.ConnectionLogger",
        }
    ]
    other = Stack()
    pairs: list[tuple[Hashable, Hashable]] = [
        (stack.messages._key, other.messages._key),
        (stack.rate._bucket, other.rate._bucket),
        (stack.connections._held, other.connections._held),
        (stack.auth._principal, other.auth._principal),
        (stack.logger._connection, other.logger._connection),
    ]
    assert all(mine is not theirs for mine, theirs in pairs)


async def test_rate_limit_takes_close_code_members() -> None:
    limit = RateLimit(1, 1, close_code=CloseCode.TRY_AGAIN_LATER)
    assert limit.close_code is CloseCode.TRY_AGAIN_LATER
    assert RateLimit(1, 1, close_code=1013).close_code is CloseCode.TRY_AGAIN_LATER
    with pytest.raises(
        ValueError, match=re.escape("close_code must be 1008 or 1013, got <CloseCode.INTERNAL_ERROR: 1011>")
    ):
        RateLimit(1, 1, close_code=CloseCode.INTERNAL_ERROR)


# --- the example in docs/plugins.md --------------------------------------------------------------


async def test_the_plugins_page_per_connection_state_example_counts_each_connection_apart() -> None:
    capped: PluginManager = run_blocks(ROOT / "docs" / "plugins.md")["capped"]
    [(_, cap)] = [(name, plugin) for name, plugin in capped.list_name_plugin() if name == "MessageCap"]
    sockets: list[WebSocket] = []
    state_at_end: list[int] = []

    async def echo(websocket: WebSocket) -> None:
        sockets.append(websocket)
        await websocket.accept()
        async for data in websocket.iter_text():
            await websocket.send_text(data)
        state_at_end.append(len(websocket.plugin_state))

    app = WebSocketApp(echo, plugins=capped)
    start, finish = anyio.Event(), anyio.Event()
    quiet = HeldTransport([connect(), text("a"), disconnect()], finish=finish)
    chatty = Transport([connect(), text("1"), text("2"), text("3"), text("4")])

    async def chatty_after_quiet_started() -> None:
        await start.wait()
        await app(make_scope(), chatty.receive, chatty.send)
        finish.set()  # the quiet one leaves only after the chatty one was closed: both open at once

    async def quiet_first() -> None:
        start.set()
        await app(make_scope(), quiet.receive, quiet.send)

    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(chatty_after_quiet_started)
            tasks.start_soon(quiet_first)
    assert [m.get("text") for m in chatty.sent[1:]] == ["1", "2", None]
    assert chatty.sent[-1] == {"type": "websocket.close", "code": 1008, "reason": "too many messages"}
    assert [m.get("text") for m in quiet.sent[1:]] == ["a"]
    assert sorted(cap.totals) == [1, 3]  # type: ignore[attr-defined]
    assert [len(ws.plugin_state) for ws in sockets] == [0, 0]
