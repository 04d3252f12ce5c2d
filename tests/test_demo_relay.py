"""toolkit_demo's RoomRelay: two rooms (two workers) on one real Redis, on asyncio and trio.

What the relay carries: ``said`` messages, into the other rooms' outboxes through their byte budgets,
and each worker's names; a change of the other workers' names is one "members changed" mark per
member, never a message per arrival.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import pytest
from toolkit_broadcast import Broadcast, RedisBackend
from toolkit_demo import Joined, Members, Missed, Room, RoomRelay, Said

from tests.redis_server import RedisServer
from tests.test_demo import drain

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


@asynccontextmanager
async def relayed(url: str, now: list[float], outbox_bytes: int = 4096) -> AsyncIterator[tuple[Room, RoomRelay]]:
    room = Room(outbox_bytes)
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
        # Bob arrived on the other worker: alice gets one members mark, not a "joined" of his.
        assert await drain(one, alice) == [Joined(name="alice", members=["alice"]), Members(members=["alice", "bob"])]
        assert await drain(two, bob) == [Joined(name="bob", members=["alice", "bob"])]
        one.broadcast(Said(name="alice", text="hi"))
        await until(lambda: len(bob.pending()) >= 1)
        hi = Said(name="alice", text="hi")
        assert await drain(two, bob) == [hi]
        assert bob.queued_bytes == 0
        assert await drain(one, alice) == [hi]  # delivered here at once, not again from Redis
        two.leave(bob)
        await until(lambda: one.names() == ["alice"])
        assert await drain(one, alice) == [Members(members=["alice"])]
        carol = two.member("carol")
        two.join(carol)
        await until(lambda: "carol" in one.names())
        assert await drain(one, alice) == [Members(members=["alice", "carol"])]
        alice.close()
        carol.close()


async def test_a_worker_not_heard_from_for_three_periods_drops_out(redis_server: RedisServer) -> None:
    now = [0.0]
    async with relayed(redis_server.url, now) as (one, relay_one):
        await until(lambda: relay_one.broadcast.backend.connected)
        alice = one.member("alice")
        one.join(alice)
        async with relayed(redis_server.url, now) as (two, _):
            carol = two.member("carol")
            two.join(carol)
            await until(lambda: one.names() == ["alice", "carol"])
            carol.close()
        # The other worker stopped without a word (killed, say); its last announcement stands for 3 periods.
        await drain(one, alice)
        assert one.names() == ["alice", "carol"]
        now[0] += 1.0
        await until(lambda: one.names() == ["alice"])  # at the relay's next period
        assert await drain(one, alice) == [Members(members=["alice"])]
        alice.close()


async def test_a_crowd_on_another_worker_is_one_snapshot_here(redis_server: RedisServer) -> None:
    now = [0.0]
    async with relayed(redis_server.url, now) as (one, relay_one), relayed(redis_server.url, now) as (two, _):
        await until(lambda: relay_one.broadcast.backend.connected)
        alice = one.member("alice")
        one.join(alice)
        await drain(one, alice)
        crowd = [two.member(f"person{n:03}") for n in range(100)]
        for member in crowd:
            two.join(member)
        await until(lambda: len(one.names()) == 101)
        # However many announcements it took, alice holds at most one mark at a time.
        assert alice.pending() in ([None], [])
        sent = await drain(one, alice)
        assert len(sent) <= 1
        assert one.snapshot().members == sorted(["alice", *(m.name for m in crowd)])
        for member in crowd:
            member.close()
        alice.close()


async def test_relayed_messages_go_through_the_byte_budget(redis_server: RedisServer) -> None:
    now = [0.0]
    async with (
        relayed(redis_server.url, now, outbox_bytes=300) as (one, relay_one),
        relayed(redis_server.url, now) as (two, _),
    ):
        await until(lambda: relay_one.broadcast.backend.connected)
        slow, bob = one.member("slow"), two.member("bob")
        one.join(slow)
        two.join(bob)
        await until(lambda: one.names() == ["bob", "slow"])
        for n in range(5):
            two.broadcast(Said(name="bob", text=f"{n}" * 60))
        await until(lambda: slow.too_slow)
        assert slow.closed
        assert slow.pending() == []
        bob.close()


async def test_a_gap_reaches_members_as_a_missed_notice(redis_server: RedisServer) -> None:
    now = [0.0]
    async with relayed(redis_server.url, now) as (room, relay):
        await until(lambda: relay.broadcast.backend.connected)
        member = room.member("alice")
        room.join(member)
        await drain(room, member)
        incoming = relay.messages.broadcast  # deliver a Gap as the backend would
        incoming.link_lost(relay.messages.name)
        await until(lambda: len(member.pending()) >= 1)
        notices = await drain(room, member)  # a second one if the link came up after the relay subscribed
        assert notices in ([Missed(count=None)], [Missed(count=None)] * 2)
        member.close()
