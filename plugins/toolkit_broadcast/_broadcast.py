"""Publish/subscribe on named channels: the broadcast, its typed channels, subscriptions with bounded outboxes.

A :class:`Broadcast` owns one backend (in memory by default, or Redis) and the subscriptions of this
process. The backend hands every message to :meth:`Broadcast.deliver` once, without awaiting; the
broadcast checks its envelope once, tracks each publisher's sequence (a jump is a :class:`Gap`), decodes
the payload once per codec, and puts the result in every subscription's outbox without awaiting. An
outbox is bounded; when it is full, the subscription's ``overflow`` policy decides.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    Final,
    Generic,
    Literal,
    Protocol,
    Self,
    TypeAlias,
    TypeVar,
    cast,
    final,
    overload,
)

import anyio
import pydantic_core

from toolkit import Close, CloseCode

from ._envelope import Envelope, Gap, Malformed, Message, decode_envelope, encode_envelope

if TYPE_CHECKING:
    from pydantic import TypeAdapter

__all__ = [
    "OVERFLOW_CLOSE",
    "Backend",
    "Broadcast",
    "BroadcastUnavailable",
    "Channel",
    "Codec",
    "JsonCodec",
    "MemoryBackend",
    "ModelCodec",
    "Overflow",
    "Overflowed",
    "Subscription",
    "logger",
]

T = TypeVar("T")

#: Where malformed or foreign messages on a channel are reported: once per channel and kind.
logger: Final = logging.getLogger("toolkit_broadcast")

#: What a full outbox does: ``"disconnect"`` (iteration raises :class:`Overflowed`: close with 1013),
#: ``"drop_oldest"`` or ``"drop_newest"`` (a :class:`Gap` with the count takes the dropped ones' place).
Overflow: TypeAlias = Literal["disconnect", "drop_oldest", "drop_newest"]
#: The close for a subscriber that fell too far behind under ``overflow="disconnect"``: 1013, "too slow".
OVERFLOW_CLOSE: Final = Close.of(CloseCode.TRY_AGAIN_LATER, "too slow")


class BroadcastUnavailable(Exception):
    """The backend could not publish or read history within its deadline (or its breaker is open)."""


class Overflowed(Exception):
    """A subscription's outbox overflowed under ``overflow="disconnect"``: close the connection with 1013."""


class Codec(Protocol[T]):
    """Turns a channel's payloads into bytes and back. ``decode`` raises ``ValueError`` on bad input."""

    def encode(self, value: T, /) -> bytes:
        """The payload's bytes."""
        ...

    def decode(self, data: bytes, /) -> T:
        """The payload from its bytes; ``ValueError`` if they are not one."""
        ...


@final
class JsonCodec:
    """JSON values (``dict``, ``list``, ``str``, numbers, ``bool``, ``None``), through pydantic-core."""

    __slots__ = ()

    def encode(self, value: object, /) -> bytes:
        return pydantic_core.to_json(value)

    def decode(self, data: bytes, /) -> object:
        return pydantic_core.from_json(data)


@final
class ModelCodec(Generic[T]):
    """Pydantic models (or any type pydantic validates) as JSON: the same models the app sends.

    ``ModelCodec(Said)`` for a class; ``ModelCodec[Joined | Said](Outbound)`` for an annotated union
    (toolkit_messages' ``Outbound`` types). Needs pydantic (the ``messages`` extra).
    """

    __slots__ = ("_adapter",)

    @overload
    def __init__(self: ModelCodec[T], type_: type[T]) -> None: ...
    @overload
    def __init__(self, type_: object) -> None: ...
    def __init__(self, type_: object) -> None:
        from pydantic import TypeAdapter  # noqa: PLC0415 - only for this codec: pydantic is an extra

        self._adapter: Final[TypeAdapter[T]] = TypeAdapter(cast(Any, type_))  # T: from the overload

    def encode(self, value: T, /) -> bytes:
        return self._adapter.dump_json(value)

    def decode(self, data: bytes, /) -> T:
        return self._adapter.validate_json(data)


