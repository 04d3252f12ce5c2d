"""Regressions found by the independent review of the core-contract work, each with the case that showed it.

- no hook runs after ``ws_close`` (a send, an accept or a denial after the client left);
- a task waiting in ``receive`` when a plugin closes on another task's send gets a disconnect, not an error;
- an accept sent before the handshake request still gets its ``ws_close`` when the socket is dropped;
- the middleware relays an app's accept as written, whatever the toolkit's own ``Accept`` would refuse;
- one receiver at a time includes the ``ws_receive`` hooks (an async hook may suspend);
- a wrapper around an observer hook never swallows a ``BaseException``; its bad result is logged.

Every test runs on asyncio and trio.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Generator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from toolkit_limits import ConnectionLimit, OutboundSizeLimit
from toolkit_logging import ConnectionLogger

import toolkit
from tests.support import Recorder, Transport, connect, disconnect, make_scope, text
from toolkit import ClosedBy, Message, PluginManager, WebSocket

pytestmark = pytest.mark.anyio


async def test_no_ws_send_after_the_client_left() -> None:
    recorder = Recorder()
    transport = Transport([connect(), disconnect(1000)])
    async with WebSocket(make_scope(), transport.receive, transport.send, plugins=PluginManager(recorder)) as ws:
        await ws.accept()
        await ws.receive()  # the client's disconnect: ws_close fires
        await ws.send_text("late")  # a broadcast racing the disconnect: the server judges it, no hook sees it
    assert recorder.names() == ["ws_accept", "ws_close"]
    assert transport.sent[-1] == {"type": "websocket.send", "text": "late"}


@pytest.mark.parametrize("then_accepts", [False, True])
async def test_no_accept_or_denial_hook_after_the_client_left_during_the_handshake(then_accepts: bool) -> None:
    recorder, logger, limit = Recorder(), ConnectionLogger(), ConnectionLimit(max_total=1)
    manager = PluginManager(recorder, logger, limit)
    transport = Transport([connect(), disconnect(1001)])
    async with WebSocket(make_scope(), transport.receive, transport.send, plugins=manager) as ws:
        await ws.receive()
        await ws.receive()  # the client left before any answer
        if then_accepts:
            await ws.accept()
    assert recorder.names() == ["ws_close"]
    assert recorder.closes() == [(1001, "", ClosedBy.CLIENT)]
    assert (logger.open_connections, limit.total, len(ws.plugin_state)) == (0, 0, 0)
    assert transport.sent == (
        [{"type": "websocket.accept", "subprotocol": None, "headers": []}] if then_accepts else []
    )
    fresh = Transport([connect(), disconnect(1000)])
    async with WebSocket(make_scope(), fresh.receive, fresh.send, plugins=manager) as ws:
        await ws.accept()  # the cap still admits one: nothing leaked
    assert fresh.sent[0]["type"] == "websocket.accept"


async def test_a_reader_gets_a_disconnect_when_a_plugin_closes_on_the_writers_send() -> None:
    send_stream, receive_stream = anyio.create_memory_object_stream[Message](10)
    sent: list[Message] = []
    outcomes: dict[str, BaseException] = {}

    async def receive() -> Message:
        return await receive_stream.receive()

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "websocket.close":  # the client answers the close
            await send_stream.send({"type": "websocket.disconnect", "code": message["code"]})

    await send_stream.send(connect())
    manager = PluginManager(OutboundSizeLimit(max_bytes=10))
    with anyio.fail_after(5), send_stream, receive_stream:
        async with WebSocket(make_scope(), receive, send, plugins=manager) as ws:
            await ws.accept()
            writer_may_go = anyio.Event()

            async def reader() -> None:
                writer_may_go.set()
                try:
                    await ws.receive_text()
                except BaseException as exc:
                    outcomes["reader"] = exc

            async def writer() -> None:
                await writer_may_go.wait()
                await anyio.lowlevel.checkpoint()
                try:
                    await ws.send_text("x" * 100)
                except toolkit.WebSocketDisconnect as exc:
                    outcomes["writer"] = exc

            async with anyio.create_task_group() as group:
                group.start_soon(reader)
                group.start_soon(writer)
    assert type(outcomes["writer"]) is toolkit.WebSocketDisconnect
    assert type(outcomes["reader"]) is toolkit.WebSocketDisconnect  # was WebSocketDisconnected, a RuntimeError
    assert sent[-1] == {"type": "websocket.close", "code": 1011, "reason": "internal error"}


async def test_an_accept_before_the_handshake_request_still_gets_its_ws_close() -> None:
    recorder = Recorder()
    transport = Transport([])

    async def run_and_drop() -> None:
        ws = WebSocket(make_scope(), transport.receive, transport.send, plugins=PluginManager(recorder))
        await ws.send({"type": "websocket.accept"})
        await ws.send_text("hi")
        del ws
        gc.collect()

    with pytest.warns(ResourceWarning, match="async with"):
        await run_and_drop()
    assert recorder.names() == ["ws_accept", "ws_send", "ws_close"]
    assert recorder.closes() == [(1006, "", ClosedBy.SERVER)]


@pytest.mark.parametrize(
    ("headers", "subprotocol"),
    [
        ([(b"sec-websocket-protocol", b"chat")], None),
        ([(bytearray(b"x-a"), b"1")], None),
        ([], "caf\u00e9"),
    ],
    ids=["protocol-header", "bytearray-name", "non-ascii-subprotocol"],
)
async def test_the_middleware_relays_an_apps_accept_as_written(headers: list[Any], subprotocol: str | None) -> None:
    accept: Message = {"type": "websocket.accept", "subprotocol": subprotocol, "headers": headers}

    async def app(scope: toolkit.Scope, receive: toolkit.Receive, send: toolkit.Send) -> None:
        await receive()
        await send(accept)

    recorder = Recorder()
    plain, relayed = Transport([connect()]), Transport([connect()])
    await app(make_scope(), plain.receive, plain.send)
    await toolkit.ToolkitMiddleware(app, plugins=PluginManager(recorder))(make_scope(), relayed.receive, relayed.send)
    assert relayed.sent == plain.sent == [accept]
    assert relayed.sent[0] is accept
    [(name, seen)] = recorder.calls[:1]
    assert (name, seen.subprotocol, list(seen.headers)) == ("ws_accept", subprotocol, headers)


async def test_one_receiver_at_a_time_includes_an_async_ws_receive() -> None:
    class Slow(toolkit.Plugin):
        def __init__(self) -> None:
            self.inside = anyio.Event()
            self.release = anyio.Event()

        async def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> None:
            if data == "1":
                self.inside.set()
                await self.release.wait()

    slow = Slow()
    transport = Transport([connect(), text("1"), text("2")])
    order: list[tuple[str, str]] = []
    with anyio.fail_after(5):
        async with WebSocket(make_scope(), transport.receive, transport.send, plugins=PluginManager(slow)) as ws:
            await ws.accept()

            async def first() -> None:
                order.append(("A", await ws.receive_text()))

            async with anyio.create_task_group() as group:
                group.start_soon(first)
                await slow.inside.wait()
                with pytest.raises(RuntimeError, match="Another task is already receiving"):
                    await ws.receive_text()
                slow.release.set()
            order.append(("B", await ws.receive_text()))
    assert order == [("A", "1"), ("B", "2")]


class Interrupts(toolkit.Plugin):
    def ws_close(self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None:
        raise KeyboardInterrupt


class CarelessWrapper:
    @toolkit.hookimpl(wrapper=True)
    def ws_close(
        self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy
    ) -> Generator[None, object, object]:
        try:
            return (yield)
        except BaseException:  # a careless wrapper: the toolkit must re-raise what is not an Exception
            return None


async def test_a_wrapper_never_swallows_a_base_exception_from_ws_close() -> None:
    transport = Transport([connect(), disconnect(1000)])
    manager = PluginManager(Interrupts(), CarelessWrapper())

    async def session() -> None:
        async with WebSocket(make_scope(), transport.receive, transport.send, plugins=manager) as ws:
            await ws.accept()
            await ws.receive()

    with pytest.raises(KeyboardInterrupt):
        await session()


class WrongDenial:
    @toolkit.hookimpl(wrapper=True)
    def ws_denial(self, *, websocket: WebSocket, response: toolkit.DenialResponse) -> Generator[None, object, object]:
        yield
        return "not a response"


async def test_a_wrappers_bad_observer_result_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="toolkit")
    transport = Transport([connect()])
    async with WebSocket(make_scope(), transport.receive, transport.send, plugins=PluginManager(WrongDenial())) as ws:
        await ws.receive()
        await ws.close()
    assert transport.sent == [{"type": "websocket.close", "code": 1000, "reason": ""}]
    assert [r.getMessage() for r in caplog.records if r.name == "toolkit"] == [
        "plugin 'WrongDenial' failed in ws_denial: a wrapper returned an unsupported str"
    ]
