"""The chat: its messages, the room, and the endpoint that runs one connection.

The room never waits for a connection. Each member has a bounded outbox that the
member's own writer task drains; a broadcast puts the message in every outbox
without awaiting, and a member whose outbox is full is marked too slow and
disconnected, so one slow client never holds up the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Final, Literal, TypeAlias

import anyio
from anyio import CancelScope
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from toolkit_auth import AuthGate
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
    "Outbound",
    "Room",
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


#: What a client may send, told apart by ``type``.
Inbound: TypeAlias = Annotated[Join | Say, Field(discriminator="type")]
#: What the chat sends, told apart by ``type``.
Outbound: TypeAlias = Annotated[Joined | Said | Left, Field(discriminator="type")]
#: The chat's message plugin. Bad input gets toolkit_messages' error message ({"type":"error",...})
#: and the connection stays.
chat_messages: Final = Messages(Inbound, Outbound)
ChatChannel: TypeAlias = Channel[Join | Say, Joined | Said | Left]


# --- the room -------------------------------------------------------------------------------------


@dataclass(eq=False)
class Member:
    """One connection in the room: its name and its bounded outbox."""

    name: str
    outbox: MemoryObjectSendStream[Joined | Said | Left]
    inbox: MemoryObjectReceiveStream[Joined | Said | Left]
    #: Set when the outbox overflowed: the writer stops and the connection closes with 1013.
    too_slow: bool = False
    #: Cancelled when the member is too slow, so a writer stuck in a send lets go.
    scope: CancelScope = field(default_factory=anyio.CancelScope)

    def push(self, message: Joined | Said | Left) -> None:
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
    """The members of one chat room, in one process. Nothing here awaits."""

    def __init__(self, queue_size: int = 64) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.queue_size = queue_size
        self._members: dict[Member, None] = {}  # insertion-ordered set

    def member(self, name: str) -> Member:
        """A member with a fresh outbox, not in the room yet."""
        outbox, inbox = anyio.create_memory_object_stream[Joined | Said | Left](self.queue_size)
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

    def names(self) -> list[str]:
        """Who is in the room, sorted, each name once (a person may have several tabs open)."""
        return sorted({member.name for member in self._members})

    def broadcast(self, message: Joined | Said | Left, *, exclude: Member | None = None) -> None:
        for member in self._members:
            if member is not exclude:
                member.push(message)


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
