"""In-process benchmark: the same validated echo through ``toolkit_messages`` in JSON and in msgpack.

``Messages(Inbound, Inbound)`` (bench_messages.py's schema and payloads) echoes
``await channel.send(await channel.receive())`` over the in-memory transport, once with the
default JSON codec (text frames, ``validate_json`` straight from the frame) and once with
``MsgpackCodec()`` (binary frames, decode then ``validate_python``; the reply is
``model_dump(mode="json")`` packed). Channel only, and registered as a plugin too. Rounds
are interleaved; the figures are medians. bench/README.md records the latest.

    python bench/bench_codecs.py            # about 20 s
    python bench/bench_codecs.py --quick    # a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field

import msgpack
from _harness import SCOPE, distribution, ns, spread
from bench_messages import CHAT, INBOUND, POST, Inbound
from toolkit_messages import Codec, JsonCodec, Messages, MsgpackCodec

import toolkit
from toolkit import Message, Receive, Send


def transport(frame: str | bytes, n: int) -> tuple[Receive, Send, list[Message]]:
    """``receive`` hands out a connect then ``n`` copies of ``frame``; ``send`` keeps the last few messages."""
    key = "text" if isinstance(frame, str) else "bytes"
    messages: list[Message] = [{"type": "websocket.connect"}]
    messages += [{"type": "websocket.receive", key: frame} for _ in range(n)]
    next_message = iter(messages).__next__
    sent: list[Message] = []

    async def receive() -> Message:
        return next_message()

    async def send(message: Message) -> None:
        if len(sent) < 4:
            sent.append(message)

    return receive, send, sent


@dataclass
class Case:
    title: str
    codec: Codec
    frame: str | bytes
    plugin: bool
    samples: list[float] = field(default_factory=list)  # seconds per message, one per round

    def __post_init__(self) -> None:
        self.messages = Messages(Inbound, Inbound, codec=self.codec)
        self.plugins = toolkit.PluginManager(self.messages) if self.plugin else None

    async def run(self, n: int) -> tuple[float, list[Message]]:
        receive, send, sent = transport(self.frame, n)
        ws = toolkit.WebSocket(dict(SCOPE), receive, send, plugins=self.plugins)
        await ws.accept()
        channel = self.messages.channel(ws)
        gc.collect()
        start = time.perf_counter()
        for _ in range(n):
            await channel.send(await channel.receive())
        return time.perf_counter() - start, sent


def cases() -> list[Case]:
    out = []
    for name, text in (("chat", CHAT), ("post", POST)):
        value = json.loads(text)
        packed = msgpack.packb(value)
        for plugin in (False, True):
            how = "plugin + channel" if plugin else "channel"
            out.append(Case(f"{name}, JSON {len(text.encode())} B; {how}", JsonCodec(), text, plugin))
            out.append(Case(f"{name}, msgpack {len(packed)} B; {how}", MsgpackCodec(), packed, plugin))
    return out


async def verify(case: Case) -> None:
    """Each case must echo the validated message: the same value as the JSON path would send."""
    _, sent = await case.run(3)
    expected = INBOUND.validate_json(
        case.frame if isinstance(case.frame, str) else json.dumps(msgpack.unpackb(case.frame))
    )
    for message in sent[1:]:
        data = message.get("text") or message.get("bytes")
        assert data is not None
        value = json.loads(data) if isinstance(data, str) else msgpack.unpackb(data)
        if INBOUND.validate_python(value) != expected:
            raise SystemExit(f"{case.title}: the echo differs from the input")


async def main_async(seconds: float, round_seconds: float) -> list[Case]:
    all_cases = cases()
    for case in all_cases:
        await verify(case)
    sizes = {}
    for case in all_cases:  # messages per round: about round_seconds each
        elapsed, _ = await case.run(200)
        sizes[case.title] = max(20, int(round_seconds / (elapsed / 200)))
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(all_cases[0].samples) < 5:
        for case in all_cases:
            n = sizes[case.title]
            elapsed, _ = await case.run(n)
            case.samples.append(elapsed / n)
    return all_cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a few-second run")
    args = parser.parse_args(argv)
    seconds, round_seconds = (3.0, 0.005) if args.quick else (20.0, 0.02)
    all_cases = asyncio.run(main_async(seconds, round_seconds))
    print(
        f"toolkit_messages, JSON vs msgpack {distribution('msgpack')}: pydantic {distribution('pydantic')}, "
        f"CPython {platform.python_version()}, asyncio, {len(all_cases[0].samples)} interleaved rounds, {seconds:g} s"
    )
    print(f"{'case':<44} {'ns/msg':>8} {'':>7}  {'vs JSON':>7}")
    print("-" * 69)
    json_median = 0.0
    for case in all_cases:
        median = statistics.median(case.samples)
        if isinstance(case.codec, JsonCodec):
            json_median = median
            versus = ""
        else:
            versus = f"{median / json_median:.2f}"
        print(f"{case.title:<44} {ns(median):>8} {spread(case.samples):>7}  {versus:>7}")
    print("ns/msg: median per echoed message (receive, decode, validate, serialise, encode, send), ±half the IQR.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
