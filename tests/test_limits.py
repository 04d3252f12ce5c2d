"""toolkit_limits: message size, message rate and connection caps, over the in-memory transport.

Scripted connections use ``tests.support.Transport``; connections that must stay open side by side
(connection caps) use :class:`Peer`, a transport that waits for the test's messages. Every wait in a
test that uses peers is bounded by ``anyio.fail_after``.
"""

from __future__ import annotations

import inspect
import logging
import math
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Hashable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given
from hypothesis import strategies as st
from toolkit_limits import ConnectionLimit, MessageSizeLimit, OutboundSizeLimit, RateLimit, client_host

import toolkit
from tests.support import DENIAL_EXTENSION, Recorder, Transport, binary, connect, disconnect, make_scope, text
from tests.test_server import echo  # accepts, then echoes text and bytes until the client leaves
from toolkit import (
    Accept,
    ClosedBy,
    DenialResponse,
    Message,
    MessageResult,
    PluginManager,
    Scope,
    WebSocket,
    WebSocketApp,
    WebSocketDenied,
    WebSocketDisconnect,
)

pytestmark = pytest.mark.anyio

ROOT: Final = Path(__file__).parent.parent
#: Bound on any test that waits for another task.
TIMEOUT: Final = 5.0

TOO_BIG: Final[Message] = {"type": "websocket.close", "code": 1009, "reason": "message too big"}
ACCEPT: Final[Message] = {"type": "websocket.accept", "subprotocol": None, "headers": []}


async def run(app: WebSocketApp, *incoming: Message, scope: Scope | None = None) -> Transport:
    """Run one scripted connection to the end; return what the app sent."""
    transport = Transport([connect(), *incoming])
    await app(scope or make_scope(), transport.receive, transport.send)
    return transport


def a_websocket() -> WebSocket:
    return WebSocket(make_scope())


# --- MessageSizeLimit ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1])
def test_size_limit_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MessageSizeLimit(bad)
    with pytest.raises(ValueError, match="at least 1"):
        OutboundSizeLimit(bad)


@pytest.mark.parametrize("bad", [True, 1.5, "10", None])
def test_size_limit_must_be_an_int(bad: Any) -> None:
    with pytest.raises(TypeError, match="max_bytes must be an int"):
        MessageSizeLimit(bad)


# (max_bytes, what fits exactly). Each case is also tried with one more byte.
EXACT_FITS: Final = [
    (10, "é" * 5),  # 2-byte characters: 10 bytes in 5 code points
    (10, "😀😀é"),  # 4 + 4 + 2
    (12, "😀😀😀"),  # three 4-byte characters
    (11, "a€😀a"),  # 1 + 3 + 4 + 1 + (one more below)
    (7, "ascii!!"),
    (1, "x"),
]


@pytest.mark.parametrize(("max_bytes", "fits"), EXACT_FITS)
@pytest.mark.parametrize("frame", ["text", "bytes"])
async def test_exactly_max_bytes_passes_and_one_more_closes_with_1009(max_bytes: int, fits: str, frame: str) -> None:
    while len(fits.encode()) < max_bytes:
        fits += "a"
    assert len(fits.encode()) == max_bytes
    over = fits + "a"
    make = text if frame == "text" else binary
    payload: Callable[[str], str | bytes] = (lambda s: s) if frame == "text" else (lambda s: s.encode())
    recorder = Recorder()  # registered last, so it would run first if the limit were not tryfirst
    app = WebSocketApp(echo, plugins=PluginManager(MessageSizeLimit(max_bytes), recorder))
    transport = await run(app, make(payload(fits)), make(payload(over)), make(payload("after")))  # type: ignore[arg-type]
    sent_back = transport.sent[1]
    assert sent_back == {"type": "websocket.send", frame: payload(fits)}
    assert transport.sent[2:] == [TOO_BIG]
    # The oversized message reached no other plugin, and nothing after it was read.
    assert [data for name, data in recorder.calls if name == "ws_receive"] == [payload(fits)]
    assert transport.incoming == [make(payload("after"))]  # type: ignore[arg-type]
    assert recorder.closes() == [(1009, "message too big", ClosedBy.PLUGIN)]


