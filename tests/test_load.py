"""Load: 1,000 concurrent connections, 5% of them hostile, against a real uvicorn server and a full plugin stack.

The app is a small chat endpoint with the plugins a real deployment registers:
``toolkit_messages`` (plugin and channel, strict policies), ``toolkit_auth`` (a token gate and
an Origin allow-list), ``toolkit_logging`` at INFO, and ``toolkit_limits`` (size, rate and
connection caps). The server is uvicorn in a thread of this process (tests/server.py), so the
test can read the plugins' and the server's state directly; the client is ``websockets``.

All connections are opened and hold one exchange each before any of them goes on, so that
many are open at once; then the healthy ones pipeline their messages while the hostile ones
misbehave. The test checks that every healthy connection gets every reply, in order; that each
hostile one gets the close code or HTTP status that docs/close-codes.md gives it; that the logs
pair each connection's open and close records with the right code; and that once everyone has
left, no connection, task, plugin state or memory is left behind.

``WS_TOOLKIT_LOAD_CONNECTIONS`` changes the number of connections (default 1,000; at least 20).
Every wait is bounded; the whole test is bounded by ``LOAD_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Final, Literal

import pytest
from pydantic import BaseModel, Field
from toolkit_auth import AuthGate, OriginGate, StaticTokens
from toolkit_limits import ConnectionLimit, MessageSizeLimit, RateLimit
from toolkit_logging import ConnectionLogger
from toolkit_messages import Messages
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

import toolkit
from tests.server import WS_IMPLEMENTATIONS, LiveServer, run_server, wait_until
from tests.test_server import SANSIO_DENIAL_NOISE
from toolkit import ASGIApp, Receive, Scope, Send, WebSocket, WebSocketDenied

pytestmark = [pytest.mark.server, pytest.mark.anyio]

CONNECTIONS: Final = int(os.environ.get("WS_TOOLKIT_LOAD_CONNECTIONS", "1000"))
#: One connection in this many is hostile (5%).
HOSTILE_EVERY: Final = 20
#: Messages each healthy connection pipelines after its first exchange.
MESSAGES: Final = 10
#: Bound on the whole test body.
LOAD_TIMEOUT: Final = 120.0
#: Bound on one client step (a handshake queued behind hundreds of others, a reply under load).
STEP: Final = 30.0
#: Handshakes in flight at once: below the server's listen backlog (128 in tests/server.py).
HANDSHAKES: Final = 64

TOKEN: Final = "alice-token"  # tests/conftest.py audits every log record for these two
WRONG_TOKEN: Final = "wrong-token"
#: The logger the logging plugin writes to in this test.
CONNECTION_LOG: Final = "tests.test_load.connections"
PLUGIN_LOGGERS: Final = ("toolkit", "toolkit_auth", "toolkit_limits", "toolkit_logging", "toolkit_messages")
ORIGIN: Final = "https://chat.example.com"
MAX_BYTES: Final = 4096
BURST: Final = 32  # a healthy connection sends 1 + MESSAGES at once: well within the burst
FLOOD: Final = 300


#: What uvicorn logs (at ERROR, with a traceback) for an invalid UTF-8 text frame, before it closes with 1007.
INVALID_UTF8_NOISE: Final = "uvicorn.error: Invalid UTF-8 sequence received from client."


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the websockets client needs asyncio


# --- the app ----------------------------------------------------------------------------------------


class Say(BaseModel):
    type: Literal["say"]
    text: str = Field(min_length=1, max_length=500)


class Join(BaseModel):
    type: Literal["join"]
    room: str


class Said(BaseModel):
    type: Literal["said"]
    room: str
    text: str


class Joined(BaseModel):
    type: Literal["joined"]
    room: str


Inbound = Annotated[Say | Join, Field(discriminator="type")]
Outbound = Annotated[Said | Joined, Field(discriminator="type")]


@dataclass
class Stack:
    """The plugins that hold per-connection state, kept so the test can read it, and the app.

    (``Messages`` holds none: it hands models to the channel through context variables.)
    """

    auth: AuthGate[str]
    rate: RateLimit
    connections: ConnectionLimit
    logger: ConnectionLogger
    app: ASGIApp

    def open_logged(self) -> int:
        """Connections the logging plugin holds state for."""
        return self.logger.open_connections


def build_stack() -> Stack:
    chat = Messages(Inbound, Outbound, on_invalid="close", on_malformed="close")
    auth = AuthGate(StaticTokens({TOKEN: "alice"}))
    rate = RateLimit(rate=1, burst=BURST)
    connections = ConnectionLimit(max_total=CONNECTIONS + 10)
    logger = ConnectionLogger(logging.getLogger(CONNECTION_LOG))

    async def endpoint(websocket: WebSocket) -> None:
        try:
            await websocket.accept()
        except WebSocketDenied:
            return
        channel = chat.channel(websocket)
        room = "lobby"
        async for message in channel:
            if message.type == "join":
                room = message.room
                await channel.send(Joined(type="joined", room=room))
            else:
                await channel.send(Said(type="said", room=room, text=message.text))

    # In the documented orders: the gates before the limit, OriginGate after AuthGate, the logger last.
    plugins = toolkit.PluginManager(
        chat, MessageSizeLimit(MAX_BYTES), rate, auth, OriginGate([ORIGIN]), connections, logger
    )
    app = toolkit.WebSocketApp(endpoint, plugins=plugins)
    return Stack(auth, rate, connections, logger, app)


class LoopProbe:
    """Forwards to ``app`` and remembers the server's event loop, to count its tasks from there."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.loop = asyncio.get_running_loop()
        await self.app(scope, receive, send)

    async def tasks(self) -> int:
        """How many tasks the server's loop has, counted on that loop."""
        assert self.loop is not None

        async def count() -> int:
            return len(asyncio.all_tasks())

        future = asyncio.run_coroutine_threadsafe(count(), self.loop)
        async with asyncio.timeout(STEP):
            return await asyncio.wrap_future(future)


