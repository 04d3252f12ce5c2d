"""The demo's server: a handshake deadline, a shutdown that says "going away" and ends, bounded frames.

Real uvicorn on 127.0.0.1 with raw sockets and real clients (issue 13). The deadline and the shutdown
run in-process with the demo's own server classes (toolkit_demo/_server.py), on short clocks; the
frame limit and Ctrl+C run on ``python -m toolkit_demo`` itself.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
import zlib
from pathlib import Path

import pytest
from toolkit_demo._server import SHUTDOWN_SECONDS, WS_MAX_SIZE, DemoServer, HandshakeDeadline, server_config
from toolkit_limits import SendTimeouts
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.sync.client import ClientConnection as ClientConnectionSync
from websockets.sync.client import connect as sync_connect
from websockets.typing import Origin, Subprotocol

import toolkit
from tests.server import run_server, wait_until
from tests.test_demo_server import STEP, demo_process
from tests.test_timeouts import handshake_and_stop_reading
from toolkit import WebSocket

pytestmark = [pytest.mark.server, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the clients; the servers run in their own threads or processes


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(text)


# --- a deadline for the handshake ------------------------------------------------------------------


class QuickDeadline(HandshakeDeadline):
    seconds = 0.5


def still_open(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        return sock.recv(1) != b""  # b"": the server closed it
    except TimeoutError:
        return True
    except OSError:
        return False


async def test_half_sent_handshakes_are_dropped_and_whole_ones_are_not() -> None:
    with run_server(toolkit.WebSocketApp(echo), http=QuickDeadline) as server:
        trickling = []
        for _ in range(20):  # slowloris: a request head that never ends
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=STEP)
            sock.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
            trickling.append(sock)
        async with connect(f"{server.url}/ws", open_timeout=STEP, ping_interval=None) as patient:
            await asyncio.sleep(1.0)  # twice the deadline, after a complete handshake: still served
            try:
                await wait_until(lambda: not any(still_open(sock) for sock in trickling), 3, "the deadline")
            finally:
                for sock in trickling:
                    sock.close()
            await patient.send("still here")
            assert await asyncio.wait_for(patient.recv(), STEP) == "still here"


# --- a shutdown that says goodbye, and ends ---------------------------------------------------------


async def read_until_closed(conn: ClientConnection) -> None:
    async with asyncio.timeout(STEP):
        while True:
            await conn.recv()


async def test_shutdown_says_going_away_and_ends_despite_a_client_that_never_reads() -> None:
    async def flood(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:  # to everyone, as a busy chat does: the stuck client's buffers fill up
            await websocket.send_text("x" * 4096)
            await asyncio.sleep(0)

    chat = toolkit.WebSocketApp(flood)
    app = SendTimeouts(chat, send=60, close=60)  # longer than the shutdown: the shutdown must end it itself
    with run_server(app, server=lambda config: DemoServer(config, [chat]), timeout_graceful_shutdown=1) as server:
        stuck = handshake_and_stop_reading(server.port)
        async with connect(f"{server.url}/ws", open_timeout=STEP, ping_interval=None, max_queue=None) as reader:
            await wait_until(lambda: len(chat.connections) == 2, STEP, "both connections")
            await asyncio.sleep(0.5)  # the stuck client's buffers fill
            started = time.monotonic()
            server.server.should_exit = True  # what Ctrl+C does
            with pytest.raises(ConnectionClosed) as closed:
                await read_until_closed(reader)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "going away")
            # Bounded by the goodbye's 2 s and the graceful 1 s (plus slack for a busy machine); before, it hung.
            await wait_until(lambda: not server.running, 8, "the server to stop")
            assert time.monotonic() - started < 2 + 1 + 5
        stuck.close()


# --- the real demo: frames bounded before decompression, Ctrl+C --------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def drain(conn: ClientConnectionSync) -> None:
    for _ in range(1000):  # bounded: the chat sends nothing but the close now
        conn.recv(timeout=STEP)


def test_the_demo_bounds_frames_before_inflating_them_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    with demo_process(tmp_path / "demo.log") as (process, banner):
        base = banner[0].split(": ", 1)[1].rstrip("/")
        token = next(line.split("#token=", 1)[1] for line in banner if "#token=" in line)
        ws = base.replace("http://", "ws://") + "/ws"
        offer = [Subprotocol("chat.v1"), Subprotocol(f"bearer.{token}")]

        def client() -> ClientConnectionSync:
            return sync_connect(
                ws,
                origin=Origin(base),
                subprotocols=offer,
                open_timeout=STEP,
                close_timeout=STEP,
                extensions=[ClientPerMessageDeflateFactory()],
                max_size=None,
            )

        # A deflate bomb: 8 MiB of zeros is about 8 KiB on the wire.
        assert len(zlib.compress(b"\0" * (8 << 20))) < 10 * 1024
        before = rss_kib(process.pid)
        with client() as bomber:
            bomber.send(b"\0" * (8 << 20))
            with pytest.raises(ConnectionClosed) as closed:
                bomber.recv(timeout=STEP)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009  # the server's own limit: over WS_MAX_SIZE, never inflated past it
        assert WS_MAX_SIZE == 16 * 1024
        assert rss_kib(process.pid) - before < 16 * 1024  # under 16 MiB more (uvicorn's default: +187 MiB)

        with client() as member:
            member.send('{"type":"join"}')
            member.recv(timeout=STEP)
            started = time.monotonic()
            process.send_signal(signal.SIGINT)
            with pytest.raises(ConnectionClosed) as closed:
                drain(member)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "going away")
        assert process.wait(SHUTDOWN_SECONDS + 5) in (0, -signal.SIGINT)
        assert time.monotonic() - started < SHUTDOWN_SECONDS


def test_the_demo_configures_the_server_from_its_own_limits() -> None:
    config = server_config(toolkit.WebSocketApp(echo))
    assert config.http is HandshakeDeadline
    assert config.ws_max_size == WS_MAX_SIZE
    assert isinstance(config.app, SendTimeouts)
    assert (config.app.send, config.app.close) == (10.0, 2.0)
    assert config.timeout_graceful_shutdown == SHUTDOWN_SECONDS
    assert config.ws_ping_interval is not None
    assert config.ws_ping_timeout is not None
    assert config.limit_concurrency is not None