async def test_app_sees_the_close_as_websocket_disconnect_1009() -> None:
    seen: list[tuple[int, str | None]] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            await websocket.receive_text()
        except WebSocketDisconnect as exc:
            seen.append((exc.code, exc.reason))

    app = WebSocketApp(endpoint, plugins=PluginManager(MessageSizeLimit(3)))
    transport = await run(app, text("four"))
    assert seen == [(1009, "message too big")]
    assert transport.sent == [ACCEPT, TOO_BIG]  # closed once, by the plugin


class CountingStr(str):
    """A str that counts how often it is encoded."""

    encodes = 0

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        CountingStr.encodes += 1
        return super().encode(encoding, errors)


@pytest.fixture
def encodes() -> Callable[[], int]:
    CountingStr.encodes = 0
    return lambda: CountingStr.encodes


@pytest.mark.parametrize(
    ("max_bytes", "data", "encoded"),
    [
        # Up to max_bytes // 4 code points: fits whatever they are, nothing encoded.
        (40, "😀" * 10, False),
        (10, "😀" * 2, False),  # 10 // 4 == 2, 8 bytes
        (3, "", False),
        # More code points than max_bytes: too big whatever they are, nothing encoded.
        (40, "a" * 41, False),
        (10, "é" * 11, False),
        # In between: ASCII is measured by its length, nothing encoded ...
        (40, "a" * 40, False),
        (40, "a" * 11, False),
        # ... other text is encoded to be measured.
        (40, "😀" * 11, True),  # 11 code points > 40 // 4, 44 bytes: too big
        (40, "é" + "a" * 39, True),  # 40 code points, 41 bytes: too big
        (40, "é" + "a" * 38, True),  # exactly 40 bytes
        (10, "😀" * 3, True),  # 3 > 10 // 4, 12 bytes: too big
        (10, "😀😀é", True),  # exactly 10 bytes
    ],
)
@pytest.mark.parametrize("direction", ["inbound", "outbound"])
def test_fast_paths_and_their_boundaries(
    max_bytes: int, data: str, encoded: bool, direction: str, encodes: Callable[[], int]
) -> None:
    too_big = len(data.encode()) > max_bytes
    websocket = a_websocket()
    if direction == "inbound":
        result = MessageSizeLimit(max_bytes).ws_receive(websocket=websocket, data=CountingStr(data))
        assert result == (toolkit.Close(1009, "message too big") if too_big else None)
    else:
        outbound = OutboundSizeLimit(max_bytes).ws_send(websocket=websocket, data=CountingStr(data))
        assert outbound == (toolkit.Close(1011, "internal error") if too_big else None)
    # Outbound encodes once more to report the size of an oversized message.
    assert encodes() == int(encoded) + int(direction == "outbound" and too_big)


@given(data=st.text(), max_bytes=st.integers(min_value=1, max_value=64))
def test_text_is_measured_in_utf8_bytes(data: str, max_bytes: int) -> None:
    too_big = len(data.encode("utf-8", "surrogatepass")) > max_bytes
    websocket = a_websocket()
    assert (MessageSizeLimit(max_bytes).ws_receive(websocket=websocket, data=data) is not None) is too_big
    assert (OutboundSizeLimit(max_bytes).ws_send(websocket=websocket, data=data) is not None) is too_big


@given(size=st.integers(min_value=0, max_value=80), max_bytes=st.integers(min_value=1, max_value=64))
def test_bytes_are_measured_by_length(size: int, max_bytes: int) -> None:
    data = b"\xff" * size  # not UTF-8: never decoded
    websocket = a_websocket()
    assert (MessageSizeLimit(max_bytes).ws_receive(websocket=websocket, data=data) is not None) is (size > max_bytes)
    assert (OutboundSizeLimit(max_bytes).ws_send(websocket=websocket, data=data) is not None) is (size > max_bytes)


def test_size_limit_hooks_are_sync_and_ordered() -> None:
    manager = PluginManager(MessageSizeLimit(8), OutboundSizeLimit(8))
    receive, send = manager.chains.get("ws_receive"), manager.chains.get("ws_send")
    assert receive is not None
    assert send is not None
    assert receive.run_sync is not None  # a sync chain runs without awaiting
    assert send.run_sync is not None
    # Inbound first (measures what the client sent), outbound last (measures what goes out).
    later = Recorder()
    manager.register(later)
    receive, send = manager.chains.get("ws_receive"), manager.chains.get("ws_send")
    assert receive is not None
    assert send is not None
    assert receive.impls[0].plugin_name == "MessageSizeLimit"
    assert send.impls[-1].plugin_name == "OutboundSizeLimit"


