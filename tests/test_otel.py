"""toolkit_otel over the in-memory transport, on asyncio and trio, through WebSocketApp and ToolkitMiddleware.

Spans and metrics are read from the SDK's InMemorySpanExporter and InMemoryMetricReader and
compared with what docs/observability.md documents, attribute by attribute.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from toolkit_otel import WebSocketTelemetry

import toolkit
from tests.conftest import CREDENTIALS
from tests.otel_support import Telemetry, freeze
from tests.support import DENIAL_EXTENSION, Transport, binary, connect, disconnect, make_scope, text
from tests.test_server import echo
from toolkit import Accept, Close, DenialResponse, Message, WebSocket

pytestmark = pytest.mark.anyio

Endpoint = Callable[[WebSocket], Awaitable[None]]
ROUTE = "/chat"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


async def serve(
    plugins: list[object],
    incoming: list[Message],
    *,
    endpoint: Endpoint = echo,
    middleware: bool = False,
    extensions: dict[str, Any] | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    query_string: bytes = b"",
    subprotocols: list[str] | None = None,
    transport: Transport | None = None,
) -> Transport:
    transport = transport or Transport([connect(), *incoming])
    manager = toolkit.PluginManager(*plugins)
    scope = make_scope(
        path=ROUTE,
        extensions=extensions,
        headers=headers or [(b"host", b"testserver")],
        query_string=query_string,
        subprotocols=subprotocols,
    )
    app: Any = (
        toolkit.ToolkitMiddleware(toolkit.WebSocketApp(endpoint), plugins=manager)
        if middleware
        else toolkit.WebSocketApp(endpoint, plugins=manager)
    )
    with contextlib.suppress(RuntimeError):  # an endpoint that raises on purpose: the telemetry is what is checked
        await app(scope, transport.receive, transport.send)
    return transport


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry()


MODES = pytest.mark.parametrize("middleware", [False, True], ids=["app", "middleware"])


def base_attributes() -> dict[str, Any]:
    return {
        "http.request.method": "GET",
        "url.path": ROUTE,
        "url.scheme": "ws",
        "http.route": ROUTE,
        "client.address": "127.0.0.1",
        "client.port": 50000,
        "server.address": "testserver",
        "server.port": 80,
    }


# --- the connection span and the metrics of a normal connection -----------------------------------


@MODES
async def test_an_echoed_connection_has_one_server_span_and_its_metrics(telemetry: Telemetry, middleware: bool) -> None:
    plugin = telemetry.plugin(route=ROUTE)
    await serve([plugin], [text("héllo"), binary(b"\x00\x01\x02"), disconnect(1001, "bye")], middleware=middleware)
    (span,) = telemetry.spans()
    assert span.name == "WS /chat"
    assert span.kind is SpanKind.SERVER
    assert span.parent is None
    assert dict(span.attributes or {}) == {
        **base_attributes(),
        "http.response.status_code": 101,
        "websocket.close.code": 1001,
        "websocket.close.reason": "bye",
        "websocket.closed_by": "client",
        "websocket.messages.received": 2,  # counted by the core: no per-message hook by default
        "websocket.messages.sent": 2,
    }
    assert span.status.status_code is StatusCode.UNSET
    route = {"http.route": ROUTE}
    assert telemetry.points("websocket.server.active_connections") == {freeze(route): 0}
    assert telemetry.points("websocket.server.connections.closed") == {
        freeze({**route, "websocket.closed_by": "client", "websocket.close.code": 1001}): 1
    }
    assert telemetry.points("websocket.server.handshakes.denied") == {}
    receive, transmit = {**route, "network.io.direction": "receive"}, {**route, "network.io.direction": "transmit"}
    assert telemetry.points("websocket.server.messages") == {freeze(receive): 2, freeze(transmit): 2}
    assert telemetry.points("websocket.server.io") == {}  # opt-in: message_sizes
    ((count, _),) = telemetry.points("websocket.server.connection.duration").values()
    assert count == 1
    assert telemetry.points("websocket.server.message.size") == {}  # opt-in
    assert "ws_receive" not in plugin.__class__.__dict__  # and it costs no hook call per message


@MODES
async def test_message_sizes_adds_the_bytes_each_way(telemetry: Telemetry, middleware: bool) -> None:
    plugin = telemetry.plugin(route=ROUTE, message_sizes=True)
    assert isinstance(plugin, WebSocketTelemetry)
    await serve([plugin], [text("héllo"), binary(b"\x00\x01\x02"), disconnect(1001, "bye")], middleware=middleware)
    (span,) = telemetry.spans()
    attributes = dict(span.attributes or {})
    assert (attributes["websocket.bytes.received"], attributes["websocket.bytes.sent"]) == (9, 9)  # "héllo": 6 bytes
    assert (attributes["websocket.messages.received"], attributes["websocket.messages.sent"]) == (2, 2)
    route = {"http.route": ROUTE}
    receive, transmit = {**route, "network.io.direction": "receive"}, {**route, "network.io.direction": "transmit"}
    assert telemetry.points("websocket.server.io") == {freeze(receive): 9, freeze(transmit): 9}


async def test_counts_are_read_while_the_connection_is_open(telemetry: Telemetry) -> None:
    plugin = telemetry.plugin(route=ROUTE)
    seen: list[dict[Any, Any]] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())
        seen.append(telemetry.points("websocket.server.active_connections"))
        seen.append(telemetry.points("websocket.server.messages"))
        assert plugin.connection_span(websocket) is not None
        await websocket.receive_text()

    await serve([plugin], [text("a"), text("b"), disconnect()], endpoint=endpoint)
    route = {"http.route": ROUTE}
    assert seen[0] == {freeze(route): 1}
    assert seen[1] == {
        freeze({**route, "network.io.direction": "receive"}): 1,
        freeze({**route, "network.io.direction": "transmit"}): 1,
    }
    assert telemetry.points("websocket.server.messages")[freeze({**route, "network.io.direction": "receive"})] == 2


async def test_the_span_continues_the_clients_traceparent(telemetry: Telemetry) -> None:
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01".encode()
    await serve([telemetry.plugin(route=ROUTE)], [disconnect()], headers=[(b"traceparent", traceparent)])
    (span,) = telemetry.spans()
    assert span.context is not None
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == PARENT_ID
    assert span.parent.is_remote


async def test_the_route_template_comes_from_starlettes_router_never_the_raw_path(telemetry: Telemetry) -> None:
    plugin = telemetry.plugin()  # default: the template Starlette matched
    manager = toolkit.PluginManager(plugin)
    app = toolkit.ToolkitMiddleware(Starlette(routes=[WebSocketRoute("/rooms/{room}", echo)]), plugins=manager)
    for room in ("42", "43"):
        transport = Transport([connect(), text("x"), disconnect()])
        await app(make_scope(path=f"/rooms/{room}"), transport.receive, transport.send)
    spans = telemetry.spans()
    assert [span.name for span in spans] == ["WS /rooms/{room}", "WS /rooms/{room}"]
    assert [(span.attributes or {})["url.path"] for span in spans] == ["/rooms/42", "/rooms/43"]
    # Metrics carry the template only: one series for both rooms.
    route = {"http.route": "/rooms/{room}"}
    assert telemetry.points("websocket.server.connections.closed") == {
        freeze({**route, "websocket.closed_by": "client", "websocket.close.code": 1000}): 2
    }


async def test_without_a_known_route_the_span_is_named_ws_and_metrics_have_no_route(telemetry: Telemetry) -> None:
    await serve([telemetry.plugin()], [disconnect()])
    (span,) = telemetry.spans()
    assert span.name == "WS"
    assert "http.route" not in (span.attributes or {})
    assert telemetry.points("websocket.server.active_connections") == {freeze({}): 0}


async def test_a_route_function_names_the_route(telemetry: Telemetry) -> None:
    plugin = telemetry.plugin(route=lambda websocket: "/custom" if websocket.url.path == ROUTE else None)
    await serve([plugin], [disconnect()])
    assert [span.name for span in telemetry.spans()] == ["WS /custom"]


# --- denials ---------------------------------------------------------------------------------------


class Gate(toolkit.Plugin):
    def __init__(self, status: int) -> None:
        self.status = status

    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> DenialResponse:
        return DenialResponse(self.status)


@MODES
@pytest.mark.parametrize(("extensions", "seen_status"), [(DENIAL_EXTENSION, 401), (None, 403)])
async def test_a_denied_handshake_ends_its_span_with_the_status_and_the_denying_plugin(
    telemetry: Telemetry, middleware: bool, extensions: dict[str, Any] | None, seen_status: int
) -> None:
    manager_plugins: list[object] = [telemetry.plugin(route=ROUTE), Gate(401)]
    await serve(manager_plugins, [], middleware=middleware, extensions=extensions)
    (span,) = telemetry.spans()
    assert dict(span.attributes or {}) == {
        **base_attributes(),
        "http.response.status_code": seen_status,
        "websocket.closed_by": "plugin",
        "websocket.plugin": "Gate",
        "websocket.messages.received": 0,
        "websocket.messages.sent": 0,
    }
    assert span.status.status_code is StatusCode.UNSET  # a 4xx is the client's problem, not the server's
    assert telemetry.points("websocket.server.handshakes.denied") == {
        freeze(
            {
                "http.route": ROUTE,
                "http.response.status_code": seen_status,
                "websocket.closed_by": "plugin",
                "websocket.plugin": "Gate",
            }
        ): 1
    }
    assert telemetry.points("websocket.server.active_connections") == {}  # never opened
    assert telemetry.points("websocket.server.connections.closed") == {}


async def test_an_app_that_denies_is_recorded_as_the_apps_denial(telemetry: Telemetry) -> None:
    async def refuse(websocket: WebSocket) -> None:
        await websocket.close()

    await serve([telemetry.plugin(route=ROUTE)], [], endpoint=refuse)
    (span,) = telemetry.spans()
    attributes = dict(span.attributes or {})
    assert attributes["http.response.status_code"] == 403
    assert attributes["websocket.closed_by"] == "app"
    assert "websocket.plugin" not in attributes


# --- plugin closes, plugin failures, the client vanishing, app exceptions --------------------------


class Closer(toolkit.Plugin):
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Close:
        return Close(4001, "go away")


class Faulty(toolkit.Plugin):
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> None:
        raise RuntimeError("plugin bug")


@MODES
async def test_a_plugin_closed_connection_names_the_plugin(telemetry: Telemetry, middleware: bool) -> None:
    await serve([Closer(), telemetry.plugin(route=ROUTE)], [text("hi")], middleware=middleware)
    (span,) = telemetry.spans()
    attributes = dict(span.attributes or {})
    assert (attributes["websocket.close.code"], attributes["websocket.close.reason"]) == (4001, "go away")
    assert (attributes["websocket.closed_by"], attributes["websocket.plugin"]) == ("plugin", "Closer")
    assert attributes["websocket.messages.received"] == 1  # counted before the closer refused it
    assert span.status.status_code is StatusCode.UNSET
    assert telemetry.points("websocket.server.connections.closed") == {
        freeze(
            {
                "http.route": ROUTE,
                "websocket.closed_by": "plugin",
                "websocket.plugin": "Closer",
                "websocket.close.code": 4001,
            }
        ): 1
    }


@MODES
async def test_a_failing_plugin_is_an_error_span_naming_it(
    telemetry: Telemetry, middleware: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="toolkit")
    await serve([Faulty(), telemetry.plugin(route=ROUTE)], [text("hi")], middleware=middleware)
    (span,) = telemetry.spans()
    attributes = dict(span.attributes or {})
    assert (attributes["websocket.close.code"], attributes["websocket.plugin"]) == (1011, "Faulty")
    assert span.status.status_code is StatusCode.ERROR
    assert attributes["error.type"] == "1011"
    assert "plugin bug" not in repr(span.to_json())  # no exception text anywhere


@MODES
async def test_a_client_that_vanished_is_reported_as_the_clients_1006(telemetry: Telemetry, middleware: bool) -> None:
    transport = Transport([connect(), text("hi")])

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        transport.send_error = OSError("connection reset")
        await websocket.send_text("anyone?")

    await serve([telemetry.plugin(route=ROUTE)], [], endpoint=endpoint, middleware=middleware, transport=transport)
    (span,) = telemetry.spans()
    attributes = dict(span.attributes or {})
    assert (attributes["websocket.close.code"], attributes["websocket.closed_by"]) == (1006, "client")
    assert attributes["websocket.messages.received"] == 1
    assert span.status.status_code is StatusCode.UNSET
    assert telemetry.points("websocket.server.active_connections") == {freeze({"http.route": ROUTE}): 0}


@MODES
async def test_an_app_exception_after_accept_is_an_error_span(telemetry: Telemetry, middleware: bool) -> None:
    async def crash(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        raise RuntimeError("app bug with s3cret")

    await serve([telemetry.plugin(route=ROUTE)], [text("hi")], endpoint=crash, middleware=middleware)
    (span,) = telemetry.spans()
    attributes = dict(span.attributes or {})
    # Around an app, the app's own WebSocket sent the 1011: to the middleware that is the app's close.
    closed_by = "app" if middleware else "server"
    assert (attributes["websocket.close.code"], attributes["websocket.closed_by"]) == (1011, closed_by)
    assert attributes["error.type"] == "1011"
    assert span.status.status_code is StatusCode.ERROR
    assert "s3cret" not in repr(span.to_json())


async def test_an_app_exception_before_accept_is_a_500_denial(telemetry: Telemetry) -> None:
    async def crash(websocket: WebSocket) -> None:
        raise RuntimeError("early")

    await serve([telemetry.plugin(route=ROUTE)], [], endpoint=crash, extensions=DENIAL_EXTENSION)
    (span,) = telemetry.spans()
    attributes = dict(span.attributes or {})
    assert (attributes["http.response.status_code"], attributes["websocket.closed_by"]) == (500, "server")
    assert attributes["error.type"] == "500"
    assert span.status.status_code is StatusCode.ERROR


# --- per-message spans, message sizes, hook durations ----------------------------------------------


async def test_per_message_spans_are_linked_to_the_connection_and_carry_no_content(telemetry: Telemetry) -> None:
    await serve([telemetry.plugin(route=ROUTE, message_spans=1.0)], [text("ping"), binary(b"\x01\x02"), disconnect()])
    *messages, connection = telemetry.spans()
    assert connection.name == "WS /chat"
    assert connection.context is not None
    assert [(span.name, span.kind) for span in messages] == [
        ("receive /chat", SpanKind.CONSUMER),
        ("send /chat", SpanKind.PRODUCER),
        ("receive /chat", SpanKind.CONSUMER),
        ("send /chat", SpanKind.PRODUCER),
    ]
    for span, (operation, kind, size) in zip(
        messages,
        [("receive", "text", 4), ("send", "text", 4), ("receive", "binary", 2), ("send", "binary", 2)],
        strict=True,
    ):
        assert dict(span.attributes or {}) == {
            "messaging.operation.type": operation,
            "messaging.message.body.size": size,
            "websocket.message.type": kind,
            "http.route": ROUTE,
        }
        assert span.parent is None  # a trace of its own...
        assert [link.context for link in span.links] == [connection.context]  # ...linked to the connection's


async def test_per_message_spans_are_off_by_default_and_sampled(telemetry: Telemetry) -> None:
    await serve([telemetry.plugin(route=ROUTE)], [text("a"), text("b"), disconnect()])
    assert [span.name for span in telemetry.spans()] == ["WS /chat"]
    many = [text(str(i)) for i in range(200)]
    await serve([telemetry.plugin(route=ROUTE, message_spans=0.25)], [*many, disconnect()])
    sampled = len(telemetry.spans()) - 2  # both connection spans
    assert 40 <= sampled <= 160  # 400 messages at 25%: about 100


@pytest.mark.parametrize("ratio", [-0.1, 1.5, True, "1"])
def test_message_spans_must_be_a_fraction(ratio: object) -> None:
    with pytest.raises(ValueError, match="message_spans"):
        WebSocketTelemetry(message_spans=ratio)  # type: ignore[arg-type]


async def test_the_message_size_histogram_is_opt_in(telemetry: Telemetry) -> None:
    await serve([telemetry.plugin(route=ROUTE, message_sizes=True)], [text("abc"), text("défg"), disconnect()])
    receive = {"http.route": ROUTE, "network.io.direction": "receive"}
    transmit = {"http.route": ROUTE, "network.io.direction": "transmit"}
    assert telemetry.points("websocket.server.message.size") == {freeze(receive): (2, 8), freeze(transmit): (2, 8)}


class Keep(toolkit.Plugin):
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> None:
        return None


async def test_time_hooks_records_each_hook_of_each_plugin(telemetry: Telemetry) -> None:
    plugin = telemetry.plugin(route=ROUTE)
    manager = toolkit.PluginManager(Keep(), plugin)
    plugin.time_hooks(manager)
    transport = Transport([connect(), text("a"), text("b"), disconnect()])
    await toolkit.WebSocketApp(echo, plugins=manager)(make_scope(path=ROUTE), transport.receive, transport.send)
    points = telemetry.points("websocket.server.hook.duration")
    counts = {
        dict(key)["websocket.plugin"] + "." + dict(key)["websocket.hook"]: value[0] for key, value in points.items()
    }
    assert counts == {
        "Keep.ws_receive": 2,
        "WebSocketTelemetry.ws_close": 1,
    }
    assert all(value[1] >= 0 for value in points.values())


# --- no content, no credential ---------------------------------------------------------------------


async def test_no_message_content_and_no_credential_reaches_any_attribute(telemetry: Telemetry) -> None:
    token_subprotocol = "eyJhbGciOiJIUzI1NiJ9.TOPSECRET.sig"

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol=token_subprotocol)  # an app that echoes a token: not recorded
        await websocket.send_text(await websocket.receive_text())
        await websocket.send_bytes(await websocket.receive_bytes())
        await websocket.receive_text()

    plugin = telemetry.plugin(route=ROUTE, message_spans=1.0, message_sizes=True)
    manager_plugins: list[object] = [plugin]
    await serve(
        manager_plugins,
        [text('{"password": "s3cret", "msg": "CONTENT-MARKER"}'), binary(b"alice-token"), text("bob-token")],
        endpoint=endpoint,
        headers=[
            (b"host", b"testserver"),
            (b"authorization", b"Bearer wrong-token"),
            (b"cookie", b"session=alice-token"),
            (b"sec-websocket-protocol", token_subprotocol.encode()),
        ],
        query_string=b"token=bob-token",
        subprotocols=[token_subprotocol],
    )
    texts = telemetry.all_attribute_values()
    assert any(entry == "websocket.subprotocol=[redacted]" for entry in texts)
    for secret in (*CREDENTIALS, "CONTENT-MARKER", "eyJ"):
        leaks = [entry for entry in texts if secret in entry]
        assert not leaks, f"{secret!r} in {leaks}"


async def test_a_plain_subprotocol_is_recorded(telemetry: Telemetry) -> None:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol="chat.v2")

    await serve([telemetry.plugin(route=ROUTE)], [], endpoint=endpoint, subprotocols=["chat.v2"])
    (span,) = telemetry.spans()
    assert (span.attributes or {})["websocket.subprotocol"] == "chat.v2"


async def test_a_connection_cancelled_before_any_hook_still_gets_its_span(telemetry: Telemetry) -> None:
    async def stuck(websocket: WebSocket) -> None:
        await anyio.sleep(10)

    app = toolkit.WebSocketApp(stuck, plugins=toolkit.PluginManager(telemetry.plugin(route=ROUTE)))
    transport = Transport([connect()])
    with anyio.move_on_after(0.05):
        await app(make_scope(path=ROUTE), transport.receive, transport.send)
    (span,) = telemetry.spans()
    attributes = dict(span.attributes or {})
    assert (attributes["websocket.closed_by"], attributes["error.type"]) == ("server", "1006")
    assert "http.response.status_code" not in attributes
    assert span.status.status_code is StatusCode.ERROR
    assert telemetry.points("websocket.server.handshakes.denied") == {
        freeze({"http.route": ROUTE, "websocket.closed_by": "server"}): 1
    }
