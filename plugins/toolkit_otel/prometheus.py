"""Prometheus for the OpenTelemetry metrics, summed over every worker of ``uvicorn --workers N``.

An OpenTelemetry SDK ``MetricExporter`` that writes each export into ``prometheus-client``
metrics. With ``PROMETHEUS_MULTIPROC_DIR`` set (prometheus-client's multiprocess mode), every
worker writes its own files there and :func:`scrape` in any worker sums them all; without it,
:func:`scrape` renders this process's metrics. docs/observability.md explains the choice.

Needs ``opentelemetry-sdk`` and ``prometheus-client``, which the ``otel`` extra leaves to the
application: import this module only where they are installed.
"""

from __future__ import annotations

import glob
import os
import re
import threading
from collections.abc import Sequence
from typing import Final, final

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge as PromGauge
from prometheus_client import Histogram as PromHistogram

__all__ = ["CONTENT_TYPE", "MULTIPROC_DIR_ENV", "PrometheusBridge", "prometheus_name", "scrape"]

#: The environment variable that turns on prometheus-client's multiprocess mode (set it before any import).
MULTIPROC_DIR_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
#: The content type of :func:`scrape`'s output: Prometheus' text format 0.0.4.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

_UNITS: Final = {"s": "seconds", "ms": "milliseconds", "By": "bytes"}
_INVALID: Final = re.compile(r"[^a-zA-Z0-9_]")
#: Every instrument kind as a delta: the bridge adds each export's increase to the worker's files.
_DELTA: Final[dict[type, AggregationTemporality]] = dict.fromkeys(
    (Counter, UpDownCounter, Histogram, ObservableCounter, ObservableUpDownCounter), AggregationTemporality.DELTA
)


def prometheus_name(name: str, unit: str) -> str:
    """The Prometheus name of an OpenTelemetry metric: dots to underscores, the unit as a suffix.

    ``websocket.server.connection.duration`` in ``s`` becomes ``websocket_server_connection_duration_seconds``;
    annotations in braces (``{connection}``) add nothing. Counters get ``_total`` from prometheus-client.
    """
    base = _INVALID.sub("_", name)
    suffix = _UNITS.get(unit)
    if suffix is not None and not base.endswith("_" + suffix):
        base = f"{base}_{suffix}"
    return base


def _label(key: str) -> str:
    return _INVALID.sub("_", key)


_Family = PromCounter | PromGauge | PromHistogram


@final
class PrometheusBridge(MetricExporter):
    """Write OpenTelemetry metrics into prometheus-client, one worker's share at a time.

    Use it under a ``PeriodicExportingMetricReader`` in each worker (the interval is how stale a
    scrape may be). Sums become counters (monotonic) or gauges that sum over live workers
    (up-down counters: a dead worker's open connections are gone with it); histograms keep the
    instrument's bucket boundaries. Attributes become labels, dots turned to underscores.
    Gauges are not bridged (the plugin has none).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(preferred_temporality=dict(_DELTA))
        #: Where this process's metrics are registered (used by :func:`scrape` outside multiprocess mode).
        self.registry: CollectorRegistry = CollectorRegistry() if registry is None else registry
        self._families: dict[tuple[str, tuple[str, ...]], _Family] = {}
        self._lock = threading.Lock()

    def _family(
        self, kind: str, name: str, description: str, labels: tuple[str, ...], buckets: Sequence[float] = ()
    ) -> _Family:
        key = (name, labels)
        family = self._families.get(key)
        if family is None:
            # One family per label set: prometheus-client fixes a metric's label names when it is made.
            registry = self.registry if not any(k[0] == name for k in self._families) else None
            documentation = description or name
            if kind == "counter":
                family = PromCounter(name, documentation, labels, registry=registry)
            elif kind == "gauge":
                family = PromGauge(name, documentation, labels, registry=registry, multiprocess_mode="livesum")
            else:
                family = PromHistogram(name, documentation, labels, registry=registry, buckets=[*buckets, float("inf")])
            self._families[key] = family
        return family

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object) -> MetricExportResult:
        with self._lock:
            for resource_metrics in metrics_data.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        self._write(metric.name, metric.unit or "", metric.description or "", metric.data)
        return MetricExportResult.SUCCESS

    def _write(self, name: str, unit: str, description: str, data: object) -> None:
        full = prometheus_name(name, unit)
        if isinstance(data, Sum):
            kind = "counter" if data.is_monotonic else "gauge"
            for point in data.data_points:
                if not point.value and kind == "counter" and point.attributes is None:
                    continue
                attributes = dict(point.attributes or {})
                labels = tuple(sorted(_label(key) for key in attributes))
                values = {_label(key): str(value) for key, value in attributes.items()}
                family = self._family(kind, full, description, labels)
                child = family.labels(**values) if labels else family
                if isinstance(child, PromCounter):
                    if point.value > 0:
                        child.inc(point.value)
                elif isinstance(child, PromGauge):
                    child.inc(point.value)
        elif isinstance(data, HistogramData):
            for hpoint in data.data_points:
                attributes = dict(hpoint.attributes or {})
                labels = tuple(sorted(_label(key) for key in attributes))
                values = {_label(key): str(value) for key, value in attributes.items()}
                family = self._family("histogram", full, description, labels, hpoint.explicit_bounds)
                child = family.labels(**values) if labels else family
                if isinstance(child, PromHistogram):
                    _add_buckets(child, hpoint.bucket_counts, hpoint.sum)
        elif isinstance(data, Gauge):  # pragma: no cover - no gauge in toolkit_otel
            return

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        return None


def _add_buckets(histogram: PromHistogram, bucket_counts: Sequence[int], total: float) -> None:
    """Add a delta histogram point to a prometheus-client histogram child.

    prometheus-client can only ``observe`` single values; its child keeps one value per bucket
    (counts per bucket, made cumulative when collected) and one for the sum, which is where an
    already-aggregated point goes. Both exist in every prometheus-client release since 0.4.
    """
    buckets = histogram._buckets  # see the docstring
    for index, count in enumerate(bucket_counts):
        if count and index < len(buckets):
            buckets[index].inc(count)
    if total:
        histogram._sum.inc(total)


def scrape(registry: CollectorRegistry | None = None) -> bytes:
    """The metrics in Prometheus' text format (:data:`CONTENT_TYPE`), for a ``GET /metrics``.

    In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set): every worker's files summed, after
    forgetting the live gauges of workers that are gone (uvicorn restarts a dead worker but tells
    no one). Otherwise ``registry`` (the bridge's ``registry``) as it is in this process.
    """
    path = os.environ.get(MULTIPROC_DIR_ENV)
    if path:
        for pid in _dead_workers(path):
            multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
        collected = CollectorRegistry()
        multiprocess.MultiProcessCollector(collected, path)  # type: ignore[no-untyped-call]
        return generate_latest(collected)
    if registry is None:
        raise ValueError(f"pass the bridge's registry, or set {MULTIPROC_DIR_ENV} for multiprocess mode")
    return generate_latest(registry)


def _dead_workers(path: str) -> set[int]:
    pids: set[int] = set()
    for file in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid = os.path.basename(file).rsplit("_", 1)[-1].removesuffix(".db")
        if pid.isdigit() and not _alive(int(pid)):
            pids.add(int(pid))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process: alive
        return True
    return True