class Pad(toolkit.Plugin):
    """Doubles every outgoing text: the outbound limit must measure the result."""

    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> MessageResult:
        return data * 2


async def test_outbound_limit_closes_with_1011_and_sends_nothing_oversized(caplog: pytest.LogCaptureFixture) -> None:
    errors: list[tuple[int, str | None]] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("😀")  # 4 bytes, 8 once padded: fits
        try:
            await websocket.send_text("😀a")  # 5 bytes, 10 once padded: too big
        except WebSocketDisconnect as exc:
            errors.append((exc.code, exc.reason))

    recorder = Recorder()
    app = WebSocketApp(endpoint, plugins=PluginManager(OutboundSizeLimit(8), Pad(), recorder))
    with caplog.at_level(logging.WARNING, logger="toolkit_limits"):
        transport = await run(app)
    assert transport.sent == [
        ACCEPT,
        {"type": "websocket.send", "text": "😀😀"},
        {"type": "websocket.close", "code": 1011, "reason": "internal error"},
    ]
    assert errors == [(1011, "internal error")]
    assert recorder.closes() == [(1011, "internal error", ClosedBy.PLUGIN)]
    [record] = caplog.records
    assert record.getMessage() == "the app sent a 10-byte message, over the 8-byte outbound limit; closing with 1011"
    assert "😀" not in record.getMessage()


# --- RateLimit ----------------------------------------------------------------------------------


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.now


class TimedTransport(Transport):
    """Scripted messages, each delivered at its own time on ``clock``."""

    def __init__(self, clock: FakeClock, timed: list[tuple[float, Message]]) -> None:
        super().__init__([message for _, message in timed])
        self.clock = clock
        self.times = deque(t for t, _ in timed)

    async def receive(self) -> Message:
        if self.times:
            self.clock.now = self.times.popleft()
        return await super().receive()


def rate_app(limit: toolkit.Plugin, received: list[str]) -> WebSocketApp:
    """Records each text and the disconnect ("disconnect CODE REASON") the app receives."""

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                received.append(f"disconnect {message['code']} {message.get('reason', '')}")
                return
            received.append(message["text"])

    return WebSocketApp(endpoint, plugins=PluginManager(limit))


async def run_timed(
    limit: RateLimit, clock: FakeClock, timed: list[tuple[float, str]]
) -> tuple[list[str], TimedTransport]:
    received: list[str] = []
    messages = [(0.0, connect()), *[(t, text(data)) for t, data in timed], (timed[-1][0], disconnect(1000))]
    transport = TimedTransport(clock, messages)
    await rate_app(limit, received)(make_scope(), transport.receive, transport.send)
    return received, transport


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"rate": 0, "burst": 1}, ValueError),
        ({"rate": -1.0, "burst": 1}, ValueError),
        ({"rate": math.nan, "burst": 1}, ValueError),
        ({"rate": math.inf, "burst": 1}, ValueError),
        ({"rate": True, "burst": 1}, TypeError),
        ({"rate": "5", "burst": 1}, TypeError),
        ({"rate": 1, "burst": 0}, ValueError),
        ({"rate": 1, "burst": 2.0}, TypeError),
        ({"rate": 1, "burst": 1, "close_code": 1000}, ValueError),
        ({"rate": 1, "burst": 1, "close_code": 1011}, ValueError),
        ({"rate": 1, "burst": 1, "close_code": 4029}, ValueError),
        ({"rate": 1, "burst": 1, "close_code": 1008.0}, ValueError),
    ],
)
def test_rate_limit_validates_its_arguments(kwargs: dict[str, Any], problem: type[Exception]) -> None:
    with pytest.raises(problem):
        RateLimit(**kwargs)


@pytest.mark.parametrize("code", [1008, 1013])
async def test_burst_then_close_with_the_configured_code(code: int) -> None:
    clock = FakeClock()
    limit = RateLimit(1, 3, close_code=code, clock=clock)
    received, transport = await run_timed(limit, clock, [(5.0, "a"), (5.0, "b"), (5.0, "c"), (5.0, "d"), (5.0, "e")])
    assert received == ["a", "b", "c", f"disconnect {code} rate limit"]
    assert transport.sent[-1] == {"type": "websocket.close", "code": code, "reason": "rate limit"}
    assert transport.incoming == [text("e"), disconnect(1000)]  # nothing read after the close
    assert limit.connections == 0


