"""The limits: message size (in and out), message rate, concurrent connections.

Each is a plain object shared by every connection of the apps it is registered
with. What a limit keeps per connection (a rate bucket, the key a counted
connection holds) lives in that connection's ``websocket.plugin_state``, under a
key of the limit's own instance, and goes when the connection ends; only
aggregates across connections (counts) stay on the object. The per-message hooks
are sync (no awaiting) and do a handful of operations in the common case.
"""

from __future__ import annotations

import logging
import math
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

__all__ = [
    "RATE_LIMITED",
    "TOO_MANY",
    "ConnectionLimit",
    "Counts",
    "KeyedBuckets",
    "MessageSizeLimit",
    "OutboundSizeLimit",
    "RateLimit",
    "client_host",
    "positive_int",
]

#: Where :class:`OutboundSizeLimit` reports an app that sent too much (sizes only, never content).
logger: Final = logging.getLogger("toolkit_limits")

_TOO_BIG: Final = Close.of(CloseCode.MESSAGE_TOO_BIG)
_INTERNAL_ERROR: Final = Close.of(CloseCode.INTERNAL_ERROR)
# The closes a rate limit may send (docs/close-codes.md): policy violation (1008), or "try again later" (1013).
RATE_LIMITED: Final = {
    code: Close.of(code, "rate limit") for code in (CloseCode.POLICY_VIOLATION, CloseCode.TRY_AGAIN_LATER)
}
TOO_MANY: Final = DenialResponse(429, "too many connections")
_CONNECTED: Final = WebSocketState.CONNECTED


def positive_int(name: str, value: object) -> int:
    if type(value) is not int:  # bool is an int subclass: refused too
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def _over_limit(data: str | bytes, max_bytes: int) -> bool:
    """Whether ``data`` is longer than ``max_bytes``: UTF-8 bytes for text, raw length for bytes.

    Encodes only when it must: every code point takes 1 to 4 bytes, and ASCII text 1.
    Lone surrogates (which no server delivers) count 3 bytes, as ``surrogatepass`` encodes them.
    """
    size = len(data)
    if size <= max_bytes >> 2:
        return False
    if size > max_bytes:
        return True
    if isinstance(data, bytes) or data.isascii():
        return False
    return len(data.encode("utf-8", "surrogatepass")) > max_bytes


@final
class MessageSizeLimit(toolkit.Plugin):
    """Close with 1009 "message too big" when a received message exceeds ``max_bytes``.

    Text counts in UTF-8 bytes, binary in raw bytes; a message of exactly
    ``max_bytes`` passes. The hook is ``tryfirst``, so the message is measured
    as the client sent it, before any plugin parses or replaces it.

    The server may have a lower limit of its own (uvicorn's ``ws_max_size``,
    16 MiB by default), which then applies first; this one never relies on it.
    """

    __slots__ = ("_quarter", "max_bytes")

    def __init__(self, max_bytes: int) -> None:
        #: The largest message that passes, in bytes.
        self.max_bytes: Final = positive_int("max_bytes", max_bytes)
        # Text of at most this many code points fits whatever it holds (4 bytes each at most).
        self._quarter: Final = max_bytes >> 2

    @toolkit.hookimpl(tryfirst=True)
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> MessageResult:
        # _over_limit, inlined: this runs for every message of every connection.
        size = len(data)
        if size <= self._quarter:
            return None
        if size > self.max_bytes:
            return _TOO_BIG
        if isinstance(data, str) and not data.isascii() and len(data.encode("utf-8", "surrogatepass")) > self.max_bytes:
            return _TOO_BIG
        return None


