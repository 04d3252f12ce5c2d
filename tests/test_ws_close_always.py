"""``ws_close`` fires exactly once for every connection that reached a hook, in every documented use.

The uses: ``WebSocketApp``, ``async with WebSocket(...)``, ``ToolkitMiddleware``, and a
``WebSocket`` built directly (the README's "build the socket yourself"). For the last, an
endpoint that returns or raises without closing leaves the connection unfinished: when the
socket is dropped, the core reports 1006 to ``ws_close`` and warns (``ResourceWarning``).
Each test runs on asyncio and trio.
"""

from __future__ import annotations

import contextlib
import gc
import warnings
from collections.abc import Awaitable, Callable

import anyio
import pytest
from toolkit_limits import ConnectionLimit

import toolkit
from tests.support import Recorder, Transport, connect, disconnect, make_scope, text
from toolkit import CloseCode, ClosedBy, WebSocket

pytestmark = pytest.mark.anyio

Endpoint = Callable[[WebSocket], Awaitable[None]]


async def returns_after_accept(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.receive_text()


async def raises_after_accept(websocket: WebSocket) -> None:
    await websocket.accept()
    raise LookupError("the app failed")


async def returns_before_accept(websocket: WebSocket) -> None:
    await websocket.receive()  # the handshake request, then nothing


ENDPOINTS = [returns_after_accept, raises_after_accept, returns_before_accept]


def directly_built_app(endpoint: Endpoint, manager: toolkit.PluginManager) -> toolkit.ASGIApp:
    """A plain ASGI app that builds the socket itself, without ``async with``: the use that needs the net."""

    async def app(scope: toolkit.Scope, receive: toolkit.Receive, send: toolkit.Send) -> None:
        websocket = WebSocket(scope, receive, send, plugins=manager)
        with contextlib.suppress(LookupError):  # the server would log it; the connection is left as it was
            await endpoint(websocket)

    return app


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.__name__)
async def test_a_dropped_unfinished_socket_reports_1006_once_and_warns(endpoint: Endpoint) -> None:
    recorder = Recorder()
    app = directly_built_app(endpoint, toolkit.PluginManager(recorder))
    transport = Transport([connect(), text("hello")])

    async def run_and_collect() -> None:
        await app(make_scope(), transport.receive, transport.send)
        gc.collect()  # CPython frees it on return already; this makes the test independent of that

    with pytest.warns(ResourceWarning, match=r"async with toolkit\.WebSocket"):
        await run_and_collect()
    assert recorder.closes() == [(CloseCode.ABNORMAL, "", ClosedBy.SERVER)]


