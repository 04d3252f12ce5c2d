"""``ToolkitMiddleware`` over the in-memory transport (each test runs on asyncio and trio).

The inner apps use Starlette's own ``WebSocket`` class, or raw ASGI, as apps of any framework do.
Each test asserts the ASGI messages that reach the server, what the app saw and raised, and what
every plugin saw, ``ws_close`` above all: exactly once per connection.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import types
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, Final

import anyio
import pytest
import starlette.websockets as sw
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import toolkit
from tests.support import DENIAL_EXTENSION, Recorder, Transport, binary, connect, disconnect, make_scope, text
from tests.test_starlette_compat import FIRST, INCOMING, NORMAL_PATHS, OPERATIONS, Endpoint, Outcome, apply, outcome
from toolkit import (
    ASGIApp,
    Close,
    ClosedBy,
    DenialResponse,
    Message,
    PluginManager,
    Receive,
    Scope,
    Send,
    ToolkitMiddleware,
    WebSocket,
    WebSocketApp,
    WebSocketDenied,
    WebSocketDisconnect,
)

pytestmark = pytest.mark.anyio

ACCEPTED: Final[Message] = {"type": "websocket.accept", "subprotocol": None, "headers": []}
#: The scope key through which the middleware tells an inner WebSocket that its hooks already run.
RUNNING: Final = "toolkit.plugins"


def close_message(code: int = 1000, reason: str = "") -> Message:
    return {"type": "websocket.close", "code": code, "reason": reason}


def denial_messages(status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> list[Message]:
    """The two messages a plugin's DenialResponse becomes through the "websocket.http.response" extension."""
    raw = [*headers, (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    return [
        {"type": "websocket.http.response.start", "status": status, "headers": raw},
        {"type": "websocket.http.response.body", "body": body, "more_body": False},
    ]


def on_starlette(endpoint: Callable[[sw.WebSocket], Awaitable[object]]) -> ASGIApp:
    """A raw ASGI app running ``endpoint`` on Starlette's own WebSocket, as a Starlette route does."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await endpoint(sw.WebSocket(scope, receive, send))

    return app


async def serve(app: ASGIApp, *incoming: Message, extensions: dict[str, Any] | None = None) -> Transport:
    transport = Transport(list(incoming))
    await app(make_scope(extensions=extensions), transport.receive, transport.send)
    return transport


# --- plugins ----------------------------------------------------------------------------------------


class Mark(toolkit.Plugin):
    """Appends ``suffix`` to text both ways: applied twice, it shows twice."""

    def __init__(self, suffix: str = "!") -> None:
        self.suffix = suffix

    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> str | None:
        return data + self.suffix if isinstance(data, str) else None

    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> str | None:
        return data + self.suffix if isinstance(data, str) else None


class Gate(toolkit.Plugin):
    """Denies every handshake with 401."""

    def ws_accept(self, *, websocket: WebSocket, accept: toolkit.Accept) -> DenialResponse:
        return DenialResponse(401, "who are you?", headers=((b"www-authenticate", b"Bearer"),))


GATE_DENIAL: Final = denial_messages(401, b"who are you?", [(b"www-authenticate", b"Bearer")])


class CloseOnCue(toolkit.Plugin):
    """Closes when the client sends "plugin" (4100) or the app sends "leak" (4200)."""

    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Close | None:
        return Close(4100, "plugin cue") if data == "plugin" else None

    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> Close | None:
        return Close(4200, "send cue") if data == "leak" else None


class Fragile(toolkit.Plugin):
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> None:
        raise LookupError("plugin bug")


# --- HTTP, lifespan and no plugins: the app is called as it is -----------------------------------------


class Spy:
    """An ASGI app that records exactly what it was called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[Scope, Receive, Send]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls.append((scope, receive, send))


@pytest.mark.parametrize("kind", ["http", "lifespan"])
async def test_http_and_lifespan_pass_through_untouched(kind: str) -> None:
    recorder = Recorder()
    spy = Spy()
    scope: Scope = {"type": kind, "asgi": {"version": "3.0"}, "extensions": {"http.response.trailers": {}}}
    snapshot = dict(scope)
    transport = Transport()
    await ToolkitMiddleware(spy, plugins=PluginManager(recorder))(scope, transport.receive, transport.send)
    [(seen_scope, seen_receive, seen_send)] = spy.calls
    assert seen_scope is scope
    assert seen_scope == snapshot  # nothing added, nothing removed
    assert seen_receive == transport.receive
    assert seen_send == transport.send
    assert recorder.calls == []


async def test_without_plugins_the_app_gets_the_servers_own_channels() -> None:
    spy = Spy()
    manager = PluginManager(Recorder())
    manager.unregister(manager.list_name_plugin()[0][1])  # emptied: chains rebuilt, all None
    for plugins in (PluginManager(), manager):
        scope = make_scope(extensions=DENIAL_EXTENSION)
        snapshot = dict(scope)
        transport = Transport()
        await ToolkitMiddleware(spy, plugins=plugins)(scope, transport.receive, transport.send)
        seen_scope, seen_receive, seen_send = spy.calls[-1]
        assert seen_scope is scope
        assert seen_scope == snapshot  # no marker: no hook runs, so none can run twice
        assert (seen_receive, seen_send) == (transport.receive, transport.send)


async def test_with_plugins_the_app_gets_a_marked_copy_of_the_servers_scope() -> None:
    spy = Spy()
    plugins = PluginManager(Recorder())
    scope = make_scope(extensions=DENIAL_EXTENSION)
    snapshot = dict(scope)
    transport = Transport([connect()])
    await ToolkitMiddleware(spy, plugins=plugins)(scope, transport.receive, transport.send)
    [(seen_scope, seen_receive, seen_send)] = spy.calls
    # A shallow copy, marked: the server's own dict is never changed (issue 9).
    assert seen_scope is not scope
    assert seen_scope.keys() == {*snapshot, RUNNING}
    assert {key: value for key, value in seen_scope.items() if key != RUNNING} == snapshot
    [(manager, state)] = seen_scope[RUNNING].items()  # each manager it runs, with the connection's plugin state
    assert manager is plugins
    assert isinstance(state, toolkit.PluginState)
    assert seen_scope["extensions"] is scope["extensions"]
    assert scope == snapshot
    assert RUNNING not in scope
    assert (seen_receive, seen_send) != (transport.receive, transport.send)


Trace = tuple[list[Outcome], list[Message], list[Message]]


async def run_script(
    first: Message, incoming: list[Message], operations: list[tuple[Any, ...]], extensions: dict[str, Any], wrap: Any
) -> Trace:
    """Run random operations on Starlette's WebSocket inside ``wrap(app)``; what the app and the server saw."""
    transport = Transport([dict(m) for m in (first, *incoming)])
    outcomes: list[Outcome] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        websocket = sw.WebSocket(scope, receive, send)
        for op in operations:
            if op[0] == "fail_sends":
                transport.send_error = OSError("gone")
                continue
            outcomes.append(await outcome(partial(apply, websocket, op)))

    await wrap(app)(make_scope(extensions=extensions), transport.receive, transport.send)
    return outcomes, transport.sent, transport.incoming


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=FIRST,
    incoming=st.lists(INCOMING, max_size=6),
    operations=st.lists(OPERATIONS, min_size=1, max_size=10),
    with_extension=st.booleans(),
    emptied=st.booleans(),
)
async def test_without_plugins_random_sessions_are_byte_for_byte_the_same(
    first: Message, incoming: list[Message], operations: list[tuple[Any, ...]], with_extension: bool, emptied: bool
) -> None:
    plugins = PluginManager()
    if emptied:  # a manager whose plugins were all unregistered is as empty as a new one
        recorder = Recorder()
        plugins.register(recorder)
        plugins.unregister(recorder)
    extensions = DENIAL_EXTENSION if with_extension else {}
    direct = await run_script(first, incoming, operations, extensions, lambda app: app)
    wrapped = await run_script(
        first, incoming, operations, extensions, lambda app: ToolkitMiddleware(app, plugins=plugins)
    )
    assert wrapped == direct


def endpoint_app(endpoint: Endpoint, outcomes: list[Outcome]) -> ASGIApp:
    async def run(websocket: sw.WebSocket) -> None:
        outcomes.append(await outcome(partial(endpoint, websocket)))

    return on_starlette(run)


@pytest.mark.parametrize(("endpoint", "incoming", "extensions", "expected"), NORMAL_PATHS)
async def test_starlette_endpoints_without_plugins_run_as_unwrapped(
    endpoint: Endpoint, incoming: list[Message], extensions: dict[str, Any] | None, expected: str
) -> None:
    traces = []
    for plugins in (None, PluginManager()):
        outcomes: list[Outcome] = []
        app = endpoint_app(endpoint, outcomes)
        transport = await serve(
            app if plugins is None else ToolkitMiddleware(app, plugins=plugins), *incoming, extensions=extensions
        )
        traces.append((outcomes, transport.sent, transport.incoming))
    assert traces[1] == traces[0]
    [first_outcome] = traces[0][0]
    assert first_outcome[0] == "return" if expected == "return" else first_outcome[:2] == ("raise", expected)


RETURNING_PATHS = [p for p in NORMAL_PATHS if p.values[3] == "return"]


@pytest.mark.parametrize(("endpoint", "incoming", "extensions", "expected"), RETURNING_PATHS)
async def test_observer_plugins_change_nothing_for_starlette_endpoints(
    endpoint: Endpoint, incoming: list[Message], extensions: dict[str, Any] | None, expected: str
) -> None:
    direct: list[Outcome] = []
    plain = await serve(endpoint_app(endpoint, direct), *incoming, extensions=extensions)
    recorder = Recorder()
    observed: list[Outcome] = []
    wrapped = ToolkitMiddleware(endpoint_app(endpoint, observed), plugins=PluginManager(recorder))
    transport = await serve(wrapped, *incoming, extensions=extensions)
    assert observed == direct
    assert transport.sent == plain.sent
    assert len(recorder.closes()) == 1
    assert recorder.names()[-1] == "ws_close"  # no hook runs after ws_close
    # Every data message the app sent before the end passed ws_send; one sent after (the client had left) did not.
    sent_data = [m.get("text", m.get("bytes")) for m in plain.sent if m["type"] == "websocket.send"]
    seen = [data for name, data in recorder.calls if name == "ws_send"]
    assert seen == sent_data[: len(seen)]


# --- random well-behaved sessions under an observer --------------------------------------------------

SENDABLE_CLOSES = st.tuples(st.sampled_from([1000, 1001, 1008, 3000, 4999]), st.sampled_from(["", "bye", "é" * 40]))
APP_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("send_text"), st.text(max_size=4)),
        st.tuples(st.just("send_bytes"), st.binary(max_size=4)),
        st.tuples(st.just("receive")),
    ),
    max_size=8,
)
DATA = st.one_of(st.text(max_size=4).map(text), st.binary(max_size=4).map(binary))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    subprotocol=st.sampled_from([None, "chat"]),
    steps=APP_STEPS,
    ending=st.one_of(st.none(), SENDABLE_CLOSES),
    data=st.lists(DATA, max_size=8),
    client_close=st.one_of(st.none(), st.tuples(st.sampled_from([1000, 1001, 4000, None]), st.just("later"))),
)
async def test_observer_plugins_change_nothing_on_random_sessions(
    subprotocol: str | None,
    steps: list[tuple[Any, ...]],
    ending: tuple[int, str] | None,
    data: list[Message],
    client_close: tuple[int | None, str] | None,
) -> None:
    receives = sum(1 for step in steps if step[0] == "receive")
    if client_close is None:  # the client stays: it sends at least what the app reads (Transport never waits)
        data = [*data, *[text("more")] * (receives - len(data))]
    incoming = [connect(), *data]
    if client_close is not None:
        incoming.append(disconnect(*client_close))

    async def session(websocket: sw.WebSocket, seen: list[Message]) -> None:
        await websocket.accept(subprotocol=subprotocol)
        for name, *args in steps:
            if name == "receive":
                message = await websocket.receive()
                seen.append(message)
                if message["type"] == "websocket.disconnect":
                    return  # the client left
            else:
                await getattr(websocket, name)(*args)
        if ending is not None:
            await websocket.close(*ending)

    direct_seen: list[Message] = []
    direct = await serve(on_starlette(partial(session, seen=direct_seen)), *incoming)
    recorder = Recorder()
    seen: list[Message] = []
    wrapped = ToolkitMiddleware(on_starlette(partial(session, seen=seen)), plugins=PluginManager(recorder))
    transport = await serve(wrapped, *incoming)

    left = bool(direct_seen) and direct_seen[-1]["type"] == "websocket.disconnect"
    # The app saw the server's messages and the server the app's, unchanged (a codeless close included).
    assert seen == direct_seen
    assert transport.sent == direct.sent
    sends = [m for m in direct.sent if m["type"] == "websocket.send"]
    received = [m for m in seen if m["type"] == "websocket.receive"]
    assert recorder.names().count("ws_accept") == 1
    assert recorder.names().count("ws_send") == len(sends)
    assert recorder.names().count("ws_receive") == len(received)
    if left:  # a codeless close is reported as 1005 (RFC 6455 7.1.5), to ws_close only
        code = seen[-1].get("code", 1005)
        expected = (code, seen[-1].get("reason", ""), ClosedBy.CLIENT)
    elif ending is not None:
        expected = (*ending, ClosedBy.APP)
    else:
        expected = (1000, "", ClosedBy.APP)
    assert recorder.closes() == [expected]


