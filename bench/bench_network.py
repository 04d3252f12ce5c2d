"""Network benchmark: WebSocket echo servers on uvicorn, driven by a real ``websockets`` client.

Five ASGI apps, each served by its own uvicorn process on 127.0.0.1 (so the client and the
server never share a GIL or an event loop), are measured in one run with rounds interleaved:

- ``raw``: a bare ASGI echo, no WebSocket class at all: the baseline;
- ``starlette``: the same echo with ``starlette.websockets.WebSocket`` in a Starlette app;
- ``toolkit``: the same echo with ``toolkit.WebSocketApp``, no plugins;
- ``demo``: ``toolkit.WebSocketApp`` with a demo-like plugin stack (``toolkit_messages`` as plugin
  and channel, ``toolkit_auth`` token and Origin gates, ``toolkit_logging`` at INFO,
  ``toolkit_limits`` size and rate limits), answering each valid chat message;
- ``starlette-json``: the hand-written Starlette equivalent of ``demo``'s per-message work
  (the same pydantic models: validate the JSON, answer with a model's JSON), no plugins.

Two shapes: 1 connection ping-ponging (send, wait for the reply, repeat) and 50 connections
doing so concurrently. The client sends the same JSON chat message to every server. Reported:
messages per second (round trips) and the ratio to ``raw``, and the server's CPU time per message.
bench/README.md explains the method and records the latest figures.

    python bench/bench_network.py            # about 90 s
    python bench/bench_network.py --quick    # about 15 s
    python bench/bench_network.py --check    # exit 1 if a target is missed
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Annotated, Final, Literal

import uvicorn
from _harness import distribution, quantile, spread
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket as StarletteWebSocket
from toolkit_auth import AuthGate, OriginGate, StaticTokens
from toolkit_limits import MessageSizeLimit, RateLimit
from toolkit_logging import ConnectionLogger
from toolkit_messages import Messages
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

import toolkit
from toolkit import ASGIApp, Receive, Scope, Send

HOST: Final = "127.0.0.1"
PATH: Final = "/ws"
TOKEN: Final = "bench-token"  # noqa: S105 (the benchmark's own fixed token)
ORIGIN: Final = "https://chat.example.com"

# --- the messages: the docs' chat example (docs/messages.md) -------------------------------------------


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
INBOUND: TypeAdapter[Say | Join] = TypeAdapter(Inbound)

TEXT: Final = "hello, world: a short chat-sized text message"
#: What the client sends to every server: a valid inbound message, 70 bytes.
PAYLOAD: Final = Say(type="say", text=TEXT).model_dump_json()
#: What the JSON-validating servers answer with; the echo servers send PAYLOAD back.
ANSWER: Final = Said(type="said", room="lobby", text=TEXT).model_dump_json()
INVALID: Final = '{"type":"error","error":"invalid_message"}'

# --- the servers ------------------------------------------------------------------------------------


async def raw_echo(scope: Scope, receive: Receive, send: Send) -> None:
    """An echo in bare ASGI: what every other app adds to."""
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        await send({"type": "websocket.send", "text": message["text"]})


async def starlette_echo(websocket: StarletteWebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(text)


async def toolkit_echo(websocket: toolkit.WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(text)


async def starlette_json(websocket: StarletteWebSocket) -> None:
    """``demo``'s endpoint written by hand for Starlette: validate with pydantic, answer with a model."""
    await websocket.accept()
    room = "lobby"
    validate_json = INBOUND.validate_json
    async for text in websocket.iter_text():
        try:
            message = validate_json(text)
        except ValidationError:
            await websocket.send_text(INVALID)
            continue
        if isinstance(message, Join):
            room = message.room
            await websocket.send_text(Joined(type="joined", room=room).model_dump_json())
        else:
            await websocket.send_text(Said(type="said", room=room, text=message.text).model_dump_json())


