"""In-process benchmark: a validated echo through ``toolkit_messages`` against hand-written Starlette code.

Ours: ``toolkit.WebSocket`` with ``Messages(Inbound, Inbound).channel(ws)``, echoing
``await channel.send(await channel.receive())``, with ``Messages`` used as a channel
only, and also registered as a plugin. Theirs: ``starlette.websockets.WebSocket``
with the same pydantic models, calling ``TypeAdapter.validate_json`` on the text
and ``model_dump_json`` on the model. Same payloads, same in-memory ASGI transport,
one process, rounds interleaved. bench/README.md explains the method and records
the latest figures.

    python bench/bench_messages.py            # about 40 s
    python bench/bench_messages.py --quick    # a few seconds
    python bench/bench_messages.py --check    # exit 1 if a target is missed
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
from typing import Annotated, Any, Literal

import starlette.websockets
from _harness import SCOPE, distribution, ns, quantile, spread, timed, timed_floor, transport
from pydantic import BaseModel, Field, TypeAdapter
from toolkit_messages import Messages

import toolkit
from toolkit import Message, Receive, Scope, Send

# --- the schema: a discriminated union, as a chat endpoint would declare it --------------------------


class Author(BaseModel):
    id: int
    name: str
    roles: list[str]
    online: bool


class Mention(BaseModel):
    id: int
    name: str


class Attachment(BaseModel):
    kind: Literal["image", "file"]
    url: str
    width: int | None = None
    height: int | None = None
    bytes: int


class Version(BaseModel):
    version: int
    ok: bool
    ms: float
    node: str


class Post(BaseModel):
    """A chat-style event with the usual mix of types: about 1 KB as JSON."""

    type: Literal["post"]
    id: int
    room: str
    author: Author
    text: str
    sent_at: str
    edited: bool
    reply_to: int | None
    mentions: list[Mention]
    reactions: dict[str, int]
    attachments: list[Attachment]
    metrics: dict[str, float]
    tags: list[str]
    history: list[Version]


class Chat(BaseModel):
    type: Literal["chat"]
    room: str
    text: str
    seq: int


class Typing(BaseModel):
    type: Literal["typing"]
    room: str
    on: bool


Inbound = Annotated[Post | Chat | Typing, Field(discriminator="type")]
INBOUND: TypeAdapter[Post | Chat | Typing] = TypeAdapter(Inbound)

CHAT = json.dumps(
    {"type": "chat", "room": "general", "text": "hello, world: a short chat-sized text message", "seq": 42},
    separators=(",", ":"),
)
POST = json.dumps(
    {
        "type": "post",
        "id": 123456789,
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
        "metrics": {"p50_ms": 38.5, "p95_ms": 117.25, "p99_ms": 240.0, "error_rate": 0.0012, "requests": 1048576.0},
        "tags": ["deploy", "ops", "latency", "release-2024.05"],
        "history": [{"version": i, "ok": i % 3 != 0, "ms": 10.5 + i, "node": f"web-{i:02d}"} for i in range(6)],
    },
    separators=(",", ":"),
    ensure_ascii=False,
)

# --- what is measured -------------------------------------------------------------------------------

#: Runs ``n`` messages through a socket the runner has accepted.
Endpoint = Callable[[Any, int], Awaitable[None]]
#: Builds a socket (and whatever the endpoint needs with it) over a transport.
Factory = Callable[[Scope, Receive, Send], Any]


async def handwritten(ws: starlette.websockets.WebSocket, n: int) -> None:
    """What an app does without the plugin: parse and validate in one call, dump the model."""
    validate_json = INBOUND.validate_json
    for _ in range(n):
        message = validate_json(await ws.receive_text())
        await ws.send_text(message.model_dump_json())


async def through_channel(ws: toolkit.WebSocket, n: int) -> None:
    channel = ws.state.channel
    for _ in range(n):
        await channel.send(await channel.receive())


def starlette_socket(scope: Scope, receive: Receive, send: Send) -> starlette.websockets.WebSocket:
    return starlette.websockets.WebSocket(scope, receive, send)


def toolkit_socket(*, plugin: bool) -> Factory:
    messages = Messages(Inbound, Inbound)
    plugins = toolkit.PluginManager(messages) if plugin else None

    def factory(scope: Scope, receive: Receive, send: Send) -> toolkit.WebSocket:
        ws = toolkit.WebSocket(scope, receive, send, plugins=plugins)
        ws.state.channel = messages.channel(ws)
        return ws

    return factory


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    payload: str
    ours: Factory
    ours_endpoint: Endpoint
    #: Highest acceptable ratio of our median time per message to the hand-written code's.
    target: float


TARGET = 1.15
CASES = (
    Case("a", f"chat, {len(CHAT.encode())} B; channel", CHAT, toolkit_socket(plugin=False), through_channel, TARGET),
    Case(
        "b",
        f"chat, {len(CHAT.encode())} B; plugin + channel",
        CHAT,
        toolkit_socket(plugin=True),
        through_channel,
        TARGET,
    ),
    Case("c", f"post, {len(POST.encode())} B; channel", POST, toolkit_socket(plugin=False), through_channel, TARGET),
    Case(
        "d",
        f"post, {len(POST.encode())} B; plugin + channel",
        POST,
        toolkit_socket(plugin=True),
        through_channel,
        TARGET,
    ),
)

# --- the transport ----------------------------------------------------------------------------------


async def verify(case: Case) -> None:
    """Both sides must send the same text, validated (a wrong type would not pass), before timing counts."""
    outputs = []
    for factory, endpoint in ((case.ours, case.ours_endpoint), (starlette_socket, handwritten)):
        sent: list[Message] = []
        receive, send = transport(case.payload, 3, sent)
        ws = factory(dict(SCOPE), receive, send)
        await ws.accept()
        await endpoint(ws, 3)
        outputs.append([m.get("text") for m in sent[1:]])
    expected = INBOUND.validate_json(case.payload).model_dump_json()
    if outputs[0] != outputs[1] or outputs[0] != [expected] * 3:
        raise SystemExit(f"case {case.key}: the two sides do not send the same thing")


# --- rounds and statistics ----------------------------------------------------------------------------


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
    """Messages per round so that the hand-written side of a round takes about ``round_seconds``."""
    n = 200
    for _ in range(3):  # also warms both sides up
        await timed(case.ours, case.ours_endpoint, case.payload, n)
        elapsed = await timed(starlette_socket, handwritten, case.payload, n)
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
        progress.floor.append(await timed_floor(CHAT, floor_n) / floor_n)
        # A/B in even rounds, B/A in odd ones: neither side always runs first (warm caches, GC debt).
        for result in progress.results:
            case = result.case
            sides: list[tuple[Factory, Endpoint, list[float]]] = [
                (case.ours, case.ours_endpoint, result.ours),
                (starlette_socket, handwritten, result.theirs),
            ]
            if progress.rounds % 2:
                sides.reverse()
            for factory, endpoint, samples in sides:
                samples.append(await timed(factory, endpoint, case.payload, result.n) / result.n)
        progress.rounds += 1
    return progress


# --- the report ---------------------------------------------------------------------------------------


def report(run: Run, backend: str, elapsed: float) -> bool:
    print(
        f"toolkit_messages (ws-toolkit {distribution('ws-toolkit')}) vs hand-written Starlette "
        f"{distribution('starlette')} + pydantic {distribution('pydantic')}: "
        f"{platform.python_implementation()} {platform.python_version()}, {backend}, "
        f"{os.cpu_count()} CPUs, {run.rounds} interleaved rounds, {elapsed:.0f} s"
    )
    header = (
        f"{'case':<40} {'msgs':>6} {'ours ns/msg':>15} {'by hand ns/msg':>17} "
        f"{'ratio':>6} {'p10-p90':>11} {'target':>8} result"
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
            f"{'(' + case.key + ') ' + case.title:<40} {result.n:>6} "
            f"{ns(statistics.median(result.ours)):>7} {spread(result.ours):>7} "
            f"{ns(statistics.median(result.theirs)):>9} {spread(result.theirs):>7} "
            f"{result.ratio:>6.2f} {quantile(paired, 0.1):>5.2f}-{quantile(paired, 0.9):<5.2f} "
            f"{'<= ' + format(case.target, '.2f'):>8} {'met' if met else 'MISSED':>6}"
        )
    print(
        f"Shared by both sides (transport + loop, no WebSocket, no validation): {ns(statistics.median(run.floor))} "
        f"ns/msg {spread(run.floor)}, included in the times above."
    )
    print(
        "ns/msg: median time per echoed message (receive, validate, serialise, send) with ±half the "
        "interquartile range; ratio: ours/by hand medians; p10-p90: of the per-round paired ratios."
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