async def test_tokens_refill_at_rate_up_to_burst() -> None:
    clock = FakeClock()
    limit = RateLimit(2, 2, clock=clock)  # 2 tokens, one back every 0.5 s
    timed = [
        (0.0, "a"),
        (0.0, "b"),  # bucket empty
        (0.5, "c"),  # one token back
        (1.5, "d"),  # two back (capped at burst) ...
        (1.5, "e"),
        (100.0, "f"),  # long idle: still only burst tokens
        (100.0, "g"),
        (100.25, "h"),  # half a token: refused
    ]
    received, _ = await run_timed(limit, clock, timed)
    assert received == ["a", "b", "c", "d", "e", "f", "g", "disconnect 1008 rate limit"]


async def test_a_steady_rate_passes_indefinitely_with_real_looking_timestamps() -> None:
    # Timestamps as time.monotonic gives them (large, not exact in binary): on time is never too early.
    clock = FakeClock()
    start = 86_400.123456789
    for rate, burst in [(10, 1), (3, 2), (1000, 5), (7, 1)]:
        limit = RateLimit(rate, burst, clock=clock)
        timed = [(start + i / rate, f"m{i}") for i in range(300)]
        received, _ = await run_timed(limit, clock, timed)
        assert received == [f"m{i}" for i in range(300)] + ["disconnect 1000 "]


async def test_one_message_too_early_is_refused() -> None:
    clock = FakeClock()
    limit = RateLimit(10, 1, clock=clock)
    received, _ = await run_timed(limit, clock, [(1.0, "a"), (1.1, "b"), (1.199, "c")])
    assert received == ["a", "b", "disconnect 1008 rate limit"]


async def test_buckets_are_per_connection() -> None:
    clock = FakeClock()
    limit = RateLimit(1, 2, clock=clock)
    one, two = a_websocket(), a_websocket()
    for websocket in (one, two):
        websocket.application_state = toolkit.WebSocketState.CONNECTED
    assert limit.ws_receive(websocket=one, data="x") is None
    assert limit.ws_receive(websocket=one, data="x") is None
    assert limit.ws_receive(websocket=one, data="x") == toolkit.Close(1008, "rate limit")
    assert limit.ws_receive(websocket=two, data="x") is None  # the other connection's bucket is full
    assert limit.connections == 2
    limit.ws_close(websocket=one, code=1000, reason="", closed_by=ClosedBy.CLIENT)
    limit.ws_close(websocket=one, code=1000, reason="", closed_by=ClosedBy.CLIENT)  # a second call is harmless
    assert limit.connections == 1
    limit.ws_close(websocket=two, code=1000, reason="", closed_by=ClosedBy.CLIENT)
    assert limit.connections == 0


async def test_one_clock_read_per_message_and_sync_hooks() -> None:
    clock = FakeClock()
    limit = RateLimit(100, 10, clock=clock)
    await run_timed(limit, clock, [(1.0, "a"), (1.0, "b")])
    assert clock.calls == 2
    manager = PluginManager(limit)
    assert manager.chains.get("ws_receive") is not None
    assert manager.chains["ws_receive"].run_sync is not None
    assert manager.hooks_of(limit) == ["ws_close", "ws_receive"]


@pytest.mark.parametrize("ending", ["client", "app close", "app return", "app raise", "rate limit", "cancelled"])
async def test_buckets_are_freed_however_the_connection_ends(ending: str) -> None:
    limit = RateLimit(1, 2, clock=FakeClock())
    recorder = Recorder()
    cancel_scope = anyio.CancelScope()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        assert limit.connections == 1
        if ending == "app close":
            await websocket.close()
        elif ending == "app raise":
            raise LookupError("app bug")
        elif ending == "cancelled":
            cancel_scope.cancel()
            await anyio.sleep(TIMEOUT)  # cancelled here, at once
        elif ending in ("client", "rate limit"):
            await websocket.receive_text()
            await websocket.receive_text()

    incoming = [text("a")]
    if ending == "client":
        incoming += [text("b"), disconnect(4000)]
    elif ending == "rate limit":
        incoming += [text("b"), text("c")]
    app = WebSocketApp(endpoint, plugins=PluginManager(limit, recorder))
    with cancel_scope:
        try:
            await run(app, *incoming)
        except LookupError:
            assert ending == "app raise"
    assert cancel_scope.cancelled_caught is (ending == "cancelled")
    expected = {
        "client": (4000, "", ClosedBy.CLIENT),
        "app close": (1000, "", ClosedBy.APP),
        "app return": (1000, "", ClosedBy.APP),
        "app raise": (1011, "internal error", ClosedBy.SERVER),
        "rate limit": (1008, "rate limit", ClosedBy.PLUGIN),
        "cancelled": (1006, "", ClosedBy.SERVER),
    }
    assert recorder.closes() == [expected[ending]]
    assert limit.connections == 0


