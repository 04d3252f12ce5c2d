"""toolkit_limits.SendTimeouts: a client that stops reading is given up on, never waited for forever.

In memory (a server whose send never returns), on asyncio and trio; then on a real uvicorn with a
raw socket that completes the handshake and never reads again, which is what the demo met: its
writer blocked in send() forever, the 1013 close then blocked too, and the connection's slot stayed.
"""

from __future__ import annotations

import base64
import math
import os
import socket
import threading
from typing import Any

import anyio
import pytest
from toolkit_limits import ConnectionLimit, SendTimeout, SendTimeouts

import toolkit
from tests.server import run_server, wait_until
from tests.support import Recorder, connect, make_scope
from toolkit import ClosedBy, Message, WebSocket

pytestmark = pytest.mark.anyio


class StuckServer:
    """A server transport whose ``send`` never returns once ``stuck`` is set (a client that stopped reading)."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.stuck = False
        self.incoming: list[Message] = [connect()]

    async def receive(self) -> Message:
        if self.incoming:
            return self.incoming.pop(0)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(self, message: Message) -> None:
        if self.stuck:
            await anyio.sleep_forever()
        self.sent.append(message)


async def test_a_send_that_never_returns_is_abandoned_and_reported_1006() -> None:
    recorder = Recorder()
    errors: list[BaseException] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        server.stuck = True
        try:
            await websocket.send_text("into the void")
        except toolkit.WebSocketDisconnect as error:
            errors.append(error)
        await websocket.close(1013, "too slow")  # nothing to send any more: returns at once

    server = StuckServer()
    app = SendTimeouts(toolkit.WebSocketApp(endpoint, plugins=toolkit.PluginManager(recorder)), send=0.05)
    with anyio.fail_after(5):
        await app(make_scope(), server.receive, server.send)
    assert [type(error) for error in errors] == [toolkit.WebSocketDisconnect]
    assert errors[0].code == 1006  # type: ignore[attr-defined]
    assert recorder.closes() == [(1006, "", ClosedBy.CLIENT)]
    assert server.sent == [{"type": "websocket.accept", "subprotocol": None, "headers": []}]


async def test_a_close_that_never_goes_out_is_bounded_too() -> None:
    recorder = Recorder()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        server.stuck = True
        with pytest.raises(toolkit.WebSocketDisconnect):
            await websocket.close(1000)

    server = StuckServer()
    app = SendTimeouts(toolkit.WebSocketApp(endpoint, plugins=toolkit.PluginManager(recorder)), close=0.05)
    with anyio.fail_after(5):
        await app(make_scope(), server.receive, server.send)
    assert recorder.closes() == [(1006, "", ClosedBy.CLIENT)]


async def test_after_one_timeout_every_send_fails_at_once() -> None:
    attempts: list[Message] = []

    async def stuck_send(message: Message) -> None:
        attempts.append(message)
        await anyio.sleep_forever()

    seen: list[str] = []

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        for _ in range(3):
            with pytest.raises(SendTimeout) as error:
                await send({"type": "websocket.send", "text": "x"})
            seen.append(str(error.value))

    with anyio.fail_after(5):
        await SendTimeouts(raw, send=0.05)(make_scope(), StuckServer().receive, stuck_send)
    message = "the client took no websocket.send within 0.05 s: given up"
    assert seen == [message] * 3
    assert len(attempts) == 1  # the next two never reached the server: they failed without waiting
    assert isinstance(SendTimeout(message), OSError)  # what ASGI servers raise for a gone client


async def test_sends_within_the_limit_and_other_scopes_pass_through_untouched() -> None:
    calls: list[tuple[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append((scope["type"], send))
        if scope["type"] == "websocket":
            await send({"type": "websocket.accept"})

    async def server_send(message: Message) -> None:
        calls.append(("sent", message["type"]))

    async def receive() -> Message:
        return connect()

    middleware = SendTimeouts(app, send=1.0, close=None)
    await middleware({"type": "http"}, receive, server_send)
    await middleware(make_scope(), receive, server_send)
    assert calls[0] == ("http", server_send)  # the server's own send: not wrapped
    assert calls[1][0] == "websocket"
    assert calls[1][1] is not server_send
    assert calls[2] == ("sent", "websocket.accept")
    unbounded = SendTimeouts(app, send=None, close=None)
    await unbounded(make_scope(), receive, server_send)
    assert calls[3] == ("websocket", server_send)


@pytest.mark.parametrize("bad", [0, -1, math.nan, True, "5"])
def test_limits_must_be_positive_seconds(bad: Any) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None: ...

    with pytest.raises(ValueError, match="positive number of seconds"):
        SendTimeouts(app, send=bad)
    with pytest.raises(ValueError, match="positive number of seconds"):
        SendTimeouts(app, close=bad)


# --- a real server, a client that never reads ------------------------------------------------------


def handshake_and_stop_reading(port: int) -> socket.socket:
    """Open a WebSocket with a raw socket, read the 101 response, then never read again."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fill up quickly
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(1)  # byte by byte: not one byte of the frames after the headers
        assert chunk, "the server closed during the handshake"
        response += chunk
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


@pytest.mark.server
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the test's own waits; the server runs in its thread
async def test_a_client_that_never_reads_is_released_on_a_real_server() -> None:
    recorder = Recorder()
    limit = ConnectionLimit(max_total=10)
    ended = threading.Event()
    sent = [0]

    async def flood(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_bytes(b"x" * 65536)
                sent[0] += 1
        except toolkit.WebSocketDisconnect:
            await websocket.close(1013, "too slow")  # a no-op now: the connection is over
        finally:
            ended.set()

    app = SendTimeouts(toolkit.WebSocketApp(flood, plugins=toolkit.PluginManager(limit, recorder)), send=0.5)
    with run_server(app) as server:
        sock = handshake_and_stop_reading(server.port)
        try:
            await wait_until(lambda: limit.total == 1, 5, "the connection to be counted")
            await wait_until(ended.is_set, 15, "the handler to give up on the client")
            assert recorder.closes() == [(1006, "", ClosedBy.CLIENT)]
            assert limit.total == 0  # its slot is free again
            assert sent[0] >= 1  # the buffers did fill: it was the send that hung
        finally:
            sock.close()