def demo_app() -> ASGIApp:
    """``toolkit.WebSocketApp`` with the plugins a typical app registers, each in its documented order."""
    chat = Messages(Inbound, Outbound)

    async def endpoint(websocket: toolkit.WebSocket) -> None:
        await websocket.accept()
        channel = chat.channel(websocket)
        room = "lobby"
        async for message in channel:
            if message.type == "join":
                room = message.room
                await channel.send(Joined(type="joined", room=room))
            else:
                await channel.send(Said(type="said", room=room, text=message.text))

    plugins = toolkit.PluginManager(
        chat,
        MessageSizeLimit(64 * 1024),
        RateLimit(rate=1_000_000, burst=1_000_000),  # never reached: it costs its check, never a close
        AuthGate(StaticTokens({TOKEN: "bench-user"})),
        OriginGate([ORIGIN]),  # registered after AuthGate, so it runs first (docs/auth.md)
        ConnectionLogger(),  # last (docs/logging.md); INFO: an open and a close record per connection
    )
    return toolkit.WebSocketApp(endpoint, plugins=plugins)


@dataclass(frozen=True)
class Server:
    key: str
    title: str
    build: Callable[[], ASGIApp]
    #: The reply to PAYLOAD.
    answer: str
    #: Lowest acceptable ratio of messages/s to raw's, per shape; None: no target.
    target: float | None = None


SERVERS: Final = (
    Server("raw", "raw ASGI echo", lambda: raw_echo, PAYLOAD),
    Server("starlette", "Starlette echo", lambda: Starlette(routes=[WebSocketRoute(PATH, starlette_echo)]), PAYLOAD),
    Server("toolkit", "ws-toolkit echo, no plugins", lambda: toolkit.WebSocketApp(toolkit_echo), PAYLOAD, 0.95),
    Server("demo", "ws-toolkit, demo plugin stack", demo_app, ANSWER, 0.8),
    Server(
        "starlette-json",
        "Starlette + pydantic by hand",
        lambda: Starlette(routes=[WebSocketRoute(PATH, starlette_json)]),
        ANSWER,
    ),
)
BY_KEY: Final = {server.key: server for server in SERVERS}