# --- the clients ------------------------------------------------------------------------------------


def said(i: int, k: int) -> str:
    return Said(type="said", room=f"room-{i}", text=f"{i}:{k}").model_dump_json()


def joined(i: int) -> str:
    return Joined(type="joined", room=f"room-{i}").model_dump_json()


@dataclass(frozen=True)
class Kind:
    """What a client does after its first exchange, and what the server must answer."""

    name: str
    #: Close code and reason the server must send (reason None: not checked); None if denied.
    close: tuple[int, str | None] | None = None
    #: HTTP status of the denial; None if accepted.
    status: int | None = None
    token: str | None = TOKEN
    origin: str = ORIGIN
    #: The hostile act, after the first exchange.
    act: Callable[[ClientConnection], Awaitable[None]] | None = None


async def send_text(conn: ClientConnection, data: str | bytes, *, text: bool = True) -> None:
    await conn.send(data, text=text)


async def flood(conn: ClientConnection) -> None:
    for k in range(FLOOD):
        try:
            await conn.send(Say(type="say", text=f"flood {k}").model_dump_json())
        except ConnectionClosed:
            return  # closed mid-flood


HEALTHY: Final = Kind("healthy", close=(1000, ""))
INVALID_UTF8: Final = Kind(
    "invalid UTF-8", (1007, None), act=lambda c: send_text(c, b'{"type":"say","text":"\xff\xfe"}')
)
HOSTILE: Final = (
    Kind("malformed JSON", (1003, "invalid JSON"), act=lambda c: send_text(c, '{"type":"say","text":"unterminated')),
    INVALID_UTF8,
    Kind("binary frame", (1003, "unsupported data"), act=lambda c: send_text(c, b"{}", text=False)),
    Kind("schema-invalid", (1008, "invalid message"), act=lambda c: send_text(c, '{"type":"say","text":""}')),
    Kind(
        "oversized",
        (1009, "message too big"),
        act=lambda c: send_text(c, '{"type":"say","text":"' + "x" * MAX_BYTES + '"}'),
    ),
    Kind("flood", (1008, "rate limit"), act=flood),
    Kind("wrong Origin", status=403, origin="https://evil.example.com"),
    Kind("wrong token", status=401, token=WRONG_TOKEN),
    Kind("no token", status=401, token=None),
)


