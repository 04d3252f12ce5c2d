"""The Redis backend: Pub/Sub or Streams, with deadlines, a circuit breaker, and a reader that reconnects.

Publishing and history go through a coredis client (the ``redis`` extra), each call within ``deadline``
and through a breaker. Receiving goes through one connection of our own per backend (the *link*),
spoken in RESP over an anyio socket, so that a dead or paused Redis is noticed (a PING that gets no
answer within ``ping_timeout``) instead of waiting forever, as subscriptions do in the clients we tried.
When the link is lost, every channel gets a :class:`~toolkit_broadcast.Gap` and the reader reconnects
with exponential backoff and jitter; messages a publisher sent meanwhile show up as a jump in its
sequence, hence a Gap with the count, when its next message arrives (Pub/Sub), or are read from the
stream where the reader left off (Streams).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Self, TypeAlias, TypeVar, final
from urllib.parse import unquote, urlsplit

import anyio
import anyio.abc

from ._broadcast import Broadcast, BroadcastUnavailable

if TYPE_CHECKING:
    import coredis

__all__ = ["RedisBackend", "RespError"]

_T = TypeVar("_T")
_Reply: TypeAlias = "bytes | int | list[_Reply] | RespError | None"

# The messages kept per stream and the messages after last_id, atomically: (entries, complete).
# complete is 0 when the stream is gone (a restart), entries after last_id may have been trimmed (the
# oldest kept is after it: when last_id was the very last one trimmed, this says so without a loss), or
# last_id is older than the time window. KEYS[1]: the stream; ARGV: last_id, window (ms), the most entries to return.
_HISTORY: Final = """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if not ms then ms = string.match(id, '^(%d+)$'); seq = '0' end
  return tonumber(ms), tonumber(seq)
end
local function after(a_ms, a_seq, b_ms, b_seq)
  return a_ms > b_ms or (a_ms == b_ms and a_seq > b_seq)
end
local last_ms, last_seq = parse(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return {{}, 0} end
local complete = 1
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local fields = {}
for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
-- Trimming drops the oldest entries (and Redis 7.0 leaves max-deleted-entry-id at 0-0 for it): if
-- some were dropped and the oldest kept is after last_id, entries after last_id may be gone.
local first = fields['first-entry']
if tonumber(fields['entries-added']) > tonumber(fields['length']) and first then
  local f_ms, f_seq = parse(first[1])
  if after(f_ms, f_seq, last_ms, last_seq) then complete = 0 end
end
local t = redis.call('TIME')
local floor = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[2])
local start = '(' .. ARGV[1]
if last_ms < floor then
  complete = 0
  start = string.format('%.0f', floor)
end
local entries = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', ARGV[3])
return {entries, complete}
"""


#: The most stream entries one XREAD returns.
_READ_BATCH: Final = 500


class RespError(Exception):
    """An error reply from Redis on the link."""


@final
class _Link:
    """One RESP2 connection: write commands, read replies. Cancellation-safe: bytes are only consumed
    once a whole reply has arrived."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self._buffer = bytearray()

    async def send(self, *args: str | bytes | int) -> None:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        await self.stream.send(b"".join(parts))

    async def read(self) -> _Reply:
        while True:
            parsed = _parse(self._buffer, 0)
            if parsed is not None:
                reply, end = parsed
                del self._buffer[:end]
                return reply
            self._buffer += await self.stream.receive()


def _parse(buffer: bytearray, start: int) -> tuple[_Reply, int] | None:
    """One reply from ``buffer[start:]`` and where it ends, or None if it is not all there yet."""
    end = buffer.find(b"\r\n", start)
    if end < 0:
        return None
    kind, line = buffer[start : start + 1], bytes(buffer[start + 1 : end])
    if kind == b"+":
        return line, end + 2
    if kind == b"-":
        return RespError(line.decode(errors="replace")), end + 2
    if kind == b":":
        return int(line), end + 2
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, end + 2
        if len(buffer) < end + 2 + size + 2:
            return None
        return bytes(buffer[end + 2 : end + 2 + size]), end + 2 + size + 2
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, end + 2
        items: list[_Reply] = []
        position = end + 2
        for _ in range(count):
            parsed = _parse(buffer, position)
            if parsed is None:
                return None
            item, position = parsed
            items.append(item)
        return items, position
    raise RespError(f"unexpected reply type {kind!r}")