@final
class OutboundSizeLimit(toolkit.Plugin):
    """Refuse to send a message over ``max_bytes``: an app bug, so close with 1011 "internal error".

    Nothing of the oversized message goes out; the app's send raises
    ``WebSocketDisconnect(1011)`` and a warning with the two sizes (never the
    content) goes to the ``toolkit_limits`` logger. The hook is ``trylast``, so
    it measures the message as it will be sent, after every plugin changed it.
    A separate plugin from :class:`MessageSizeLimit` so that apps that do not
    want it pay nothing per send.
    """

    __slots__ = ("max_bytes",)

    def __init__(self, max_bytes: int) -> None:
        #: The largest message that may be sent, in bytes.
        self.max_bytes: Final = positive_int("max_bytes", max_bytes)

    @toolkit.hookimpl(trylast=True)
    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> MessageResult:
        if _over_limit(data, self.max_bytes):
            size = len(data.encode("utf-8", "surrogatepass")) if isinstance(data, str) else len(data)
            logger.warning(
                "the app sent a %d-byte message, over the %d-byte outbound limit; closing with %d",
                size,
                self.max_bytes,
                _INTERNAL_ERROR.code,
            )
            return _INTERNAL_ERROR
        return None


@final
class RateLimit(toolkit.Plugin):
    """A token bucket per connection on received messages: ``burst`` at once, then ``rate`` per second.

    Each received data message takes a token; the bucket holds at most
    ``burst`` tokens and refills at ``rate`` per second. A message that finds it
    empty closes the connection with ``close_code`` (1008 by default, or 1013
    "try again later") and reason "rate limit". Messages count, not bytes:
    combine with :class:`MessageSizeLimit` to bound bytes per second.

    ``key(websocket)`` shares one bucket between connections: ``None`` (the
    default) gives each connection its own; :func:`client_host` one per client
    address; a function returning the authenticated principal one per person.
    A key function that returns ``None`` for a connection gives that one its own
    bucket. Keyed buckets outlive their connections until they are full again,
    so reconnecting does not refill one. Per process: across workers, use
    :class:`SharedRateLimit`.

    The hook is ``tryfirst``: a flood costs no parsing. ``clock`` (seconds,
    monotonic) is injectable for tests.
    """

    __slots__ = (
        "_bucket",
        "_buckets",
        "_clock",
        "_close",
        "_interval",
        "_keyed",
        "_tolerance",
        "burst",
        "close_code",
        "key",
        "rate",
    )

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        key: Callable[[WebSocket], Hashable | None] | None = None,
        close_code: int = CloseCode.POLICY_VIOLATION,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise TypeError(f"rate must be a number, got {type(rate).__name__}")
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a positive, finite number of messages per second, got {rate}")
        code: object = close_code  # run-time check of untyped input: an int or a CloseCode, not a bool
        if not isinstance(code, int) or isinstance(code, bool) or code not in RATE_LIMITED:
            allowed = " or ".join(f"{member:d}" for member in RATE_LIMITED)
            raise ValueError(f"close_code must be {allowed}, got {close_code!r}")
        #: Tokens added per second.
        self.rate: Final = float(rate)
        #: Bucket size: how many messages may arrive at once.
        self.burst: Final = positive_int("burst", burst)
        #: The close code sent when the bucket is empty.
        self.close_code: Final = CloseCode(close_code)
        self._close: Final = RATE_LIMITED[self.close_code]
        self._clock: Final = clock
        # The bucket is kept as its equivalent in time (GCRA, "virtual scheduling"): per connection,
        # the instant at which the bucket will be full again. One small object per connection, in
        # its plugin state; one lookup and one attribute store per message. A message at `now`
        # finds a token iff that instant is at most (burst - 1) intervals ahead of `now`.
        self._interval: Final = 1.0 / self.rate
        # A microsecond of slack (less for very high rates) so float rounding in the running sum
        # never refuses a message that arrives exactly on time.
        self._tolerance: Final = (self.burst - 1) * self._interval + min(1e-6, self._interval / 2)
        # Per instance: two rate limits on one manager (a burst and a sustained one) keep two buckets.
        self._bucket: Final = StateKey[_Bucket]("toolkit_limits.RateLimit")
        self._buckets = 0
        #: Names the bucket a connection takes from; None: one bucket per connection.
        self.key: Final = key
        # Keyed buckets, shared by the connections with the same key. A connection holds its key's
        # bucket in its plugin state like a bucket of its own, so the per-message path is the same.
        self._keyed: Final = KeyedBuckets(self._interval) if key is not None else None

    @property
    def connections(self) -> int:
        """How many connections currently have a bucket (it is freed when a connection ends)."""
        return self._buckets

    @toolkit.hookimpl(tryfirst=True)
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> MessageResult:
        now = self._clock()
        bucket = websocket.plugin_state.get(self._bucket)
        if bucket is None:
            # First message. A connection the app already closed may still drain messages
            # after its ws_close: never start a bucket ws_close would not count out.
            if websocket.application_state is not _CONNECTED:
                return None
            self._buckets += 1
            keyed, key = self._keyed, self.key
            name = None if keyed is None or key is None else key(websocket)
            if keyed is None or name is None:
                websocket.plugin_state[self._bucket] = _Bucket(now + self._interval)
                return None
            bucket = websocket.plugin_state[self._bucket] = keyed.hold(name, now)
        due = bucket.due
        if due < now:
            due = now
        elif due - now > self._tolerance:
            return self._close
        bucket.due = due + self._interval
        return None

    def ws_close(self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None:
        bucket = websocket.plugin_state.pop(self._bucket)
        if bucket is not None:
            self._buckets -= 1
            if bucket.holders:
                bucket.holders -= 1


@final
class _Bucket:
    """A rate bucket, as the instant at which it is full again; ``holders``: connections sharing it by key."""

    __slots__ = ("due", "holders")

    def __init__(self, due: float, holders: int = 0) -> None:
        self.due = due
        self.holders = holders


@final
class KeyedBuckets:
    """Rate buckets by key, in one process: :class:`RateLimit` with a key, and the local fallback of
    :class:`SharedRateLimit`. A bucket no connection holds is forgotten once it is full again (swept when
    the table has doubled since the last sweep), so memory follows the keys in use."""

    __slots__ = ("_buckets", "_interval", "_sweep_at")

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._buckets: dict[Hashable, _Bucket] = {}
        self._sweep_at = 64

    def __len__(self) -> int:
        return len(self._buckets)

    def hold(self, key: Hashable, now: float) -> _Bucket:
        """The bucket for ``key`` (full if new), with one more connection holding it."""
        bucket = self.bucket(key, now)
        bucket.holders += 1
        return bucket

    def bucket(self, key: Hashable, now: float) -> _Bucket:
        """The bucket for ``key``, made full if new."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._sweep_at:
                self.sweep(now)
            bucket = self._buckets[key] = _Bucket(now)
        return bucket

    def sweep(self, now: float) -> None:
        """Forget the buckets that no connection holds and that are full again."""
        self._buckets = {key: b for key, b in self._buckets.items() if b.holders or b.due > now}
        self._sweep_at = max(64, 2 * len(self._buckets))


def client_host(websocket: WebSocket) -> str | None:
    """The client's IP address as the server saw it (``websocket.client.host``), or None if unknown.

    Behind a reverse proxy this is the proxy's address unless the server rewrites
    it from forwarded headers (uvicorn's ``--proxy-headers`` with ``--forwarded-allow-ips``).
    """
    client = websocket.client
    return None if client is None else client.host


@final
class ConnectionLimit(toolkit.Plugin):
    """Cap concurrent connections: ``max_total`` in all, ``max_per_key`` per client.

    ``key(websocket)`` names the client: by default its IP address
    (:func:`client_host`); it may instead return the authenticated principal,
    e.g. ``lambda ws: str(ws.scope["user"])``. A key of ``None`` is exempt from
    the per-key cap (still counted in the total). If ``key`` raises, the
    connection is denied (500), as for any plugin failure.

    Checked when the app accepts. Over a cap, the connection is denied with
    429 "too many connections" through the server's denial extension, or a
    close (the client sees 403) without it. A counted connection is released
    exactly once, when ``ws_close`` fires, whatever ended it: the client,
    the app, a denial by a plugin that ran after this one, an error or a
    cancellation. ``ws_close`` fires reliably under :class:`toolkit.WebSocketApp`
    and ``async with WebSocket(...)``; use one of them.

    The hook is ``trylast``: every other ``ws_accept`` implementation (an auth
    gate) decides first, so a principal it sets is available to ``key`` and
    connections it denies are never counted. It is sync, so the check and the
    count happen with no await in between.

    Counts are per instance and per process: register one instance with several
    apps to share a cap between them; with N server workers the effective cap is N times larger
    (:class:`SharedConnectionLimit` counts across workers).
    """

    __slots__ = ("_counts", "_held", "key", "max_per_key", "max_total")

    def __init__(
        self,
        max_total: int | None = None,
        max_per_key: int | None = None,
        key: Callable[[WebSocket], Hashable | None] = client_host,
    ) -> None:
        if max_total is None and max_per_key is None:
            raise ValueError("give max_total, max_per_key, or both")
        if max_per_key is None and key is not client_host:
            raise ValueError("key is only used with max_per_key")
        #: The cap on connections in all, or None.
        self.max_total: Final = None if max_total is None else positive_int("max_total", max_total)
        #: The cap on connections per key, or None.
        self.max_per_key: Final = None if max_per_key is None else positive_int("max_per_key", max_per_key)
        #: Names the client a connection counts against.
        self.key: Final = key
        # Aggregates across connections: the counts.
        self._counts: Final = Counts(self.max_total, self.max_per_key)
        # On each counted connection, in its plugin state: the key it counts against (None: not
        # counted per key). Per instance: a global cap and a per-user cap may share one manager.
        self._held: Final = StateKey[Hashable | None]("toolkit_limits.ConnectionLimit")

    @property
    def total(self) -> int:
        """Connections counted now."""
        return self._counts.total

    def count(self, key: Hashable) -> int:
        """Connections counted now for ``key`` (0 when per-key counting is off)."""
        return self._counts.count(key)

    @toolkit.hookimpl(trylast=True)
    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> DenialResponse | None:
        # No await from the checks to the counting: concurrent handshakes cannot both take the last slot.
        state = websocket.plugin_state
        if self._held in state:
            return None
        key = self.key(websocket) if self.max_per_key is not None else None
        if self._counts.over(key):
            return TOO_MANY
        self._counts.add(key)
        state[self._held] = key
        return None

    def ws_close(self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None:
        state = websocket.plugin_state
        if self._held not in state:
            return
        self._counts.remove(state.pop(self._held))


@final
class Counts:
    """Connections counted in one process, in all and per key: :class:`ConnectionLimit`'s, and the local
    fallback of :class:`SharedConnectionLimit`. A key of ``None`` counts in the total only."""

    __slots__ = ("_per_key", "max_per_key", "max_total", "total")

    def __init__(self, max_total: int | None, max_per_key: int | None) -> None:
        self.max_total = max_total
        self.max_per_key = max_per_key
        self.total = 0
        self._per_key: dict[Hashable, int] = {}

    def count(self, key: Hashable) -> int:
        return self._per_key.get(key, 0)

    def over(self, key: Hashable | None) -> bool:
        """Whether one more connection for ``key`` would be over a cap."""
        if key is not None and self.max_per_key is not None and self._per_key.get(key, 0) >= self.max_per_key:
            return True
        return self.max_total is not None and self.total >= self.max_total

    def add(self, key: Hashable | None) -> None:
        self.total += 1
        if key is not None and self.max_per_key is not None:
            self._per_key[key] = self._per_key.get(key, 0) + 1

    def remove(self, key: Hashable | None) -> None:
        self.total -= 1
        if key is not None and self.max_per_key is not None:
            left = self._per_key[key] - 1
            if left:
                self._per_key[key] = left
            else:
                del self._per_key[key]