class Backend(Protocol):
    """Where messages travel between publishers and subscribers: :class:`MemoryBackend` or ``RedisBackend``.

    ``attach`` is called once, by the :class:`Broadcast`, before ``async with``; the backend then calls
    ``broadcast.deliver(channel, data, id)`` for every message on a channel it listens to, and
    ``broadcast.link_lost(channel)`` when it may have missed some. Nothing it calls awaits.
    """

    @property
    def resumable(self) -> bool:
        """Whether the backend keeps a history that subscriptions can resume from (``last_id``)."""
        ...

    def attach(self, broadcast: Broadcast) -> None:
        """Deliver to ``broadcast`` from now on."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None: ...

    @property
    def connected(self) -> bool:
        """Whether messages can reach this process now."""
        ...

    async def publish(self, channel: str, data: bytes) -> str | None:
        """Send ``data`` to every listener of ``channel``; the stream id if the backend keeps one."""
        ...

    async def listen(self, channel: str) -> None:
        """Start delivering ``channel``'s messages (the first subscription in this process)."""
        ...

    def unlisten(self, channel: str) -> None:
        """Stop delivering ``channel``'s messages (its last subscription ended)."""
        ...

    async def history(self, channel: str, last_id: str) -> tuple[list[tuple[str, bytes]], bool]:
        """The messages after ``last_id`` still kept, and whether that is all of them (none lost)."""
        ...


@final
class MemoryBackend:
    """One process, no server: a publish is delivered before it returns. Never loses a message; no history."""

    def __init__(self) -> None:
        #: No history: a subscription with ``last_id`` starts with a Gap.
        self.resumable: Final = False
        self._broadcast: Broadcast | None = None
        self._listened: set[str] = set()

    def attach(self, broadcast: Broadcast) -> None:
        self._broadcast = broadcast

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        return None

    @property
    def connected(self) -> bool:
        return True

    async def publish(self, channel: str, data: bytes) -> str | None:
        if self._broadcast is not None and channel in self._listened:
            self._broadcast.deliver(channel, data, None)
        return None

    async def listen(self, channel: str) -> None:
        self._listened.add(channel)

    def unlisten(self, channel: str) -> None:
        self._listened.discard(channel)

    async def history(self, channel: str, last_id: str) -> tuple[list[tuple[str, bytes]], bool]:
        return [], False


def _stream_id(value: str) -> tuple[int, int]:
    """A Redis stream id as a comparable pair; ValueError if it is not one."""
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


@final
class _ChannelState:
    """One channel's subscriptions in this process, and the last sequence seen from each publisher."""

    __slots__ = ("seen", "subscriptions")

    def __init__(self) -> None:
        self.subscriptions: dict[Subscription[Any], None] = {}
        self.seen: dict[str, int] = {}


