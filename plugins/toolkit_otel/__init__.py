"""toolkit_otel: OpenTelemetry traces and metrics for ws-toolkit connections.

One plugin, :class:`WebSocketTelemetry`: a SERVER span per connection and the connection metrics,
through the OpenTelemetry API only (``pip install 'ws-toolkit[otel]'``); the SDK and exporters are
the application's choice. ``toolkit_otel.prometheus`` feeds Prometheus across ``uvicorn --workers N``.
See docs/observability.md.
"""

from ._telemetry import RouteOf, WebSocketTelemetry

__all__ = ["RouteOf", "WebSocketTelemetry"]
