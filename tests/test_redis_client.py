"""The Redis client we chose, coredis, against a real redis-server on asyncio and on trio.

What toolkit_limits and toolkit_broadcast rely on: commands, a Lua script with ``TIME``, Streams, and a
call cut short by a deadline that leaves the client usable (docs/broadcast.md, "Why coredis").
"""

from __future__ import annotations

import time

import anyio
import coredis
import pytest

from tests.redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


async def test_commands_scripts_and_streams(redis_server: RedisServer) -> None:
    async with coredis.Redis.from_url(redis_server.url) as client:
        assert await client.set("k", "v")
        assert await client.get("k") == b"v"
        script = client.register_script("return redis.call('TIME')")
        reply: object = await script(keys=["k"], args=[])
        assert isinstance(reply, list)
        seconds, micros = (int(part) for part in reply)
        assert abs(seconds - time.time()) < 5
        assert 0 <= micros < 1_000_000
        first = await client.xadd("s", {"f": "1"})
        await client.xadd("s", {"f": "2"})
        entries = await client.xrange("s", start=first)
        assert [entry.field_values[b"f"] for entry in entries] == [b"1", b"2"]


async def test_a_call_cut_by_a_deadline_leaves_the_client_usable(own_redis_server: RedisServer) -> None:
    async with coredis.Redis.from_url(own_redis_server.url) as client:
        await client.set("k", "v")
        own_redis_server.pause(300)
        started = time.monotonic()
        with anyio.move_on_after(0.05) as scope:
            await client.get("k")
        assert scope.cancelled_caught
        assert time.monotonic() - started < 0.2
        await anyio.sleep(0.35)
        with anyio.fail_after(1):
            assert await client.get("k") == b"v"