async def test_a_finished_socket_neither_warns_nor_reports_twice() -> None:
    recorder = Recorder()

    async def closes(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close(4000, "done")

    app = directly_built_app(closes, toolkit.PluginManager(recorder))
    transport = Transport([connect()])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        await app(make_scope(), transport.receive, transport.send)
        gc.collect()
    assert recorder.closes() == [(4000, "done", ClosedBy.APP)]


async def test_a_socket_without_plugins_never_warns() -> None:
    async def app(scope: toolkit.Scope, receive: toolkit.Receive, send: toolkit.Send) -> None:
        websocket = WebSocket(scope, receive, send)
        await websocket.accept()

    transport = Transport([connect()])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        await app(make_scope(), transport.receive, transport.send)
        gc.collect()
    assert transport.sent_types() == ["websocket.accept"]


CAP = 10
ROUNDS = 1_000


@pytest.mark.parametrize("use", ["direct", "async with", "WebSocketApp", "middleware"])
async def test_a_connection_limit_admits_its_full_count_after_1000_early_endings(use: str) -> None:
    """1,000 connections whose endpoints return early or raise; then the cap still admits CAP at once."""
    limit = ConnectionLimit(max_total=CAP)
    manager = toolkit.PluginManager(limit)

    def build(endpoint: Endpoint) -> toolkit.ASGIApp:
        if use == "direct":
            return directly_built_app(endpoint, manager)
        if use == "WebSocketApp":
            return toolkit.WebSocketApp(endpoint, plugins=manager)
        if use == "middleware":
            inner = toolkit.WebSocketApp(endpoint)  # no plugins of its own: the middleware runs the hooks
            return toolkit.ToolkitMiddleware(inner, plugins=manager)

        async def app(scope: toolkit.Scope, receive: toolkit.Receive, send: toolkit.Send) -> None:
            async with WebSocket(scope, receive, send, plugins=manager) as websocket:
                await endpoint(websocket)

        return app

    apps = [build(endpoint) for endpoint in ENDPOINTS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # the direct use warns for each: shown above
        for n in range(ROUNDS):
            transport = Transport([connect(), text("hello")])
            # WebSocketApp and `async with` re-raise the endpoint's error for the server to log.
            with contextlib.suppress(LookupError):
                await apps[n % len(apps)](make_scope(), transport.receive, transport.send)
        gc.collect()
    assert limit.total == 0

    # Now CAP connections at once, each holding its slot until the client leaves.
    accepted: list[WebSocket] = []
    leave, all_in = anyio.Event(), anyio.Event()

    async def holds(websocket: WebSocket) -> None:
        await websocket.accept()
        accepted.append(websocket)
        if len(accepted) == CAP:
            all_in.set()
        await websocket.receive()

    holding = toolkit.WebSocketApp(holds, plugins=manager)

    async def client() -> None:
        async def receive() -> toolkit.Message:
            if not transport.incoming:
                await leave.wait()
                return disconnect()
            return transport.incoming.pop(0)

        transport = Transport([connect()])
        await holding(make_scope(), receive, transport.send)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for _ in range(CAP):
                group.start_soon(client)
            await all_in.wait()
            assert limit.total == CAP
            leave.set()
    assert limit.total == 0


@pytest.mark.parametrize("fails_at", ["start", "body"])
async def test_a_client_gone_during_the_apps_denial_response_is_reported_as_the_clients(fails_at: str) -> None:
    """The server's OSError reaches the app as Starlette's would; ws_close says 1006 by the client, not 1011."""
    closes: list[tuple[int, str, ClosedBy]] = []  # ws_close only: a ws_denial hook would buffer the response

    class Closes(toolkit.Plugin):
        def ws_close(self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None:
            closes.append((code, reason, closed_by))

    async def denies(websocket: WebSocket) -> None:
        await websocket.receive()
        await websocket.send({"type": "websocket.http.response.start", "status": 401, "headers": []})
        await websocket.send({"type": "websocket.http.response.body", "body": b"no", "more_body": False})

    class FailsLate(Transport):
        async def send(self, message: toolkit.Message) -> None:
            if fails_at == "body" and message["type"] == "websocket.http.response.body":
                raise OSError("gone")
            await super().send(message)

    transport = FailsLate([connect()]) if fails_at == "body" else Transport([connect()], send_error=OSError("gone"))
    app = toolkit.WebSocketApp(denies, plugins=toolkit.PluginManager(Closes()))
    with pytest.raises(OSError, match="gone"):
        await app(make_scope(extensions={"websocket.http.response": {}}), transport.receive, transport.send)
    assert closes == [(CloseCode.ABNORMAL, "", ClosedBy.CLIENT)]


# --- WebSocketApp.connections: what a graceful shutdown closes ------------------------------------


async def test_app_connections_lists_running_endpoints_and_forgets_them_however_they_end() -> None:
    seen: list[tuple[WebSocket, ...]] = []

    async def endpoint(websocket: WebSocket) -> None:
        seen.append(app.connections)
        await websocket.accept()
        if websocket.query_params.get("fail"):
            raise LookupError("the app failed")

    app = toolkit.WebSocketApp(endpoint)
    transport = Transport([connect()])
    await app(make_scope(), transport.receive, transport.send)
    transport = Transport([connect()])
    with pytest.raises(LookupError):
        await app(make_scope(query_string=b"fail=1"), transport.receive, transport.send)
    assert [len(connections) for connections in seen] == [1, 1]
    assert seen[0][0] is not seen[1][0]
    assert app.connections == ()


async def test_closing_an_app_connection_from_another_task_ends_its_endpoint() -> None:
    """What toolkit_demo's shutdown does: close each of app.connections with 1001 while the endpoint reads."""
    to_app, incoming = anyio.create_memory_object_stream[toolkit.Message](10)
    sent: list[toolkit.Message] = []
    ended: list[int] = []

    async def send(message: toolkit.Message) -> None:
        sent.append(message)
        if message["type"] == "websocket.close":
            await to_app.send(disconnect(1001))  # the client answers the close

    reading = anyio.Event()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        reading.set()
        try:
            await websocket.receive_text()
        except toolkit.WebSocketDisconnect as gone:
            ended.append(gone.code)

    app = toolkit.WebSocketApp(endpoint)
    await to_app.send(connect())
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks, incoming, to_app:
            tasks.start_soon(app, make_scope(), incoming.receive, send)
            await reading.wait()
            [websocket] = app.connections
            await websocket.close(CloseCode.GOING_AWAY.value, "going away")
    assert sent[-1] == {"type": "websocket.close", "code": 1001, "reason": "going away"}
    assert ended == [1001]
    assert app.connections == ()
