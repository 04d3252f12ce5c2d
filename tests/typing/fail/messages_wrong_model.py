from typing import Literal

from pydantic import BaseModel
from toolkit_messages import Messages

from toolkit import WebSocket


class Chat(BaseModel):
    type: Literal["chat"]
    text: str


class Said(BaseModel):
    type: Literal["said"]
    text: str


messages = Messages(Chat, Said)


async def endpoint(websocket: WebSocket) -> None:
    channel = messages.channel(websocket)
    message = await channel.receive()
    await channel.send(message)  # E: arg-type  P: reportArgumentType
    said: Said = await channel.receive()  # E: assignment  P: reportAssignmentType
    del said
    message.room  # E: attr-defined  P: reportAttributeAccessIssue, reportUnknownMemberType