def kind_of(i: int) -> Kind:
    if i % HOSTILE_EVERY != HOSTILE_EVERY - 1:
        return HEALTHY
    return HOSTILE[(i // HOSTILE_EVERY) % len(HOSTILE)]


@dataclass
class Outcome:
    i: int
    kind: Kind
    status: int | None = None
    close: tuple[int, str] | None = None
    replies: list[str | bytes] = field(default_factory=list)
    #: What went wrong on the client's side, if anything.
    error: str | None = None


@dataclass
class Barrier:
    """Every client checks in after its handshake and first exchange; they go on together."""

    expected: int
    arrived: int = 0
    all_in: asyncio.Event = field(default_factory=asyncio.Event)
    go: asyncio.Event = field(default_factory=asyncio.Event)

    def arrive(self) -> None:
        self.arrived += 1
        if self.arrived == self.expected:
            self.all_in.set()

    async def check_in(self) -> None:
        self.arrive()
        async with asyncio.timeout(LOAD_TIMEOUT):
            await self.go.wait()


async def recv(conn: ClientConnection) -> str | bytes:
    async with asyncio.timeout(STEP):
        return await conn.recv()


async def until_close(conn: ClientConnection, outcome: Outcome) -> None:
    """Collect messages until the server's close; record its code and reason."""
    for _ in range(FLOOD + 2):
        try:
            outcome.replies.append(await recv(conn))
        except ConnectionClosed as exc:
            frame = exc.rcvd
            outcome.close = None if frame is None else (frame.code, frame.reason)
            return
    outcome.error = "no close after every message was answered"


async def client(url: str, i: int, handshakes: asyncio.Semaphore, barrier: Barrier) -> Outcome:
    kind = kind_of(i)
    outcome = Outcome(i, kind)
    headers = {} if kind.token is None else {"Authorization": f"Bearer {kind.token}"}
    conn: ClientConnection | None = None
    checked_in = False
    try:
        async with handshakes:
            try:
                conn = await connect(
                    f"{url}?id={i}",
                    additional_headers=headers,
                    origin=Origin(kind.origin),
                    compression=None,
                    ping_interval=None,
                    proxy=None,
                    open_timeout=STEP,
                    close_timeout=STEP,
                )
            except InvalidStatus as exc:
                outcome.status = exc.response.status_code
        if conn is not None:
            await conn.send(Join(type="join", room=f"room-{i}").model_dump_json())
            outcome.replies.append(await recv(conn))
        checked_in = True
        await barrier.check_in()
        if conn is None:
            return outcome
        if kind.act is not None:
            await kind.act(conn)
            await until_close(conn, outcome)
            return outcome
        for k in range(MESSAGES):  # pipelined: the server queues them
            await conn.send(Say(type="say", text=f"{i}:{k}").model_dump_json())
        for _ in range(MESSAGES):
            outcome.replies.append(await recv(conn))
        await conn.close()
        outcome.close = (conn.close_code or 0, conn.close_reason or "")
    except Exception as exc:  # reported per connection, asserted below with every other outcome
        outcome.error = f"{type(exc).__name__}: {exc}"
    finally:
        if not checked_in:
            barrier.arrive()  # the others must not wait for a client that failed
        if conn is not None:
            await conn.close()
    return outcome


def problems(outcome: Outcome, ws: str) -> str | None:
    """What is wrong with one connection's outcome on uvicorn's ``ws`` implementation, or None."""
    kind, i = outcome.kind, outcome.i
    if outcome.error is not None:
        return outcome.error
    if kind.status is not None:
        return None if outcome.status == kind.status else f"status {outcome.status}, expected {kind.status}"
    if outcome.status is not None:
        return f"denied with {outcome.status}"
    assert kind.close is not None
    code, reason = kind.close
    if kind is INVALID_UTF8 and ws == "wsproto":
        # uvicorn's wsproto implementation drops the TCP connection without a close frame (the app
        # is told 1007, as if the client had closed with it): the client sees no code.
        return None if outcome.close is None and outcome.replies == [joined(i)] else f"closed with {outcome.close}"
    if outcome.close is None or outcome.close[0] != code or (reason is not None and outcome.close[1] != reason):
        return f"closed with {outcome.close}, expected {kind.close}"
    if kind is HEALTHY:
        expected = [joined(i)] + [said(i, k) for k in range(MESSAGES)]
        return None if outcome.replies == expected else f"replies {outcome.replies!r}"
    if kind.name == "flood":
        # The bucket's burst, less the join, plus what refilled during the flood; every one answered.
        if not BURST - 1 <= len(outcome.replies) - 1 <= BURST + 10:
            return f"{len(outcome.replies)} replies to a flood"
        flooded = [Said(type="said", room=f"room-{i}", text=f"flood {k}").model_dump_json() for k in range(FLOOD)]
        return None if outcome.replies[1:] == flooded[: len(outcome.replies) - 1] else "wrong replies to a flood"
    return None if outcome.replies == [joined(i)] else f"replies {outcome.replies!r}"


# --- state and memory -------------------------------------------------------------------------------


@contextlib.contextmanager
def enough_file_descriptors(connections: int) -> Iterator[None]:
    """Raise the soft limit on open files (within the hard limit) for both ends of every connection."""
    needed = 2 * connections + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.fail(f"{needed} file descriptors needed, hard limit {hard}: set WS_TOOLKIT_LOAD_CONNECTIONS lower")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@dataclass(frozen=True)
class ConnectionRecord:
    event: str
    conn_id: str
    query: str | None
    code: int | None
    status: int | None


# Log records: pytest keeps every record of a test for its report (from non-propagating loggers too),
# which would be thousands of records, some with tracebacks, in the memory this test measures. So the
# records this test expects are read by logger filters, which then drop them before any handler.


class ConnectionRecords(logging.Filter):
    """Reads the ``ws_*`` fields this test checks from the logging plugin's records, then drops them.

    As no handler sees these records, it also does the credential audit of tests/conftest.py.
    """

    def __init__(self) -> None:
        super().__init__()
        self.records: list[ConnectionRecord] = []
        self.leaks = 0

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        text = record.getMessage() + repr(fields)
        self.leaks += TOKEN in text or WRONG_TOKEN in text
        self.records.append(
            ConnectionRecord(
                fields["ws_event"],
                fields["ws_conn_id"],
                fields.get("ws_query"),
                fields.get("ws_code"),
                fields.get("ws_status"),
            )
        )
        return False


@pytest.fixture
def connection_records() -> Iterator[ConnectionRecords]:
    """The logging plugin's records; it and the plugins' loggers at INFO, as deployed.

    (tests/conftest.py sets them to DEBUG for the session, where toolkit_auth logs every denial.)
    """
    capture = ConnectionRecords()
    loggers = [logging.getLogger(name) for name in (CONNECTION_LOG, *PLUGIN_LOGGERS)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.INFO)
    loggers[0].addFilter(capture)
    try:
        yield capture
    finally:
        loggers[0].removeFilter(capture)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class ServerNoise(logging.Filter):
    """Counts and drops uvicorn's records that this test expects, all others pass."""

    EXPECTED: Final = frozenset({SANSIO_DENIAL_NOISE, INVALID_UTF8_NOISE})

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        text = f"{record.name}: {record.getMessage().strip()}"
        if text not in self.EXPECTED:
            return True
        self.counts[text] = self.counts.get(text, 0) + 1
        return False


@pytest.fixture
def server_noise() -> Iterator[ServerNoise]:
    """uvicorn at WARNING (it logs two INFO records per connection), its expected noise dropped and counted."""
    logger = logging.getLogger("uvicorn.error")
    noise = ServerNoise()
    level = logger.level
    logger.setLevel(logging.WARNING)
    logger.addFilter(noise)
    try:
        yield noise
    finally:
        logger.removeFilter(noise)
        logger.setLevel(level)


def live_websockets() -> int:
    """How many ``toolkit.WebSocket`` objects are alive."""
    gc.collect()
    return sum(isinstance(obj, toolkit.WebSocket) for obj in gc.get_objects())


def rss_mib(field_name: str) -> float:
    """A ``/proc/self/status`` memory figure (VmRSS, VmHWM) in MiB; 0 where there is no /proc."""
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def check_connection_records(records: list[ConnectionRecord], kinds: list[Kind]) -> None:
    """One open and one close record per accepted connection, with its close code; one denial per denied one."""
    ids: dict[str, int] = {}
    opened: dict[int, int] = {}
    closes: dict[int, list[int | None]] = {}
    denials: dict[int, list[int | None]] = {}
    for record in records:
        if record.event in ("open", "denial"):
            assert record.query is not None
            i = int(record.query.removeprefix("id="))
            if record.event == "open":
                ids[record.conn_id] = i
                opened[i] = opened.get(i, 0) + 1
            else:
                denials.setdefault(i, []).append(record.status)
    for record in records:
        if record.event == "close":
            closes.setdefault(ids[record.conn_id], []).append(record.code)
    assert opened == {i: 1 for i, kind in enumerate(kinds) if kind.close is not None}
    assert closes == {i: [kind.close[0]] for i, kind in enumerate(kinds) if kind.close is not None}
    assert denials == {i: [kind.status] for i, kind in enumerate(kinds) if kind.status is not None}


# --- the test ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wave:
    accepted: int
    denied: int
    #: Seconds until every client had connected (or been denied) and had its first exchange.
    opened: float
    #: Seconds until every client was done.
    seconds: float
    #: Allocated memory blocks (``sys.getallocatedblocks``) and RSS (MiB) held while all were open.
    blocks: int
    rss: float


@dataclass(frozen=True)
class Harness:
    server: LiveServer
    stack: Stack
    probe: LoopProbe
    records: ConnectionRecords
    noise: ServerNoise
    #: The server's tasks at rest.
    tasks: int
    #: ``toolkit.WebSocket`` objects alive before (other tests in the session may keep some).
    websockets: int


async def wave(harness: Harness) -> Wave:
    """All the clients at once, and every check of what they got and what is left."""
    server, stack, probe, records, noise = harness.server, harness.stack, harness.probe, harness.records, harness.noise
    url = server.url + "/ws"
    kinds = [kind_of(i) for i in range(CONNECTIONS)]
    accepted = sum(kind.status is None for kind in kinds)
    gc.collect()
    blocks, rss = sys.getallocatedblocks(), rss_mib("VmRSS")
    started = time.perf_counter()
    barrier = Barrier(CONNECTIONS)
    handshakes = asyncio.Semaphore(HANDSHAKES)
    clients = [asyncio.create_task(client(url, i, handshakes, barrier)) for i in range(CONNECTIONS)]
    try:
        await barrier.all_in.wait()
        opened = time.perf_counter() - started
        blocks, rss = sys.getallocatedblocks() - blocks, rss_mib("VmRSS") - rss
        # Everyone is connected (or denied) and has had one exchange: the state the plugins hold.
        assert stack.connections.total == accepted
        assert stack.auth.open_connections == accepted
        assert stack.rate.connections == accepted
        await wait_until(lambda: stack.open_logged() == accepted, STEP, "the denied connections' ws_close")
        await wait_until(
            lambda: len(server.server.server_state.connections) == accepted, STEP, "the denied connections to end"
        )
        barrier.go.set()
        outcomes = await asyncio.gather(*clients)
    finally:
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
    seconds = time.perf_counter() - started

    wrong = {o.i: (o.kind.name, p) for o in outcomes if (p := problems(o, server.ws)) is not None}
    assert not wrong, f"{len(wrong)} connections went wrong: {dict(list(wrong.items())[:10])}"
    await server.wait_idle(STEP)
    assert stack.connections.total == 0
    assert stack.auth.open_connections == 0
    assert stack.rate.connections == 0
    assert stack.open_logged() == 0
    assert await probe.tasks() == harness.tasks
    assert live_websockets() <= harness.websockets
    assert [f"{r.name}: {r.getMessage()}" for r in server.logs.take(logging.ERROR)] == []
    if server.ws == "websockets-sansio":
        assert noise.counts.get(INVALID_UTF8_NOISE, 0) == kinds.count(INVALID_UTF8)
    noise.counts.clear()
    check_connection_records(records.records, kinds)
    assert records.leaks == 0
    records.records.clear()
    return Wave(accepted, CONNECTIONS - accepted, opened, seconds, blocks, rss)


@pytest.mark.parametrize("ws", WS_IMPLEMENTATIONS)
async def test_a_thousand_connections_with_hostile_ones_leave_nothing_behind(
    ws: str, connection_records: ConnectionRecords, server_noise: ServerNoise
) -> None:
    assert CONNECTIONS >= HOSTILE_EVERY, "WS_TOOLKIT_LOAD_CONNECTIONS must be at least 20"
    stack = build_stack()
    probe = LoopProbe(stack.app)
    with (
        enough_file_descriptors(CONNECTIONS),
        run_server(probe, ws=ws, access_log=False, shutdown_timeout=10.0) as server,
    ):
        async with asyncio.timeout(LOAD_TIMEOUT):
            # Warm up (imports, pydantic and logging caches), so the baseline holds what stays anyway.
            alone = Barrier(1)
            alone.go.set()
            warm = await client(server.url + "/ws", 0, asyncio.Semaphore(1), alone)
            assert problems(warm, ws) is None, problems(warm, ws)
            await server.wait_idle(STEP)
            tasks = await probe.tasks()
            server.logs.take()
            server_noise.counts.clear()
            connection_records.records.clear()
            gc.collect()
            baseline = sys.getallocatedblocks()
            harness = Harness(server, stack, probe, connection_records, server_noise, tasks, live_websockets())
            first = await wave(harness)
            gc.collect()
            after_first = sys.getallocatedblocks()
            # The same again: caches that grew in the first wave (pydantic-core's string cache, dicts
            # sized for 1,000 connections) stay as they are, so any growth now is a leak.
            second = await wave(harness)
            gc.collect()
            after_second = sys.getallocatedblocks()
    print(
        f"\n{ws}: {CONNECTIONS} connections ({first.accepted} accepted, {first.denied} denied), twice; "
        f"all open after {first.opened:.1f} s / {second.opened:.1f} s, done after {first.seconds:.1f} s / "
        f"{second.seconds:.1f} s; held while open: {first.blocks:,} memory blocks, RSS +{first.rss:.0f} MiB "
        f"(both ends; RSS grows only where earlier tests freed no memory to reuse); blocks left over the "
        f"baseline: {after_first - baseline:,} after the first wave, {after_second - baseline:,} after the second; "
        f"peak RSS {rss_mib('VmHWM'):.0f} MiB"
    )
    assert first.blocks > 10 * first.accepted  # the measurement sees the connections
    assert after_first - baseline < first.blocks // 10
    # A leak of one object per connection is over this (measured noise: up to about 300 blocks).
    assert after_second - after_first < max(first.accepted // 2, 300)