@final
class Broadcast:
    """Named channels for publish/subscribe, over ``backend`` (a :class:`MemoryBackend` by default).

    Run it for the app's lifetime (``async with broadcast:``, in the lifespan); make typed channels with
    :meth:`channel`. ``outbox`` bounds each subscription's queue and ``overflow`` says what a full one
    does (see :data:`Overflow`); both can be set per subscription. Messages over ``max_bytes`` and
    anything on a channel that is not one of ours are skipped and logged once per channel and kind.
    """

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        outbox: int = 256,
        overflow: Overflow = "drop_oldest",
        max_bytes: int = 1 << 20,
    ) -> None:
        if outbox < 1 or max_bytes < 64:
            raise ValueError("outbox must be at least 1 and max_bytes at least 64")
        if overflow not in ("disconnect", "drop_oldest", "drop_newest"):
            raise ValueError(f"overflow must be 'disconnect', 'drop_oldest' or 'drop_newest', got {overflow!r}")
        #: Where messages travel.
        self.backend: Final[Backend] = backend if backend is not None else MemoryBackend()
        #: Default bound of each subscription's outbox.
        self.outbox: Final = outbox
        #: Default policy of a full outbox.
        self.overflow: Final[Overflow] = overflow
        #: Messages larger than this (envelope included) are skipped.
        self.max_bytes: Final = max_bytes
        #: This publisher's id in every envelope: random, per instance.
        self.origin: Final = os.urandom(8).hex()
        #: Messages skipped as malformed or foreign, in all.
        self.skipped: int = 0
        self._channels: dict[str, _ChannelState] = {}
        self._sequences: dict[str, int] = {}
        self._logged: set[tuple[str, str]] = set()
        self._running = False
        self.backend.attach(self)

    async def __aenter__(self) -> Self:
        await self.backend.__aenter__()
        self._running = True
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._running = False
        await self.backend.__aexit__(kind, error, traceback)

    @overload
    def channel(self, name: str) -> Channel[object]: ...
    @overload
    def channel(self, name: str, codec: Codec[T]) -> Channel[T]: ...
    def channel(self, name: str, codec: Codec[Any] | None = None) -> Channel[Any]:
        """A typed handle on the channel ``name``: publish and subscribe with ``codec`` (JSON by default)."""
        if not name or len(name) > 200 or any(char in name for char in "\r\n\0 "):
            raise ValueError(f"a channel name is 1 to 200 characters without spaces or line breaks, got {name!r}")
        return Channel(self, name, codec if codec is not None else JsonCodec())

    # --- publishing -------------------------------------------------------------------------------

    async def _publish(self, channel: str, payload: bytes, trace: str | None) -> str | None:
        if not self._running:
            raise RuntimeError("publish inside `async with broadcast:` (the app's lifespan)")
        seq = self._sequences[channel] = self._sequences.get(channel, 0) + 1
        data = encode_envelope(Envelope(self.origin, seq, trace), payload)
        if len(data) > self.max_bytes:
            self._sequences[channel] -= 1
            raise ValueError(f"the message is {len(data)} bytes, over max_bytes ({self.max_bytes})")
        return await self.backend.publish(channel, data)

    # --- delivery (called by the backend, never awaits) -------------------------------------------

    def deliver(self, channel: str, data: bytes, entry_id: str | None) -> None:
        """One message from the backend: check it once, then queue it for every subscription."""
        state = self._channels.get(channel)
        if state is None:
            return
        try:
            envelope, payload = decode_envelope(data, self.max_bytes)
        except Malformed as error:
            self._skip(channel, error.kind)
            return
        last = state.seen.get(envelope.origin)
        if last is not None and envelope.seq <= last:
            return  # already delivered (a replay overlapping live messages, or a duplicate)
        state.seen[envelope.origin] = envelope.seq
        gap = None
        if last is not None and envelope.seq > last + 1:
            gap = Gap(channel, envelope.seq - last - 1, envelope.origin, "sequence")
        decoded: dict[int, Message[Any] | None] = {}  # once per codec, not per subscriber
        for subscription in list(state.subscriptions):
            codec = subscription.codec
            if id(codec) in decoded:
                message = decoded[id(codec)]
            else:
                message = decoded[id(codec)] = self._decode(channel, codec, envelope, payload, entry_id)
            if message is None:
                continue
            if gap is not None:
                subscription.push(gap)
            subscription.push(message)

    def link_lost(self, channel: str) -> None:
        """The backend may have missed messages on ``channel``: every subscription gets a :class:`Gap`."""
        state = self._channels.get(channel)
        if state is None:
            return
        for subscription in list(state.subscriptions):
            subscription.push(Gap(channel, None, None, "link"))

    def _decode(
        self, channel: str, codec: Codec[Any], envelope: Envelope, payload: bytes, entry_id: str | None
    ) -> Message[Any] | None:
        try:
            return Message(channel, codec.decode(payload), envelope, entry_id)
        except ValueError:
            self._skip(channel, "payload")
            return None

    def _skip(self, channel: str, kind: str) -> None:
        self.skipped += 1
        if (channel, kind) not in self._logged:
            self._logged.add((channel, kind))
            logger.warning("skipped a message on channel %r: %s (logged once per channel and kind)", channel[:80], kind)

    # --- subscriptions ----------------------------------------------------------------------------

    async def _join(self, subscription: Subscription[Any]) -> None:
        if not self._running:
            raise RuntimeError("subscribe inside `async with broadcast:` (the app's lifespan)")
        name = subscription.channel.name
        state = self._channels.get(name)
        first = state is None
        if state is None:
            state = self._channels[name] = _ChannelState()
        state.subscriptions[subscription] = None
        if first:
            try:
                await self.backend.listen(name)
            except BroadcastUnavailable:
                subscription.push(Gap(name, None, None, "link"))
        if not self.backend.connected:
            subscription.push(Gap(name, None, None, "link"))

    def _leave(self, subscription: Subscription[Any]) -> None:
        name = subscription.channel.name
        state = self._channels.get(name)
        if state is None or subscription not in state.subscriptions:
            return
        del state.subscriptions[subscription]
        if not state.subscriptions:
            del self._channels[name]
            self.backend.unlisten(name)


