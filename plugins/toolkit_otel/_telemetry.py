"""``WebSocketTelemetry``: one SERVER span per connection and the connection metrics, on the OpenTelemetry API.

Only ``opentelemetry-api`` is imported: without an SDK every call is a no-op, and the SDK, its
exporters and sampling are the application's choice. docs/observability.md lists every span
attribute and metric, with the names chosen where no semantic convention exists.

Nothing per message reaches OpenTelemetry unless asked for: the hooks count messages and bytes
in the connection's plugin state, and observable counters read those counts when a reader
collects. Per-message spans and the message-size histogram are opt-in.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Final, final

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation, get_meter
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

import toolkit
from toolkit import (
    Accept,
    AcceptResult,
    CloseCode,
    ClosedBy,
    DenialResponse,
    PluginManager,
    StateKey,
    WebSocket,
    Wrapper,
)

__all__ = ["RouteOf", "WebSocketTelemetry"]

#: How the plugin names a connection's route: a fixed template, or a function of the connection.
RouteOf = str | Callable[[WebSocket], str | None]

_SCOPE_NAME: Final = "toolkit_otel"
try:
    _VERSION = version("ws-toolkit")
except PackageNotFoundError:  # pragma: no cover - run from a checkout that was never installed
    _VERSION = "unknown"

# --- attribute names: semantic conventions where they exist, ours (websocket.*) where not ---------

URL_PATH: Final = "url.path"
URL_SCHEME: Final = "url.scheme"
HTTP_ROUTE: Final = "http.route"
HTTP_METHOD: Final = "http.request.method"
HTTP_STATUS: Final = "http.response.status_code"
CLIENT_ADDRESS: Final = "client.address"
CLIENT_PORT: Final = "client.port"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
ERROR_TYPE: Final = "error.type"
IO_DIRECTION: Final = "network.io.direction"
MESSAGING_OPERATION: Final = "messaging.operation.type"
MESSAGING_BODY_SIZE: Final = "messaging.message.body.size"
SUBPROTOCOL: Final = "websocket.subprotocol"
CLOSE_CODE: Final = "websocket.close.code"
CLOSE_REASON: Final = "websocket.close.reason"
CLOSED_BY: Final = "websocket.closed_by"
PLUGIN: Final = "websocket.plugin"
HOOK: Final = "websocket.hook"
MESSAGE_TYPE: Final = "websocket.message.type"
MESSAGES_RECEIVED: Final = "websocket.messages.received"
MESSAGES_SENT: Final = "websocket.messages.sent"
BYTES_RECEIVED: Final = "websocket.bytes.received"
BYTES_SENT: Final = "websocket.bytes.sent"

_RECEIVE: Final = "receive"
_TRANSMIT: Final = "transmit"
#: A chosen subprotocol this long, or shaped like a JWT, is taken for a token and not recorded.
_MAX_SUBPROTOCOL: Final = 40
_REDACTED: Final = "[redacted]"
#: Message sizes in bytes: powers of 4 from 16 B to 1 MiB.
_SIZE_BUCKETS: Final = tuple(float(4**n) for n in range(2, 11))
#: Hook durations in seconds: 1 µs to 1 s.
_HOOK_BUCKETS: Final = (1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0)
#: Connection durations in seconds: 10 ms to 6 h.
_DURATION_BUCKETS: Final = (0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 21600.0)


class _HeaderGetter(Getter[Sequence[tuple[bytes, bytes]]]):
    """Reads ``traceparent`` and friends from an ASGI scope's raw headers."""

    def get(self, carrier: Sequence[tuple[bytes, bytes]], key: str) -> list[str] | None:
        wanted = key.lower().encode("latin-1")
        values = [bytes(value).decode("latin-1") for name, value in carrier if bytes(name).lower() == wanted]
        return values or None

    def keys(self, carrier: Sequence[tuple[bytes, bytes]]) -> list[str]:
        return [bytes(name).decode("latin-1").lower() for name, _ in carrier]


_GETTER: Final = _HeaderGetter()