@final
class _Commands:
    """One connection for publishing, one command at a time; a call that fails or is cut short by its
    deadline drops the connection (its reply may still be on the way), and the next call opens another."""

    def __init__(self, open_link: Callable[[], Awaitable[_Link]]) -> None:
        self._open = open_link
        self._link: _Link | None = None
        self._lock: anyio.Lock | None = None

    async def call(self, *args: str | bytes | int) -> _Reply:
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            link = self._link
            try:
                if link is None:
                    link = self._link = await self._open()
                await link.send(*args)
                reply = await link.read()
            except BaseException:
                await self.close()
                raise
        if isinstance(reply, RespError):
            raise reply
        return reply

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            with anyio.CancelScope(shield=True):
                await link.stream.aclose()


@final
class RedisBackend:
    """Channels through Redis: ``mode="pubsub"`` (fire and forget; a loss is a Gap) or ``"streams"``
    (each channel a stream, trimmed to about ``window_count`` entries; subscriptions resume from a
    ``last_id`` within ``window_seconds``).

    Publishes go through a connection of their own, spoken in RESP like the reader's (cheaper than a
    client call). Every publish and history read waits at most ``deadline`` (50 ms by default) and
    goes through a circuit breaker: after ``breaker_failures`` failures in a row, calls fail at once
    (raising :class:`~toolkit_broadcast.BroadcastUnavailable`) for ``backoff`` seconds, doubling up to
    ``max_backoff``, with jitter. The reader pings Redis every ``ping_interval`` seconds when idle and
    drops a link that has not answered within ``ping_timeout``; it reconnects after the same backoff.
    """

    def __init__(
        self,
        url: str,
        *,
        mode: Literal["pubsub", "streams"] = "pubsub",
        prefix: str = "toolkit:broadcast:",
        deadline: float = 0.05,
        window_count: int = 10_000,
        window_seconds: float = 300.0,
        ping_interval: float = 1.0,
        ping_timeout: float = 1.0,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        breaker_failures: int = 3,
    ) -> None:
        try:
            import coredis  # noqa: PLC0415 - the redis extra; the in-memory backend needs none
            from coredis.exceptions import RedisError  # noqa: PLC0415
        except ImportError as error:  # pragma: no cover - installed with dev
            raise ImportError("RedisBackend needs the redis extra: pip install 'ws-toolkit[redis]'") from error
        parts = urlsplit(url)
        if parts.scheme != "redis" or not parts.hostname:
            raise ValueError("url must look like redis://HOST:PORT/DB")
        if mode not in ("pubsub", "streams"):
            raise ValueError(f"mode must be 'pubsub' or 'streams', got {mode!r}")
        if not 0 < deadline <= 5 or window_count < 1 or window_seconds <= 0 or not 0 < backoff <= max_backoff:
            raise ValueError("deadline (0, 5], window_count >= 1, window_seconds > 0, 0 < backoff <= max_backoff")
        #: Where Redis is.
        self.url: Final = url
        #: "pubsub" or "streams".
        self.mode: Final = mode
        #: Whether subscriptions can resume from a ``last_id``: in the Streams mode.
        self.resumable: Final = mode == "streams"
        #: Prepended to every channel's Redis name.
        self.prefix: Final = prefix
        #: The longest a publish or a history read waits, in seconds.
        self.deadline: Final = deadline
        #: About how many messages each stream keeps (Streams mode).
        self.window_count: Final = window_count
        #: How far back a resume may go, in seconds (Streams mode).
        self.window_seconds: Final = window_seconds
        #: Idle seconds before the reader pings Redis.
        self.ping_interval: Final = ping_interval
        #: Seconds a ping may take before the link counts as lost.
        self.ping_timeout: Final = ping_timeout
        #: The first and the longest wait before a retry, in seconds.
        self.backoff: Final = backoff
        self.max_backoff: Final = max_backoff
        #: Failures in a row that open the breaker.
        self.breaker_failures: Final = breaker_failures
        #: How many times the reader lost its link to Redis.
        self.links_lost: int = 0
        self._host: Final = parts.hostname
        self._port: Final = parts.port or 6379
        self._db: Final = int(parts.path.strip("/") or 0)
        self._password: Final = unquote(parts.password) if parts.password else None
        self._client: Final[coredis.Redis[Any]] = coredis.Redis.from_url(url)
        self._history: Final = self._client.register_script(_HISTORY)
        self._errors: Final = (
            RedisError,
            RespError,
            OSError,
            TimeoutError,
            anyio.EndOfStream,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
        )
        self._commands: Final = _Commands(self._open)
        self._broadcast: Broadcast | None = None
        self._channels: dict[str, tuple[int, int]] = {}  # name -> the stream position read up to
        self._connected = False
        self._failures = 0
        self._open_until = 0.0
        self._cooldown = backoff
        self._tasks: anyio.abc.TaskGroup | None = None
        self._changed = anyio.Event()
        self._link: _Link | None = None
        self._link_id: int | None = None
        self._waiting: anyio.CancelScope | None = None

    def attach(self, broadcast: Broadcast) -> None:
        self._broadcast = broadcast

    @property
    def connected(self) -> bool:
        return self._connected

    async def __aenter__(self) -> Self:
        await self._client.__aenter__()
        # Open the publishing connection now, outside any deadline (connecting can take longer than one
        # publish may wait on a loaded machine). Bounded; if Redis is down, the first publish says so.
        with anyio.move_on_after(1.0), contextlib.suppress(*self._errors):
            await self._commands.call("PING")
        tasks = anyio.create_task_group()
        await tasks.__aenter__()
        self._tasks = tasks
        tasks.start_soon(self._read_forever)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        tasks, self._tasks = self._tasks, None
        if tasks is not None:
            tasks.cancel_scope.cancel()
            await tasks.__aexit__(None, None, None)
        await self._commands.close()
        self._connected = False
        await self._client.__aexit__(kind, error, traceback)

    # --- calls with a deadline and a breaker ------------------------------------------------------

    async def _call(self, request: Callable[[], Awaitable[_T]]) -> _T:
        if self._tasks is None:
            raise BroadcastUnavailable("the backend is not running (use `async with broadcast:`)")
        if time.monotonic() < self._open_until:
            raise BroadcastUnavailable("Redis is unavailable (circuit breaker open)")
        with anyio.move_on_after(self.deadline):
            try:
                result = await request()
            except self._errors as error:
                self._failed()
                raise BroadcastUnavailable("Redis call failed") from error
            self._failures = 0
            self._cooldown = self.backoff
            return result
        self._failed()
        raise BroadcastUnavailable(f"Redis did not answer within {self.deadline} s")

    def _failed(self) -> None:
        self._failures += 1
        if self._failures >= self.breaker_failures:
            self._open_until = time.monotonic() + self._cooldown * (1 + 0.25 * random.random())  # noqa: S311 - jitter
            self._cooldown = min(self._cooldown * 2, self.max_backoff)

    def _key(self, channel: str) -> str:
        return f"{self.prefix}{'s:' if self.mode == 'streams' else 'c:'}{channel}"

    async def publish(self, channel: str, data: bytes) -> str | None:
        key = self._key(channel)
        if self.mode == "pubsub":
            await self._call(lambda: self._commands.call("PUBLISH", key, data))
            return None
        entry = await self._call(
            lambda: self._commands.call("XADD", key, "MAXLEN", "~", self.window_count, "*", "d", data)
        )
        if not isinstance(entry, bytes):
            raise BroadcastUnavailable("unexpected XADD reply")
        return entry.decode()

    async def history(self, channel: str, last_id: str) -> tuple[list[tuple[str, bytes]], bool]:
        if self.mode != "streams":
            return [], False
        reply: object = await self._call(
            lambda: self._history(
                keys=[self._key(channel)], args=[last_id, int(self.window_seconds * 1000), self.window_count]
            )
        )
        if not isinstance(reply, list | tuple) or len(reply) != 2:
            raise BroadcastUnavailable("unexpected history reply")
        entries, complete = reply
        return [_entry(item) for item in entries], complete == 1

    # --- receiving --------------------------------------------------------------------------------

    async def listen(self, channel: str) -> None:
        position = (0, 0)
        if self.mode == "streams":
            # Read from the newest entry now: what is published from here on reaches this process.
            newest: object = await self._call(lambda: self._client.xrevrange(self._key(channel), count=1))
            if isinstance(newest, tuple | list) and newest:
                identifier = newest[0].identifier
                position = _pair(identifier.decode() if isinstance(identifier, bytes) else str(identifier))
        self._channels[channel] = position
        self._wake_reader()

    def unlisten(self, channel: str) -> None:
        self._channels.pop(channel, None)
        self._wake_reader()

    def _wake_reader(self) -> None:
        self._changed.set()
        if self._waiting is not None:
            self._waiting.cancel()

    async def _read_forever(self) -> None:
        delay = self.backoff
        while True:
            with contextlib.suppress(Exception):  # whatever broke the link (in a group too): reconnect
                await self._read_link()
            if self._connected:
                self._connected = False
                self.links_lost += 1
                # Pub/Sub forgets what it could not deliver: a Gap now. Streams keep it: the reader goes on
                # from where it was, and what Redis itself lost (a restart) shows as a sequence Gap.
                if self._broadcast is not None and self.mode == "pubsub":
                    for channel in list(self._channels):
                        self._broadcast.link_lost(channel)
                delay = self.backoff
            await anyio.sleep(delay * (1 + 0.5 * random.random()))  # noqa: S311 - jitter
            delay = min(delay * 2, self.max_backoff)

    async def _open(self) -> _Link:
        with anyio.fail_after(max(self.deadline, self.ping_timeout)):
            stream = await anyio.connect_tcp(self._host, self._port)
            link = _Link(stream)
            try:
                if self._password is not None:
                    await link.send("AUTH", self._password)
                    _check(await link.read())
                if self._db:
                    await link.send("SELECT", self._db)
                    _check(await link.read())
                await link.send("CLIENT", "ID")
                self._link_id = _int(await link.read())
            except BaseException:
                await stream.aclose()
                raise
        return link

    async def _read_link(self) -> None:
        link = await self._open()
        async with link.stream:
            if self.mode == "pubsub":
                await self._pump_pubsub(link)
            else:
                await self._pump_streams(link)

    async def _pump_pubsub(self, link: _Link) -> None:
        subscribed: set[str] = set()
        pending_pings = 0
        self._connected = True
        while True:
            wanted = set(self._channels)
            if wanted - subscribed:
                await link.send("SUBSCRIBE", *(self._key(c) for c in wanted - subscribed))
            if subscribed - wanted:
                await link.send("UNSUBSCRIBE", *(self._key(c) for c in subscribed - wanted))
            subscribed = wanted
            self._changed = anyio.Event()
            reply: _Reply = None
            with anyio.move_on_after(self.ping_interval) as self._waiting:  # listen() cancels it: sync
                reply = await link.read()
            self._waiting = None
            if reply is None:  # woken: a channel changed, or the link was idle
                if self._changed.is_set() and set(self._channels) != subscribed:
                    continue
                if pending_pings:
                    raise TimeoutError("Redis did not answer a ping")
                pending_pings += 1
                await link.send("PING")
                continue
            pending_pings = 0
            self._dispatch_pubsub(reply)

    def _dispatch_pubsub(self, reply: _Reply) -> None:
        if isinstance(reply, RespError):
            raise reply
        if not isinstance(reply, list) or len(reply) < 3 or reply[0] != b"message":
            return  # subscribe confirmations, pongs
        key, data = reply[1], reply[2]
        prefix = f"{self.prefix}c:".encode()
        if isinstance(key, bytes) and isinstance(data, bytes) and key.startswith(prefix) and self._broadcast:
            self._broadcast.deliver(key[len(prefix) :].decode(errors="replace"), data, None)

    async def _pump_streams(self, link: _Link) -> None:
        self._connected = True
        block = max(1, int(self.ping_interval * 1000))
        while True:
            channels = dict(self._channels)
            self._changed = anyio.Event()
            if not channels:
                with anyio.move_on_after(self.ping_interval):
                    await self._changed.wait()
                if not self._channels:
                    await link.send("PING")
                    with anyio.fail_after(self.ping_timeout):
                        _check(await link.read())
                continue
            keys = [self._key(c) for c in channels]
            ids = [f"{ms}-{seq}" for ms, seq in channels.values()]
            await link.send("XREAD", "COUNT", _READ_BATCH, "BLOCK", block, "STREAMS", *keys, *ids)
            async with anyio.create_task_group() as wait:
                wait.start_soon(self._unblock_on_change, wait.cancel_scope)
                with anyio.fail_after(self.ping_interval + self.ping_timeout):
                    reply = await link.read()
                wait.cancel_scope.cancel()
            self._dispatch_streams(reply)

    async def _unblock_on_change(self, scope: anyio.CancelScope) -> None:
        """A channel was added or removed while XREAD blocks: unblock it, so the next one reads it too."""
        await self._changed.wait()
        link_id = self._link_id
        if link_id is not None:
            with contextlib.suppress(BroadcastUnavailable):  # else the block ends within ping_interval
                await self._call(lambda: self._client.client_unblock(link_id))

    def _dispatch_streams(self, reply: _Reply) -> None:
        if isinstance(reply, RespError):
            raise reply
        if not isinstance(reply, list):
            return  # nil: nothing new within the block
        prefix = f"{self.prefix}s:"
        for stream in reply:
            if not isinstance(stream, list) or len(stream) != 2 or not isinstance(stream[0], bytes):
                continue
            channel = stream[0].decode(errors="replace").removeprefix(prefix)
            entries = stream[1] if isinstance(stream[1], list) else []
            for item in entries:
                entry_id, data = _entry(item)
                if channel in self._channels:
                    self._channels[channel] = max(self._channels[channel], _pair(entry_id))
                if self._broadcast is not None:
                    self._broadcast.deliver(channel, data, entry_id)


def _pair(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _entry(item: object) -> tuple[str, bytes]:
    """A stream entry ``[id, [field, value, ...]]`` as ``(id, the "d" field)``; ValueError otherwise."""
    if isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[0], bytes):
        fields = item[1]
        if isinstance(fields, list | tuple):
            for index in range(0, len(fields) - 1, 2):
                if fields[index] == b"d" and isinstance(fields[index + 1], bytes):
                    return item[0].decode(), fields[index + 1]
        return item[0].decode(), b""  # not ours: the broadcast skips it as foreign
    raise ValueError("not a stream entry")


def _check(reply: _Reply) -> None:
    if isinstance(reply, RespError):
        raise reply


def _int(reply: _Reply) -> int:
    if not isinstance(reply, int):
        raise RespError("expected an integer reply")
    return reply
