"""What the benchmarks share: the in-memory ASGI transport, one timed measurement, the statistics.

``bench_core.py`` and ``bench_messages.py`` time sockets over :func:`transport`;
all three scripts report medians with :func:`spread` and :func:`quantile`.
bench/README.md describes the method.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from toolkit import Message, Receive, Scope, Send

#: Runs ``n`` messages through a socket the runner has accepted.
Endpoint = Callable[[Any, int], Awaitable[None]]
#: Builds a socket over a transport.
Factory = Callable[[Scope, Receive, Send], Any]

SCOPE: Scope = {
    "type": "websocket",
    "asgi": {"version": "3.0", "spec_version": "2.4"},
    "scheme": "ws",
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 50000),
    "root_path": "",
    "path": "/ws",
    "raw_path": b"/ws",
    "query_string": b"",
    "headers": [(b"host", b"127.0.0.1:8000")],
    "subprotocols": [],
    "extensions": {},
}


def transport(payload: str, n: int, sent: list[Message] | None = None) -> tuple[Receive, Send]:
    """``receive`` hands out a connect then ``n`` pre-built text messages; ``send`` discards (or records)."""
    messages: list[Message] = [{"type": "websocket.connect"}]
    messages += [{"type": "websocket.receive", "text": payload} for _ in range(n)]
    next_message = iter(messages).__next__

    async def receive() -> Message:
        return next_message()

    if sent is None:

        async def send(message: Message) -> None:
            return None

    else:
        record = sent.append

        async def send(message: Message) -> None:
            record(message)

    return receive, send


async def timed(factory: Factory, endpoint: Endpoint, payload: str, n: int) -> float:
    """Seconds to push ``n`` messages through a fresh, accepted socket (set-up not included)."""
    receive, send = transport(payload, n)
    ws = factory(dict(SCOPE), receive, send)
    await ws.accept()
    gc.collect()
    start = time.perf_counter()
    await endpoint(ws, n)
    return time.perf_counter() - start


async def timed_floor(payload: str, n: int) -> float:
    """Seconds for a plain text echo straight over the transport, no WebSocket: the part both sides share."""
    receive, send = transport(payload, n)
    await receive()
    gc.collect()
    start = time.perf_counter()
    for _ in range(n):
        message = await receive()
        await send({"type": "websocket.send", "text": message["text"]})
    return time.perf_counter() - start


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def spread(samples: list[float]) -> str:
    """Half the interquartile range, relative to the median: ``±1.2%``."""
    median = statistics.median(samples)
    return f"±{(quantile(samples, 0.75) - quantile(samples, 0.25)) / 2 / median:.1%}"


def ns(seconds: float) -> str:
    return f"{seconds * 1e9:,.0f}"


def distribution(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "(not installed)"
