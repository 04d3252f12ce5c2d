"""The chat: its messages, the room, and the endpoint that runs one connection.

The room never waits for a connection. Each member has a bounded outbox that the
member's own writer task drains; a broadcast puts the message in every outbox
without awaiting, and a member whose outbox is full is marked too slow and
disconnected, so one slow client never holds up the others.

Across worker processes, a :class:`RoomRelay` carries what the room says to the
other workers through a ``toolkit_broadcast`` channel, brings theirs to this
worker's members, and shares who is in the room; lost messages become a
``missed`` notice, never silence.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Final, Literal, TypeAlias

import anyio
from anyio import CancelScope
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from toolkit_auth import AuthGate
from toolkit_broadcast import Broadcast, BroadcastUnavailable, Gap, JsonCodec, ModelCodec, Subscription
from toolkit_broadcast import Channel as ToolkitChannel
from toolkit_messages import Channel, Messages

from toolkit import Close, CloseCode, WebSocket, WebSocketDisconnect, WebSocketDisconnected

__all__ = [
    "MAX_TEXT",
    "SUBPROTOCOL",
    "Chat",
    "ChatChannel",
    "Inbound",
    "Join",
    "Joined",
    "Left",
    "Member",
    "Missed",
    "Outbound",
    "Relayed",
    "Room",
    "RoomRelay",
    "Said",
    "Say",
    "chat_messages",
]

#: The real subprotocol the page offers next to its ``bearer.<token>`` one (browsers need one accepted).
SUBPROTOCOL: Final = "chat.v1"
#: The longest message, in characters, after surrounding whitespace is stripped.
MAX_TEXT: Final = 500
#: Close for a member whose outbox overflowed: "try again later" (1013).
TOO_SLOW: Final = Close.of(CloseCode.TRY_AGAIN_LATER, "too slow")
#: Close for a ``say`` before ``join``: a policy violation (1008).
JOIN_FIRST: Final = Close.of(CloseCode.POLICY_VIOLATION, "join first")


# --- messages -------------------------------------------------------------------------------------


class Join(BaseModel):
    """Enter the room: from now on the connection gets every message said in it."""

    model_config: ClassVar[ConfigDict] = ConfigDict(extra="forbid")
    type: Literal["join"]


class Say(BaseModel):
    """Say something to everyone in the room (1 to 500 characters, surrounding whitespace stripped)."""

    model_config: ClassVar[ConfigDict] = ConfigDict(extra="forbid")
    type: Literal["say"]
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT)]


class Joined(BaseModel):
    """``name`` joined; ``you`` is true in the copy sent to the one who joined."""

    type: Literal["joined"] = "joined"
    name: str
    members: list[str]
    you: bool = False


class Said(BaseModel):
    """Sent to everyone in the room: ``name`` said ``text``."""

    type: Literal["said"] = "said"
    name: str
    text: str


class Left(BaseModel):
    """Sent to everyone still in the room when ``name`` leaves; ``members`` is who is left."""

    type: Literal["left"] = "left"
    name: str
    members: list[str]


class Missed(BaseModel):
    """Messages from other workers were lost on the way (Redis restarted, a worker's link dropped):
    ``count`` of them, or None if unknown. Only with ``--redis``."""

    type: Literal["missed"] = "missed"
    count: int | None


#: What a client may send, told apart by ``type``.
Inbound: TypeAlias = Annotated[Join | Say, Field(discriminator="type")]
#: What the chat sends, told apart by ``type``.
Outbound: TypeAlias = Annotated[Joined | Said | Left | Missed, Field(discriminator="type")]
#: What one member's outbox holds.
Chatter: TypeAlias = Joined | Said | Left | Missed
#: The chat's message plugin. Bad input gets toolkit_messages' error message ({"type":"error",...})
#: and the connection stays.
chat_messages: Final = Messages(Inbound, Outbound)
ChatChannel: TypeAlias = Channel[Join | Say, Chatter]


# --- the room -------------------------------------------------------------------------------------


@dataclass(eq=False)
class Member:
    """One connection in the room: its name and its bounded outbox."""

    name: str
    outbox: MemoryObjectSendStream[Chatter]
    inbox: MemoryObjectReceiveStream[Chatter]
    #: Set when the outbox overflowed: the writer stops and the connection closes with 1013.
    too_slow: bool = False
    #: Cancelled when the member is too slow, so a writer stuck in a send lets go.
    scope: CancelScope = field(default_factory=anyio.CancelScope)

    def push(self, message: Chatter) -> None:
        """Queue ``message`` without waiting; a full outbox marks the member too slow."""
        if self.too_slow:
            return
        try:
            self.outbox.send_nowait(message)
        except anyio.WouldBlock:
            self.too_slow = True
            self.scope.cancel()

    def close(self) -> None:
        """Close the outbox, both ends: nothing more is queued or delivered."""
        self.outbox.close()
        self.inbox.close()


class Room:
    """The members of one chat room, in one process. Nothing here awaits.

    With a :class:`RoomRelay` attached, what the room says also goes to the other workers, and
    :meth:`names` includes the people connected to them.
    """

    def __init__(self, queue_size: int = 64) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.queue_size = queue_size
        self._members: dict[Member, None] = {}  # insertion-ordered set
        #: Set by a running :class:`RoomRelay`: the other workers' members, and where to send what is said.
        self.relay: RoomRelay | None = None

    def member(self, name: str) -> Member:
        """A member with a fresh outbox, not in the room yet."""
        outbox, inbox = anyio.create_memory_object_stream[Chatter](self.queue_size)
        return Member(name, outbox, inbox)

    def join(self, member: Member) -> None:
        self._members[member] = None
        member.push(Joined(name=member.name, members=self.names(), you=True))
        self.broadcast(Joined(name=member.name, members=self.names()), exclude=member)

    def leave(self, member: Member) -> None:
        """Take ``member`` out (if it was in) and tell the others."""
        member.close()
        if member in self._members:
            del self._members[member]
            self.broadcast(Left(name=member.name, members=self.names()))

    def __contains__(self, member: object) -> bool:
        return member in self._members

    def local_names(self) -> set[str]:
        """Who is connected to this worker."""
        return {member.name for member in self._members}

    def names(self) -> list[str]:
        """Who is in the room, sorted, each name once (a person may have several tabs open, or workers)."""
        names = self.local_names()
        if self.relay is not None:
            names |= self.relay.remote_names()
        return sorted(names)

    def broadcast(self, message: Joined | Said | Left, *, exclude: Member | None = None) -> None:
        """Queue ``message`` for every member here (but ``exclude``) and, with a relay, every other worker."""
        self.deliver(message, exclude=exclude)
        if self.relay is not None:
            self.relay.send(message)

    def deliver(self, message: Chatter, *, exclude: Member | None = None) -> None:
        """Queue ``message`` for the members of this worker only."""
        for member in self._members:
            if member is not exclude:
                member.push(message)


class Relayed(BaseModel):
    """What a :class:`RoomRelay` publishes: a chat message, and how many before it this worker could not send."""

    message: Annotated[Joined | Said | Left, Field(discriminator="type")]
    dropped: int = 0


class RoomRelay:
    """Connects this worker's :class:`Room` to the same room in every other worker, through ``broadcast``.

    Run :meth:`run` for the app's lifetime (in its lifespan, inside ``async with broadcast``). What
    the room says goes out in order through a bounded queue (``send`` never waits); messages from the
    other workers go to this worker's members; a :class:`~toolkit_broadcast.Gap` becomes a
    :class:`Missed` notice. Every ``presence_every`` seconds, and when someone here joins or leaves,
    the relay tells the others who is connected here; a worker not heard from for three periods (killed,
    say) drops out of :meth:`Room.names`.
    """

    def __init__(
        self,
        room: Room,
        broadcast: Broadcast,
        *,
        name: str = "room",
        queue_size: int = 1024,
        presence_every: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        #: The room relayed.
        self.room: Room = room
        #: Where the other workers are.
        self.broadcast: Broadcast = broadcast
        #: What the rooms say, as :class:`Relayed` messages.
        self.messages: ToolkitChannel[Relayed] = broadcast.channel(f"chat.{name}", ModelCodec(Relayed))
        #: Who is connected to which worker: ``{"names": [...]}`` from each.
        self.presence: ToolkitChannel[object] = broadcast.channel(f"chat.{name}.presence", JsonCodec())
        #: Seconds between presence announcements; a worker silent for three is gone.
        self.presence_every: float = presence_every
        self._clock = clock
        self._outgoing, self._queued = anyio.create_memory_object_stream[Joined | Said | Left](queue_size)
        self._dropped = 0
        self._roster_changed = anyio.Event()
        self._remote: dict[str, tuple[frozenset[str], float]] = {}  # worker -> (names, heard until)

    def remote_names(self) -> set[str]:
        """Who is connected to the other workers, as they last said (and not longer ago than 3 periods)."""
        now = self._clock()
        return {name for names, until in self._remote.values() if until > now for name in names}

    def send(self, message: Joined | Said | Left) -> None:
        """Queue ``message`` for the other workers without waiting; a full queue counts it as dropped."""
        try:
            self._outgoing.send_nowait(message)
        except anyio.WouldBlock:
            self._dropped += 1
        if isinstance(message, Joined | Left):
            self._roster_changed.set()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Relay until cancelled; ``task_status.started()`` once subscribed."""
        async with (
            self._outgoing,
            self._queued,
            self.messages.subscribe() as incoming,
            self.presence.subscribe() as presence,
            anyio.create_task_group() as tasks,
        ):
            self.room.relay = self
            try:
                tasks.start_soon(self._publish)
                tasks.start_soon(self._receive, incoming)
                tasks.start_soon(self._hear, presence)
                tasks.start_soon(self._announce)
                task_status.started()
                await anyio.sleep_forever()
            finally:
                self.room.relay = None

    async def _publish(self) -> None:
        async for message in self._queued:
            dropped, self._dropped = self._dropped, 0
            # Unsent: the others see a jump in our sequence, a Gap, then a "missed" notice.
            with contextlib.suppress(BroadcastUnavailable):
                await self.messages.publish(Relayed(message=message, dropped=dropped))

    async def _receive(self, incoming: Subscription[Relayed]) -> None:
        async for event in incoming:
            if isinstance(event, Gap):
                self.room.deliver(Missed(count=event.missed))
            elif event.envelope.origin != self.broadcast.origin:  # our own were delivered here already
                if event.payload.dropped:
                    self.room.deliver(Missed(count=event.payload.dropped))
                self.room.deliver(event.payload.message)

    async def _hear(self, presence: Subscription[object]) -> None:
        async for event in presence:
            if isinstance(event, Gap) or event.envelope.origin == self.broadcast.origin:
                continue  # a lost presence is said again within a period
            names = event.payload.get("names") if isinstance(event.payload, dict) else None
            if isinstance(names, list) and all(isinstance(name, str) for name in names):
                until = self._clock() + 3 * self.presence_every
                self._remote[event.envelope.origin] = (frozenset(map(str, names)), until)

    async def _announce(self) -> None:
        while True:
            with contextlib.suppress(BroadcastUnavailable):  # else said again at the next period
                await self.presence.publish({"names": sorted(self.room.local_names())})
            with anyio.move_on_after(self.presence_every):
                await self._roster_changed.wait()
            self._roster_changed = anyio.Event()


# --- the endpoint ---------------------------------------------------------------------------------


class Chat:
    """The WebSocket endpoint: ``WebSocketApp(Chat(room, auth), plugins=...)``.

    One reader (this task) and one writer (draining the member's outbox) per
    connection; when either ends, the other is cancelled.
    """

    def __init__(self, room: Room, auth: AuthGate[str]) -> None:
        self.room = room
        self.auth = auth

    async def __call__(self, websocket: WebSocket) -> None:
        offered = self.auth.offered_subprotocols(websocket)
        await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        name = self.auth.principal(websocket)
        if name is None:  # the gate is registered, so it set one; refuse to run without it
            raise RuntimeError("no principal: the AuthGate is not registered on this app")
        channel = chat_messages.channel(websocket)
        member = self.room.member(name)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self._write, channel, member, tasks.cancel_scope)
                await self._read(channel, member)
                tasks.cancel_scope.cancel()
        finally:
            self.room.leave(member)
        if member.too_slow:
            await websocket.close(TOO_SLOW.code, TOO_SLOW.reason)

    async def _read(self, channel: ChatChannel, member: Member) -> None:
        async for message in channel:
            if message.type == "join":
                if member in self.room:
                    member.push(Joined(name=member.name, members=self.room.names(), you=True))
                else:
                    self.room.join(member)
            elif member in self.room:
                self.room.broadcast(Said(name=member.name, text=message.text))
            else:
                await channel.websocket.close(JOIN_FIRST.code, JOIN_FIRST.reason)
                return

    async def _write(self, channel: ChatChannel, member: Member, tasks: CancelScope) -> None:
        try:
            with member.scope:
                async for message in member.inbox:
                    await channel.send(message)
        except (WebSocketDisconnect, WebSocketDisconnected):
            pass  # the client left, or the reader closed: the reader ends too
        finally:
            tasks.cancel()