def serve(key: str, fd: int, ws: str) -> None:
    """The server process: run ``key``'s app with uvicorn on the listening socket inherited as ``fd``."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("toolkit_logging").setLevel(logging.INFO)
    config = uvicorn.Config(
        BY_KEY[key].build(),
        log_config=None,
        log_level="warning",
        access_log=False,
        loop="asyncio",
        http="h11",
        ws=ws,
        ws_ping_interval=None,
        ws_per_message_deflate=False,
        lifespan="off",
    )
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


# --- the server processes ---------------------------------------------------------------------------


class ServerProcess:
    """One app in a uvicorn child process, on a socket this process binds (free port, no startup race)."""

    def __init__(self, server: Server, ws: str) -> None:
        self.server = server
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            sock.listen(1024)
            self.url = f"ws://{HOST}:{sock.getsockname()[1]}{PATH}"
            fd = sock.fileno()
            self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and script)
                [sys.executable, os.path.abspath(__file__), "--serve", server.key, "--fd", str(fd), "--ws", ws],
                pass_fds=(fd,),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
        # Connections queue in the backlog until the child serves them: no polling for readiness.

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far, with nanosecond resolution (Linux)."""
        total = 0
        for path in glob.glob(f"/proc/{self.process.pid}/task/*/schedstat"):
            with contextlib.suppress(OSError), open(path) as stat:
                total += int(stat.read().split()[0])
        return total / 1e9

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> str:
        """Stop the server (graceful, then forced); return what it wrote."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        text = self.output()
        self._log.close()
        return text


# --- the client -------------------------------------------------------------------------------------


@dataclass
class Sample:
    messages: int
    seconds: float
    server_cpu: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


async def open_connection(url: str) -> ClientConnection:
    return await connect(
        url,
        additional_headers={"Authorization": f"Bearer {TOKEN}"},
        origin=Origin(ORIGIN),
        compression=None,
        ping_interval=None,
        proxy=None,
        open_timeout=10,
        close_timeout=10,
    )


async def measure(process: ServerProcess, connections: int, seconds: float) -> Sample:
    """Open ``connections``, check one round trip on each, then ping-pong on all for ``seconds``.

    Only the ping-pong is timed: handshakes and closes are not.
    """
    answer = process.server.answer
    async with asyncio.timeout(seconds + 60):
        conns = await asyncio.gather(*(open_connection(process.url) for _ in range(connections)))
        try:
            for conn in conns:
                await conn.send(PAYLOAD)
                reply = await conn.recv()
                if reply != answer:
                    raise SystemExit(f"{process.server.key}: unexpected reply {reply!r}")
            start = asyncio.Event()
            deadline = 0.0
            counts = [0] * connections

            async def ping_pong(i: int, conn: ClientConnection) -> None:
                await start.wait()
                n = 0
                while time.perf_counter() < deadline:
                    await conn.send(PAYLOAD)
                    if await conn.recv() != answer:
                        raise SystemExit(f"{process.server.key}: unexpected reply")
                    n += 1
                counts[i] = n

            tasks = [asyncio.create_task(ping_pong(i, conn)) for i, conn in enumerate(conns)]
            await asyncio.sleep(0)  # every task waits on `start`
            cpu = process.cpu_seconds()
            began = time.perf_counter()
            deadline = began + seconds
            start.set()
            await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - began
            return Sample(sum(counts), elapsed, process.cpu_seconds() - cpu)
        finally:
            await asyncio.gather(*(conn.close() for conn in conns), return_exceptions=True)


# --- rounds and statistics --------------------------------------------------------------------------


@dataclass
class Series:
    server: Server
    samples: list[Sample] = field(default_factory=list)

    def rates(self) -> list[float]:
        return [s.rate for s in self.samples]

    def cpu_per_message(self) -> list[float]:
        return [s.server_cpu / s.messages for s in self.samples]

    def cpu_share(self) -> list[float]:
        return [s.server_cpu / s.seconds for s in self.samples]


@dataclass
class Shape:
    connections: int
    series: list[Series]

    def ratios(self, key: str, base: str = "raw") -> list[float]:
        """Per-round paired ratios of messages/s, ``key`` over ``base``."""
        by_key = {s.server.key: s for s in self.series}
        return [a / b for a, b in zip(by_key[key].rates(), by_key[base].rates(), strict=True)]

    def ratio(self, key: str, base: str = "raw") -> float:
        """The ratio of the medians of messages/s (the figure the targets are checked against)."""
        by_key = {s.server.key: s for s in self.series}
        return statistics.median(by_key[key].rates()) / statistics.median(by_key[base].rates())

    def cost(self, key: str, base: str = "raw") -> float:
        """The ratio of the medians of server CPU time per message."""
        by_key = {s.server.key: s for s in self.series}
        return statistics.median(by_key[key].cpu_per_message()) / statistics.median(by_key[base].cpu_per_message())


@dataclass
class Run:
    shapes: list[Shape]
    rounds: int = 0
    #: What a server logged that it should not have; the run stops at the first.
    problems: list[str] = field(default_factory=list)


@contextlib.contextmanager
def server_processes(servers: tuple[Server, ...], ws: str, problems: list[str]) -> Iterator[list[ServerProcess]]:
    """One fresh process per server, all started at once; stopped on exit, their problems collected."""
    processes: list[ServerProcess] = []
    try:
        for server in servers:
            processes.append(ServerProcess(server, ws))
        yield processes
    finally:
        for process in processes:
            text = process.stop()
            if "Traceback" in text or "ERROR" in text or "WARNING" in text:
                problems.append(f"server {process.server.key} logged problems:\n{text[-3000:]}")


async def run(ws: str, shapes: list[int], seconds: float, measure_seconds: float, min_rounds: int) -> Run:
    """Interleaved rounds until ``seconds`` have passed (and at least ``min_rounds``).

    Every round starts fresh server processes: the same app in two processes can differ by 20%
    in CPU time per message for the whole life of the process (where the scheduler puts it, next
    to what), so a process per app for the whole run would measure luck. Per round, the luck is
    drawn again and the medians over rounds average it out.
    """
    progress = Run([Shape(n, [Series(server) for server in SERVERS]) for n in shapes])
    deadline = time.perf_counter() + seconds
    while progress.rounds < min_rounds or (time.perf_counter() < deadline and progress.rounds < 1000):
        with server_processes(SERVERS, ws, progress.problems) as processes:
            for process in processes:  # untimed: the server starts, every path runs once
                await measure(process, 1, 0.1)
            for shape in progress.shapes:
                # Rotate the order every round: no server always runs first, or right after the same neighbour.
                order = list(zip(processes, shape.series, strict=True))
                shift = progress.rounds % len(order)
                for process, series in order[shift:] + order[:shift]:
                    series.samples.append(await measure(process, shape.connections, measure_seconds))
        if progress.problems:
            break
        progress.rounds += 1
    return progress


# --- the report -------------------------------------------------------------------------------------


def report(outcome: Run, ws: str, elapsed: float, measure_seconds: float) -> bool:
    print(
        f"ws-toolkit {distribution('ws-toolkit')}, Starlette {distribution('starlette')}, "
        f"uvicorn {distribution('uvicorn')} ({ws}, h11, asyncio), websockets {distribution('websockets')} client; "
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs; "
        f"{outcome.rounds} interleaved rounds, fresh servers each, {measure_seconds:g} s per server and shape; "
        f"{elapsed:.0f} s"
    )
    ok = True
    for shape in outcome.shapes:
        noun = "connection" if shape.connections == 1 else "concurrent connections"
        print(f"\n{shape.connections} {noun}, ping-pong ({len(PAYLOAD)}-byte JSON message, reply awaited)")
        header = (
            f"{'server':<32} {'msgs/s':>16} {'ratio':>6} {'p10-p90':>11} "
            f"{'server µs/msg':>16} {'cost':>5} {'srv CPU':>7} {'target':>7} result"
        )
        print(header)
        print("-" * len(header))
        for series in shape.series:
            key = series.server.key
            rates, cpu = series.rates(), series.cpu_per_message()
            paired = shape.ratios(key)
            ratio = shape.ratio(key)
            target = series.server.target
            verdict = ""
            if target is not None:
                met = ratio >= target
                ok &= met
                verdict = "met" if met else "MISSED"
            print(
                f"{series.server.title:<32} {statistics.median(rates):>8,.0f} {spread(rates):>7} "
                f"{ratio:>6.2f} {quantile(paired, 0.1):>5.2f}-{quantile(paired, 0.9):<5.2f} "
                f"{statistics.median(cpu) * 1e6:>8.1f} {spread(cpu):>7} {shape.cost(key):>5.2f} "
                f"{statistics.median(series.cpu_share()):>7.0%} "
                f"{'>= ' + format(target, '.2f') if target is not None else '':>7} {verdict}"
            )
        print(
            f"demo stack against the hand-written Starlette + pydantic server: "
            f"{shape.ratio('demo', 'starlette-json'):.2f} of its msgs/s, "
            f"{shape.cost('demo', 'starlette-json'):.2f}x its server CPU per message"
        )
    print(
        "\nmsgs/s: median round trips per second, ± half the interquartile range; ratio: of the medians, to raw "
        "ASGI; p10-p90: of the per-round paired ratios; server µs/msg: the server process's CPU time per round "
        "trip; cost: its ratio to raw's; srv CPU: share of one core the server used."
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a short run (fewer, shorter rounds)")
    parser.add_argument("--seconds", type=float, help="time budget for the rounds (default 90, --quick 5)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument(
        "--ws", default="websockets-sansio", choices=["websockets-sansio", "wsproto"], help="uvicorn's implementation"
    )
    parser.add_argument("--connections", type=int, default=50, help="connections in the concurrent shape")
    parser.add_argument("--serve", choices=list(BY_KEY), help=argparse.SUPPRESS)
    parser.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.serve is not None:
        serve(args.serve, args.fd, args.ws)
        return 0
    if not os.path.isdir("/proc/self/task"):
        print("this benchmark reads server CPU time from /proc: Linux only", file=sys.stderr)
        return 2

    seconds = args.seconds if args.seconds is not None else (5.0 if args.quick else 90.0)
    measure_seconds = 0.2 if args.quick else 0.5
    min_rounds = 3 if args.quick else 5
    start = time.perf_counter()
    outcome = asyncio.run(run(args.ws, [1, args.connections], seconds, measure_seconds, min_rounds))
    if outcome.problems:
        print("\n".join(outcome.problems), file=sys.stderr)
        return 1
    ok = report(outcome, args.ws, time.perf_counter() - start, measure_seconds)
    if args.check and not ok:
        print("a target was missed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
