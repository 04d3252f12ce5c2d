"""The Redis store shared by the limits of every worker: GCRA rate buckets and connection leases.

Every call has a deadline (50 ms by default) and goes through a circuit breaker; a call that fails,
times out or finds the breaker open raises :class:`StoreUnavailable`, and the limit applies its
``on_unavailable`` policy. Time comes from Redis (``TIME`` inside the scripts), never from a worker's
clock. anyio and coredis (the ``redis`` extra) are imported when a store is made, so the limits that
do not use one need neither.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Self, TypeAlias, TypeVar, final

if TYPE_CHECKING:
    import anyio
    import coredis

__all__ = ["CircuitBreaker", "OnUnavailable", "RedisStore", "StoreUnavailable"]

_T = TypeVar("_T")

#: What a shared limit does when its store cannot answer within its deadline: ``"local"`` applies the
#: limit in this process only, ``"open"`` lets the connection or message through, ``"closed"`` refuses it.
OnUnavailable: TypeAlias = Literal["local", "open", "closed"]

# GCRA ("virtual scheduling") on one key, atomically, in microseconds of Redis' clock. The key holds the
# instant at which the bucket is full again (TAT); it expires then, so idle keys cost nothing.
# ARGV: interval, tolerance ((burst - 1) * interval). Returns 1 when the message may pass.
_GCRA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tonumber(ARGV[2]) then return 0 end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
return 1
"""

# Take a lease in every sorted set of KEYS at once, or in none. A set holds lease ids scored by their
# expiry (milliseconds of Redis' clock); expired ones are purged first. A lease already in a set counts
# once (ids are unique per connection). ARGV: lease id, ttl (ms), then the cap of each key in order.
_ACQUIRE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.0f', now))
  if not redis.call('ZSCORE', key, ARGV[1]) and redis.call('ZCARD', key) >= tonumber(ARGV[i + 2]) then
    return 0
  end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, string.format('%.0f', now + ttl), ARGV[1])
  redis.call('PEXPIRE', key, 2 * ttl)
end
return 1
"""

# Renew leases: KEYS[i] holds lease ARGV[i + 1]; ARGV[1] is the ttl (ms). Re-adds a lease Redis lost
# (a restart): the connection is still open, so it counts, once.
_RENEW: Final = """
local t = redis.call('TIME')
local expiry = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1]))
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, expiry, ARGV[i + 1])
  redis.call('PEXPIRE', key, 2 * tonumber(ARGV[1]))
