"""toolkit_pytest's fixtures, used as plugin authors use them: ``ws_client`` and ``hook_recorder``.

Every test runs on asyncio and trio (tests/conftest.py). How the plugin itself is registered and that
a hanging test fails instead of hanging are in tests/test_pytest_plugin_pytester.py.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from toolkit_pytest import (
    AppDidNotFinish,
    ClientFactory,
    ConnectionDenied,
    HookRecorder,
    ReceiveTimeout,
    WebSocketClient,
    connect,
)

import toolkit
from toolkit import DROP, Accept, ClosedBy, DenialResponse, Message, MessageResult, Receive, Scope, Send, WebSocket

pytestmark = pytest.mark.anyio


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for data in websocket.iter_text():
        await websocket.send_text(data)


class Upper(toolkit.Plugin):
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> MessageResult:
        return data.upper() if isinstance(data, str) else None


class DropNoise(toolkit.Plugin):
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> MessageResult:
        return DROP if data == "noise" else None


class Broken(toolkit.Plugin):
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> MessageResult:
        raise ValueError("plugin bug")


class Gate(toolkit.Plugin):
    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> DenialResponse | None:
        return None if websocket.headers.get("authorization") == "Bearer ok" else DenialResponse(401, "who are you")


# --- the client -------------------------------------------------------------------------------------


async def test_echo_through_a_plugin_records_every_hook_in_order(
    ws_client: ClientFactory, hook_recorder: HookRecorder
) -> None:
    app = toolkit.WebSocketApp(echo, plugins=toolkit.PluginManager(Upper(), hook_recorder))
    async with ws_client(app) as client:
        await client.send_text("hi")
        assert await client.receive_text() == "HI"
        hook_recorder.assert_fired("ws_accept", "ws_receive", "ws_send")  # ws_close comes when the client leaves
    hook_recorder.assert_fired("ws_accept", "ws_receive", "ws_send", "ws_close")
    received = hook_recorder.last("ws_receive")
    assert (received["data"], received.result, received.error) == ("hi", "HI", None)
    assert hook_recorder.last("ws_send")["data"] == "HI"
    closed = hook_recorder.last("ws_close")
    assert (closed["code"], closed["reason"], closed["closed_by"]) == (1000, "", ClosedBy.CLIENT)
    assert closed.websocket is received.websocket


async def test_json_and_bytes_round_trip(ws_client: ClientFactory) -> None:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json(await websocket.receive_json())
        await websocket.send_bytes(await websocket.receive_bytes())
        await websocket.send_json(await websocket.receive_json(mode="binary"), mode="binary")

    async with ws_client(toolkit.WebSocketApp(endpoint)) as client:
        await client.send_json({"n": 1, "s": "é"})
        assert await client.receive_json() == {"n": 1, "s": "é"}
        await client.send_bytes(b"\x00\xff")
        assert await client.receive_bytes() == b"\x00\xff"
        await client.send_json([1, 2], mode="binary")
        assert await client.receive_json() == [1, 2]


async def test_a_message_of_the_wrong_kind_fails_with_what_came(ws_client: ClientFactory) -> None:
    async with ws_client(toolkit.WebSocketApp(echo)) as client:
        await client.send_text("text")
        with pytest.raises(AssertionError, match="expected a binary message, got a text message 'text'"):
            await client.receive_bytes()


async def test_scope_carries_path_query_headers_and_subprotocols(ws_client: ClientFactory) -> None:
    seen: dict[str, Any] = {}

    async def endpoint(websocket: WebSocket) -> None:
        seen.update(
            path=websocket.url.path,
            query=dict(websocket.query_params),
            auth=websocket.headers.get("authorization"),
            host=websocket.headers.get("host"),
            offered=websocket.headers.get("sec-websocket-protocol"),
        )
        await websocket.accept(subprotocol=websocket.scope["subprotocols"][-1], headers=[(b"x-hello", b"1")])

    app = toolkit.WebSocketApp(endpoint)
    async with ws_client(
        app, "/chat", query_string="room=7", headers={"Authorization": "Bearer ok"}, subprotocols=["v1", "v2"]
    ) as client:
        assert client.subprotocol == "v2"
        assert (b"x-hello", b"1") in client.accept_headers
    assert seen == {
        "path": "/chat",
        "query": {"room": "7"},
        "auth": "Bearer ok",
        "host": "testserver",
        "offered": "v1, v2",
    }


async def test_a_denial_raises_connection_denied_with_status_and_body(
    ws_client: ClientFactory, hook_recorder: HookRecorder
) -> None:
    app = toolkit.WebSocketApp(echo, plugins=toolkit.PluginManager(Gate(), hook_recorder))
    with pytest.raises(ConnectionDenied) as denied:
        async with ws_client(app):
            pytest.fail("the gate let the connection through")
    assert (denied.value.status, denied.value.body) == (401, b"who are you")
    hook_recorder.assert_fired("ws_accept", "ws_denial", "ws_close")
    assert isinstance(hook_recorder.last("ws_accept").result, DenialResponse)

    async with ws_client(app, headers=[(b"authorization", b"Bearer ok")]) as client:
        await client.send_text("in")
        assert await client.receive_text() == "in"


async def test_without_the_denial_extension_a_denial_is_a_403(ws_client: ClientFactory) -> None:
    app = toolkit.WebSocketApp(echo, plugins=toolkit.PluginManager(Gate()))
    with pytest.raises(ConnectionDenied) as denied:
        async with ws_client(app, denial_extension=False):
            pass
    assert (denied.value.status, denied.value.body) == (403, b"")


async def test_a_dropped_message_never_arrives(ws_client: ClientFactory, hook_recorder: HookRecorder) -> None:
    app = toolkit.WebSocketApp(echo, plugins=toolkit.PluginManager(DropNoise(), hook_recorder))
    async with ws_client(app) as client:
        await client.send_text("noise")
        await client.assert_nothing_received()
        await client.send_text("signal")
        with pytest.raises(AssertionError, match="expected nothing from the app, got a text message 'signal'"):
            await client.assert_nothing_received()
    assert [call.result for call in hook_recorder.calls_of("ws_receive")] == [DROP, "signal"]


async def test_a_close_from_the_app_is_asserted_and_then_raises(ws_client: ClientFactory) -> None:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close(1008, "policy")

    async with ws_client(toolkit.WebSocketApp(endpoint)) as client:
        with pytest.raises(AssertionError, match=r"expected a close with code 1000, reason any; got code 1008"):
            await client.assert_closed(1000)
        assert await client.assert_closed(1008, "policy") == (1008, "policy")  # already read: checked again
        with pytest.raises(toolkit.WebSocketDisconnect) as closed:
            await client.receive_text()
        assert (closed.value.code, closed.value.reason) == (1008, "policy")


async def test_assert_closed_fails_on_a_data_message(ws_client: ClientFactory) -> None:
    async with ws_client(toolkit.WebSocketApp(echo)) as client:
        await client.send_text("still open")
        with pytest.raises(AssertionError, match="expected the app to close the connection, got a text message"):
            await client.assert_closed()


async def test_a_failing_plugin_is_recorded_and_closes_1011(
    ws_client: ClientFactory, hook_recorder: HookRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    app = toolkit.WebSocketApp(echo, plugins=toolkit.PluginManager(Broken(), hook_recorder))
    async with ws_client(app) as client:
        await client.send_text("boom")
        assert await client.assert_closed(1011) == (1011, "internal error")
    received = hook_recorder.last("ws_receive")
    assert isinstance(received.error, ValueError)
    assert "ws_receive('boom') raised ValueError" in str(received).replace("data=", "")
    closed = hook_recorder.last("ws_close")
    assert (closed["code"], closed["closed_by"]) == (1011, ClosedBy.PLUGIN)
    assert "plugin 'Broken' failed in ws_receive" in caplog.text


async def test_the_client_closing_reaches_the_app_and_ws_close(
    ws_client: ClientFactory, hook_recorder: HookRecorder
) -> None:
    got: list[tuple[int, str]] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            await websocket.receive_text()
        except toolkit.WebSocketDisconnect as left:
            got.append((left.code, left.reason))
            raise

    async with ws_client(toolkit.WebSocketApp(endpoint, plugins=toolkit.PluginManager(hook_recorder))) as client:
        await client.close(4000, "bye")
        with pytest.raises(RuntimeError, match="the client has closed the connection"):
            await client.send_text("too late")
        with pytest.raises(RuntimeError, match="nothing more to receive"):
            await client.receive_text()
    assert got == [(4000, "bye")]
    closed = hook_recorder.last("ws_close")
    assert (closed["code"], closed["reason"], closed["closed_by"]) == (4000, "bye", ClosedBy.CLIENT)


async def test_an_app_that_only_sends_stops_when_the_client_leaves(
    ws_client: ClientFactory, hook_recorder: HookRecorder
) -> None:
    async def ticker(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:  # never receives: only the failing send (the client is gone) ends it
            await websocket.send_text("tick")

    async with ws_client(toolkit.WebSocketApp(ticker, plugins=toolkit.PluginManager(hook_recorder))) as client:
        assert await client.receive_text() == "tick"
        assert await client.receive_text() == "tick"
    closed = hook_recorder.last("ws_close")
    assert (closed["code"], closed["closed_by"]) == (1006, ClosedBy.CLIENT)


# --- bounded: a test fails, never hangs --------------------------------------------------------------


async def test_a_receive_that_would_hang_fails_after_the_timeout(ws_client: ClientFactory) -> None:
    started = time.monotonic()
    async with ws_client(toolkit.WebSocketApp(echo), timeout=0.1) as client:
        with pytest.raises(ReceiveTimeout, match=r"the app sent nothing within 0\.1s"):
            await client.receive_text()
    assert time.monotonic() - started < 2


async def test_an_app_that_never_accepts_fails_the_handshake_after_the_timeout(ws_client: ClientFactory) -> None:
    async def stuck(websocket: WebSocket) -> None:
        await websocket.receive()  # the connect; then waits for a message the client never sends
        await websocket.receive()

    # It does finish once the client leaves (the disconnect arrives): the timeout is what is raised.
    with pytest.raises(ReceiveTimeout):
        async with ws_client(toolkit.WebSocketApp(stuck), timeout=0.1):
            pytest.fail("the handshake cannot succeed")


async def test_an_app_that_ignores_the_disconnect_is_cancelled_and_reported(
    ws_client: ClientFactory, hook_recorder: HookRecorder
) -> None:
    async def deaf(websocket: WebSocket) -> None:
        await websocket.accept()
        await anyio.sleep_forever()

    started = time.monotonic()
    with pytest.raises(AppDidNotFinish, match=r"did not finish within 0\.1s of the client leaving"):
        async with ws_client(toolkit.WebSocketApp(deaf, plugins=toolkit.PluginManager(hook_recorder)), timeout=0.1):
            pass
    assert time.monotonic() - started < 2
    closed = hook_recorder.last("ws_close")  # the toolkit still reports the end of the cancelled connection
    assert (closed["code"], closed["closed_by"]) == (1006, ClosedBy.SERVER)


def test_a_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        connect(toolkit.WebSocketApp(echo), timeout=0)


# --- what the app raises -----------------------------------------------------------------------------


async def crash_after_accept(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.receive_text()
    raise ZeroDivisionError


async def go_and_see_1011(client: WebSocketClient) -> None:
    await client.send_text("go")
    assert await client.assert_closed(1011) == (1011, "internal error")


async def test_the_apps_exception_is_raised_when_the_client_leaves(ws_client: ClientFactory) -> None:
    with pytest.raises(ZeroDivisionError):
        async with ws_client(toolkit.WebSocketApp(crash_after_accept)) as client:
            await go_and_see_1011(client)


async def test_raise_app_exceptions_false_keeps_it_on_the_client(ws_client: ClientFactory) -> None:
    async with ws_client(toolkit.WebSocketApp(crash_after_accept), raise_app_exceptions=False) as client:
        await go_and_see_1011(client)
    assert isinstance(client.app_error, ZeroDivisionError)


async def test_a_crash_before_accepting_raises_the_apps_exception(ws_client: ClientFactory) -> None:
    async def crash(websocket: WebSocket) -> None:
        raise KeyError("before accept")

    with pytest.raises(KeyError):
        async with ws_client(toolkit.WebSocketApp(crash)):
            pass
    with pytest.raises(ConnectionDenied) as denied:
        async with ws_client(toolkit.WebSocketApp(crash), raise_app_exceptions=False):
            pass
    assert denied.value.status == 500


async def test_a_plain_asgi_app_is_finished_for_as_a_server_would(ws_client: ClientFactory) -> None:
    async def returns_after_accept(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    async def raises_after_accept(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        raise ZeroDivisionError

    async def returns_without_accepting(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()

    async def raises_before_accepting(scope: Scope, receive: Receive, send: Send) -> None:
        raise ZeroDivisionError

    async with ws_client(returns_after_accept) as client:
        assert await client.assert_closed() == (1000, "")
        with pytest.raises(toolkit.WebSocketDisconnect):
            await client.receive()
    async with ws_client(raises_after_accept, raise_app_exceptions=False) as client:
        assert await client.assert_closed() == (1011, "")
    for app, status in ((returns_without_accepting, 403), (raises_before_accepting, 500)):
        with pytest.raises(ConnectionDenied) as denied:
            async with ws_client(app, raise_app_exceptions=False):
                pass
        assert denied.value.status == status


async def test_after_its_close_a_plain_app_receives_the_disconnect(ws_client: ClientFactory) -> None:
    got: list[Message] = []

    async def closes_then_receives(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4001, "reason": "done"})
        got.append(await receive())  # the client's answer to the close, as a server reports it
        got.append(await receive())  # and again: the connection stays over

    async with ws_client(closes_then_receives, timeout=1) as client:
        assert await client.assert_closed(4001, "done") == (4001, "done")
        await client.send_text("ignored: the app has closed")
        assert client.app_error is None
    assert got == [{"type": "websocket.disconnect", "code": 4001, "reason": "done"}] * 2


async def test_connect_works_without_the_fixture() -> None:
    messages: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        messages.append(await receive())
        await send({"type": "websocket.accept"})
        messages.append(await receive())

    async with connect(app, timeout=1) as client:
        assert isinstance(client, WebSocketClient)
        assert client.timeout == 1
    assert messages == [
        {"type": "websocket.connect"},
        {"type": "websocket.disconnect", "code": 1000, "reason": ""},
    ]


def test_ws_client_takes_its_timeout_from_the_ini_option(ws_client: ClientFactory) -> None:
    assert ws_client.timeout == 5.0  # the default of `ws_toolkit_timeout`; the project's config leaves it


# --- the recorder's assertions -----------------------------------------------------------------------


async def test_recorder_assertions_pass_and_fail_with_what_fired(
    ws_client: ClientFactory, hook_recorder: HookRecorder
) -> None:
    app = toolkit.WebSocketApp(echo, plugins=toolkit.PluginManager(hook_recorder))
    async with ws_client(app) as client:
        await client.send_text("a")
        await client.receive_text()
    hook_recorder.assert_fired_in_order("ws_accept", "ws_close")
    hook_recorder.assert_fired_in_order("ws_receive", "ws_send", "ws_close")
    hook_recorder.assert_not_fired("ws_denial")
    with pytest.raises(AssertionError, match=r"(?s)expected in this order: ws_send, ws_receive.*2\. ws_receive"):
        hook_recorder.assert_fired_in_order("ws_send", "ws_receive")
    with pytest.raises(AssertionError, match=r"(?s)expected exactly: ws_accept, ws_close\nfired:\n  1\. ws_accept"):
        hook_recorder.assert_fired("ws_accept", "ws_close")
    with pytest.raises(AssertionError, match="expected not to fire: ws_send"):
        hook_recorder.assert_not_fired("ws_denial", "ws_send")
    with pytest.raises(AssertionError, match="ws_denial never fired"):
        hook_recorder.last("ws_denial")
    with pytest.raises(ValueError, match="not a hook: 'ws_recieve'"):
        hook_recorder.assert_not_fired("ws_recieve")
    hook_recorder.clear()
    hook_recorder.assert_fired()
    with pytest.raises(AssertionError, match="no hook fired"):
        hook_recorder.assert_fired("ws_accept")


async def test_the_recorder_sees_the_chains_input_and_outcome_and_changes_nothing(
    ws_client: ClientFactory, hook_recorder: HookRecorder
) -> None:
    class Subprotocol(toolkit.Plugin):
        @toolkit.hookimpl(tryfirst=True)  # also tryfirst: the recorder, a wrapper, still wraps it
        def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Accept:
            return accept.replace(subprotocol="chosen")

    app = toolkit.WebSocketApp(echo, plugins=toolkit.PluginManager(Subprotocol(), Upper(), hook_recorder))
    async with ws_client(app, subprotocols=["chosen"]) as client:
        assert client.subprotocol == "chosen"
        await client.send_text("x")
        assert await client.receive_text() == "X"
    accepted = hook_recorder.last("ws_accept")
    assert accepted["accept"] == Accept()
    assert accepted.result == Accept(subprotocol="chosen")