# --- hooks around a Starlette WebSocket ---------------------------------------------------------------


async def test_hooks_see_change_and_report_a_starlette_apps_messages() -> None:
    recorder = Recorder()
    seen: list[str] = []

    async def echo(websocket: sw.WebSocket) -> None:
        await websocket.accept(subprotocol="chat")
        try:
            while True:
                message = await websocket.receive_text()
                seen.append(message)
                await websocket.send_text(message)
        except sw.WebSocketDisconnect:
            pass

    app = ToolkitMiddleware(on_starlette(echo), plugins=PluginManager(recorder, Mark()))
    transport = await serve(app, connect(), text("hi"), text("there"), disconnect(4000, "bye"))
    assert seen == ["hi!", "there!"]
    assert transport.sent == [
        {**ACCEPTED, "subprotocol": "chat"},
        {"type": "websocket.send", "text": "hi!!"},
        {"type": "websocket.send", "text": "there!!"},
    ]
    assert recorder.names() == ["ws_accept", "ws_receive", "ws_send", "ws_receive", "ws_send", "ws_close"]
    assert recorder.closes() == [(4000, "bye", ClosedBy.CLIENT)]


# Transparent (issue 9): the middleware sends nothing of its own when the app returns or raises; the server
# answers as it would without it. ws_close is still told, once. (It used to close with 1000 / 1011 or deny.)


