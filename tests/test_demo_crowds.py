"""toolkit_demo under crowds, on a real uvicorn server on 127.0.0.1 with real ``websockets`` clients.

A crowd arriving at once, leaving at once, or ten people each sending a full burst must not
disconnect the members who read promptly (issue 13: every one of them used to be closed 1013 "too
slow", their 64-message outboxes overflowing with joined/left/said events). Each watcher here reads
in a task of its own, as fast as the messages come, and must still be connected, with every ``said``
message, at the end; the server must log no error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any, Final

import pytest
from toolkit_demo import CONNECTIONS_PER_PERSON, create_app, local_origins
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin, Subprotocol

from tests.server import LiveServer, SwitchableApp, run_server, wait_until

pytestmark = [pytest.mark.server, pytest.mark.anyio]

STEP: Final = 10.0
TEST_TIMEOUT: Final = 60.0
WATCHERS: Final = 10
CROWD: Final = 100
#: One token per person: the watchers, then the crowd.
TOKENS: Final = {f"token-{n}": f"person{n:03}" for n in range(WATCHERS + CROWD)}
SANSIO_DENIAL_NOISE: Final = "ASGI callable returned without completing handshake."


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the websockets client needs asyncio


@pytest.fixture(scope="module")
def module_server() -> Iterator[tuple[LiveServer, SwitchableApp]]:
    switch = SwitchableApp()
    with run_server(switch, backlog=1024) as server:
        yield server, switch


@pytest.fixture
async def server(module_server: tuple[LiveServer, SwitchableApp]) -> AsyncIterator[LiveServer]:
    server, switch = module_server
    server.logs.take()
    switch.app = create_app(TOKENS, local_origins(server.port))
    yield server
    await server.wait_idle(STEP)
    switch.app = None
    errors = [r.getMessage().strip() for r in server.logs.take(logging.ERROR)]
    assert [e for e in errors if e != SANSIO_DENIAL_NOISE] == [], "the server logged errors"


class Watcher:
    """A member that reads promptly: a task takes every message as it comes; ``closed`` is how it ended."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.got: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for text in self.conn:
                self.got.append(json.loads(text))
        except ConnectionClosed as closed:
            frame = closed.rcvd
            self.closed = (frame.code, frame.reason) if frame is not None else (1006, "")
        else:
            frame = self.conn.protocol.close_rcvd
            self.closed = (frame.code, frame.reason) if frame is not None else (1006, "")

    def said(self) -> list[str]:
        return [m["text"] for m in self.got if m["type"] == "said"]

    def last_members(self) -> list[str]:
        return next((m["members"] for m in reversed(self.got) if "members" in m), [])

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def client(server: LiveServer, token: str) -> connect:
    return connect(
        f"{server.url}/ws",
        origin=Origin(server.http_url),
        subprotocols=[Subprotocol("chat.v1"), Subprotocol(f"bearer.{token}")],
        open_timeout=STEP,
        close_timeout=STEP,
        ping_interval=None,
        max_queue=None,  # the client keeps reading: the watchers read promptly
    )


async def joined(stack: contextlib.AsyncExitStack, server: LiveServer, token: str) -> ClientConnection:
    conn = await stack.enter_async_context(client(server, token))
    await conn.send('{"type":"join"}')
    async with asyncio.timeout(STEP):
        reply = json.loads(await conn.recv())
    assert reply["type"] == "joined", reply
    return conn


async def watchers(stack: contextlib.AsyncExitStack, server: LiveServer) -> list[Watcher]:
    watching = [Watcher(await joined(stack, server, f"token-{n}")) for n in range(WATCHERS)]
    for watcher in watching:
        stack.push_async_callback(watcher.stop)
    return watching


async def all_said(watching: list[Watcher], expected: list[str]) -> None:
    def done() -> bool:
        return all(sorted(w.said()) == sorted(expected) or w.closed is not None for w in watching)

    await wait_until(done, STEP, "every watcher to get every message")


def assert_all_connected(watching: list[Watcher]) -> None:
    assert [w.closed for w in watching] == [None] * len(watching), "a watcher that read promptly was closed"


