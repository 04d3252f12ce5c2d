"""Limits keyed across connections, and shared across workers through a real redis-server.

Two "workers" are two stores, each with its own coredis client, on the same Redis: what one counts,
the other sees. Connections go through the in-memory transport of tests/test_limits.py (the
end-to-end runs with real uvicorn workers are in tests/test_demo_workers.py). Nothing is mocked:
Redis down is a stopped server or a wrong port, Redis slow is ``CLIENT PAUSE``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Final

import anyio
import coredis
import pytest
from toolkit_limits import (
    UNAVAILABLE_CLOSE,
    CircuitBreaker,
    OnUnavailable,
    RateLimit,
    RedisStore,
    SharedConnectionLimit,
    SharedRateLimit,
    StoreUnavailable,
    client_host,
)

from tests.redis_server import RedisServer, free_port
from tests.support import disconnect, make_scope, text
from tests.test_limits import TOO_MANY, rate_app, run, serving
from toolkit import WebSocket

pytestmark = pytest.mark.anyio

#: A store call's deadline (50 ms) plus scheduling slack on a loaded 2-core machine.
DEADLINE_SLACK: Final = 0.25


def principal(websocket: WebSocket) -> str | None:
    """The test's stand-in for an auth gate's principal: the ``x-user`` header."""
    return websocket.headers.get("x-user")


def user_scope(user: str) -> Any:
    return make_scope(headers=[(b"host", b"testserver"), (b"x-user", user.encode())])


# --- RateLimit keyed in one process ---------------------------------------------------------------


async def test_a_keyed_rate_limit_shares_one_bucket_between_connections_of_a_key() -> None:
    limit = RateLimit(0.001, 3, key=principal)
    received: list[str] = []
    app = rate_app(limit, received)
    await run(app, text("a1"), text("a2"), disconnect(), scope=user_scope("alice"))
    # Reconnecting does not refill the bucket: one token left for alice, none for a third connection.
    await run(app, text("a3"), text("a4"), disconnect(), scope=user_scope("alice"))
    await run(app, text("b1"), disconnect(), scope=user_scope("bob"))
    assert received == ["a1", "a2", "disconnect 1000 ", "a3", "disconnect 1008 rate limit", "b1", "disconnect 1000 "]
    assert limit.connections == 0


async def test_a_key_of_none_gets_a_bucket_of_its_own() -> None:
    limit = RateLimit(0.001, 1, key=principal)
    received: list[str] = []
    app = rate_app(limit, received)
    await run(app, text("x"), disconnect())
    await run(app, text("y"), disconnect())
    assert received == ["x", "disconnect 1000 ", "y", "disconnect 1000 "]


async def test_keyed_buckets_that_are_full_again_and_unheld_are_swept() -> None:
    limit = RateLimit(1000, 1, key=client_host)
    received: list[str] = []
    app = rate_app(limit, received)
    for n in range(200):
        scope = make_scope()
        scope["client"] = (f"10.0.{n // 250}.{n % 250}", 1)
        await run(app, text("m"), disconnect(), scope=scope)
        await anyio.sleep(0.001)  # each bucket is full again a millisecond later
    assert received.count("m") == 200
    assert len(limit._keyed or ()) < 130  # swept when the table doubled


# --- the circuit breaker (no I/O) -----------------------------------------------------------------


def test_the_breaker_opens_after_failures_in_a_row_then_lets_one_trial_through() -> None:
    now = [0.0]

    def state() -> str:  # a call: mypy would narrow a property's Literal from one assert to the next
        return breaker.state

    breaker = CircuitBreaker(failures=2, cooldown=1.0, max_cooldown=3.0, clock=lambda: now[0], rng=lambda: 0.0)
    breaker.failure()
    assert state() == "closed"
    breaker.success()
    breaker.failure()
    assert breaker.allow()
    breaker.failure()
    assert state() == "open"
    assert not breaker.allow()
    now[0] = 1.0
    assert state() == "half-open"
    assert breaker.allow()
    breaker.failure()  # the trial failed: twice as long
    now[0] = 2.9
    assert not breaker.allow()
    now[0] = 3.0
    breaker.failure()  # again: capped at max_cooldown
    now[0] = 5.9
    assert not breaker.allow()
    now[0] = 6.0
    breaker.success()
    assert state() == "closed"


def test_the_breaker_jitters_its_cooldown_by_up_to_a_quarter() -> None:
    breaker = CircuitBreaker(failures=1, cooldown=1.0, clock=lambda: 0.0, rng=lambda: 1.0)
    breaker.failure()
    assert breaker._open_until == 1.25


@pytest.mark.parametrize("kwargs", [{"failures": 0}, {"cooldown": 0}, {"cooldown": 2.0, "max_cooldown": 1.0}], ids=str)
def test_the_breaker_validates_its_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="failures >= 1"):
        CircuitBreaker(**kwargs)


# --- shared limits on a real Redis ------------------------------------------------------------------


@asynccontextmanager
async def stores(url: str, count: int = 2, **options: Any) -> AsyncIterator[list[RedisStore]]:
    """``count`` running stores, each with its own client: as many workers (deadline 0.5 s unless set:
    the deadline tests set 50 ms; on a loaded machine a call that opens a connection may take longer)."""
    options.setdefault("deadline", 0.5)
    async with AsyncExitStack() as stack:
        running = []
        for _ in range(count):
            client = await stack.enter_async_context(coredis.Redis.from_url(url))
            running.append(await stack.enter_async_context(RedisStore(client, **options)))
        yield running


@pytest.mark.redis
async def test_a_shared_rate_limit_counts_each_message_once_across_workers(redis_server: RedisServer) -> None:
    async with stores(redis_server.url) as (one, two):
        limits = [SharedRateLimit(0.001, 3, store=store, key=principal) for store in (one, two)]
        received: list[str] = []
        await run(rate_app(limits[0], received), text("1"), text("2"), disconnect(), scope=user_scope("alice"))
        await run(rate_app(limits[1], received), text("3"), text("4"), disconnect(), scope=user_scope("alice"))
        await run(rate_app(limits[1], received), text("b"), disconnect(), scope=user_scope("bob"))
    assert received == ["1", "2", "disconnect 1000 ", "3", "disconnect 1008 rate limit", "b", "disconnect 1000 "]


@pytest.mark.redis
async def test_a_shared_rate_limit_refills_by_redis_time(redis_server: RedisServer) -> None:
    async with stores(redis_server.url, 1) as (store,):
        limit = SharedRateLimit(20, 1, store=store, key=principal, close_code=1013)
        received: list[str] = []
        app = rate_app(limit, received)
        await run(app, text("1"), disconnect(), scope=user_scope("alice"))
        await anyio.sleep(0.08)  # 1/20 s refills the one token
        await run(app, text("2"), text("3"), disconnect(), scope=user_scope("alice"))
    assert received == ["1", "disconnect 1000 ", "2", "disconnect 1013 rate limit"]


@pytest.mark.redis
async def test_a_connection_with_no_key_has_its_own_bucket_in_redis(redis_server: RedisServer) -> None:
    async with stores(redis_server.url, 1) as (store,):
        limit = SharedRateLimit(0.001, 1, store=store, key=principal)
        received: list[str] = []
        await run(rate_app(limit, received), text("x"), disconnect())
        await run(rate_app(limit, received), text("y"), disconnect())
    assert received == ["x", "disconnect 1000 ", "y", "disconnect 1000 "]


@pytest.mark.redis_down
@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("open", ["1", "2", "3", "disconnect 1000 "]),
        ("local", ["1", "2", "disconnect 1008 rate limit"]),
        ("closed", [f"disconnect {UNAVAILABLE_CLOSE.code} {UNAVAILABLE_CLOSE.reason}"]),
    ],
)
async def test_an_unreachable_store_applies_on_unavailable_within_the_deadline(
    policy: OnUnavailable, expected: list[str]
) -> None:
    async with coredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0") as client, RedisStore(client) as store:
        limit = SharedRateLimit(0.001, 2, store=store, key=principal, on_unavailable=policy)
        received: list[str] = []
        started = time.monotonic()
        await run(rate_app(limit, received), text("1"), text("2"), text("3"), disconnect(), scope=user_scope("a"))
        assert time.monotonic() - started < 3 * DEADLINE_SLACK
        if policy != "closed":  # "closed" ended the connection at the first failure
            assert store.breaker.state == "open"  # after 3 failures: the next calls fail at once
    assert received == expected


@pytest.mark.redis
@pytest.mark.redis_down
async def test_a_paused_redis_costs_at_most_the_deadline_per_call(own_redis_server: RedisServer) -> None:
    async with stores(own_redis_server.url, 1, deadline=0.05) as (store,):
        limit = SharedRateLimit(100, 100, store=store, key=principal, on_unavailable="open")
        received: list[str] = []
        app = rate_app(limit, received)
        await run(app, text("warm"), disconnect(), scope=user_scope("a"))
        own_redis_server.pause(1000)
        started = time.monotonic()
        await run(app, text("1"), disconnect(), scope=user_scope("a"))
        assert time.monotonic() - started < DEADLINE_SLACK
        with pytest.raises(StoreUnavailable):
            await store.take("k", 1, 1)  # nothing hangs: a clear exception
    assert received == ["warm", "disconnect 1000 ", "1", "disconnect 1000 "]


async def test_a_store_that_is_not_running_is_unavailable() -> None:
    client = coredis.Redis.from_url("redis://127.0.0.1:1/0")
    store = RedisStore(client)
    assert not store.running
    with pytest.raises(StoreUnavailable):
        await store.take("k", 1, 1)


def test_store_and_shared_limits_validate_their_arguments() -> None:
    client = coredis.Redis.from_url("redis://127.0.0.1:1/0")
    with pytest.raises(ValueError, match="deadline"):
        RedisStore(client, deadline=0)
    with pytest.raises(ValueError, match="lease_ttl"):
        RedisStore(client, lease_ttl=0.1)
    store = RedisStore(client)
    with pytest.raises(ValueError, match="on_unavailable"):
        SharedRateLimit(1, 1, store=store, key=principal, on_unavailable="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rate"):
        SharedRateLimit(0, 1, store=store, key=principal)
    with pytest.raises(ValueError, match="close_code"):
        SharedRateLimit(1, 1, store=store, key=principal, close_code=1000)
    with pytest.raises(ValueError, match="name"):
        SharedRateLimit(1, 1, store=store, key=principal, name="a:b")
    with pytest.raises(ValueError, match="give max_total"):
        SharedConnectionLimit(store=store)
    with pytest.raises(ValueError, match="give key with max_per_key"):
        SharedConnectionLimit(max_per_key=1, store=store)


@pytest.mark.redis
async def test_a_shared_connection_cap_holds_across_workers_and_slots_come_back(redis_server: RedisServer) -> None:
    async with stores(redis_server.url) as (one, two):
        caps = [SharedConnectionLimit(3, 2, store=store, key=principal) for store in (one, two)]
        async with serving(caps[0]) as first, serving(caps[1]) as second:
            a1 = await first.open(headers=[(b"x-user", b"alice")])
            a2 = await second.open(headers=[(b"x-user", b"alice")])
            a3 = await second.open(headers=[(b"x-user", b"alice")])  # alice's third: over max_per_key
            b1 = await first.open(headers=[(b"x-user", b"bob")])
            b2 = await second.open(headers=[(b"x-user", b"bob")])  # the fourth in all: over max_total
            assert (a1.accepted, a2.accepted, a3.sent, b1.accepted, b2.sent) == (True, True, TOO_MANY, True, TOO_MANY)
            assert await one.count(one.lease_key("connections", None)) == 3
            await first.leave(a1)  # released in the background, right away
            with anyio.fail_after(2):
                while await one.count(one.lease_key("connections", None)) != 2:  # noqa: ASYNC110 - state in Redis
                    await anyio.sleep(0.01)
            b3 = await second.open(headers=[(b"x-user", b"bob")])
            assert b3.accepted
            assert (caps[0].local_total, caps[1].local_total) == (1, 2)
            for peer, clients in ((a2, second), (b1, first), (b3, second)):
                await clients.leave(peer)
        assert one.leases == two.leases == 0


@pytest.mark.redis
async def test_leases_of_a_worker_that_stops_renewing_expire_within_the_ttl(redis_server: RedisServer) -> None:
    async with stores(redis_server.url, 1, lease_ttl=0.3) as (store,):
        # A lease no running keeper renews (the worker is gone): taken straight through the script.
        key = store.lease_key("connections", None)
        taken: object = await store.call(lambda: store._acquire(keys=[key], args=["dead:1", 300, 1]))
        assert taken == 1
        limit = SharedConnectionLimit(1, store=store)
        async with serving(limit) as clients:
            refused = await clients.open()
            assert refused.status == 429
            await anyio.sleep(0.35)
            admitted = await clients.open()
            assert admitted.accepted
            await anyio.sleep(0.4)  # its own lease is renewed by the keeper: still counted
            assert await store.count(key) == 1
            await clients.leave(admitted)


@pytest.mark.redis_down
@pytest.mark.parametrize(
    ("policy", "statuses"), [("open", [None, None]), ("local", [None, 429]), ("closed", [503, 503])]
)
async def test_an_unreachable_store_applies_the_connection_policy(
    policy: OnUnavailable, statuses: list[int | None]
) -> None:
    async with coredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0") as client, RedisStore(client) as store:
        limit = SharedConnectionLimit(1, store=store, on_unavailable=policy)
        async with serving(limit) as clients:
            peers = [await clients.open(), await clients.open()]
            assert [peer.status for peer in peers] == statuses
            for peer in peers:
                if peer.accepted:
                    await clients.leave(peer)
        assert limit.local_total == 0
        assert store.leases == 0


@pytest.mark.redis
@pytest.mark.redis_down
async def test_after_a_redis_restart_limits_work_again_within_2_s_and_leases_come_back(
    own_redis_server: RedisServer,
) -> None:
    breaker = CircuitBreaker(cooldown=0.1, max_cooldown=0.4)
    async with stores(own_redis_server.url, 1, lease_ttl=0.6, breaker=breaker) as (store,):
        limit = SharedConnectionLimit(5, store=store)
        key = store.lease_key("connections", None)
        async with serving(limit) as clients:
            peers = [await clients.open(), await clients.open()]
            assert await store.count(key) == 2
            own_redis_server.restart()  # everything in Redis is gone
            restarted = time.monotonic()
            with anyio.fail_after(2):
                while True:
                    try:
                        if await store.count(key) == 2:  # the keeper put this worker's leases back
                            break
                    except StoreUnavailable:
                        pass
                    await anyio.sleep(0.05)
            assert time.monotonic() - restarted < 2
            assert await store.take(store.rate_key("rate", "k"), 1000, 0)
            for peer in peers:
                await clients.leave(peer)
        with anyio.fail_after(2):
            while await store.count(key):  # noqa: ASYNC110 - state in Redis
                await anyio.sleep(0.02)


@pytest.mark.redis
@pytest.mark.redis_down
async def test_a_paused_redis_leaks_no_connection(own_redis_server: RedisServer) -> None:
    def clients() -> int:
        info = own_redis_server.command("INFO", "clients").decode()
        return int(info.split("connected_clients:")[1].split()[0])

    async with stores(own_redis_server.url, 1, deadline=0.05) as (store,):
        limit = SharedRateLimit(1000, 1000, store=store, key=principal, on_unavailable="open")
        received: list[str] = []
        app = rate_app(limit, received)
        await run(app, text("warm"), disconnect(), scope=user_scope("a"))
        before = clients()
        own_redis_server.pause(400)
        for _ in range(20):  # each one times out; none waits longer than its deadline
            await run(app, text("m"), disconnect(), scope=user_scope("a"))
        await anyio.sleep(0.5)
        await run(app, text("after"), disconnect(), scope=user_scope("a"))
        assert clients() <= before + 3  # a cancelled call's connection is dropped, not piled up
    assert received[-2:] == ["after", "disconnect 1000 "]
    assert len(received) == 44