@final
class Channel(Generic[T]):
    """A named channel with a codec: :meth:`publish` values of ``T``, :meth:`subscribe` to get them back."""

    __slots__ = ("broadcast", "codec", "name")

    def __init__(self, broadcast: Broadcast, name: str, codec: Codec[T]) -> None:
        #: The broadcast it belongs to.
        self.broadcast: Final = broadcast
        #: The channel's name, shared by every worker.
        self.name: Final = name
        #: How payloads become bytes and back.
        self.codec: Final = codec

    async def publish(self, payload: T, *, trace: str | None = None) -> str | None:
        """Send ``payload`` to every subscriber, in every worker; the stream id in the Streams mode.

        Raises :class:`BroadcastUnavailable` when the backend cannot take it within its deadline.
        ``trace`` is a W3C ``traceparent`` to carry along.
        """
        return await self.broadcast._publish(self.name, self.codec.encode(payload), trace)

    def subscribe(
        self, *, last_id: str | None = None, outbox: int | None = None, overflow: Overflow | None = None
    ) -> Subscription[T]:
        """A subscription: ``async with channel.subscribe() as events: async for event in events: ...``.

        ``last_id`` (Streams mode) resumes after that message: what was missed comes first, in order,
        then live messages, none twice; beyond the kept window a :class:`Gap` comes first.
        """
        return Subscription(self, last_id, outbox or self.broadcast.outbox, overflow or self.broadcast.overflow)