async def test_messages_drained_after_the_app_closed_start_no_bucket() -> None:
    # ws_receive still runs for messages the app reads after its close; ws_close has fired by then.
    limit = RateLimit(1, 5, clock=FakeClock())
    seen: list[str] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close(1000)
        message = await websocket.receive()
        seen.append(message["text"])
        assert limit.connections == 0

    await run(WebSocketApp(endpoint, plugins=PluginManager(limit)), text("late"), disconnect())
    assert seen == ["late"]
    assert limit.connections == 0


# --- ConnectionLimit ----------------------------------------------------------------------------


class Peer:
    """One client of an app: the test pushes messages to the app and watches what it sends."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.incoming: deque[Message] = deque()
        self.sent: list[Message] = []
        self.send_error: BaseException | None = None
        self.error: BaseException | None = None
        self.done = False
        self._changed = anyio.Event()
        self._cancel = anyio.CancelScope()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    async def receive(self) -> Message:
        while not self.incoming:
            await self._changed.wait()
        return self.incoming.popleft()

    async def send(self, message: Message) -> None:
        if self.send_error is not None:
            raise self.send_error
        self.sent.append(message)
        self._notify()

    def push(self, message: Message) -> None:
        self.incoming.append(message)
        self._notify()

    async def run(self, app: WebSocketApp) -> None:
        try:
            with self._cancel:
                await app(self.scope, self.receive, self.send)
        except Exception as exc:
            self.error = exc
        finally:
            self.done = True
            self._notify()

    def cancel(self) -> None:
        self._cancel.cancel()

    async def finished(self) -> None:
        await self.until(lambda: self.done)

    @property
    def accepted(self) -> bool:
        return bool(self.sent) and self.sent[0]["type"] == "websocket.accept"

    @property
    def status(self) -> int | None:
        """The HTTP status of a denial sent through the extension, if any."""
        if self.sent and self.sent[0]["type"] == "websocket.http.response.start":
            status: int = self.sent[0]["status"]
            return status
        return None


class Clients:
    """Opens connections to one app, each in its own task."""

    def __init__(self, app: WebSocketApp, task_group: anyio.abc.TaskGroup) -> None:
        self.app = app
        self.task_group = task_group
        self.opened = 0

    async def open(
        self,
        host: str | None = "10.0.0.1",
        *,
        extensions: dict[str, Any] | None = DENIAL_EXTENSION,
        headers: list[tuple[bytes, bytes]] | None = None,
        send_error: BaseException | None = None,
    ) -> Peer:
        """Connect and wait until the app accepted or refused."""
        self.opened += 1
        scope = make_scope(extensions=dict(extensions or {}), headers=headers or [(b"host", b"testserver")])
        scope["client"] = None if host is None else (host, 40000 + self.opened)
        peer = Peer(scope)
        peer.send_error = send_error
        self.task_group.start_soon(peer.run, self.app)
        peer.push(connect())
        await peer.until(lambda: peer.accepted or peer.done)
        return peer

    async def leave(self, peer: Peer, code: int = 1000) -> None:
        peer.push(disconnect(code))
        await peer.finished()


async def hold(websocket: WebSocket) -> None:
    """Accept, then act on each message: "close", "return", "raise", or echo it."""
    try:
        await websocket.accept()
    except WebSocketDenied:
        return
    while True:
        data = await websocket.receive_text()  # WebSocketDisconnect ends the endpoint
        if data == "close":
            await websocket.close(4000, "bye")
            return
        if data == "return":
            return
        if data == "raise":
            raise LookupError("app bug")
        await websocket.send_text(data)


@asynccontextmanager
async def serving(*plugins: object, endpoint: Callable[[WebSocket], Any] = hold) -> AsyncIterator[Clients]:
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as task_group:
            yield Clients(WebSocketApp(endpoint, plugins=PluginManager(*plugins)), task_group)


TOO_MANY: Final = [
    {
        "type": "websocket.http.response.start",
        "status": 429,
        "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"20")],
    },
    {"type": "websocket.http.response.body", "body": b"too many connections", "more_body": False},
]


@pytest.mark.parametrize(
    ("kwargs", "problem", "match"),
    [
        ({}, ValueError, "give max_total, max_per_key"),
        ({"max_total": 0}, ValueError, "at least 1"),
        ({"max_per_key": -1}, ValueError, "at least 1"),
        ({"max_total": 1.0}, TypeError, "must be an int"),
        ({"max_per_key": True}, TypeError, "must be an int"),
        ({"max_total": 3, "key": str}, ValueError, "key is only used with max_per_key"),
    ],
)
def test_connection_limit_validates_its_arguments(kwargs: dict[str, Any], problem: type[Exception], match: str) -> None:
    with pytest.raises(problem, match=match):
        ConnectionLimit(**kwargs)


async def test_global_cap_denies_with_429_and_admits_again_after_a_disconnect() -> None:
    limit = ConnectionLimit(max_total=2)
    async with serving(limit) as clients:
        one = await clients.open("10.0.0.1")
        two = await clients.open("10.0.0.2")
        assert (one.accepted, two.accepted, limit.total) == (True, True, 2)
        three = await clients.open("10.0.0.3")
        await three.finished()
        assert three.sent == TOO_MANY
        assert three.error is None  # the endpoint saw WebSocketDenied
        assert limit.total == 2
        await clients.leave(one)
        assert limit.total == 1
        four = await clients.open("10.0.0.3")
        assert four.accepted
        assert limit.total == 2
        await clients.leave(two)
        await clients.leave(four)
    assert limit.total == 0


async def test_without_the_denial_extension_the_client_gets_a_close_that_means_403() -> None:
    limit = ConnectionLimit(max_total=1)
    async with serving(limit) as clients:
        one = await clients.open()
        refused = await clients.open(extensions={})
        await refused.finished()
        assert refused.sent == [{"type": "websocket.close", "code": 1000, "reason": ""}]
        await clients.leave(one)
    assert limit.total == 0


async def test_per_key_cap_counts_each_client_address_separately() -> None:
    limit = ConnectionLimit(max_per_key=2)
    async with serving(limit) as clients:
        a1 = await clients.open("10.0.0.1")
        a2 = await clients.open("10.0.0.1")
        b1 = await clients.open("10.0.0.2")
        a3 = await clients.open("10.0.0.1")
        await a3.finished()
        assert (a1.accepted, a2.accepted, b1.accepted, a3.status) == (True, True, True, 429)
        assert (limit.count("10.0.0.1"), limit.count("10.0.0.2"), limit.total) == (2, 1, 3)
        await clients.leave(a1)
        assert limit.count("10.0.0.1") == 1
        a4 = await clients.open("10.0.0.1")
        assert a4.accepted
        for peer in (a2, b1, a4):
            await clients.leave(peer)
    assert (limit.total, limit.count("10.0.0.1"), limit.count("10.0.0.2")) == (0, 0, 0)


async def test_both_caps_apply_together() -> None:
    limit = ConnectionLimit(max_total=3, max_per_key=2)
    async with serving(limit) as clients:
        peers = [await clients.open(host) for host in ("10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.3")]
        statuses = [peer.status for peer in peers]
        assert statuses == [None, None, 429, None, 429]  # per key, then in total
        assert limit.total == 3
        for peer in peers:
            if peer.accepted:
                await clients.leave(peer)
    assert limit.total == 0


async def test_unknown_client_is_counted_in_total_but_not_per_key() -> None:
    limit = ConnectionLimit(max_total=3, max_per_key=1)
    async with serving(limit) as clients:
        peers = [await clients.open(None) for _ in range(4)]
        assert [peer.accepted for peer in peers] == [True, True, True, False]
        assert limit.total == 3
        for peer in peers[:3]:
            await clients.leave(peer)
    assert limit.total == 0


@pytest.mark.parametrize("ending", ["client", "app close", "app return", "app raise", "cancelled"])
async def test_a_counted_connection_is_released_once_however_it_ends(ending: str) -> None:
    limit = ConnectionLimit(max_total=1)
    recorder = Recorder()
    async with serving(limit, recorder) as clients:
        peer = await clients.open()
        assert limit.total == 1
        if ending == "client":
            peer.push(disconnect(4001))
        elif ending == "cancelled":
            peer.cancel()
        else:
            peer.push(text(ending.removeprefix("app ")))
        await peer.finished()
        assert limit.total == 0
        assert len(recorder.closes()) == 1
        if ending == "app raise":
            assert isinstance(peer.error, LookupError)
        again = await clients.open()  # the slot is free again
        assert again.accepted
        await clients.leave(again)
    assert limit.total == 0


class DenyAfter(toolkit.Plugin):
    """Denies every connection; trylast and registered after the limit, so it runs after it."""

    @toolkit.hookimpl(trylast=True)
    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> DenialResponse:
        return DenialResponse(403, "no")


class RaiseAfter(toolkit.Plugin):
    @toolkit.hookimpl(trylast=True)
    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> None:
        raise RuntimeError("plugin bug")


class DenyInWrapper:
    """A wrapper that turns the chain's accept into a denial, after every implementation ran."""

    @toolkit.hookimpl(wrapper=True)
    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Generator[None, object, object]:
        yield
        return DenialResponse(451, "wrapped")


