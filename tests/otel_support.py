"""Test helpers for toolkit_otel: an SDK tracer and meter provider that keep everything in memory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from toolkit_otel import WebSocketTelemetry

__all__ = ["Telemetry", "freeze"]


def freeze(attributes: Mapping[str, Any] | None) -> frozenset[tuple[str, Any]]:
    return frozenset((attributes or {}).items())


@dataclass
class Telemetry:
    """A plugin on its own SDK providers (never the global ones), and what they recorded."""

    spans_out: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)
    reader: InMemoryMetricReader = field(default_factory=InMemoryMetricReader)

    def __post_init__(self) -> None:
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans_out))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def plugin(self, **options: Any) -> WebSocketTelemetry:
        return WebSocketTelemetry(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **options)

    def spans(self) -> list[ReadableSpan]:
        return list(self.spans_out.get_finished_spans())

    def points(self, name: str) -> dict[frozenset[tuple[str, Any]], Any]:
        """The metric's data points by attribute set: a number for sums, ``(count, sum)`` for histograms."""
        data = self.reader.get_metrics_data()
        found: dict[frozenset[tuple[str, Any]], Any] = {}
        if data is None:
            return found
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        if isinstance(point, NumberDataPoint):
                            found[freeze(point.attributes)] = point.value
                        elif isinstance(point, HistogramDataPoint):
                            found[freeze(point.attributes)] = (point.count, point.sum)
        return found

    def all_attribute_values(self) -> list[str]:
        """Every span name, attribute value, event and link attribute, and metric attribute value, as text."""
        texts: list[str] = []
        for span in self.spans():
            texts.append(span.name)
            texts += [f"{key}={value!s}" for key, value in (span.attributes or {}).items()]
            for event in span.events:
                texts.append(event.name)
                texts += [f"{key}={value!s}" for key, value in (event.attributes or {}).items()]
            for link in span.links:
                texts += [f"{key}={value!s}" for key, value in (link.attributes or {}).items()]
        data = self.reader.get_metrics_data()
        if data is not None:
            for resource_metrics in data.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        for point in metric.data.data_points:
                            texts += [f"{key}={value!s}" for key, value in (point.attributes or {}).items()]
        return texts
