"""``python -m toolkit_demo --workers 2 --redis URL``: two real uvicorn worker processes on one port, a real
redis-server, real ``websockets`` clients.

Which worker accepts a connection is the kernel's choice; to put a client on a given worker, the test
stops the other one (SIGSTOP) while the client connects, then lets it go on (SIGCONT). Every wait is
bounded. Then a worker is killed with ``kill -9`` mid-chat: the other keeps going, and the dead one's
connection slots come back within the lease time (10 s). The cap is the demo's one number,
``CONNECTIONS_PER_PERSON`` (10), on all the workers together. And Redis is restarted mid-chat: the members
are told ("missed") and the chat works again within 2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from toolkit_demo import CONNECTIONS_PER_PERSON
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.redis_server import RedisServer
from tests.test_demo_server import browser_like, read_banner, recv

pytestmark = [pytest.mark.server, pytest.mark.redis, pytest.mark.anyio]

STEP: Final = 5.0
#: The demo's lease time (RedisStore's default) and the slack for a loaded machine.
LEASE_TTL: Final = 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the websockets client needs asyncio


class Workers:
    """The demo's process tree: the supervisor, its workers' pids (from their log lines), the tokens."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path, banner: list[str]) -> None:
        self.process = process
        self.log = log
        self.base = banner[0].split(": ", 1)[1].rstrip("/")
        self.url = self.base.replace("http://", "ws://") + "/ws"
        self.tokens = {line.split()[0]: line.split("#token=", 1)[1] for line in banner if "#token=" in line}

    def started(self) -> list[int]:
        """The pids of the workers whose app started, in order."""
        text = self.log.read_text()
        started = re.findall(r"\[(\d+)\] INFO:\s+Application startup complete", text)
        return [int(pid) for pid in started]

    def live_workers(self) -> list[int]:
        return [pid for pid in dict.fromkeys(self.started()) if _alive(pid)]

    async def wait_for_workers(self, count: int, within: float = 20.0) -> list[int]:
        async with asyncio.timeout(within):
            while len(workers := self.live_workers()) < count:  # noqa: ASYNC110 - other processes' state
                await asyncio.sleep(0.05)
        return workers

    @contextlib.asynccontextmanager
    async def on(self, worker: int, person: str) -> AsyncIterator[ClientConnection]:
        """A client of ``person`` that is accepted by ``worker``: the others are stopped while it connects."""
        others = [pid for pid in self.live_workers() if pid != worker]
        for pid in others:
            os.kill(pid, signal.SIGSTOP)
        try:
            conn = await browser_like(self.url, self.base, self.tokens[person]).__aenter__()
        finally:
            for pid in others:
                os.kill(pid, signal.SIGCONT)
        try:
            yield conn
        finally:
            await conn.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def running_demo(redis_url: str, log: Path) -> Iterator[Workers]:
    """``python -m toolkit_demo --port 0 --workers 2 --redis URL``, stopped with Ctrl+C (SIGINT) after."""
    with log.open("w") as stderr:
        process = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
            [sys.executable, "-m", "toolkit_demo", "--port", "0", "--workers", "2", "--redis", redis_url],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        yield Workers(process, log, read_banner(process, 20.0))
        process.send_signal(signal.SIGINT)
        assert process.wait(2 * STEP) in (0, -signal.SIGINT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(STEP)
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture
def demo_workers(redis_server: RedisServer, tmp_path: Path) -> Iterator[Workers]:
    with running_demo(redis_server.url, tmp_path / "demo.log") as workers:
        yield workers


async def drain(conn: ClientConnection, idle: float = 0.5) -> list[Any]:
    """Every message until none comes for ``idle`` seconds or the connection closes."""
    seen = []
    with contextlib.suppress(TimeoutError, ConnectionClosed):
        while True:
            async with asyncio.timeout(idle):
                seen.append(json.loads(await conn.recv()))
    return seen


async def recv_until(conn: ClientConnection, wanted: dict[str, Any]) -> list[Any]:
    """Messages up to and including one that has every item of ``wanted``."""
    seen = []
    while True:
        message = await recv(conn)
        seen.append(message)
        if wanted.items() <= message.items():
            return seen


async def recv_members_with(conn: ClientConnection, name: str) -> list[Any]:
    """Messages up to and including a ``members`` snapshot that lists ``name``."""
    seen = []
    while True:
        message = await recv(conn)
        seen.append(message)
        if message["type"] == "members" and name in message["members"]:
            return seen


async def test_one_room_one_rate_limit_and_one_cap_across_two_workers(demo_workers: Workers) -> None:
    demo = demo_workers
    first, second = await demo.wait_for_workers(2)
    async with asyncio.timeout(60), contextlib.AsyncExitStack() as stack:
        alice = await stack.enter_async_context(demo.on(first, "alice"))
        await alice.send('{"type":"join"}')
        assert await recv(alice) == {"type": "joined", "name": "alice", "members": ["alice"]}

        bob = await stack.enter_async_context(demo.on(second, "bob"))
        await bob.send('{"type":"join"}')
        assert (await recv(bob))["type"] == "joined"
        # Bob's worker announces him through Redis, and alice's sends her one members snapshot. (Who is
        # in the room is eventually consistent: bob's worker lists alice once her worker's announcement
        # has arrived, checked below.)
        assert await recv(alice) == {"type": "members", "members": ["alice", "bob"]}

        await alice.send('{"type":"say","text":"hi bob"}')
        await bob.send('{"type":"say","text":"hi alice"}')
        for conn in (alice, bob):
            texts = {m.get("text") for m in await drain(conn)}
            assert {"hi bob", "hi alice"} <= texts

        # Alice's rate limit (burst 10) is hers, on both workers: a second tab on the other worker shares it.
        alice_too = await stack.enter_async_context(demo.on(second, "alice"))
        await alice_too.send('{"type":"join"}')
        assert await recv(alice_too) == {"type": "joined", "name": "alice", "members": ["alice", "bob"]}
        for n in range(20):
            with contextlib.suppress(ConnectionClosed):
                await (alice if n % 2 else alice_too).send(json.dumps({"type": "say", "text": f"m{n}"}))
        for conn in (alice, alice_too):
            await drain(conn)
        assert 1008 in {alice.close_code, alice_too.close_code}
        heard = [m for m in await drain(bob) if m.get("type") == "said" and m["name"] == "alice"]
        assert 5 <= len(heard) <= 9  # 10 tokens: 2 joins and "hi bob" took 3; a second may refill 5 more

        # Carol may have 10 connections in all, whichever worker holds them.
        carols = [
            await stack.enter_async_context(demo.on((first, second)[n % 2], "carol"))
            for n in range(CONNECTIONS_PER_PERSON)
        ]
        for worker in (first, second):
            with pytest.raises(InvalidStatus) as refused:
                async with demo.on(worker, "carol"):
                    pass
            assert refused.value.response.status_code == 429
        assert len(carols) == CONNECTIONS_PER_PERSON == 10


async def test_a_worker_killed_mid_chat_the_other_goes_on_and_its_slots_come_back(demo_workers: Workers) -> None:
    demo = demo_workers
    first, second = await demo.wait_for_workers(2)
    async with asyncio.timeout(60), contextlib.AsyncExitStack() as stack:
        bob = await stack.enter_async_context(demo.on(second, "bob"))
        await bob.send('{"type":"join"}')
        await recv(bob)
        doomed = [await stack.enter_async_context(demo.on(first, "carol")) for _ in range(6)]
        doomed += [await stack.enter_async_context(demo.on(second, "carol")) for _ in range(4)]
        await doomed[0].send('{"type":"join"}')
        await recv_members_with(bob, "carol")
        with pytest.raises(InvalidStatus):  # carol's 11th: the cap holds
            async with demo.on(second, "carol"):
                pass

        os.kill(first, signal.SIGKILL)
        killed = time.monotonic()
        # The other worker goes on: bob still chats, and hears nothing false.
        await bob.send('{"type":"say","text":"still here"}')
        assert (await recv_until(bob, {"text": "still here"}))[-1]["name"] == "bob"

        # Carol's six slots on the dead worker come back within the lease time, and never count twice.
        for conn in doomed[6:]:
            await conn.close()
        await demo.wait_for_workers(2)  # uvicorn's supervisor replaces the dead worker
        reopened: list[ClientConnection] = []
        refusals: set[int] = set()
        while len(reopened) < CONNECTIONS_PER_PERSON:
            assert time.monotonic() - killed < LEASE_TTL + 3, "the dead worker's slots did not come back in time"
            try:
                reopened.append(await stack.enter_async_context(demo.on(second, "carol")))
            except InvalidStatus as exc:
                refusals.add(exc.response.status_code)
                await asyncio.sleep(0.25)
        assert refusals == {429}  # over the cap until the leases expired, never an error
        with pytest.raises(InvalidStatus):  # ten again, and the 11th refused: the cap holds
            async with demo.on(second, "carol"):
                pass


async def test_redis_restarted_mid_chat_members_are_told_and_the_chat_works_again_within_2_s(
    own_redis_server: RedisServer, tmp_path: Path
) -> None:
    with running_demo(own_redis_server.url, tmp_path / "demo.log") as demo:
        first, second = await demo.wait_for_workers(2)
        async with asyncio.timeout(30), contextlib.AsyncExitStack() as stack:
            alice = await stack.enter_async_context(demo.on(first, "alice"))
            bob = await stack.enter_async_context(demo.on(second, "bob"))
            for conn in (alice, bob):
                await conn.send('{"type":"join"}')
            await recv_members_with(alice, "bob")
            own_redis_server.restart()  # everything in Redis is gone (no persistence)
            back = time.monotonic()
            # Bob says something until alice hears it: through Redis again within 2 s.
            heard: list[Any] = []
            for n in range(40):
                with contextlib.suppress(ConnectionClosed):
                    await bob.send(json.dumps({"type": "say", "text": f"after {n}"}))
                heard += await drain(alice, idle=0.05)
                if any(m.get("type") == "said" for m in heard):
                    break
            assert time.monotonic() - back < 2.0, heard
            said = [m for m in heard if m.get("type") == "said"]
            assert said
            assert said[0]["name"] == "bob"
            # ... and she was told that messages may have been lost while the link was down.
            assert {"type": "missed", "count": None} in heard + await drain(alice, idle=0.2)
