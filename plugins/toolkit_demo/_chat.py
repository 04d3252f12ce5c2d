"""The chat: its messages, the room, and the endpoint that runs one connection.

The room never waits for a connection. Each member has an outbox, bounded in bytes, that the
member's own writer task drains; a broadcast puts the message in every outbox without
awaiting, and a member whose outbox would go over its budget is marked too slow and
disconnected, so one slow client never holds up the others. Presence (who is in the room)
is never queued per change: a member has at most one "members changed" mark pending, which
its writer turns into the room's members as they are then.

Across worker processes, a :class:`RoomRelay` carries what the room says to the other workers
through a ``toolkit_broadcast`` channel, brings theirs to this worker's outboxes (through the same
budget), and shares who is connected where: a change there is one more "members changed" mark, not
a message per arrival. Lost messages become a ``missed`` notice, never silence.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Final, Literal, TypeAlias

import anyio
from anyio import CancelScope
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from toolkit_auth import AuthGate
from toolkit_broadcast import Broadcast, BroadcastUnavailable, Gap, JsonCodec, ModelCodec, Subscription
from toolkit_broadcast import Channel as ToolkitChannel
from toolkit_messages import Channel, Messages

from toolkit import Close, CloseCode, WebSocket, WebSocketDisconnect, WebSocketDisconnected, WebSocketState

__all__ = [
    "MAX_TEXT",
    "OUTBOX_BYTES",
    "SUBPROTOCOL",
    "Chat",
    "ChatChannel",
    "Inbound",
    "Join",
    "Joined",
    "Member",
    "Members",
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
#: The bytes of messages a member's outbox may hold: over a hundred messages of 500 four-byte characters.
OUTBOX_BYTES: Final = 256 * 1024
#: Close for a member whose outbox overflowed: "try again later" (1013).
TOO_SLOW: Final = Close.of(CloseCode.TRY_AGAIN_LATER, "too slow")
#: Close for a ``say`` before ``join``: a policy violation (1008).
JOIN_FIRST: Final = Close.of(CloseCode.POLICY_VIOLATION, "join first")
_CONNECTED: Final = WebSocketState.CONNECTED


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
    """Sent to the one who joined (or joined again): you are ``name``, and ``members`` are in the room."""

    type: Literal["joined"] = "joined"
    name: str
    members: list[str]


class Said(BaseModel):
    """Sent to everyone in the room: ``name`` said ``text``."""

    type: Literal["said"] = "said"
    name: str
    text: str


class Members(BaseModel):
    """Who is in the room now, sorted, each name once: sent to every member when it changed.

    Arrivals and departures are merged: a member gets the room as it is when its connection is ready
    for the next message, never one message per arrival, so a crowd arriving at once costs each member
    one snapshot, not a hundred messages.
    """

    type: Literal["members"] = "members"
    members: list[str]


class Missed(BaseModel):
    """Messages from other workers were lost on the way (Redis restarted, a worker's link dropped):
    ``count`` of them, or None if unknown. Only with ``--redis``."""

    type: Literal["missed"] = "missed"
    count: int | None


#: What a client may send, told apart by ``type``.
Inbound: TypeAlias = Annotated[Join | Say, Field(discriminator="type")]
#: What the chat sends, told apart by ``type``.
Outbound: TypeAlias = Annotated[Joined | Said | Members | Missed, Field(discriminator="type")]
#: The chat's message plugin. Bad input gets toolkit_messages' error message ({"type":"error",...})
#: and the connection stays.
chat_messages: Final = Messages(Inbound, Outbound)
ChatChannel: TypeAlias = Channel[Join | Say, Joined | Said | Members | Missed]


# --- the room -------------------------------------------------------------------------------------


def _size(message: Joined | Said | Missed) -> int:
    """The bytes ``message`` takes on the wire (as JSON, UTF-8), which is what an outbox budgets."""
    return len(message.model_dump_json().encode("utf-8"))  # non-ASCII stays as is: bytes, not characters


@dataclass(eq=False)
class Member:
    """One connection in the room: its name and its outbox, bounded in bytes.

    The outbox holds the messages for the member's writer to send, in order, and at most one
    "members changed" mark, which the writer turns into the room's members as they are when it
    gets there: presence is merged, never queued per change, and counts nothing against the budget.
    """

    name: str
    #: The most bytes of messages the outbox may hold; a message that would go over marks the member too slow.
    budget: int
    #: Bytes of messages held now.
    queued_bytes: int = field(default=0, init=False)
    #: Set when the outbox would have gone over its budget: it is emptied, the writer stops, the connection
    #: closes with 1013.
    too_slow: bool = field(default=False, init=False)
    #: Set by :meth:`close`: nothing more is queued or delivered.
    closed: bool = field(default=False, init=False)
    #: Cancelled when the member is too slow, so a writer stuck in a send lets go.
    scope: CancelScope = field(default_factory=anyio.CancelScope, init=False)
    _queue: deque[tuple[Joined | Said | Missed | None, int]] = field(default_factory=deque, init=False, repr=False)
    _presence_queued: bool = field(default=False, init=False, repr=False)
    _wakeup: anyio.Event | None = field(default=None, init=False, repr=False)

    def push(self, message: Joined | Said | Missed, size: int) -> None:
        """Queue ``message`` (``size`` bytes) without waiting; over the budget, the member is too slow."""
        if self.closed:
            return
        if self.queued_bytes + size > self.budget:
            self.too_slow = True
            self.close()  # what it held goes now, not when the connection is finally closed
            self.scope.cancel()
            return
        self._queue.append((message, size))
        self.queued_bytes += size
        self._wake()

    def presence_changed(self) -> None:
        """Someone arrived or left: one snapshot of the members is due, however many changes come before it."""
        if self.closed or self._presence_queued:
            return
        self._presence_queued = True
        self._queue.append((None, 0))
        self._wake()

    async def next(self) -> Joined | Said | Missed | None:
        """The next thing to send, waiting for one: a message, or ``None`` for a snapshot of the members.

        Raises ``anyio.EndOfStream`` once the member is closed.
        """
        while not self._queue:
            if self.closed:
                raise anyio.EndOfStream
            self._wakeup = wakeup = anyio.Event()
            await wakeup.wait()
        message, size = self._queue.popleft()
        self.queued_bytes -= size
        if message is None:
            self._presence_queued = False
        return message

    def pending(self) -> list[Joined | Said | Missed | None]:
        """What the outbox holds, in order (``None``: a members snapshot is due)."""
        return [message for message, _ in self._queue]

    def close(self) -> None:
        """Empty the outbox and take nothing more; a writer waiting in :meth:`next` gets ``EndOfStream``."""
        self.closed = True
        self._queue.clear()
        self.queued_bytes = 0
        self._presence_queued = False
        self._wake()

    def _wake(self) -> None:
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None:
            wakeup.set()


class Room:
    """The members of one chat room, in one process. Nothing here awaits.

    With a :class:`RoomRelay` attached, what the room says also goes to the other workers, and
    :meth:`names` includes the people connected to them.
    """

    def __init__(self, outbox_bytes: int = OUTBOX_BYTES) -> None:
        if outbox_bytes < 1:
            raise ValueError("outbox_bytes must be at least 1")
        self.outbox_bytes = outbox_bytes
        self._members: dict[Member, None] = {}  # insertion-ordered set
        self._here: Counter[str] = Counter()  # connections here per name
        self._snapshot: Members | None = None  # the members as they are, until the next change
        self._told: list[str] = []  # the names the members were last told of (or marked for)
        #: Set by a running :class:`RoomRelay`: the other workers' members, and where what is said goes.
        self.relay: RoomRelay | None = None

    def member(self, name: str) -> Member:
        """A member with an empty outbox, not in the room yet."""
        return Member(name, self.outbox_bytes)

    def join(self, member: Member) -> None:
        """Put ``member`` in the room, welcome it, and tell the others if a new name arrived."""
        if member in self._members:
            self.welcome(member)
            return
        self._members[member] = None
        self._here[member.name] += 1
        self._snapshot = None
        self.welcome(member)
        self._changed(exclude=member)
        if self._here[member.name] == 1 and self.relay is not None:
            self.relay.roster_changed()

    def welcome(self, member: Member) -> None:
        """Tell ``member`` who it is and who is in the room."""
        joined = Joined(name=member.name, members=self.names())
        member.push(joined, _size(joined))

    def leave(self, member: Member) -> None:
        """Take ``member`` out (if it was in), empty its outbox, and tell the others if a name left."""
        member.close()
        if member in self._members:
            del self._members[member]
            self._here[member.name] -= 1
            gone = self._here[member.name] == 0
            if gone:
                del self._here[member.name]
            self._snapshot = None
            self._changed()
            if gone and self.relay is not None:
                self.relay.roster_changed()

    def remote_changed(self) -> None:
        """Who is connected to the other workers changed (the relay says): one snapshot is due, if the room changed."""
        self._snapshot = None
        self._changed()

    def _changed(self, exclude: Member | None = None) -> None:
        names = self.names()
        if names != self._told:
            self._told = names
            for other in self._members:
                if other is not exclude:
                    other.presence_changed()

    def __contains__(self, member: object) -> bool:
        return member in self._members

    def snapshot(self) -> Members:
        """Who is in the room now (one object, shared until the next change)."""
        if self._snapshot is None:
            names = set(self._here)
            if self.relay is not None:
                names |= self.relay.remote_names()
            self._snapshot = Members(members=sorted(names))
        return self._snapshot

    def local_names(self) -> set[str]:
        """Who is connected to this worker."""
        return set(self._here)

    def names(self) -> list[str]:
        """Who is in the room, sorted, each name once (a person may have several tabs open, or workers)."""
        return list(self.snapshot().members)

    def broadcast(self, message: Said) -> None:
        """Queue ``message`` for every member here and, with a relay, every other worker."""
        self.deliver(message)
        if self.relay is not None:
            self.relay.send(message)

    def deliver(self, message: Said | Missed) -> None:
        """Queue ``message`` for this worker's members only (measured once); an outbox over budget is dropped."""
        size = _size(message)
        for member in list(self._members):  # a push never changes the room, but be safe against it
            member.push(message, size)


class Relayed(BaseModel):
    """What a :class:`RoomRelay` publishes: a chat message, and how many before it this worker could not send."""

    message: Said
    dropped: int = 0


class RoomRelay:
    """Connects this worker's :class:`Room` to the same room in every other worker, through ``broadcast``.

    Run :meth:`run` for the app's lifetime (in its lifespan, inside ``async with broadcast``). What
    the room says goes out in order through a bounded queue (``send`` never waits); what the other
    workers' rooms say goes into this worker's outboxes, through their byte budgets; a
    :class:`~toolkit_broadcast.Gap` becomes a :class:`Missed` notice. Presence is not relayed per
    arrival: every ``presence_every`` seconds, and when a name arrives on or leaves this worker, the
    relay tells the others which names are connected here; when the names on the other workers change
    (an announcement, or a worker not heard from for three periods, killed say, dropping out), the
    room's members get one "members changed" mark each.
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
        self._outgoing, self._queued = anyio.create_memory_object_stream[Said](queue_size)
        self._dropped = 0
        self._roster_changed = anyio.Event()
        self._remote: dict[str, tuple[frozenset[str], float]] = {}  # worker -> (names, heard until)
        self._remote_told: frozenset[str] = frozenset()  # the remote names the room was last told of

    def remote_names(self) -> frozenset[str]:
        """Who is connected to the other workers, as they last said (and not longer ago than 3 periods)."""
        now = self._clock()
        return frozenset(name for names, until in self._remote.values() if until > now for name in names)

    def send(self, message: Said) -> None:
        """Queue ``message`` for the other workers without waiting; a full queue counts it as dropped."""
        try:
            self._outgoing.send_nowait(message)
        except anyio.WouldBlock:
            self._dropped += 1

    def roster_changed(self) -> None:
        """A name arrived on or left this worker: announce the names here now, not at the next period."""
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
                self._remote.clear()
                self._check_remote()

    def _check_remote(self) -> None:
        names = self.remote_names() if self.room.relay is self else frozenset()
        if names != self._remote_told:
            self._remote_told = names
            self.room.remote_changed()

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
                self._check_remote()

    async def _announce(self) -> None:
        while True:
            with contextlib.suppress(BroadcastUnavailable):  # else said again at the next period
                await self.presence.publish({"names": sorted(self.room.local_names())})
            with anyio.move_on_after(self.presence_every):
                await self._roster_changed.wait()
            self._roster_changed = anyio.Event()
            now = self._clock()
            self._remote = {worker: heard for worker, heard in self._remote.items() if heard[1] > now}
            self._check_remote()  # a worker not heard from for three periods drops out


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
        # The outbox may overflow while the connection is already ending some other way: a plugin
        # closed it (1008, 1009), the reader did ("join first"), or the client left. The first ending
        # stands: close() is a no-op once the app's side is closed, and nothing goes to a client that left.
        if member.too_slow and websocket.client_state is _CONNECTED:
            await websocket.close(TOO_SLOW.code, TOO_SLOW.reason)

    async def _read(self, channel: ChatChannel, member: Member) -> None:
        async for message in channel:
            if message.type == "join":
                if member in self.room:
                    self.room.welcome(member)
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
                while True:
                    message = await member.next()
                    await channel.send(self.room.snapshot() if message is None else message)
        except anyio.EndOfStream:
            pass  # the member left the room (or was too slow): the reader ends too
        except (WebSocketDisconnect, WebSocketDisconnected):
            pass  # the client left, or the reader closed: the reader ends too
        finally:
            tasks.cancel()