@final
class Subscription(Generic[T]):
    """Messages of one channel for one subscriber, through a bounded outbox. Made by :meth:`Channel.subscribe`.

    Iterate it for :class:`Message` and :class:`Gap` events, in order. Nothing is lost silently: a
    message that does not reach the outbox is counted in a :class:`Gap` that takes its place.
    """

    __slots__ = (
        "_dropped",
        "_events",
        "_holding",
        "_last_id",
        "_loop",
        "_new_event",
        "_overflowed",
        "_replayed",
        "_waiter",
        "channel",
        "limit",
        "overflow",
    )

    def __init__(self, channel: Channel[T], last_id: str | None, limit: int, overflow: Overflow) -> None:
        if last_id is not None:
            _stream_id(last_id)  # ValueError now, not later
        #: The channel.
        self.channel: Final = channel
        #: The outbox's bound.
        self.limit: Final = limit
        #: What a full outbox does.
        self.overflow: Final = overflow
        self._last_id = last_id
        self._replayed: tuple[int, int] | None = None
        self._events: deque[Message[T] | Gap] = deque()
        self._dropped = 0
        self._overflowed = False
        # Set by push when the subscriber waits for an event; made per wait, from the running loop's own
        # Event class (anyio.Event() finds the loop each time: 1.1 us against 0.4, per subscriber and message).
        self._waiter: anyio.Event | asyncio.Future[None] | None = None
        self._new_event: Callable[[], anyio.Event] = anyio.Event
        #: On asyncio, the subscriber waits on a bare future of its loop: one allocation per wait instead
        #: of an event, its inner event, a waiter list and a future (fewer collections, a cheaper wake-up).
        self._loop: asyncio.AbstractEventLoop | None = None
        # While a resume replays history, live messages wait here (then those already replayed are dropped).
        self._holding: list[Message[T] | Gap] | None = None

    @property
    def codec(self) -> Codec[T]:
        """The channel's codec."""
        return self.channel.codec

    @property
    def last_id(self) -> str | None:
        """The stream id of the last message taken from this subscription (Streams mode): resume from it."""
        return self._last_id

    @property
    def pending(self) -> int:
        """Events waiting in the outbox."""
        return len(self._events)

    async def __aenter__(self) -> Self:
        self._new_event = type(anyio.Event())
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:  # trio: anyio's event
            self._loop = None
        broadcast = self.channel.broadcast
        resume = self._last_id
        if resume is not None:
            self._holding = []
        await broadcast._join(self)
        if resume is not None:
            try:
                await self._replay(resume)
            finally:
                held, self._holding = self._holding or [], None
                for event in held:
                    self.push(event)
        return self

    async def _replay(self, last_id: str) -> None:
        broadcast = self.channel.broadcast
        name = self.channel.name
        self._replayed = _stream_id(last_id)
        try:
            entries, complete = await broadcast.backend.history(name, last_id)
        except BroadcastUnavailable:
            self._push_now(Gap(name, None, None, "link"))
            return
        if not complete:
            self._push_now(Gap(name, None, None, "window"))
        for entry_id, data in entries:
            self._replayed = _stream_id(entry_id)
            try:
                envelope, payload = decode_envelope(data, broadcast.max_bytes)
            except Malformed as error:
                broadcast._skip(name, error.kind)
                continue
            message = broadcast._decode(name, self.codec, envelope, payload, entry_id)
            if message is not None:
                self._push_now(message)

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.channel.broadcast._leave(self)
        self._events.clear()

    def __aiter__(self) -> AsyncIterator[Message[T] | Gap]:
        return self

    async def __anext__(self) -> Message[T] | Gap:
        while True:
            if self._overflowed:
                raise Overflowed
            if self._dropped and self.overflow == "drop_oldest":
                return self._take_gap()  # the dropped ones were the oldest: their Gap comes first
            if self._events:
                event = self._events.popleft()
                if isinstance(event, Message) and event.id is not None:
                    self._last_id = event.id
                return event
            if self._dropped:
                return self._take_gap()
            loop = self._loop
            if loop is not None:
                future: asyncio.Future[None] = loop.create_future()
                self._waiter = future
                try:
                    await future
                finally:
                    self._waiter = None
                continue
            waiter = self._waiter = self._new_event()
            try:
                await waiter.wait()
            finally:
                self._waiter = None

    def _take_gap(self) -> Gap:
        dropped, self._dropped = self._dropped, 0
        return Gap(self.channel.name, dropped, None, "overflow")

    def push(self, event: Message[T] | Gap) -> None:
        """Queue ``event`` without waiting (the broadcast's side); a full outbox applies ``overflow``."""
        if self._holding is not None:
            self._holding.append(event)
            return
        replayed = self._replayed
        if replayed is not None and isinstance(event, Message) and event.id and _stream_id(event.id) <= replayed:
            return  # delivered by the replay already
        self._push_now(event)

    def _push_now(self, event: Message[T] | Gap) -> None:
        if self._overflowed:
            return
        events = self._events
        if self._dropped and self.overflow == "drop_newest":
            # The Gap for the dropped ones goes before this event, if both fit.
            if len(events) + 1 >= self.limit:
                self._dropped += _weight(event)
                return
            events.append(self._take_gap())
        if len(events) >= self.limit:
            if self.overflow == "disconnect":
                self._overflowed = True
                events.clear()
                self._wake()
                return
            if self.overflow == "drop_newest":
                self._dropped += _weight(event)
                self._wake()
                return
            self._dropped += _weight(events.popleft())
        events.append(event)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is None:
            return
        if isinstance(waiter, asyncio.Future):
            if not waiter.done():
                waiter.set_result(None)
        else:
            waiter.set()


def _weight(event: Message[Any] | Gap) -> int:
    """How many messages dropping ``event`` loses."""
    return event.missed or 0 if isinstance(event, Gap) else 1