async def test_an_app_returning_without_closing_is_reported_as_closed_with_1000_and_nothing_is_sent() -> None:
    recorder = Recorder()

    async def endpoint(websocket: sw.WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("bye")

    transport = await serve(ToolkitMiddleware(on_starlette(endpoint), plugins=PluginManager(recorder)), connect())
    assert transport.sent == [ACCEPTED, {"type": "websocket.send", "text": "bye"}]
    assert recorder.closes() == [(1000, "", ClosedBy.APP)]


@pytest.mark.parametrize(("raising", "status", "closed_by"), [(False, 403, ClosedBy.APP), (True, 500, ClosedBy.SERVER)])
async def test_an_unanswered_handshake_is_reported_as_a_denial_and_nothing_is_sent(
    raising: bool, status: int, closed_by: ClosedBy
) -> None:
    recorder = Recorder()

    async def endpoint(websocket: sw.WebSocket) -> None:
        await websocket.receive()
        if raising:
            raise LookupError("app bug")

    app = ToolkitMiddleware(on_starlette(endpoint), plugins=PluginManager(recorder))
    transport = Transport([connect()])
    with pytest.raises(LookupError) if raising else contextlib.nullcontext():
        await app(make_scope(extensions=DENIAL_EXTENSION), transport.receive, transport.send)
    assert transport.sent == []  # the server answers the handshake itself
    assert recorder.names() == ["ws_denial", "ws_close"]
    [(_, denial)] = [call for call in recorder.calls if call[0] == "ws_denial"]
    assert denial.status == status
    assert recorder.closes() == [(1006, "", closed_by)]


@pytest.mark.parametrize("extensions", [DENIAL_EXTENSION, {}], ids=["extension", "no-extension"])
async def test_a_plugin_replacing_the_denial_of_an_unanswered_handshake_sends_it(extensions: dict[str, Any]) -> None:
    # A plugin that acts still acts: its replacement goes out as any replaced denial does.
    class Explain(toolkit.Plugin):
        def ws_denial(self, *, websocket: WebSocket, response: DenialResponse) -> DenialResponse:
            return DenialResponse(401, "who are you?", headers=((b"www-authenticate", b"Bearer"),))

    recorder = Recorder()

    async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()

    transport = await serve(
        ToolkitMiddleware(raw_app, plugins=PluginManager(recorder, Explain())), connect(), extensions=extensions
    )
    assert transport.sent == (GATE_DENIAL if extensions else [close_message()])
    assert recorder.names() == ["ws_denial", "ws_close"]
    assert recorder.closes() == [(1006, "", ClosedBy.APP)]


async def test_an_app_raising_after_accept_is_reported_as_1011_and_the_error_reaches_the_server() -> None:
    recorder = Recorder()

    async def endpoint(websocket: sw.WebSocket) -> None:
        await websocket.accept()
        raise LookupError("app bug")

    transport = Transport([connect()])
    app = ToolkitMiddleware(on_starlette(endpoint), plugins=PluginManager(recorder))
    with pytest.raises(LookupError, match="app bug"):
        await app(make_scope(), transport.receive, transport.send)
    assert transport.sent == [ACCEPTED]
    assert recorder.closes() == [(1011, "internal error", ClosedBy.SERVER)]


async def test_a_cancelled_app_reports_1006_once() -> None:
    recorder = Recorder()
    accepted = anyio.Event()

    async def endpoint(websocket: sw.WebSocket) -> None:
        await websocket.accept()
        accepted.set()
        await anyio.sleep_forever()

    app = ToolkitMiddleware(on_starlette(endpoint), plugins=PluginManager(recorder))
    transport = Transport([connect()])
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(app, make_scope(), transport.receive, transport.send)
            await accepted.wait()
            tg.cancel_scope.cancel()
    assert transport.sent == [ACCEPTED]  # nothing can be sent while cancelled
    assert recorder.closes() == [(1006, "", ClosedBy.SERVER)]


# --- when a plugin denies -------------------------------------------------------------------------------


@pytest.mark.parametrize("extensions", [DENIAL_EXTENSION, {}], ids=["extension", "no-extension"])
async def test_a_denial_raises_websocket_denied_in_the_apps_accept(extensions: dict[str, Any]) -> None:
    recorder = Recorder()
    raised: list[BaseException] = []
    after: list[tuple[str, BaseException | None]] = []

    async def endpoint(websocket: sw.WebSocket) -> None:
        try:
            await websocket.accept()
        except sw.WebSocketDisconnect as exc:  # Starlette's except clause catches the toolkit's denial
            raised.append(exc)
        # The app carries on regardless: sends find the connection gone, its close is a no-op.
        for name, call in (("send", websocket.send_text("hello?")), ("close", websocket.close())):
            try:
                await call
            except sw.WebSocketDisconnect as exc:
                after.append((name, exc))
            else:
                after.append((name, None))

    app = ToolkitMiddleware(on_starlette(endpoint), plugins=PluginManager(recorder, Gate()))
    transport = await serve(app, connect(), extensions=extensions)
    status = 401 if extensions else 403
    [denied] = raised
    assert isinstance(denied, WebSocketDenied)
    assert (denied.status, denied.code) == (status, 1006)
    assert [(name, type(exc).__name__, getattr(exc, "code", None)) for name, exc in after] == [
        ("send", "WebSocketDisconnect", 1006),
        ("close", "NoneType", None),
    ]
    assert transport.sent == (GATE_DENIAL if extensions else [close_message()])
    assert recorder.names() == ["ws_denial", "ws_close"]
    assert recorder.closes() == [(1006, "", ClosedBy.PLUGIN)]


async def test_a_denial_the_app_does_not_catch_ends_the_connection_cleanly() -> None:
    recorder = Recorder()
    reached: list[str] = []

    async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send(ACCEPTED)  # raises: the app has no except clause for it
        reached.append("after accept")  # pragma: no cover - never reached

    app = ToolkitMiddleware(raw_app, plugins=PluginManager(recorder, Gate()))
    transport = await serve(app, connect(), extensions=DENIAL_EXTENSION)  # the middleware does not raise
    assert reached == []
    assert transport.sent == GATE_DENIAL
    assert recorder.closes() == [(1006, "", ClosedBy.PLUGIN)]


# --- when a plugin closes or fails ------------------------------------------------------------------------


async def test_a_plugin_close_on_receive_reaches_the_app_as_a_disconnect() -> None:
    recorder = Recorder()
    events: list[object] = []

    async def endpoint(websocket: sw.WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(await websocket.receive_text())
        except sw.WebSocketDisconnect as exc:
            events.append(("disconnect", exc.code, exc.reason))
        try:
            await websocket.send_text("too late")
        except sw.WebSocketDisconnect as exc:
            events.append(("send raised", type(exc).__name__, exc.code, exc.reason))
        await websocket.close(1000)  # a no-op: the plugin already closed
        events.append("closed")

    app = ToolkitMiddleware(on_starlette(endpoint), plugins=PluginManager(recorder, CloseOnCue()))
    transport = await serve(app, connect(), text("hi"), text("plugin"), text("never read"))
    assert events == [
        ("disconnect", 4100, "plugin cue"),
        ("send raised", "WebSocketDisconnect", 4100, "plugin cue"),
        "closed",
    ]
    assert transport.sent == [ACCEPTED, {"type": "websocket.send", "text": "hi"}, close_message(4100, "plugin cue")]
    assert recorder.closes() == [(4100, "plugin cue", ClosedBy.PLUGIN)]


async def test_a_plugin_close_on_send_raises_in_the_apps_send() -> None:
    recorder = Recorder()
    raised: list[BaseException] = []

    async def endpoint(websocket: sw.WebSocket) -> None:
        await websocket.accept()
        try:
            await websocket.send_text("leak")
        except sw.WebSocketDisconnect as exc:
            raised.append(exc)
        await websocket.close(4000)  # a no-op

    app = ToolkitMiddleware(on_starlette(endpoint), plugins=PluginManager(recorder, CloseOnCue()))
    transport = await serve(app, connect())
    [error] = raised
    assert isinstance(error, WebSocketDisconnect)
    assert (error.code, error.reason) == (4200, "send cue")
    assert transport.sent == [ACCEPTED, close_message(4200, "send cue")]
    assert recorder.closes() == [(4200, "send cue", ClosedBy.PLUGIN)]


async def test_a_disconnect_the_app_lets_escape_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    # A raw app that never catches: the toolkit's WebSocketDisconnect from send ends it, and the middleware
    # swallows it (as uvicorn swallows its own ClientDisconnected); a plugin failure is logged, once.
    recorder = Recorder()

    async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send(ACCEPTED)
        while (await receive())["type"] == "websocket.receive":
            pass
        await send({"type": "websocket.send", "text": "raises"})

    caplog.set_level(logging.ERROR, logger="toolkit")
    app = ToolkitMiddleware(raw_app, plugins=PluginManager(recorder, Fragile()))
    transport = await serve(app, connect(), text("boom"))
    assert transport.sent == [ACCEPTED, close_message(1011, "internal error")]
    assert recorder.closes() == [(1011, "internal error", ClosedBy.PLUGIN)]
    assert [r.getMessage() for r in caplog.records if r.name == "toolkit"] == [
        "plugin 'Fragile' failed in ws_receive: raised"
    ]


@pytest.mark.parametrize(
    ("client_code", "app_code"),
    [(None, 1005), (1001, 1001), (4000, 4000)],
    ids=["codeless-echoed", "1001-echoed", "4000-echoed"],
)
async def test_closing_after_the_client_left_echoing_its_code(client_code: int | None, app_code: int) -> None:
    # Litestar's exception handler answers a client's close with a close of the same code. After a codeless
    # close that is 1005, which may not be sent: the server gets it as the app wrote it (it used to be
    # dropped), and judges it itself; ws_close was told 1005 when the client left.
    recorder = Recorder()

    async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send(ACCEPTED)
        message = await receive()
        assert message["type"] == "websocket.disconnect"
        await send(close_message(message.get("code", 1005), "disconnect event"))

    app = ToolkitMiddleware(raw_app, plugins=PluginManager(recorder))
    transport = await serve(app, connect(), disconnect(client_code))
    assert transport.sent == [ACCEPTED, close_message(app_code, "disconnect event")]
    assert recorder.closes() == [(app_code, "", ClosedBy.CLIENT)]


@pytest.mark.parametrize(
    ("close", "told"),
    [
        (close_message(1006), 1006),
        (close_message(999), 1006),
        (close_message(5000), 1006),
        ({"type": "websocket.close", "code": True}, 1006),
        ({"type": "websocket.close", "code": "1000"}, 1006),
        ({"type": "websocket.close", "code": 4000, "reason": ["not", "a", "str"]}, 4000),
        ({"type": "websocket.close", "code": 4000, "reason": None}, 4000),
        ({"type": "websocket.close", "code": None}, 1000),
        ({"type": "websocket.close"}, 1000),
    ],
    ids=["1006", "999", "5000", "bool", "str-code", "list-reason", "none-reason", "none-code", "no-code"],
)
async def test_the_apps_close_goes_to_the_server_as_written(close: Message, told: int) -> None:
    # The server judges the app's close, as without the middleware (the toolkit used to raise ValueError or
    # TypeError in the app); ws_close is told a code a close frame can carry (1006 when none could) and a str.
    recorder = Recorder()
    written = dict(close)

    async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send(ACCEPTED)
        await send(close)

    transport = await serve(ToolkitMiddleware(raw_app, plugins=PluginManager(recorder)), connect())
    assert transport.sent == [ACCEPTED, written]
    assert transport.sent[1] is close
    reason = close.get("reason")
    [(code, told_reason, closed_by)] = recorder.closes()
    assert (code, told_reason, closed_by) == (told, reason if isinstance(reason, str) else "", ClosedBy.APP)
    assert type(code) is int


@pytest.mark.parametrize("again", [{"type": "websocket.send", "text": "late"}, close_message()], ids=["send", "close"])
async def test_sending_after_the_apps_own_close_goes_to_the_server(again: Message) -> None:
    # Only a close the toolkit made is forgiven; after its own close, what the app sends is for the server to
    # judge, as without the middleware (the toolkit used to raise WebSocketDisconnected itself).
    recorder = Recorder()

    async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send(ACCEPTED)
        await send(close_message(4000, "done"))
        await send(again)

    transport = await serve(ToolkitMiddleware(raw_app, plugins=PluginManager(recorder)), connect())
    assert transport.sent == [ACCEPTED, close_message(4000, "done"), again]
    assert recorder.closes() == [(4000, "done", ClosedBy.APP)]


async def test_receiving_again_after_a_plugin_close_raises_instead_of_hanging() -> None:
    recorder = Recorder()
    got: list[Message] = []

    async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send(ACCEPTED)
        got.append(await receive())
        got.append(await receive())  # a server would never answer this; the toolkit raises

    app = ToolkitMiddleware(raw_app, plugins=PluginManager(recorder, CloseOnCue()))
    transport = Transport([connect(), text("plugin"), text("queued")])
    with anyio.fail_after(5), pytest.raises(toolkit.WebSocketDisconnected, match="disconnect message"):
        await app(make_scope(), transport.receive, transport.send)
    assert got == [{"type": "websocket.disconnect", "code": 4100, "reason": "plugin cue"}]
    assert transport.sent == [ACCEPTED, close_message(4100, "plugin cue")]
    assert recorder.closes() == [(4100, "plugin cue", ClosedBy.PLUGIN)]


# --- the relay where plugins act, and where the server fails -------------------------------------------


class Filter(toolkit.Plugin):
    """Drops "skip"; answers "ping" with "pong" itself."""

    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> toolkit.Drop | toolkit.Reply | None:
        if data == "skip":
            return toolkit.DROP
        return toolkit.Reply("pong") if data == "ping" else None


READY: Final[Message] = {"type": "websocket.send", "text": "ready"}


async def serve_two_readers(
    plugin: toolkit.Plugin, recorder: Recorder, *incoming: Message
) -> tuple[list[Any], list[Message]]:
    """A raw app whose two tasks both wait in receive() before the client sends ``incoming``; what each got."""
    inbox_in, inbox = anyio.create_memory_object_stream[Message](len(incoming) + 1)
    sent: list[Message] = []

    async def server_send(message: Message) -> None:
        sent.append(message)
        if message is READY:  # both readers wait: now the client speaks
            for item in incoming:
                inbox_in.send_nowait(item)

    got: list[Any] = []

    async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send(ACCEPTED)

        async def reader() -> None:
            message = await receive()
            got.append(message.get("text", message))

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            tg.start_soon(reader)
            await anyio.lowlevel.checkpoint()  # both readers now wait in receive()
            await send(READY)
        await send(close_message())

    inbox_in.send_nowait(connect())
    with inbox_in, inbox, anyio.fail_after(5):
        await ToolkitMiddleware(raw_app, plugins=PluginManager(recorder, plugin))(
            make_scope(), inbox.receive, server_send
        )
    return got, sent


async def test_dropped_and_answered_messages_with_two_tasks_receiving() -> None:
    recorder = Recorder()
    got, sent = await serve_two_readers(
        Filter(), recorder, text("skip"), text("ping"), text("a"), text("skip"), text("b")
    )
    assert sorted(got) == ["a", "b"]
    assert sent == [ACCEPTED, READY, {"type": "websocket.send", "text": "pong"}, close_message()]
    assert recorder.closes() == [(1000, "", ClosedBy.APP)]


async def test_a_plugin_close_reaches_every_task_waiting_in_receive() -> None:
    recorder = Recorder()
    got, sent = await serve_two_readers(CloseOnCue(), recorder, text("plugin"), text("after the close"))
    told = {"type": "websocket.disconnect", "code": 4100, "reason": "plugin cue"}
    assert got == [told, told]  # the second waiter, handed a message after the close, is told as the first was
    assert sent == [ACCEPTED, READY, close_message(4100, "plugin cue")]  # the app's own close was a no-op
    assert recorder.closes() == [(4100, "plugin cue", ClosedBy.PLUGIN)]


async def test_a_failed_server_send_reaches_the_app_unchanged() -> None:
    # The server's own exception, not the toolkit's WebSocketDisconnect: the app (Starlette's WebSocket, say)
    # handles it as it would without the middleware. ws_close reports the client gone; no hook runs after it.
    recorder = Recorder()
    error = OSError("gone")
    raised: list[BaseException] = []
    transport = Transport([connect()])

    async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send(ACCEPTED)
        transport.send_error = error
        for data in ("a", "b"):
            try:
                await send({"type": "websocket.send", "text": data})
            except OSError as exc:
                raised.append(exc)

    await ToolkitMiddleware(raw_app, plugins=PluginManager(recorder))(make_scope(), transport.receive, transport.send)
    assert len(raised) == 2
    assert all(exc is error for exc in raised)
    assert transport.sent == [ACCEPTED]
    assert recorder.names() == ["ws_accept", "ws_send", "ws_close"]
    assert recorder.closes() == [(1006, "", ClosedBy.CLIENT)]


@pytest.mark.parametrize("raising", [False, True], ids=["returns", "raises"])
async def test_an_unfinished_denial_response_goes_out_as_the_app_sent_it(raising: bool) -> None:
    # ws_denial holds an app's denial until its body is complete; an app that stops halfway still has what it
    # sent delivered, and nothing more: the server ends the response.
    recorder = Recorder()
    start: Message = {"type": "websocket.http.response.start", "status": 403, "headers": []}
    part: Message = {"type": "websocket.http.response.body", "body": b"no", "more_body": True}

    async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send(start)
        await send(part)
        if raising:
            raise LookupError("app bug")

    transport = Transport([connect()])
    app = ToolkitMiddleware(raw_app, plugins=PluginManager(recorder))
    with pytest.raises(LookupError) if raising else contextlib.nullcontext():
        await app(make_scope(extensions=DENIAL_EXTENSION), transport.receive, transport.send)
    assert transport.sent == [start, part]
    assert transport.sent[0] is start
    assert recorder.closes() == [(1006, "", ClosedBy.SERVER if raising else ClosedBy.APP)]


# --- exactly once: the same manager inside ------------------------------------------------------------


async def echo_endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:  # ends with WebSocketDisconnect, which WebSocketApp handles
        message = await websocket.receive_text()
        if message.startswith("leak"):
            await websocket.send_text("leak")
        await websocket.send_text(f"echo {message}")


SESSIONS: Final = {
    "echo": [connect(), text("a"), text("b"), disconnect(1001, "gone")],
    "plugin-close": [connect(), text("a"), text("plugin")],
    "send-close": [connect(), text("leak")],
}


@pytest.mark.parametrize("session", sorted(SESSIONS))
@pytest.mark.parametrize("nesting", ["app-inside", "middleware-twice"])
async def test_the_same_manager_inside_runs_each_hook_once(session: str, nesting: str) -> None:
    incoming = SESSIONS[session]
    alone_recorder = Recorder()
    alone_app = WebSocketApp(echo_endpoint, plugins=PluginManager(alone_recorder, Mark(), CloseOnCue()))
    alone = await serve(alone_app, *incoming)

    recorder = Recorder()
    plugins = PluginManager(recorder, Mark(), CloseOnCue())
    inner: ASGIApp
    if nesting == "app-inside":
        inner = WebSocketApp(echo_endpoint, plugins=plugins)
    else:
        inner = ToolkitMiddleware(WebSocketApp(echo_endpoint), plugins=plugins)
    transport = await serve(ToolkitMiddleware(inner, plugins=plugins), *incoming)
    assert transport.sent == alone.sent  # e.g. "echo a!!": Mark applied once each way, not twice
    assert recorder.calls == alone_recorder.calls
    assert len(recorder.closes()) == 1


async def test_the_same_manager_inside_sees_a_denial_once() -> None:
    recorder = Recorder()
    plugins = PluginManager(recorder, Gate())
    statuses: list[int] = []

    async def endpoint(websocket: WebSocket) -> None:
        try:
            await websocket.accept()
        except WebSocketDenied as exc:  # the inner WebSocket's accept raises the middleware's denial
            statuses.append(exc.status)
            raise

    app = ToolkitMiddleware(WebSocketApp(endpoint, plugins=plugins), plugins=plugins)
    transport = await serve(app, connect(), extensions=DENIAL_EXTENSION)
    assert statuses == [401]
    assert transport.sent == GATE_DENIAL
    assert recorder.names() == ["ws_denial", "ws_close"]


async def test_an_endpoint_raising_inside_a_same_manager_app_is_reported_as_the_apps_close() -> None:
    # The documented difference from a WebSocketApp alone: the inner app's 1011 close reaches the middleware as
    # an ordinary close by the app, so ws_close says APP, not SERVER. Still once, and the error still propagates.
    recorder = Recorder()
    plugins = PluginManager(recorder)

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        raise LookupError("app bug")

    transport = Transport([connect()])
    app = ToolkitMiddleware(WebSocketApp(endpoint, plugins=plugins), plugins=plugins)
    with pytest.raises(LookupError):
        await app(make_scope(), transport.receive, transport.send)
    assert transport.sent == [ACCEPTED, close_message(1011, "internal error")]
    assert recorder.closes() == [(1011, "internal error", ClosedBy.APP)]


async def test_plugins_see_the_middlewares_websocket_and_the_app_reads_the_scope() -> None:
    class Who(toolkit.Plugin):
        def __init__(self) -> None:
            self.websockets: list[WebSocket] = []

        def ws_accept(self, *, websocket: WebSocket, accept: toolkit.Accept) -> None:
            self.websockets.append(websocket)
            websocket.scope["user"] = "alice"  # as toolkit_auth's gate does

    who = Who()
    plugins = PluginManager(who)
    seen: list[object] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        seen.extend([websocket.user, websocket in who.websockets, websocket.plugins is plugins])

    await serve(ToolkitMiddleware(WebSocketApp(endpoint, plugins=plugins), plugins=plugins), connect())
    # The app's own WebSocket is another object than the one plugins get: per-connection lookups
    # keyed by it (auth.principal, logger.conn_id) miss; what plugins put in the scope is shared.
    assert seen == ["alice", False, True]
    assert len(who.websockets) == 1


async def test_another_manager_inside_runs_its_own_hooks() -> None:
    outer, inner = Recorder(), Recorder()
    seen: list[str] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        seen.append(await websocket.receive_text())
        await websocket.send_text("out")

    app = ToolkitMiddleware(
        WebSocketApp(endpoint, plugins=PluginManager(inner, Mark("?"))), plugins=PluginManager(outer, Mark("!"))
    )
    transport = await serve(app, connect(), text("in"))
    assert seen == ["in!?"]  # the middleware's hooks first on the way in, last on the way out
    assert transport.sent == [ACCEPTED, {"type": "websocket.send", "text": "out?!"}, close_message()]
    expected = ["ws_accept", "ws_receive", "ws_send", "ws_close"]
    assert outer.names() == inner.names() == expected
    assert outer.closes() == inner.closes() == [(1000, "", ClosedBy.APP)]


class OuterCue(toolkit.Plugin):
    """Closes when the client sends "outer" (4300)."""

    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Close | None:
        return Close(4300, "outer cue") if data == "outer" else None


@pytest.mark.parametrize(
    ("last", "outer_told", "inner_told"),
    [
        (disconnect(1001, "gone"), (1001, "gone", ClosedBy.CLIENT), (1001, "gone", ClosedBy.CLIENT)),
        (text("close"), (4000, "done", ClosedBy.APP), (4000, "done", ClosedBy.APP)),
        # The inner layer is part of the outer layer's app: its plugin's close is the app's, from outside.
        (text("plugin"), (4100, "plugin cue", ClosedBy.APP), (4100, "plugin cue", ClosedBy.PLUGIN)),
        # The outer layer is the inner layer's server: its plugin's close reaches the inner as a client's.
        (text("outer"), (4300, "outer cue", ClosedBy.PLUGIN), (4300, "outer cue", ClosedBy.CLIENT)),
        (text("raise"), (1011, "internal error", ClosedBy.SERVER), (1011, "internal error", ClosedBy.SERVER)),
    ],
    ids=["client closes", "app closes", "inner plugin closes", "outer plugin closes", "app raises"],
)
async def test_stacked_layers_each_report_who_ended_the_connection(
    last: Message, outer_told: tuple[int, str, ClosedBy], inner_told: tuple[int, str, ClosedBy]
) -> None:
    outer, inner = Recorder(), Recorder()

    async def endpoint(websocket: sw.WebSocket) -> None:
        await websocket.accept()
        with contextlib.suppress(sw.WebSocketDisconnect):
            while (data := await websocket.receive_text()) != "close":
                if data == "raise":
                    raise LookupError("app bug")
                await websocket.send_text(data)
            await websocket.close(4000, "done")

    app = ToolkitMiddleware(
        ToolkitMiddleware(on_starlette(endpoint), plugins=PluginManager(inner, CloseOnCue())),
        plugins=PluginManager(outer, OuterCue()),
    )
    with contextlib.suppress(LookupError):
        await serve(app, connect(), text("hi"), last)
    assert (outer.closes(), inner.closes()) == ([outer_told], [inner_told])


async def test_a_plain_websocket_of_the_same_manager_inside_leaves_the_hooks_to_the_middleware() -> None:
    recorder = Recorder()
    plugins = PluginManager(recorder, Mark())

    async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send, plugins=plugins)
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())
        await websocket.close()

    transport = await serve(ToolkitMiddleware(raw_app, plugins=plugins), connect(), text("x"))
    assert transport.sent == [ACCEPTED, {"type": "websocket.send", "text": "x!!"}, close_message()]
    assert recorder.names() == ["ws_accept", "ws_receive", "ws_send", "ws_close"]