end
return #KEYS
"""

# Release leases: KEYS[i] holds lease ARGV[i].
_RELEASE: Final = """
for i, key in ipairs(KEYS) do redis.call('ZREM', key, ARGV[i]) end
return #KEYS
"""

_MS: Final = 1_000  # milliseconds per second: lease expiries are in Redis' milliseconds

# Leases per renew or release call: keeps each script short (Redis runs one at a time).
_BATCH: Final = 500


class StoreUnavailable(Exception):
    """The store did not answer within its deadline, failed, or its circuit breaker is open."""


@final
class CircuitBreaker:
    """Stops calling a store that keeps failing: after ``failures`` failures in a row it opens for a
    cooldown (``cooldown`` seconds, doubled on each failed trial up to ``max_cooldown``, with up to 25%
    jitter so workers do not retry in step); then one trial call goes through (half-open): success
    closes it, failure opens it again. No I/O: the store records outcomes, the breaker decides."""

    __slots__ = ("_clock", "_cooldown", "_failed", "_open_until", "_random", "cooldown", "failures", "max_cooldown")

    def __init__(
        self,
        failures: int = 3,
        cooldown: float = 0.5,
        max_cooldown: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if failures < 1 or not 0 < cooldown <= max_cooldown:
            raise ValueError("need failures >= 1 and 0 < cooldown <= max_cooldown")
        #: Failures in a row that open the breaker.
        self.failures: Final = failures
        #: The first cooldown, in seconds.
        self.cooldown: Final = cooldown
        #: The longest cooldown, in seconds.
        self.max_cooldown: Final = max_cooldown
        self._clock: Final = clock
        self._random: Final = rng
        self._failed = 0
        self._cooldown = cooldown
        self._open_until: float | None = None

    @property
    def state(self) -> Literal["closed", "open", "half-open"]:
        """``closed``: calls go through; ``open``: they fail at once; ``half-open``: the next one is a trial."""
        if self._open_until is None:
            return "closed"
        return "open" if self._clock() < self._open_until else "half-open"

    def allow(self) -> bool:
        """Whether a call may go to the store now."""
        return self._open_until is None or self._clock() >= self._open_until

    def success(self) -> None:
        """A call succeeded: close the breaker."""
        self._failed = 0
        self._cooldown = self.cooldown
        self._open_until = None

    def failure(self) -> None:
        """A call failed or timed out: count it, and open the breaker (or keep it open longer)."""
        self._failed += 1
        if self._open_until is not None:  # a failed trial: wait longer
            self._cooldown = min(self._cooldown * 2, self.max_cooldown)
        elif self._failed < self.failures:
            return
        self._open_until = self._clock() + self._cooldown * (1 + 0.25 * self._random())


@final
class RedisStore:
    """Limits' state in Redis, shared by every worker that uses the same Redis and ``prefix``.

    ``client`` is a ``coredis.Redis`` (``coredis.Redis.from_url("redis://...")``). Enter the store
    with the client, in the app's lifespan: ``async with client, store: ...``. While it runs, a
    keeper task renews this process's connection leases every ``lease_ttl / 3`` seconds and releases
    those of closed connections (``ws_close`` is sync, so it only queues them). A worker killed with
    ``kill -9`` renews nothing: its leases expire within ``lease_ttl`` (10 s by default). Outside
    ``async with``, every call raises :class:`StoreUnavailable`.

    Each call waits at most ``deadline`` seconds (50 ms by default) and goes through ``breaker``.
    """

    def __init__(
        self,
        client: coredis.Redis[Any],
        *,
        prefix: str = "toolkit:limits:",
        deadline: float = 0.05,
        lease_ttl: float = 10.0,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        try:
            # Here, not at the top: the other limits work without the redis extra.
            import anyio  # noqa: PLC0415
            from coredis.exceptions import RedisError  # noqa: PLC0415
        except ImportError as error:  # pragma: no cover - the redis extra is installed with dev
            raise ImportError("RedisStore needs the redis extra: pip install 'ws-toolkit[redis]'") from error
        if not 0 < deadline <= 5:
            raise ValueError(f"deadline must be a positive number of seconds (at most 5), got {deadline!r}")
        if not 0.3 <= lease_ttl <= 3600:
            raise ValueError(f"lease_ttl must be between 0.3 and 3600 seconds, got {lease_ttl!r}")
        #: The coredis client.
        self.client: Final = client
        #: Prepended to every key this store writes.
        self.prefix: Final = prefix
        #: The longest a call waits, in seconds.
        self.deadline: Final = deadline
        #: How long a lease lives without renewal, in seconds: the bound on a dead worker's slots.
        self.lease_ttl: Final = lease_ttl
        #: Decides when calls stop going to Redis.
        self.breaker: Final = breaker if breaker is not None else CircuitBreaker()
        self._anyio: Final = anyio
        self._errors: Final = (RedisError, OSError, TimeoutError)
        self._gcra: Final = client.register_script(_GCRA)
        self._acquire: Final = client.register_script(_ACQUIRE)
        self._renew: Final = client.register_script(_RENEW)
        self._release: Final = client.register_script(_RELEASE)
        self._process: Final = os.urandom(6).hex()
        self._leases = 0
        # This process's leases: id -> the sorted sets it is in. Renewed by the keeper.
        self._held: dict[str, tuple[str, ...]] = {}
        self._released: list[tuple[str, tuple[str, ...]]] = []
        self._wake: anyio.Event | None = None
        self._tasks: anyio.abc.TaskGroup | None = None

    @property
    def running(self) -> bool:
        """Whether the store was entered (``async with``) and not exited."""
        return self._tasks is not None

    @property
    def leases(self) -> int:
        """Leases this process holds now."""
        return len(self._held)

    async def __aenter__(self) -> Self:
        if self._tasks is not None:
            raise RuntimeError("this RedisStore is already running")
        # Open a connection now, outside any deadline: a first call that has to connect (and greet Redis)
        # can take longer than 50 ms on a loaded machine. Bounded; if Redis is down, the calls say so.
        with self._anyio.move_on_after(1.0), contextlib.suppress(*self._errors):
            await self.client.ping()
        tasks = self._anyio.create_task_group()
        await tasks.__aenter__()
        self._tasks = tasks
        self._wake = self._anyio.Event()
        tasks.start_soon(self._keep)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        tasks, self._tasks = self._tasks, None
        if tasks is None:
            return
        tasks.cancel_scope.cancel()
        await tasks.__aexit__(kind, error, traceback)
        # Leave nothing behind that this process can still release: best effort, bounded.
        self._released.extend(self._held.items())
        self._held.clear()
        with self._anyio.move_on_after(max(self.deadline, 0.5), shield=True):
            await self._flush_released()

    async def call(self, request: Callable[[], Awaitable[_T]], deadline: float | None = None) -> _T:
        """Run one Redis call within the deadline, through the breaker; :class:`StoreUnavailable` if not."""
        if self._tasks is None or not self.breaker.allow():
            raise StoreUnavailable
        with self._anyio.move_on_after(self.deadline if deadline is None else deadline):
            try:
                result = await request()
            except self._errors as error:
                self.breaker.failure()
                raise StoreUnavailable from error
            self.breaker.success()
            return result
        self.breaker.failure()
        raise StoreUnavailable

    # --- rate -------------------------------------------------------------------------------------

    def rate_key(self, limit: str, key: str) -> str:
        """The Redis key of ``limit``'s bucket for ``key``."""
        return f"{self.prefix}rate:{limit}:{key}"

    async def take(self, key: str, interval_us: int, tolerance_us: int) -> bool:
        """Take a token from the GCRA bucket ``key``: whether the message may pass."""
        reply: object = await self.call(lambda: self._gcra(keys=[key], args=[interval_us, tolerance_us]))
        return reply == 1

    # --- connection leases ------------------------------------------------------------------------

    def lease_key(self, limit: str, key: str | None) -> str:
        """The sorted set of ``limit``'s leases: in all (``key`` None) or for one key."""
        return f"{self.prefix}conn:{limit}:*" if key is None else f"{self.prefix}conn:{limit}:k:{key}"

    def new_lease(self) -> str:
        """A lease id, unique across processes and connections."""
        self._leases += 1
        return f"{self._process}:{self._leases}"

    async def acquire(self, lease: str, caps: Sequence[tuple[str, int]]) -> bool:
        """Take ``lease`` in every ``(sorted set, cap)`` at once, or in none: whether it fit.

        From the call on, the lease is this process's to renew, until :meth:`release`.
        """
        keys = tuple(key for key, _ in caps)
        self._held[lease] = keys
        try:
            reply: object = await self.call(
                lambda: self._acquire(keys=keys, args=[lease, int(self.lease_ttl * 1000), *(cap for _, cap in caps)])
            )
        except BaseException:
            self.release(lease)  # it may have been taken before the deadline: give it back (or let it expire)
            raise
        if reply != 1:
            del self._held[lease]
            return False
        return True

    def release(self, lease: str) -> None:
        """Give ``lease`` back: sync (it is called from ``ws_close``); the keeper removes it from Redis."""
        keys = self._held.pop(lease, None)
        if keys is None:
            return
        self._released.append((lease, keys))
        if self._wake is not None:
            self._wake.set()

    async def count(self, key: str) -> int:
        """Live leases in a sorted set (for tests and operators)."""
        return await self.call(lambda: self._count(key))

    async def _count(self, key: str) -> int:
        now = await self.client.time()
        return await self.client.zcount(key, round(now.timestamp() * _MS), "+inf")

    async def _keep(self) -> None:
        anyio = self._anyio
        renew_every = self.lease_ttl / 3
        renew_at = anyio.current_time() + renew_every
        while True:
            wake = self._wake
            assert wake is not None  # noqa: S101 - set before this task starts
            with anyio.move_on_after(max(0.0, renew_at - anyio.current_time())):
                await wake.wait()
            self._wake = anyio.Event()
            await self._flush_released()
            if anyio.current_time() >= renew_at:
                renew_at = anyio.current_time() + renew_every
                await self._renew_held()

    async def _flush_released(self) -> None:
        while self._released:
            batch, self._released = self._released[:_BATCH], self._released[_BATCH:]
            keys = [key for _, held in batch for key in held]
            leases = [lease for lease, held in batch for _ in held]
            try:
                request = functools.partial(self._release, keys=keys, args=leases)
                await self.call(request, deadline=max(self.deadline, 0.5))
            except StoreUnavailable:
                return  # not released: the leases expire within lease_ttl (they are no longer renewed)

    async def _renew_held(self) -> None:
        pairs = [(key, lease) for lease, keys in self._held.items() for key in keys]
        ttl = int(self.lease_ttl * 1000)
        for start in range(0, len(pairs), _BATCH):
            keys, leases = zip(*pairs[start : start + _BATCH], strict=True)
            try:
                request = functools.partial(self._renew, keys=keys, args=[ttl, *leases])
                await self.call(request, deadline=max(self.deadline, 0.5))
            except StoreUnavailable:
                return  # the next round tries again; a lease lives lease_ttl, three rounds
