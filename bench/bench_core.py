"""In-process benchmark: ``toolkit.WebSocket`` against ``starlette.websockets.WebSocket``.

Both run the same echo endpoint over the same in-memory ASGI transport
(pre-built ``websocket.receive`` messages in, ``send`` discards), in one
process, with rounds interleaved so that drift (CPU frequency, other load)
hits both sides alike. bench/README.md explains the method and records the
latest figures.

    python bench/bench_core.py            # about 40 s
    python bench/bench_core.py --quick    # a few seconds
    python bench/bench_core.py --check    # exit 1 if a target is missed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import starlette.websockets
from _harness import SCOPE, distribution, ns, quantile, spread, timed, timed_floor, transport

import toolkit
from toolkit import Message, Receive, Scope, Send

# --- what is measured -----------------------------------------------------------------------------


class EchoSocket(Protocol):
    """The part of the WebSocket API the endpoints use; both implementations have it."""

    async def accept(self) -> None: ...
    async def receive_text(self) -> str: ...
    async def send_text(self, data: str) -> None: ...
    async def receive_json(self) -> Any: ...
    async def send_json(self, data: Any) -> None: ...


#: Runs ``n`` messages through an accepted socket.
Endpoint = Callable[[EchoSocket, int], Awaitable[None]]
#: Builds a socket over a transport.
Factory = Callable[[Scope, Receive, Send], EchoSocket]


async def text_echo(ws: EchoSocket, n: int) -> None:
    for _ in range(n):
        await ws.send_text(await ws.receive_text())


async def json_echo(ws: EchoSocket, n: int) -> None:
    for _ in range(n):
        await ws.send_json(await ws.receive_json())


class NoOp(toolkit.Plugin):
    """A plugin that looks at every message and keeps it: the cheapest possible hook."""

    def ws_receive(self, *, websocket: toolkit.WebSocket, data: str | bytes) -> None:
        return None

    def ws_send(self, *, websocket: toolkit.WebSocket, data: str | bytes) -> None:
        return None


class OneHook(toolkit.Plugin):
    """One plain-``def`` ``ws_receive`` that keeps the message: one hook call per echoed message."""

    def ws_receive(self, *, websocket: toolkit.WebSocket, data: str | bytes) -> None:
        return None


TEXT = "hello, world: a short chat-sized text message"

#: A chat-style event, 1 KB as compact UTF-8 JSON, with the usual mix of types and some non-ASCII.
JSON_OBJECT: dict[str, Any] = {
    "id": 123456789,
    "type": "chat.message",
    "room": "general",
    "author": {"id": 42, "name": "Zoë Müller", "roles": ["member", "moderator"], "online": True},
    "text": "Hello everyone — the deploy finished at 14:02 UTC; p95 latency is back under 120 ms. Thanks!",
    "sent_at": "2024-05-17T14:02:33.512Z",
    "edited": False,
    "reply_to": None,
    "mentions": [{"id": 7, "name": "alice"}, {"id": 9, "name": "bob"}, {"id": 13, "name": "carol"}],
    "reactions": {"👍": 12, "🎉": 4, "❤️": 2},
    "attachments": [
        {
            "kind": "image",
            "url": "https://cdn.example.com/u/42/screenshot-2024-05-17.png",
            "width": 1280,
            "height": 720,
            "bytes": 183422,
        }
    ],
    "metrics": {"p50_ms": 38.5, "p95_ms": 117.25, "p99_ms": 240.0, "error_rate": 0.0012, "requests": 1048576},
    "tags": ["deploy", "ops", "latency", "release-2024.05"],
    "history": [{"version": i, "ok": i % 3 != 0, "ms": 10.5 + i, "node": f"web-{i:02d}"} for i in range(6)],
}
JSON_TEXT = json.dumps(JSON_OBJECT, separators=(",", ":"), ensure_ascii=False)


def starlette_socket(scope: Scope, receive: Receive, send: Send) -> EchoSocket:
    return starlette.websockets.WebSocket(scope, receive, send)


def toolkit_socket(plugins: toolkit.PluginManager | None = None) -> Factory:
    def factory(scope: Scope, receive: Receive, send: Send) -> EchoSocket:
        return toolkit.WebSocket(scope, receive, send, plugins=plugins)

    return factory


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    endpoint: Endpoint
    payload: str
    ours: Factory
    #: Highest acceptable ratio of our median time per message to Starlette's.
    target: float


CASES = (
    Case("a", "text echo, no plugins", text_echo, TEXT, toolkit_socket(), 0.65),
    Case(
        "b",
        "text echo, 3 no-op plugins (Starlette: none)",
        text_echo,
        TEXT,
        toolkit_socket(toolkit.PluginManager(NoOp(), NoOp(), NoOp())),
        1.15,
    ),
    Case("c", f"JSON echo, {len(JSON_TEXT.encode())} B object", json_echo, JSON_TEXT, toolkit_socket(), 0.45),
    Case(
        "d",
        "text echo, 1 no-op ws_receive (Starlette: none)",
        text_echo,
        TEXT,
        toolkit_socket(toolkit.PluginManager(OneHook())),
        0.85,
    ),
)

# --- the transport --------------------------------------------------------------------------------


async def verify(case: Case) -> None:
    """Both sides must echo the payload unchanged (the same text, for JSON too) before timing counts."""
    outputs = []
    for factory in (case.ours, starlette_socket):
        sent: list[Message] = []
        receive, send = transport(case.payload, 3, sent)
        ws = factory(dict(SCOPE), receive, send)
        await ws.accept()
        await case.endpoint(ws, 3)
        outputs.append([m.get("text") for m in sent[1:]])
    if outputs[0] != outputs[1] or outputs[0] != [case.payload] * 3:
        raise SystemExit(f"case {case.key}: the two implementations do not echo the same thing")


# --- rounds and statistics -------------------------------------------------------------------------


@dataclass
class Result:
    case: Case
    n: int
    ours: list[float] = field(default_factory=list)  # seconds per message, one per round
    theirs: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ours) / statistics.median(self.theirs)

    def paired(self) -> list[float]:
        return sorted(o / t for o, t in zip(self.ours, self.theirs, strict=True))


async def calibrate(case: Case, round_seconds: float) -> int:
    """Messages per round so that Starlette's side of a round takes about ``round_seconds``."""
    n = 200
    for _ in range(3):  # also warms both sides up
        await timed(case.ours, case.endpoint, case.payload, n)
        elapsed = await timed(starlette_socket, case.endpoint, case.payload, n)
        n = max(50, round(n * round_seconds / elapsed))
    return n


