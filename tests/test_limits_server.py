"""toolkit_limits end to end: a real uvicorn server on 127.0.0.1 and a real ``websockets`` client.

The server, the ``live`` fixture and the client helpers are tests/test_server.py's: one server per uvicorn
WebSocket implementation serves the module, each test mounts its own app, and after each test the fixture
waits (bounded) until the server is idle, so every ``ws_close`` has run, and fails on any error the
server logged. The client is asyncio-only; every client step is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from toolkit_limits import ConnectionLimit, MessageSizeLimit, RateLimit
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.server import wait_until
from tests.test_server import (
    STEP,
    TEST_TIMEOUT,
    Live,
    anyio_backend,
    client,
    expect_rejected,
    live,
    module_server,
    recv,
    without_denial_extension,
)
from tests.test_server import echo as server_echo
from toolkit import PluginManager, WebSocket, WebSocketApp, WebSocketDenied

pytestmark = [pytest.mark.server, pytest.mark.anyio]

#: tests/test_server.py's fixtures, which pytest finds by name in this module: one server per uvicorn
#: WebSocket implementation (for this module), and `live`, which fails a test on any error the server logged.
SERVER_FIXTURES = (anyio_backend, live, module_server)


async def messages_until_close(conn: ClientConnection) -> tuple[list[str | bytes], int, str]:
    """Every message before the server's close, and the close's code and reason."""
    received: list[str | bytes] = []
    while True:
        try:
            received.append(await recv(conn))
        except ConnectionClosed as exc:
            frame = exc.rcvd
            break
    assert frame is not None, "the server dropped the connection without a close frame"
    return received, frame.code, frame.reason


async def echo(websocket: WebSocket) -> None:
    """tests/test_server.py's echo; a denial at accept ends it quietly (not an app error)."""
    with contextlib.suppress(WebSocketDenied):
        await server_echo(websocket)


# --- MessageSizeLimit ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fits", "over"),
    [("é" * 500, "é" * 500 + "a"), ("😀" * 250, "😀" * 249 + "éüa"), (b"\xff" * 1000, b"\xff" * 1001)],
    ids=["2-byte text", "4-byte text", "bytes"],
)
async def test_max_bytes_passes_and_one_more_byte_closes_with_1009(
    live: Live, fits: str | bytes, over: str | bytes
) -> None:
    limit = MessageSizeLimit(1000)
    assert len(fits if isinstance(fits, bytes) else fits.encode()) == 1000
    assert len(over if isinstance(over, bytes) else over.encode()) == 1001
    url = live.serve(WebSocketApp(echo, plugins=PluginManager(limit)))
    async with asyncio.timeout(TEST_TIMEOUT), client(url) as conn:
        await conn.send(fits)
        assert await recv(conn) == fits
        await conn.send(over)
        with contextlib.suppress(ConnectionClosed):  # the close may already be back
            await conn.send("never echoed")
        # Our reason, not the server's: uvicorn's own limit (16 MiB here) is far away.
        assert await messages_until_close(conn) == ([], 1009, "message too big")


async def test_the_limit_is_ours_not_the_servers(live: Live) -> None:
    # Far below uvicorn's ws_max_size (16 MiB): the plugin enforces it, with its own reason.
    url = live.serve(WebSocketApp(echo, plugins=PluginManager(MessageSizeLimit(256 * 1024))))
    async with asyncio.timeout(TEST_TIMEOUT), client(url, max_size=None) as conn:
        await conn.send("x" * (256 * 1024))
        assert len(await recv(conn)) == 256 * 1024
        await conn.send("x" * (256 * 1024 + 1))
        assert await messages_until_close(conn) == ([], 1009, "message too big")


# --- RateLimit ----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [1008, 1013])
async def test_a_flood_is_closed_after_the_burst(live: Live, code: int) -> None:
    limit = RateLimit(0.01, 5, close_code=code)  # no measurable refill during the test
    url = live.serve(WebSocketApp(echo, plugins=PluginManager(limit)))
    async with asyncio.timeout(TEST_TIMEOUT), client(url) as conn:
        for i in range(50):
            try:
                await conn.send(f"m{i}")
            except ConnectionClosed:
                break  # the server closed mid-flood
        received, got_code, reason = await messages_until_close(conn)
    assert received == [f"m{i}" for i in range(5)]
    assert (got_code, reason) == (code, "rate limit")
    await live.server.wait_idle(STEP)
    assert limit.connections == 0


async def test_a_client_within_the_rate_is_never_closed(live: Live) -> None:
    limit = RateLimit(50, 2)  # one message every 20 ms, two at once
    url = live.serve(WebSocketApp(echo, plugins=PluginManager(limit)))
    async with asyncio.timeout(TEST_TIMEOUT), client(url) as conn:
        for i in range(25):
            # The server reads message i+1 only after it answered message i and the client waited:
            # at least 25 ms apart on the server's clock, whatever the scheduling.
            await conn.send(f"m{i}")
            assert await recv(conn) == f"m{i}"
            await asyncio.sleep(0.025)
    await live.server.wait_idle(STEP)
    assert limit.connections == 0


# --- ConnectionLimit ----------------------------------------------------------------------------


async def test_connection_cap_denies_with_429_and_admits_after_a_disconnect(live: Live) -> None:
    limit = ConnectionLimit(max_total=2)
    url = live.serve(WebSocketApp(echo, plugins=PluginManager(limit)))
    async with asyncio.timeout(TEST_TIMEOUT):
        async with client(url) as one:
            async with client(url) as two:
                for conn in (one, two):
                    await conn.send("hi")
                    assert await recv(conn) == "hi"
                assert limit.total == 2
                rejected = await expect_rejected(url)
                assert (rejected.status_code, rejected.body) == (429, b"too many connections")
            # `two` has left: once the server has run its ws_close, a new client is admitted.
            await wait_until(lambda: limit.total == 1, STEP, "the slot to be released")
            async with client(url) as three:
                await three.send("again")
                assert await recv(three) == "again"
                assert limit.total == 2
    await live.server.wait_idle(STEP)
    assert limit.total == 0


async def test_per_client_cap_without_the_denial_extension_is_a_403(live: Live) -> None:
    limit = ConnectionLimit(max_per_key=1)  # every test client is 127.0.0.1
    url = live.serve(without_denial_extension(WebSocketApp(echo, plugins=PluginManager(limit))))
    async with asyncio.timeout(TEST_TIMEOUT):
        async with client(url) as one:
            await one.send("hi")
            assert await recv(one) == "hi"
            assert limit.count("127.0.0.1") == 1
            rejected = await expect_rejected(url)
            assert (rejected.status_code, rejected.body) == (403, b"")
    await live.server.wait_idle(STEP)
    assert limit.total == 0
    assert limit.count("127.0.0.1") == 0
