"""toolkit_demo's RoomRelay: two rooms (two workers) on one real Redis, on asyncio and trio."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import pytest
from toolkit_broadcast import Broadcast, RedisBackend
from toolkit_demo import Joined, Left, Missed, Room, RoomRelay, Said

from tests.redis_server import RedisServer
from tests.test_demo import drain

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


@asynccontextmanager
async def relayed(url: str, now: list[float]) -> AsyncIterator[tuple[Room, RoomRelay]]:
    room = Room(16)
    broadcast = Broadcast(RedisBackend(url, deadline=0.5))
    relay = RoomRelay(room, broadcast, presence_every=0.05, clock=lambda: now[0])
    async with broadcast, anyio.create_task_group() as tasks:
        await tasks.start(relay.run)
        try:
            yield room, relay
        finally:
            tasks.cancel_scope.cancel()
    assert room.relay is None


async def until(predicate: Callable[[], bool], within: float = 3.0) -> None:
    with anyio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - state that Redis and other tasks change
            await anyio.sleep(0.01)


async def test_two_workers_share_messages_and_who_is_in_the_room(redis_server: RedisServer) -> None:
    now = [0.0]
    async with relayed(redis_server.url, now) as (one, relay_one), relayed(redis_server.url, now) as (two, _):
        await until(lambda: relay_one.broadcast.backend.connected)
        alice, bob = one.member("alice"), two.member("bob")
        one.join(alice)
        await until(lambda: two.names() == ["alice"])
        two.join(bob)
        await until(lambda: one.names() == ["alice", "bob"])
        one.broadcast(Said(name="alice", text="hi"))
        await until(lambda: bob.inbox.statistics().current_buffer_used >= 2)
        hi = Said(name="alice", text="hi")
        assert drain(bob.inbox) == [Joined(name="bob", members=["alice", "bob"], you=True), hi]
        assert drain(alice.inbox)[-2:] == [Joined(name="bob", members=["alice", "bob"]), hi]
        two.leave(bob)
        await until(lambda: alice.inbox.statistics().current_buffer_used >= 1)
        assert drain(alice.inbox) == [Left(name="bob", members=["alice"])]
        # A worker not heard from for three periods (killed) drops out of the room.
        await until(lambda: one.names() == ["alice"])
        carol = two.member("carol")
        two.join(carol)
        await until(lambda: "carol" in one.names())
        now[0] += 1.0  # no presence from anyone "since": a second passes with their tasks stalled
        assert one.names() == ["alice"]
        alice.close()
        carol.close()


async def test_a_gap_reaches_members_as_a_missed_notice(redis_server: RedisServer) -> None:
    now = [0.0]
    async with relayed(redis_server.url, now) as (room, relay):
        await until(lambda: relay.broadcast.backend.connected)
        member = room.member("alice")
        room.join(member)
        drain(member.inbox)
        incoming = relay.messages.broadcast  # deliver a Gap as the backend would
        incoming.link_lost(relay.messages.name)
        await until(lambda: member.inbox.statistics().current_buffer_used >= 1)
        notices = drain(member.inbox)  # a second one if the link came up after the relay subscribed
        assert notices in ([Missed(count=None)], [Missed(count=None)] * 2)
        member.close()