def _size(data: str | bytes) -> int:
    """The payload's size in bytes on the wire (UTF-8 for text)."""
    if isinstance(data, bytes) or data.isascii():
        return len(data)
    return len(data.encode("utf-8", "surrogatepass"))


def _starlette_route(websocket: WebSocket) -> str | None:
    """The matched route's template, as Starlette and FastAPI leave it in ``scope["route"]``."""
    path = getattr(websocket.scope.get("route"), "path", None)
    return path if isinstance(path, str) else None


@final
class _Connection:
    """What the plugin keeps per connection, in its plugin state; dropped in ``ws_close``."""

    __slots__ = (
        "accepted",
        "bytes_in",
        "bytes_out",
        "in_attributes",
        "out_attributes",
        "route",
        "route_attributes",
        "span",
        "started",
        "status",
        "websocket",
    )

    def __init__(self, span: Span, route: str | None, websocket: WebSocket) -> None:
        self.span = span
        self.route = route
        #: The connection, for its message counts (``messages_received``/``messages_sent``, kept by the core).
        self.websocket = websocket
        self.started = time.perf_counter()
        self.accepted = False
        #: The HTTP status the client saw for a denial.
        self.status: int | None = None
        #: Payload bytes each way: counted only with ``message_sizes`` (a hook call per message).
        self.bytes_in = 0
        self.bytes_out = 0
        base: dict[str, AttributeValue] = {} if route is None else {HTTP_ROUTE: route}
        self.route_attributes = base
        self.in_attributes: dict[str, AttributeValue] = {**base, IO_DIRECTION: _RECEIVE}
        self.out_attributes: dict[str, AttributeValue] = {**base, IO_DIRECTION: _TRANSMIT}


