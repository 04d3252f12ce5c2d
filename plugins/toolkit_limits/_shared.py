"""Limits shared across workers and hosts through a :class:`RedisStore`.

Their hooks await Redis, so they are ``async`` and separate classes from :class:`RateLimit` and
:class:`ConnectionLimit`, whose sync hooks stay the in-process fast path. What each keeps per
connection lives in ``websocket.plugin_state``; ``ws_close`` (sync) hands a lease back to the store,
which releases it in the background or lets it expire.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Hashable
from typing import Final, final

import toolkit
from toolkit import (
    Accept,
    Close,
    CloseCode,
    ClosedBy,
    DenialResponse,
    MessageResult,
    StateKey,
    WebSocket,
    WebSocketState,
)

from ._limits import RATE_LIMITED, TOO_MANY, Counts, KeyedBuckets, positive_int
from ._redis import OnUnavailable, RedisStore, StoreUnavailable

__all__ = ["UNAVAILABLE_CLOSE", "UNAVAILABLE_DENIAL", "SharedConnectionLimit", "SharedRateLimit"]

#: What ``on_unavailable="closed"`` does to a message when the store cannot answer: close 1013.
UNAVAILABLE_CLOSE: Final = Close.of(CloseCode.TRY_AGAIN_LATER, "limit unavailable")
#: What ``on_unavailable="closed"`` does to a handshake when the store cannot answer: deny 503.
UNAVAILABLE_DENIAL: Final = DenialResponse(503, "limit unavailable")
_CONNECTED: Final = WebSocketState.CONNECTED
_POLICIES: Final = ("local", "open", "closed")
_connection_ids: Final = itertools.count()


def _policy(value: object) -> OnUnavailable:
    if value == "local":
        return "local"
    if value == "open":
        return "open"
    if value == "closed":
        return "closed"
    raise ValueError(f"on_unavailable must be one of {', '.join(map(repr, _POLICIES))}, got {value!r}")


def _name(name: str) -> str:
    if not name or any(char in name for char in ":*{} \r\n"):
        raise ValueError(f"name must be non-empty, without ':', '*', braces or spaces, got {name!r}")
    return name


@final
class SharedRateLimit(toolkit.Plugin):
    """:class:`RateLimit` across workers: one GCRA bucket per key, in Redis, for every worker.

    ``burst`` messages at once, then ``rate`` per second, per ``key(websocket)``: the client's
    address (``client_host``) or the authenticated principal. A connection whose key is ``None``
    gets a bucket of its own (in Redis too). Each message is one Lua script, atomic, timed by Redis'
    ``TIME``: worker clocks do not matter, and a message counts once whichever worker gets it.

    When the store does not answer within its deadline (or its breaker is open), ``on_unavailable``
    decides: ``"local"`` (default) takes the token from this process's bucket for the key,
    ``"open"`` lets the message through, ``"closed"`` closes with 1013 "limit unavailable".
    ``name`` keeps two shared limits' buckets apart in Redis.
    """

    __slots__ = ("_close", "_interval_us", "_key", "_local", "_tolerance", "_tolerance_us", "clock", "key")

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        store: RedisStore,
        key: Callable[[WebSocket], Hashable | None],
        name: str = "rate",
        on_unavailable: OnUnavailable = "local",
        close_code: int = CloseCode.POLICY_VIOLATION,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        number: object = rate  # run-time check of untyped input
        if isinstance(number, bool) or not isinstance(number, int | float) or not 0 < number < float("inf"):
            raise ValueError(f"rate must be a positive, finite number of messages per second, got {rate!r}")
        code: object = close_code
        if not isinstance(code, int) or isinstance(code, bool) or code not in RATE_LIMITED:
            allowed = " or ".join(f"{member:d}" for member in RATE_LIMITED)
            raise ValueError(f"close_code must be {allowed}, got {close_code!r}")
        #: Messages per second, per key.
        self.rate: Final = float(rate)
        #: How many messages may arrive at once, per key.
        self.burst: Final = positive_int("burst", burst)
        #: Where the buckets live.
        self.store: Final = store
        #: Names the bucket a connection takes from.
        self.key: Final = key
        #: Keeps this limit's keys apart from other limits' in Redis.
        self.name: Final = _name(name)
        #: What happens when the store cannot answer in time.
        self.on_unavailable: Final = _policy(on_unavailable)
        #: The close code when a bucket is empty.
        self.close_code: Final = CloseCode(close_code)
        #: Seconds, monotonic: the clock of the local fallback's buckets.
        self.clock: Final = clock
        self._close: Final = RATE_LIMITED[self.close_code]
        interval = 1.0 / self.rate
        self._interval_us: Final = max(1, round(interval * 1_000_000))
        self._tolerance_us: Final = (self.burst - 1) * self._interval_us
        self._tolerance: Final = (self.burst - 1) * interval + min(1e-6, interval / 2)
        # The fallback for on_unavailable="local": this process's buckets, by the same keys.
        self._local: Final = KeyedBuckets(interval)
        # Per connection: its Redis key, made on its first message.
        self._key: Final = StateKey[str]("toolkit_limits.SharedRateLimit")

    @toolkit.hookimpl(tryfirst=True)
    async def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> MessageResult:
        state = websocket.plugin_state
        key = state.get(self._key)
        if key is None:
            if websocket.application_state is not _CONNECTED:
                return None  # a connection the app closed may still drain messages: never start a bucket
            name = self.key(websocket)
            name = f"c:{self.store.new_lease()}" if name is None else f"k:{name}"
            key = state[self._key] = self.store.rate_key(self.name, name)
        try:
            allowed = await self.store.take(key, self._interval_us, self._tolerance_us)
        except StoreUnavailable:
            return self._unavailable(key)
        return None if allowed else self._close

    def _unavailable(self, key: str) -> MessageResult:
        if self.on_unavailable == "open":
            return None
        if self.on_unavailable == "closed":
            return UNAVAILABLE_CLOSE
        now = self.clock()
        bucket = self._local.bucket(key, now)
        due = max(bucket.due, now)
        if due - now > self._tolerance:
            return self._close
        bucket.due = due + 1.0 / self.rate
        return None


@final
class _Held:
    """A connection counted by a :class:`SharedConnectionLimit`: its key and its lease (None: local only)."""

    __slots__ = ("key", "lease")

    def __init__(self, key: Hashable | None, lease: str | None) -> None:
        self.key = key
        self.lease = lease


@final
class SharedConnectionLimit(toolkit.Plugin):
    """:class:`ConnectionLimit` across workers: ``max_total`` in all and ``max_per_key`` per key,
    counted in Redis as leases.

    Each counted connection holds one lease (in the total's set, and its key's), taken atomically
    by a Lua script that purges expired leases first, so a slot is never counted twice. The store
    renews the leases of open connections every ``lease_ttl / 3`` and releases those of closed ones
    right away in the background (``ws_close`` is sync); a worker killed with ``kill -9`` renews
    nothing, and its slots return within the store's ``lease_ttl`` (10 s by default).

    When the store does not answer within its deadline, ``on_unavailable`` decides: ``"local"``
    (default) counts against this process's own counts, as :class:`ConnectionLimit` does;
    ``"open"`` accepts; ``"closed"`` denies with 503 "limit unavailable". Connections accepted that
    way hold no lease. The hook is ``trylast``, like :class:`ConnectionLimit`'s, so an auth gate
    decides first and its principal is there for ``key``.
    """

    __slots__ = ("_held", "_local")

    def __init__(
        self,
        max_total: int | None = None,
        max_per_key: int | None = None,
        *,
        store: RedisStore,
        key: Callable[[WebSocket], Hashable | None] | None = None,
        name: str = "connections",
        on_unavailable: OnUnavailable = "local",
    ) -> None:
        if max_total is None and max_per_key is None:
            raise ValueError("give max_total, max_per_key, or both")
        if (max_per_key is None) != (key is None):
            raise ValueError("give key with max_per_key, and only then")
        #: The cap on connections in all, across workers, or None.
        self.max_total: Final = None if max_total is None else positive_int("max_total", max_total)
        #: The cap on connections per key, across workers, or None.
        self.max_per_key: Final = None if max_per_key is None else positive_int("max_per_key", max_per_key)
        #: Names the client a connection counts against.
        self.key: Final = key
        #: Where the leases live.
        self.store: Final = store
        #: Keeps this limit's leases apart from other limits' in Redis.
        self.name: Final = _name(name)
        #: What happens when the store cannot answer in time.
        self.on_unavailable: Final = _policy(on_unavailable)
        # This process's own counts, kept always: they are the "local" fallback.
        self._local: Final = Counts(self.max_total, self.max_per_key)
        self._held: Final = StateKey[_Held]("toolkit_limits.SharedConnectionLimit")

    @property
    def local_total(self) -> int:
        """Connections this process counts now."""
        return self._local.total

    @toolkit.hookimpl(trylast=True)
    async def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> DenialResponse | None:
        state = websocket.plugin_state
        if self._held in state:
            return None
        key = None if self.key is None else self.key(websocket)
        caps: list[tuple[str, int]] = []
        if self.max_total is not None:
            caps.append((self.store.lease_key(self.name, None), self.max_total))
        if key is not None and self.max_per_key is not None:
            caps.append((self.store.lease_key(self.name, str(key)), self.max_per_key))
        lease = self.store.new_lease()
        try:
            if not await self.store.acquire(lease, caps):
                return TOO_MANY
            held = _Held(key, lease)
        except StoreUnavailable:
            if self.on_unavailable == "closed":
                return UNAVAILABLE_DENIAL
            if self.on_unavailable == "local" and self._local.over(key):
                return TOO_MANY
            held = _Held(key, None)
        self._local.add(key)
        state[self._held] = held
        return None

    def ws_close(self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None:
        held = websocket.plugin_state.pop(self._held, None)
        if held is None:
            return
        self._local.remove(held.key)
        if held.lease is not None:
            self.store.release(held.lease)