# --- docs/middleware.md -----------------------------------------------------------------------------------

DOCS: Final = Path(__file__).parent.parent / "docs" / "middleware.md"
DOCS_APPS: Final = ["starlette_app", "fastapi_app", "litestar_app", "asgi_app"]


@pytest.fixture(scope="module")
def docs_namespace() -> dict[str, Any]:
    # The page runs as a module of its own (Litestar looks its annotations up in sys.modules), without this
    # file's `from __future__ import annotations` (dont_inherit), as a reader's module would.
    module = types.ModuleType("docs_middleware")
    sys.modules[module.__name__] = module
    try:
        for block in re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.DOTALL):
            exec(compile(block, str(DOCS), "exec", dont_inherit=True), vars(module))  # noqa: S102 - our own docs
    finally:
        del sys.modules[module.__name__]
    return vars(module)


@pytest.mark.parametrize("name", DOCS_APPS)
async def test_the_docs_examples_gate_validate_and_echo(docs_namespace: dict[str, Any], name: str) -> None:
    app = docs_namespace[name]
    denied = await serve(app, connect(), extensions=DENIAL_EXTENSION)
    assert denied.sent == denial_messages(401, b"unauthorized", [(b"www-authenticate", b"Bearer")])

    headers = [(b"host", b"testserver"), (b"authorization", b"Bearer s3cret")]
    transport = Transport([connect(), text('{"type":"say","text":"hi"}'), text("{oops"), disconnect(1000)])
    await app(make_scope(headers=headers, extensions=DENIAL_EXTENSION), transport.receive, transport.send)
    replies = [json.loads(m["text"]) for m in transport.sent if m["type"] == "websocket.send"]
    # The app answered the valid message with the gate's principal; the plugin answered the bad one.
    assert replies == [{"type": "said", "text": "hi", "user": "alice"}, {"type": "error", "error": "invalid_json"}]
    assert transport.sent[-1]["type"] == "websocket.send"  # the client left: nothing more was sent


WHO: Final = toolkit.StateKey[str]("who")


class NamesTheConnection(toolkit.Plugin):
    def ws_accept(self, *, websocket: WebSocket, accept: toolkit.Accept) -> None:
        websocket.plugin_state[WHO] = websocket.headers.get("x-user", "anonymous")


async def test_a_same_manager_websocket_inside_shares_the_middlewares_plugin_state() -> None:
    # What the middleware's plugins keep per connection is what the app's own socket of that manager reads
    # (AuthGate.principal(websocket) inside, for example); another manager's socket has its own.
    plugins = PluginManager(NamesTheConnection())
    seen: list[tuple[str | None, str | None]] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        other = WebSocket(websocket.scope, plugins=PluginManager(Recorder()))
        seen.append((websocket.plugin_state.get(WHO), other.plugin_state.get(WHO)))

    app = ToolkitMiddleware(toolkit.WebSocketApp(endpoint, plugins=plugins), plugins=plugins)
    transport = Transport([connect()])
    await app(make_scope(headers=[(b"host", b"testserver"), (b"x-user", b"alice")]), transport.receive, transport.send)
    assert seen == [("alice", None)]