@pytest.mark.parametrize(
    ("other", "status"), [(DenyAfter(), 403), (RaiseAfter(), 500), (DenyInWrapper(), 451)], ids=str
)
async def test_a_connection_denied_after_being_counted_is_released(
    other: object, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    counted: list[int] = []

    def key(websocket: WebSocket) -> Hashable:
        counted.append(limit.total)
        return "k"

    limit = ConnectionLimit(max_total=1, max_per_key=1, key=key)
    async with serving(limit, other) as clients:  # among trylast, the first registered runs first
        for _ in range(3):  # the slot is never leaked, so each attempt reaches the other plugin
            peer = await clients.open()
            await peer.finished()
            assert peer.status == status
            assert (limit.total, limit.count("k")) == (0, 0)
    assert counted == [0, 0, 0]  # the limit ran (and counted) before the denial each time
    if isinstance(other, RaiseAfter):
        assert len([r for r in caplog.records if r.name == "toolkit"]) == 3


class HeaderAuth(toolkit.Plugin):
    """An auth gate: the principal comes from a header; no header, 401. Async, as a real one might be."""

    def __init__(self) -> None:
        self.calls = 0

    async def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> DenialResponse | None:
        self.calls += 1
        await anyio.lowlevel.checkpoint()
        user = websocket.headers.get("x-user")
        if user is None:
            return DenialResponse(401, "unauthorized")
        websocket.scope["user"] = user
        return None


class TrylastHeaderAuth(HeaderAuth):
    @toolkit.hookimpl(trylast=True)
    async def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> DenialResponse | None:
        return await super().ws_accept(websocket=websocket, accept=accept)


@pytest.mark.parametrize("order", ["auth first", "limit first", "trylast auth first"])
async def test_per_principal_cap_with_an_auth_gate_in_either_registration_order(order: str) -> None:
    # A plain (or tryfirst) gate runs before the limit whatever the order; a trylast one if registered first.
    auth = TrylastHeaderAuth() if order == "trylast auth first" else HeaderAuth()
    keys: list[str] = []

    def principal(websocket: WebSocket) -> str:
        keys.append(str(websocket.scope["user"]))  # KeyError if the gate had not run: the test would see 500
        return str(websocket.scope["user"])

    limit = ConnectionLimit(max_per_key=1, key=principal)
    plugins = (limit, auth) if order == "limit first" else (auth, limit)
    async with serving(*plugins) as clients:
        alice = await clients.open("10.0.0.1", headers=[(b"x-user", b"alice")])
        alice_again = await clients.open("10.0.0.2", headers=[(b"x-user", b"alice")])
        bob = await clients.open("10.0.0.1", headers=[(b"x-user", b"bob")])
        anonymous = await clients.open("10.0.0.1")
        await anonymous.finished()
        assert (alice.accepted, alice_again.status, bob.accepted, anonymous.status) == (True, 429, True, 401)
        assert keys == ["alice", "alice", "bob"]  # the anonymous connection was never counted
        assert (limit.count("alice"), limit.count("bob"), limit.total) == (1, 1, 2)
        await clients.leave(alice)
        await clients.leave(bob)
    assert limit.total == 0
    assert auth.calls == 4


async def test_a_failing_key_function_denies_with_500_and_counts_nothing(caplog: pytest.LogCaptureFixture) -> None:
    def broken(websocket: WebSocket) -> Hashable:
        raise KeyError("user")

    limit = ConnectionLimit(max_total=5, max_per_key=1, key=broken)
    async with serving(limit) as clients:
        peer = await clients.open()
        await peer.finished()
        assert peer.status == 500
    assert limit.total == 0
    assert any(r.name == "toolkit" and "ConnectionLimit" in r.getMessage() for r in caplog.records)


async def test_a_failed_accept_send_releases_the_slot() -> None:
    limit = ConnectionLimit(max_total=1)
    recorder = Recorder()
    async with serving(limit, recorder) as clients:
        gone = await clients.open(send_error=OSError("client gone"))
        await gone.finished()
        assert gone.sent == []
        assert recorder.closes() == [(1006, "", ClosedBy.CLIENT)]
        assert limit.total == 0
        peer = await clients.open()
        assert peer.accepted
        await clients.leave(peer)
    assert limit.total == 0


class SlowGate(toolkit.Plugin):
    """Lets every connection wait at an await before the limit runs, so the handshakes interleave."""

    async def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> None:
        for _ in range(3):
            await anyio.lowlevel.checkpoint()


async def test_concurrent_handshakes_never_exceed_the_cap() -> None:
    limit = ConnectionLimit(max_total=3)
    async with serving(SlowGate(), limit) as clients:
        peers = [Peer(make_scope(extensions=dict(DENIAL_EXTENSION))) for _ in range(10)]
        for peer in peers:
            clients.task_group.start_soon(peer.run, clients.app)
            peer.push(connect())
        for peer in peers:
            await peer.until(lambda peer=peer: peer.accepted or peer.done)  # type: ignore[misc]
        assert sum(peer.accepted for peer in peers) == 3
        assert sum(peer.status == 429 for peer in peers) == 7
        assert limit.total == 3
        for peer in peers:
            if peer.accepted:
                await clients.leave(peer)
    assert limit.total == 0


def test_the_count_is_taken_without_awaiting() -> None:
    # Check and increment must be atomic: a sync hook has no await between them.
    assert not inspect.iscoroutinefunction(ConnectionLimit.ws_accept)
    assert not inspect.iscoroutinefunction(ConnectionLimit.ws_close)


def test_release_is_idempotent_and_ignores_connections_it_never_counted() -> None:
    limit = ConnectionLimit(max_total=2, max_per_key=2)
    websocket, stranger = a_websocket(), a_websocket()
    assert limit.ws_accept(websocket=websocket, accept=Accept()) is None
    assert limit.ws_accept(websocket=websocket, accept=Accept()) is None  # the same connection counts once
    assert (limit.total, limit.count("127.0.0.1")) == (1, 1)
    limit.ws_close(websocket=stranger, code=1000, reason="", closed_by=ClosedBy.CLIENT)
    assert limit.total == 1
    limit.ws_close(websocket=websocket, code=1000, reason="", closed_by=ClosedBy.CLIENT)
    limit.ws_close(websocket=websocket, code=1000, reason="", closed_by=ClosedBy.CLIENT)
    assert (limit.total, limit.count("127.0.0.1")) == (0, 0)


def test_client_host_is_the_address_the_server_saw() -> None:
    websocket = a_websocket()
    assert client_host(websocket) == "127.0.0.1"
    scope = make_scope()
    del scope["client"]
    assert client_host(WebSocket(scope)) is None


# --- all three together, and the docs -------------------------------------------------------------


async def test_docs_example_runs_and_every_limit_applies() -> None:
    namespace: dict[str, Any] = {"__name__": "docs_limits"}
    source = (ROOT / "docs" / "limits.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", source, flags=re.DOTALL)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/limits.md", "exec"), namespace)  # noqa: S102 - our own documentation
    app: WebSocketApp = namespace["app"]
    limits: ConnectionLimit = namespace["connections"]
    headers = [(b"host", b"testserver"), (b"authorization", b"Bearer alice")]
    scope = make_scope(headers=headers, extensions=dict(DENIAL_EXTENSION))

    transport = await run(app, text("hi"), text("x" * 65_537), scope=dict(scope))
    assert transport.sent[1:] == [{"type": "websocket.send", "text": "hi"}, TOO_BIG]

    flood = await run(app, *[text("x")] * 50, scope=dict(scope))
    assert flood.sent[-1] == {"type": "websocket.close", "code": 1008, "reason": "rate limit"}

    anonymous = await run(app, scope=make_scope(extensions=dict(DENIAL_EXTENSION)))
    assert anonymous.sent[0]["status"] == 401
    assert limits.total == 0