@dataclass
class Run:
    results: list[Result]
    rounds: int = 0
    floor: list[float] = field(default_factory=list)  # seconds per message


async def run(cases: list[Case], seconds: float, round_seconds: float, min_rounds: int) -> Run:
    for case in cases:
        await verify(case)
    progress = Run([Result(case, await calibrate(case, round_seconds)) for case in cases])
    floor_n = 2000
    deadline = time.perf_counter() + seconds
    while progress.rounds < min_rounds or time.perf_counter() < deadline:
        progress.floor.append(await timed_floor(TEXT, floor_n) / floor_n)
        # A/B in even rounds, B/A in odd ones: neither side always runs first (warm caches, GC debt).
        for result in progress.results:
            case = result.case
            sides: list[tuple[Factory, list[float]]] = [(case.ours, result.ours), (starlette_socket, result.theirs)]
            if progress.rounds % 2:
                sides.reverse()
            for factory, samples in sides:
                samples.append(await timed(factory, case.endpoint, case.payload, result.n) / result.n)
        progress.rounds += 1
    return progress


# --- the report -----------------------------------------------------------------------------------


def report(run: Run, backend: str, elapsed: float) -> bool:
    print(
        f"ws-toolkit {distribution('ws-toolkit')} vs Starlette {distribution('starlette')}: "
        f"{platform.python_implementation()} {platform.python_version()}, {backend}, "
        f"{os.cpu_count()} CPUs, {run.rounds} interleaved rounds, {elapsed:.0f} s"
    )
    header = (
        f"{'case':<48} {'msgs':>6} {'ours ns/msg':>15} {'Starlette ns/msg':>17} "
        f"{'ratio':>6} {'p10-p90':>11} {'target':>7} result"
    )
    print(header)
    print("-" * len(header))
    ok = True
    for result in run.results:
        case = result.case
        paired = result.paired()
        met = result.ratio <= case.target
        ok &= met
        print(
            f"{'(' + case.key + ') ' + case.title:<48} {result.n:>6} "
            f"{ns(statistics.median(result.ours)):>7} {spread(result.ours):>7} "
            f"{ns(statistics.median(result.theirs)):>9} {spread(result.theirs):>7} "
            f"{result.ratio:>6.2f} {quantile(paired, 0.1):>5.2f}-{quantile(paired, 0.9):<5.2f} "
            f"{'<= ' + format(case.target, '.2f'):>7} {'met' if met else 'MISSED':>6}"
        )
    by_key = {result.case.key: result for result in run.results}
    if "a" in by_key and "d" in by_key:
        # Same rounds, same N per message: the per-round difference is the hook call plus noise.
        deltas = [d - a for a, d in zip(by_key["a"].ours, by_key["d"].ours, strict=True)]
        call = statistics.median(deltas)
        print(
            f"A hooked message over an unhooked one: (d) - (a) = {call * 1e9:.0f} ns "
            f"(p25-p75 {quantile(sorted(deltas), 0.25) * 1e9:.0f}-{quantile(sorted(deltas), 0.75) * 1e9:.0f}): "
            "the hook call and the socket's work around it (bench_hook_call.py times the call alone)"
        )
    print(
        f"Shared by both sides (transport + loop, no WebSocket): {ns(statistics.median(run.floor))} ns/msg "
        f"{spread(run.floor)}, included in the times above."
    )
    print(
        "ns/msg: median time per echoed message (receive + send) with ±half the interquartile range; "
        "ratio: ours/Starlette's medians; p10-p90: of the per-round paired ratios."
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a few-second run (fewer, shorter rounds)")
    parser.add_argument("--seconds", type=float, help="time budget for the timed rounds (default 40, --quick 3)")
    parser.add_argument("--trio", action="store_true", help="run under trio instead of asyncio")
    parser.add_argument("--case", action="append", choices=[c.key for c in CASES], help="run only this case")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)

    seconds = args.seconds if args.seconds is not None else (3.0 if args.quick else 40.0)
    round_seconds = 0.002 if args.quick else 0.005
    cases = [c for c in CASES if not args.case or c.key in args.case]

    def job() -> Coroutine[Any, Any, Run]:
        return run(cases, seconds, round_seconds, min_rounds=10)

    start = time.perf_counter()
    if args.trio:
        import trio

        outcome = trio.run(job)
        backend = f"trio {distribution('trio')}"
    else:
        outcome = asyncio.run(job())
        backend = "asyncio"
    ok = report(outcome, backend, time.perf_counter() - start)
    if args.check and not ok:
        print("a target was missed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