class WebSocketTelemetry(toolkit.Plugin):
    """OpenTelemetry traces and metrics for every connection of the app it is registered on.

    - one span per connection, kind SERVER, named ``WS <route>``, from the handshake to
      ``ws_close``, continuing the client's ``traceparent``; a denied handshake's span ends with
      the status and the plugin that denied it;
    - ``message_spans`` (0 to 1, default 0: off): the fraction of messages that get a span of
      their own (CONSUMER received, PRODUCER sent), each linked to the connection's span, never
      carrying the content;
    - metrics: open connections, closes by code and side, denials by status, messages each way,
      connection duration; with ``message_sizes``, payload bytes each way and a message-size
      histogram; after :meth:`time_hooks`, each hook's duration per plugin.

    By default it implements no per-message hook: message counts come from the core
    (``WebSocket.messages_received``/``messages_sent``), so a message costs nothing more. With
    ``message_sizes`` or ``message_spans`` the instance is one that also implements
    ``ws_receive``/``ws_send`` (not meant for subclassing).

    ``route`` names the route in span names and metric attributes: a fixed template (``"/chat"``),
    or a function of the connection returning one (or None). By default the template of the route
    Starlette or FastAPI matched; never the raw path, which may hold ids. ``tracer_provider`` and
    ``meter_provider`` default to the global ones.
    """

    __slots__ = (
        "_active",
        "_closed",
        "_connection",
        "_denied",
        "_duration",
        "_hook_attributes",
        "_hook_duration",
        "_live",
        "_message_ratio",
        "_message_size",
        "_per_message",
        "_route",
        "_totals",
        "_tracer",
    )

    def __new__(
        cls,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        route: RouteOf | None = None,
        message_spans: float = 0.0,
        message_sizes: bool = False,
    ) -> WebSocketTelemetry:
        # Per-message hooks only when something needs them (the arguments are checked in __init__).
        if cls is WebSocketTelemetry and (message_sizes or message_spans):
            return super().__new__(_MessageTelemetry)
        return super().__new__(cls)

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        route: RouteOf | None = None,
        message_spans: float = 0.0,
        message_sizes: bool = False,
    ) -> None:
        ratio: object = message_spans  # run-time check of untyped input
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0.0 <= ratio <= 1.0:
            raise ValueError("message_spans must be a number from 0 to 1")
        self._message_ratio = float(ratio)
        self._route: Callable[[WebSocket], str | None] = (
            _starlette_route if route is None else (lambda _: route) if isinstance(route, str) else route
        )
        self._tracer = trace.get_tracer(_SCOPE_NAME, _VERSION, tracer_provider)
        meter = get_meter(_SCOPE_NAME, _VERSION, meter_provider)
        # Per instance: two telemetry plugins on one manager keep their own connections.
        self._connection: Final = StateKey[_Connection]("toolkit_otel.WebSocketTelemetry")
        #: Open connections, by id, for the observable counters; their counts join _totals at close.
        self._live: dict[int, _Connection] = {}
        #: Per route: messages in, messages out, bytes in, bytes out, of the connections that ended.
        self._totals: dict[str | None, list[int]] = {}
        self._hook_attributes: dict[tuple[str, str], dict[str, AttributeValue]] = {}
        self._active = meter.create_up_down_counter(
            "websocket.server.active_connections", "{connection}", "WebSocket connections open (accepted, not ended)"
        )
        self._closed = meter.create_counter(
            "websocket.server.connections.closed",
            "{connection}",
            "Accepted connections that ended, by close code and side",
        )
        self._denied = meter.create_counter(
            "websocket.server.handshakes.denied", "{connection}", "Connections that ended without being accepted"
        )
        self._duration = meter.create_histogram(
            "websocket.server.connection.duration",
            "s",
            "From the handshake to the end of the connection",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        meter.create_observable_counter(
            "websocket.server.messages", [self._observe_messages], "{message}", "Data messages, each way"
        )
        if message_sizes:
            meter.create_observable_counter(
                "websocket.server.io", [self._observe_bytes], "By", "Payload bytes of data messages, each way"
            )
        self._message_size = (
            meter.create_histogram(
                "websocket.server.message.size",
                "By",
                "Payload size of each data message",
                explicit_bucket_boundaries_advisory=_SIZE_BUCKETS,
            )
            if message_sizes
            else None
        )
        #: Payload bytes are measured (a hook call per message, an encode for non-ASCII text).
        self._per_message = self._message_size is not None
        self._hook_duration = meter.create_histogram(
            "websocket.server.hook.duration",
            "s",
            "Time in each hook implementation (after time_hooks)",
            explicit_bucket_boundaries_advisory=_HOOK_BUCKETS,
        )

    # --- public helpers ---------------------------------------------------------------------------

    def connection_span(self, websocket: WebSocket) -> Span | None:
        """The connection's span while it is open, to parent the app's own spans:
        ``with trace.use_span(span, end_on_exit=False): ...``."""
        connection = websocket.plugin_state.get(self._connection)
        return None if connection is None else connection.span

    def time_hooks(self, manager: PluginManager) -> None:
        """Record ``websocket.server.hook.duration`` for every hook implementation of ``manager``.

        Sets the manager's hook timer (``PluginManager.set_hook_timer``): from then on every hook
        call is timed and recorded, which costs about a microsecond per call with the SDK.
        """
        manager.set_hook_timer(self._record_hook)

    def _record_hook(self, hook: str, plugin_name: str, seconds: float) -> None:
        key = (hook, plugin_name)
        attributes = self._hook_attributes.get(key)
        if attributes is None:
            attributes = self._hook_attributes[key] = {HOOK: hook, PLUGIN: plugin_name}
        self._hook_duration.record(seconds, attributes)

    # --- the connection ---------------------------------------------------------------------------

    def _start(self, websocket: WebSocket) -> _Connection:
        """This plugin's state for ``websocket``: the span starts with the first hook that sees the connection."""
        state = websocket.plugin_state
        connection = state.get(self._connection)
        if connection is not None:
            return connection
        route = self._route(websocket)
        scope = websocket.scope
        parent = propagate.extract(scope.get("headers") or (), getter=_GETTER)
        attributes: dict[str, AttributeValue] = {HTTP_METHOD: "GET"}
        path = scope.get("path")
        if isinstance(path, str):
            attributes[URL_PATH] = path
        scheme = scope.get("scheme")
        attributes[URL_SCHEME] = scheme if isinstance(scheme, str) else "ws"
        if route is not None:
            attributes[HTTP_ROUTE] = route
        for address_key, port_key, value in (
            (CLIENT_ADDRESS, CLIENT_PORT, scope.get("client")),
            (SERVER_ADDRESS, SERVER_PORT, scope.get("server")),
        ):
            if isinstance(value, list | tuple) and len(value) == 2:
                attributes[address_key] = str(value[0])
                if isinstance(value[1], int):
                    attributes[port_key] = value[1]
        name = "WS" if route is None else f"WS {route}"
        span = self._tracer.start_span(name, parent, SpanKind.SERVER, attributes)
        connection = state[self._connection] = _Connection(span, route, websocket)
        self._live[id(connection)] = connection
        return connection

    @toolkit.hookimpl(wrapper=True)  # a wrapper: it sees every other plugin's outcome
    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Wrapper[AcceptResult]:
        connection = self._start(websocket)  # before any other plugin: their time is in the span
        outcome = yield
        if isinstance(outcome, Accept):
            connection.accepted = True
            connection.span.set_attribute(HTTP_STATUS, 101)
            if outcome.subprotocol is not None:
                connection.span.set_attribute(SUBPROTOCOL, _subprotocol(outcome.subprotocol))
            self._active.add(1, connection.route_attributes)
        return outcome

    @toolkit.hookimpl(trylast=True)
    def ws_denial(self, *, websocket: WebSocket, response: DenialResponse) -> None:
        # trylast: the response as the other plugins left it. Without the server's denial
        # extension the toolkit sends a close before accept, which the client sees as a 403.
        connection = self._start(websocket)
        connection.status = response.status if websocket.has_denial_extension else 403

    def ws_close(self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None:
        connection = websocket.plugin_state.pop(self._connection) or self._start_late(websocket)
        self._live.pop(id(connection), None)
        totals = self._totals.get(connection.route)
        if totals is None:
            totals = self._totals[connection.route] = [0, 0, 0, 0]
        totals[0] += websocket.messages_received
        totals[1] += websocket.messages_sent
        totals[2] += connection.bytes_in
        totals[3] += connection.bytes_out
        span = connection.span
        plugin = websocket.ended_by_plugin
        labels: dict[str, AttributeValue] = {**connection.route_attributes, CLOSED_BY: closed_by.value}
        if plugin is not None:
            labels[PLUGIN] = plugin
        span_attributes: dict[str, AttributeValue] = {
            CLOSED_BY: closed_by.value,
            MESSAGES_RECEIVED: websocket.messages_received,
            MESSAGES_SENT: websocket.messages_sent,
        }
        if self._per_message:
            span_attributes[BYTES_RECEIVED] = connection.bytes_in
            span_attributes[BYTES_SENT] = connection.bytes_out
        if plugin is not None:
            span_attributes[PLUGIN] = plugin
        error: str | None = None
        if connection.accepted:
            span_attributes[CLOSE_CODE] = code
            span_attributes[CLOSE_REASON] = reason
            if code == CloseCode.INTERNAL_ERROR or closed_by is ClosedBy.SERVER:
                error = str(code)
            self._active.add(-1, connection.route_attributes)
            self._closed.add(1, {**labels, CLOSE_CODE: code})
        else:
            status = connection.status
            if status is not None:
                span_attributes[HTTP_STATUS] = status
                labels[HTTP_STATUS] = status
                if status >= 500:
                    error = str(status)
            elif closed_by is ClosedBy.SERVER:
                error = str(code)  # ended before it was accepted or denied: cancelled, or the send failed
            self._denied.add(1, labels)
        span.set_attributes(span_attributes)
        if error is not None:
            span.set_attribute(ERROR_TYPE, error)
            span.set_status(Status(StatusCode.ERROR))
        span.end()
        self._duration.record(
            time.perf_counter() - connection.started, {**connection.route_attributes, CLOSED_BY: closed_by.value}
        )

    def _start_late(self, websocket: WebSocket) -> _Connection:
        """A connection that ended before any other hook saw it (cancelled before accept): a span all the same."""
        connection = self._start(websocket)
        websocket.plugin_state.pop(self._connection)
        return connection

    # --- observable counters (read when a metric reader collects) ---------------------------------

    def _counts(self) -> dict[str | None, list[int]]:
        counts = {route: list(values) for route, values in list(self._totals.items())}
        for connection in list(self._live.values()):
            values = counts.get(connection.route)
            if values is None:
                values = counts[connection.route] = [0, 0, 0, 0]
            values[0] += connection.websocket.messages_received
            values[1] += connection.websocket.messages_sent
            values[2] += connection.bytes_in
            values[3] += connection.bytes_out
        return counts

    def _observe(self, first: int) -> Iterable[Observation]:
        for route, values in self._counts().items():
            base: dict[str, AttributeValue] = {} if route is None else {HTTP_ROUTE: route}
            yield Observation(values[first], {**base, IO_DIRECTION: _RECEIVE})
            yield Observation(values[first + 1], {**base, IO_DIRECTION: _TRANSMIT})

    def _observe_messages(self, options: CallbackOptions) -> Iterable[Observation]:
        return list(self._observe(0))

    def _observe_bytes(self, options: CallbackOptions) -> Iterable[Observation]:
        return list(self._observe(2))


@final
class _MessageTelemetry(WebSocketTelemetry):
    """:class:`WebSocketTelemetry` with the per-message hooks: what ``message_sizes``/``message_spans`` make."""

    __slots__ = ()

    @toolkit.hookimpl(tryfirst=True)
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> None:
        # tryfirst: measures what the client sent, including messages a later plugin drops or refuses.
        # (ws_send mirrors this inline rather than through a shared helper: a call per message costs ~40 ns.)
        connection = websocket.plugin_state.get(self._connection)
        if connection is not None:
            size = len(data) if isinstance(data, bytes) or data.isascii() else _size(data)
            connection.bytes_in += size
            self._observe_message(connection, SpanKind.CONSUMER, data, size)

    @toolkit.hookimpl(trylast=True)
    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> None:
        # trylast: measures what goes to the client, after other plugins replaced or dropped it.
        connection = websocket.plugin_state.get(self._connection)
        if connection is not None:
            size = len(data) if isinstance(data, bytes) or data.isascii() else _size(data)
            connection.bytes_out += size
            self._observe_message(connection, SpanKind.PRODUCER, data, size)

    def _observe_message(self, connection: _Connection, kind: SpanKind, data: str | bytes, size: int) -> None:
        """What is opt-in per message: its size in the histogram, and (sampled) a span of its own."""
        received = kind is SpanKind.CONSUMER
        if self._message_size is not None:
            self._message_size.record(size, connection.in_attributes if received else connection.out_attributes)
        if self._message_ratio and random.random() < self._message_ratio:  # noqa: S311 - sampling, not secrets
            self._message_span(connection, kind, _RECEIVE if received else "send", data, size)

    def _message_span(
        self, connection: _Connection, kind: SpanKind, operation: str, data: str | bytes, size: int
    ) -> None:
        """A span for one message: a trace of its own, linked to the connection's span; never the content."""
        attributes: dict[str, AttributeValue] = {
            MESSAGING_OPERATION: operation,
            MESSAGING_BODY_SIZE: size,
            MESSAGE_TYPE: "text" if isinstance(data, str) else "binary",
        }
        if connection.route is not None:
            attributes[HTTP_ROUTE] = connection.route
        name = operation if connection.route is None else f"{operation} {connection.route}"
        links = [Link(connection.span.get_span_context())]
        self._tracer.start_span(name, Context(), kind, attributes, links).end()


def _subprotocol(subprotocol: str) -> str:
    # Browsers carry tokens in Sec-WebSocket-Protocol. The toolkit never echoes one back, but an
    # app could: a long or JWT-shaped value is not recorded.
    if len(subprotocol) > _MAX_SUBPROTOCOL or subprotocol.startswith("eyJ"):
        return _REDACTED
    return subprotocol


# Registered under the public class's name (plugin names appear in logs and metric attributes).
_MessageTelemetry.__name__ = _MessageTelemetry.__qualname__ = "WebSocketTelemetry"
