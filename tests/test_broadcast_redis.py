"""toolkit_broadcast's Redis backend against a real redis-server, on asyncio and trio.

Two :class:`Broadcast` instances with their own backends stand for two workers. Faults are real: a
foreign client publishing garbage (raw RESP over a socket), Redis restarted (everything lost: no
persistence), paused (``CLIENT PAUSE``) and unreachable (a port nobody listens on).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio
import pytest
from toolkit_broadcast import Broadcast, BroadcastUnavailable, Gap, Message, RedisBackend, Subscription

from tests.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

#: A publish's deadline (50 ms) plus scheduling slack on a loaded 2-core machine.
DEADLINE_SLACK: Final = 0.25


@asynccontextmanager
async def workers(url: str, count: int = 2, **options: Any) -> AsyncIterator[list[Broadcast]]:
    """``count`` running broadcasts, each with its own Redis backend: as many workers.

    The deadline is 0.5 s unless a test sets it: on a loaded 2-core machine a call that opens a new
    connection can take more than the default 50 ms; the deadline tests set 50 ms themselves.
    """
    options.setdefault("deadline", 0.5)
    options.setdefault("ping_interval", 0.2)
    options.setdefault("ping_timeout", 0.3)
    async with anyio.create_task_group():  # a scope for the cancellation of each backend's reader
        broadcasts = [Broadcast(RedisBackend(url, **options)) for _ in range(count)]
        for broadcast in broadcasts:
            await broadcast.__aenter__()
        try:
            yield broadcasts
        finally:
            for broadcast in reversed(broadcasts):
                await broadcast.__aexit__(None, None, None)


async def until_connected(*broadcasts: Broadcast, within: float = 3.0) -> None:
    with anyio.fail_after(within):
        while not all(b.backend.connected for b in broadcasts):  # noqa: ASYNC110 - a socket's state
            await anyio.sleep(0.01)


async def take(subscription: Subscription[object], count: int, within: float = 3.0) -> list[object]:
    events: list[object] = []
    with anyio.fail_after(within):
        for _ in range(count):
            event = await anext(subscription)
            events.append(event.payload if isinstance(event, Message) else event)
    return events


async def publish_until_received(broadcast: Broadcast, events: Subscription[object], within: float) -> list[object]:
    """Publish "probe" until one arrives (Redis may still be coming back); the events before it."""
    room = broadcast.channel("room")
    seen: list[object] = []
    with anyio.fail_after(within):
        while True:
            try:
                await room.publish("probe")
            except BroadcastUnavailable:
                await anyio.sleep(0.05)
                continue
            with anyio.move_on_after(0.2):
                while True:
                    event = await anext(events)
                    if isinstance(event, Message) and event.payload == "probe":
                        return seen
                    seen.append(event)


@pytest.mark.parametrize("mode", ["pubsub", "streams"])
async def test_messages_reach_every_worker_in_order_with_their_envelope(redis_server: RedisServer, mode: str) -> None:
    async with workers(redis_server.url, mode=mode) as (one, two):
        await until_connected(one, two)
        async with one.channel("room").subscribe() as on_one, two.channel("room").subscribe() as on_two:
            await anyio.sleep(0.05)  # the SUBSCRIBE is on its way (Pub/Sub delivers only to who listens)
            for n in range(5):
                await one.channel("room").publish(n, trace="00-t-01")
            await two.channel("room").publish("from two")
            for events in (on_one, on_two):
                assert await take(events, 6) == [0, 1, 2, 3, 4, "from two"]
            await one.channel("room").publish("last")
            with anyio.fail_after(2):
                event = await anext(on_two)
            assert isinstance(event, Message)
            assert (event.envelope.origin, event.envelope.seq, event.envelope.trace) == (one.origin, 6, None)
            assert (event.id is None) == (mode == "pubsub")


async def test_garbage_from_another_client_is_skipped_and_the_channel_goes_on(redis_server: RedisServer) -> None:
    async with workers(redis_server.url, 1) as (one,):
        await until_connected(one)
        async with one.channel("room").subscribe() as events:
            await anyio.sleep(0.05)
            for garbage in ("hello", "tkb7 {}\n", "tkb1 {broken\n", "x" * 2_000_000):
                assert redis_server.command("PUBLISH", "toolkit:broadcast:c:room", garbage, timeout=5).startswith(b":1")
            await one.channel("room").publish("fine")
            assert await take(events, 1) == ["fine"]
    assert one.skipped == 4


@pytest.mark.parametrize("mode", ["pubsub", "streams"])
async def test_a_redis_restart_is_a_gap_or_nothing_lost_and_works_again_within_2_s(
    own_redis_server: RedisServer, mode: str
) -> None:
    async with workers(own_redis_server.url, mode=mode) as (one, two):
        await until_connected(one, two)
        async with two.channel("room").subscribe() as events:
            await anyio.sleep(0.05)  # the SUBSCRIBE is on its way
            await one.channel("room").publish("before")
            assert await take(events, 1) == ["before"]
            own_redis_server.restart()
            restarted = time.monotonic()
            seen = await publish_until_received(one, events, within=2.0)
            assert time.monotonic() - restarted < 2.0
            if mode == "pubsub":
                assert Gap("room", None, None, "link") in seen  # never silent
            # A probe that failed took a sequence number (it may have reached Redis): a "sequence" Gap at most.
            assert all(isinstance(event, Gap) and event.reason in ("link", "sequence") for event in seen)
        assert two.backend.connected


async def test_streams_resume_from_the_last_id_in_order_without_duplicates(redis_server: RedisServer) -> None:
    async with workers(redis_server.url, mode="streams") as (one, two):
        await until_connected(one, two)
        room = one.channel("room")
        ids = [await room.publish(n) for n in range(3)]
        assert all(isinstance(entry, str) for entry in ids)
        # A client that saw message 0 comes back on another worker: 1 and 2, then live ones, once each.
        async with two.channel("room").subscribe(last_id=ids[0]) as events:
            await room.publish(3)
            assert await take(events, 3) == [1, 2, 3]
            assert events.last_id is not None
            await room.publish(4)
            assert await take(events, 1) == [4]
            last = events.last_id
        await room.publish(5)
        async with two.channel("room").subscribe(last_id=last) as again:
            assert await take(again, 1) == [5]
            assert again.pending == 0


async def test_streams_resume_beyond_the_window_starts_with_a_gap(redis_server: RedisServer) -> None:
    async with workers(redis_server.url, mode="streams", window_count=3) as (one, two):
        await until_connected(one, two)
        room = one.channel("room")
        first = await room.publish(0)
        assert first is not None
        for n in range(1, 300):  # trimmed to about 3 (MAXLEN ~ trims whole nodes of 100)
            await room.publish(n)
        async with two.channel("room").subscribe(last_id=first) as events:
            head = await take(events, 1)
            assert head == [Gap("room", None, None, "window")]
    async with workers(redis_server.url, 1, mode="streams", window_seconds=0.05) as (late,):
        await anyio.sleep(0.1)  # older than the time window
        async with late.channel("room").subscribe(last_id=first) as events:
            assert await take(events, 1) == [Gap("room", None, None, "window")]


@pytest.mark.redis_down
async def test_a_paused_redis_fails_publishes_within_the_deadline_then_the_breaker_opens(
    own_redis_server: RedisServer,
) -> None:
    async with workers(own_redis_server.url, 1, deadline=0.05) as (one,):
        await until_connected(one)
        room = one.channel("room")
        await room.publish("warm")
        own_redis_server.pause(1500)
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(BroadcastUnavailable, match=r"within 0\.05 s"):
                await room.publish("x")
            assert time.monotonic() - started < DEADLINE_SLACK
        started = time.monotonic()
        with pytest.raises(BroadcastUnavailable, match="circuit breaker"):
            await room.publish("x")
        assert time.monotonic() - started < 0.01  # no call at all
        # The reader's pings go unanswered: the link is dropped, not waited on.
        with anyio.fail_after(2):
            while one.backend.connected:  # noqa: ASYNC110 - a socket's state
                await anyio.sleep(0.02)


@pytest.mark.redis_down
async def test_an_unreachable_redis_never_hangs_and_subscribers_hear_of_it() -> None:
    async with workers(f"redis://127.0.0.1:{free_port()}/0", 1, deadline=0.05) as (one,):
        room = one.channel("room")
        started = time.monotonic()
        with pytest.raises(BroadcastUnavailable):
            await room.publish("x")
        assert time.monotonic() - started < DEADLINE_SLACK
        async with room.subscribe() as events:
            assert await take(events, 1) == [Gap("room", None, None, "link")]
        assert not one.backend.connected


def test_the_redis_backend_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="redis://"):
        RedisBackend("http://x")
    with pytest.raises(ValueError, match="mode"):
        RedisBackend("redis://x", mode="lists")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="deadline"):
        RedisBackend("redis://x", deadline=0)