async def test_a_crowd_joining_and_leaving_at_once_disconnects_no_one(server: LiveServer) -> None:
    async with asyncio.timeout(TEST_TIMEOUT), contextlib.AsyncExitStack() as stack:
        watching = await watchers(stack, server)
        crowd_exit = contextlib.AsyncExitStack()
        crowd = await asyncio.gather(
            *(joined(crowd_exit, server, f"token-{n}") for n in range(WATCHERS, WATCHERS + CROWD))
        )
        everyone = sorted(TOKENS.values())
        await wait_until(lambda: all(w.last_members() == everyone or w.closed for w in watching), STEP, "the crowd")
        assert_all_connected(watching)
        await crowd[0].send('{"type":"say","text":"we are many"}')
        await all_said(watching, ["we are many"])
        assert_all_connected(watching)

        await asyncio.gather(*(conn.close() for conn in crowd))  # ... and all leave at once
        await crowd_exit.aclose()
        alone = everyone[:WATCHERS]
        await wait_until(lambda: all(w.last_members() == alone or w.closed for w in watching), STEP, "no crowd")
        await watching[0].conn.send('{"type":"say","text":"quiet again"}')
        await all_said(watching, ["we are many", "quiet again"])
        assert_all_connected(watching)
        # Presence is merged: far fewer snapshots than the 200 arrivals and departures.
        snapshots = [sum(m["type"] == "members" for m in w.got) for w in watching]
        assert max(snapshots) <= CROWD, snapshots  # 4 to 13 in a typical run


async def test_ten_people_sending_their_burst_at_once_disconnect_no_one(server: LiveServer) -> None:
    # The rate limit is per person (all their tabs together), so the most one person can send at once
    # is one burst; ten people (as many as one person's tabs may be) send theirs at once here.
    async with asyncio.timeout(TEST_TIMEOUT), contextlib.AsyncExitStack() as stack:
        watching = await watchers(stack, server)
        tabs = [await joined(stack, server, f"token-{WATCHERS + n}") for n in range(CONNECTIONS_PER_PERSON)]
        # The burst (10) less the join: 9 messages each, 480 characters and more, everyone at once.
        texts = [[f"{tab}.{n} " + "x" * 480 for n in range(9)] for tab in range(len(tabs))]

        async def burst(tab: ClientConnection, mine: list[str]) -> None:
            for text in mine:
                await tab.send(json.dumps({"type": "say", "text": text}))

        await asyncio.gather(*(burst(tab, mine) for tab, mine in zip(tabs, texts, strict=True)))
        await all_said(watching, [text for mine in texts for text in mine])
        assert_all_connected(watching)


async def test_closers_racing_under_a_storm_raise_nothing(server: LiveServer, module_server: Any) -> None:
    """Outboxes overflowing (1013), rate limits (1008) and clients leaving (1000), all at once: every
    connection ends with one documented close, and nothing reaches the server as an exception (the
    fixture fails on any error it logged). Which closer wins depends on timing; tests/test_demo.py
    forces each interleaving in memory."""
    _, switch = module_server
    switch.app = create_app(TOKENS, local_origins(server.port), outbox_bytes=600, burst=10, rate=0.001)
    async with asyncio.timeout(TEST_TIMEOUT), contextlib.AsyncExitStack() as stack:
        conns = [await joined(stack, server, f"token-{n}") for n in range(20)]

        async def storm(n: int, conn: ClientConnection) -> tuple[int, str] | None:
            sends = [conn.send(json.dumps({"type": "say", "text": f"{n}.{k} " + "x" * 480})) for k in range(12)]
            with contextlib.suppress(ConnectionClosed):
                for send in sends:
                    await send
                if n % 4 == 0:
                    await conn.close()  # some leave in the middle of it
            with contextlib.suppress(ConnectionClosed):
                async with asyncio.timeout(STEP):
                    async for _ in conn:
                        pass
            frame = conn.protocol.close_rcvd
            return None if frame is None else (frame.code, frame.reason)

        ends = await asyncio.gather(*(storm(n, conn) for n, conn in enumerate(conns)))
    assert set(ends) <= {(1013, "too slow"), (1008, "rate limit"), (1000, "")}, ends
    await server.wait_idle(STEP)
