"""What toolkit_otel costs per message: the core echo benchmark with and without WebSocketTelemetry.

The plugin runs on the OpenTelemetry SDK (a TracerProvider with a span processor and a
MeterProvider with a reader), exporting to no-op exporters, so what is timed is the plugin and
the SDK, not an exporter. Both sides are ``toolkit.WebSocket`` over the same in-memory transport,
rounds interleaved as in bench_core.py; the ratio is ours / without the plugin.

    python bench/bench_otel.py [--seconds 40] [--quick] [--check]

Target: the default configuration (per-message spans off) at most 5% slower on the 1 KB JSON
echo. bench/README.md has the figures, and why the short-text echo cannot meet it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from _harness import ns, quantile, spread, timed
from bench_core import JSON_TEXT, TEXT, Endpoint, Factory, json_echo, text_echo, toolkit_socket
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from toolkit_otel import WebSocketTelemetry

import toolkit

#: The default configuration's highest acceptable ratio on the JSON echo.
TARGET = 1.05


class NoOpExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def telemetry(**options: Any) -> WebSocketTelemetry:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(NoOpExporter()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return WebSocketTelemetry(tracer_provider=tracer_provider, meter_provider=meter_provider, route="/ws", **options)


def with_telemetry(*, timed_hooks: bool = False, **options: Any) -> Factory:
    plugin = telemetry(**options)
    manager = toolkit.PluginManager(plugin)
    if timed_hooks:
        plugin.time_hooks(manager)
    return toolkit_socket(manager)


@dataclass
class Case:
    key: str
    title: str
    endpoint: Endpoint
    payload: str
    ours: Factory
    target: float | None
    base: list[float] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)
    n: int = 0

    @property
    def ratio(self) -> float:
        return statistics.median(self.samples) / statistics.median(self.base)


def cases() -> list[Case]:
    return [
        Case("a", "text echo, default (per-message spans off)", text_echo, TEXT, with_telemetry(), None),
        Case("c", "1 KB JSON echo, default", json_echo, JSON_TEXT, with_telemetry(), TARGET),
        Case("e", "text echo, message_sizes=True", text_echo, TEXT, with_telemetry(message_sizes=True), None),
        Case(
            "f",
            "text echo, message_spans=1.0 (every message)",
            text_echo,
            TEXT,
            with_telemetry(message_spans=1.0),
            None,
        ),
        Case("g", "text echo, message_spans=0.01", text_echo, TEXT, with_telemetry(message_spans=0.01), None),
        Case("h", "text echo, time_hooks", text_echo, TEXT, with_telemetry(timed_hooks=True), None),
    ]


async def run(selected: list[Case], seconds: float, round_seconds: float) -> int:
    baseline = toolkit_socket()
    for case in selected:
        n = 200
        for _ in range(3):
            await timed(case.ours, case.endpoint, case.payload, n)
            elapsed = await timed(baseline, case.endpoint, case.payload, n)
            n = max(50, round(n * round_seconds / elapsed))
        case.n = n
    rounds = 0
    deadline = time.perf_counter() + seconds
    while rounds < 10 or time.perf_counter() < deadline:
        for case in selected:
            sides = [(case.ours, case.samples), (baseline, case.base)]
            if rounds % 2:
                sides.reverse()
            for factory, samples in sides:
                samples.append(await timed(factory, case.endpoint, case.payload, case.n) / case.n)
        rounds += 1
    return rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--case", action="append", help="run only this case; repeatable")
    parser.add_argument("--check", action="store_true", help=f"exit 1 if the JSON echo's ratio is over {TARGET}")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (3.0 if args.quick else 40.0)
    selected = [c for c in cases() if not args.case or c.key in args.case]
    start = time.perf_counter()
    rounds = asyncio.run(run(selected, seconds, 0.002 if args.quick else 0.005))
    print(
        f"toolkit_otel on the OpenTelemetry SDK, no-op exporters: {rounds} rounds, {time.perf_counter() - start:.0f} s"
    )
    header = f"{'case':<52} {'without ns/msg':>16} {'with ns/msg':>14} {'ratio':>6} {'p10-p90':>11} {'target':>7}"
    print(header)
    print("-" * len(header))
    ok = True
    for case in selected:
        paired = sorted(o / b for o, b in zip(case.samples, case.base, strict=True))
        met = case.target is None or case.ratio <= case.target
        ok &= met
        target = "-" if case.target is None else f"<= {case.target:.2f} {'met' if met else 'MISSED'}"
        print(
            f"{'(' + case.key + ') ' + case.title:<52} {ns(statistics.median(case.base)):>8} {spread(case.base):>7} "
            f"{ns(statistics.median(case.samples)):>7} {spread(case.samples):>6} {case.ratio:>6.3f} "
            f"{quantile(paired, 0.1):>5.2f}-{quantile(paired, 0.9):<5.2f} {target}"
        )
    if args.check and not ok:
        print("a target was missed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
