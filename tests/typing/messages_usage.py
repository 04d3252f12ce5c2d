"""toolkit_messages code that must type-check under ``mypy --strict``, with the types mypy must infer.

``assert_type`` fails the mypy run if the inferred type is not exactly the one written,
so this file proves that ``Channel.receive()`` returns the concrete models of a
discriminated union, with no cast. tests/test_messages.py also runs ``app``.
"""

from __future__ import annotations

from typing import Annotated, Literal, assert_never, assert_type

from pydantic import BaseModel, Field
from toolkit_messages import Channel, Messages

from toolkit import WebSocket, WebSocketApp


class Chat(BaseModel):
    type: Literal["chat"]
    text: str


class Join(BaseModel):
    type: Literal["join"]
    room: str


class Said(BaseModel):
    type: Literal["said"]
    text: str


class Joined(BaseModel):
    type: Literal["joined"]
    room: str


Inbound = Annotated[Chat | Join, Field(discriminator="type")]
Outbound = Annotated[Said | Joined, Field(discriminator="type")]

messages = Messages(Inbound, Outbound)
assert_type(messages, Messages[Chat | Join, Said | Joined])

# Plain types and single models infer too.
assert_type(Messages(Chat, Said), Messages[Chat, Said])
assert_type(Messages(int, list[str], frames="binary"), Messages[int, list[str]])


async def endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    channel = messages.channel(websocket)
    assert_type(channel, Channel[Chat | Join, Said | Joined])

    first = await channel.receive()
    assert_type(first, Chat | Join)
    await handle(channel, first)

    async for message in channel:
        assert_type(message, Chat | Join)
        await handle(channel, message)


async def handle(channel: Channel[Chat | Join, Said | Joined], message: Chat | Join) -> None:
    # Narrowing on the discriminator gives the member model, as for any union of models.
    if message.type == "chat":
        assert_type(message, Chat)
        await channel.send(Said(type="said", text=message.text))
    elif message.type == "join":
        assert_type(message, Join)
        await channel.send(Joined(type="joined", room=message.room))
    else:
        assert_never(message)


app = WebSocketApp(endpoint, plugins=None)
