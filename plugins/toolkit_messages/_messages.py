"""``Messages``: a schema pair with a bad-input policy, usable as a plugin and as a typed channel."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Generic, Literal, TypeAlias, TypeVar, final

from pydantic import TypeAdapter, ValidationError
from typing_extensions import TypeForm

import toolkit
from toolkit import Close, MessageResult, WebSocket, WebSocketDisconnect

__all__ = ["Channel", "ErrorPolicy", "Messages", "OutboundError", "Rejected"]

InT = TypeVar("InT")
OutT = TypeVar("OutT")

#: ``"error"``: answer with an error message and keep the connection; ``"close"``: close it.
ErrorPolicy: TypeAlias = Literal["error", "close"]

_UNSUPPORTED = Close(1003, "unsupported data")
_MALFORMED = Close(1003, "invalid JSON")
_NOT_UTF8 = Close(1007, "invalid utf-8")
_INVALID = Close(1008, "invalid message")
_MALFORMED_ERROR = '{"type":"error","error":"invalid_json"}'
_MAX_REPORTED_ERRORS = 20


class OutboundError(ValueError):
    """The app tried to send a message that does not match its declared outbound schema. Nothing was sent."""


class Rejected(Exception):
    """An inbound message failed; ``action`` is the ``Close`` to close with, or the error text to answer with."""

    def __init__(self, action: Close | str) -> None:
        super().__init__("inbound message rejected")
        self.action = action


@final
class Messages(toolkit.Plugin, Generic[InT, OutT]):
    """The messages one endpoint receives (``inbound``) and sends (``outbound``).

    ``inbound``/``outbound`` are anything pydantic validates: a model, or a union
    discriminated by a ``type`` field (``Annotated[A | B, Field(discriminator="type")]``).

    Two ways to use it, which combine without validating anything twice:

    - as a plugin (``PluginManager(messages)``): invalid inbound messages never
      reach the app, whatever WebSocket class it uses, and outbound text that
      does not match the schema is an app bug: the connection closes with 1011;
    - as a typed channel (``messages.channel(websocket)``): ``receive()`` returns
      the validated model, ``send(model)`` raises :class:`OutboundError` locally.

    Bad input, per the close-code policy: wrong frame type -> close 1003;
    invalid UTF-8 -> close 1007; malformed JSON -> an error message, or close 1003
    with ``on_malformed="close"``; schema-invalid -> an error message listing the
    failing field locations and error types, or close 1008 with
    ``on_invalid="close"``. Error messages never contain input values or exception text.
    """

    def __init__(
        self,
        inbound: TypeForm[InT],
        outbound: TypeForm[OutT],
        *,
        frames: Literal["text", "binary"] = "text",
        on_invalid: ErrorPolicy = "error",
        on_malformed: ErrorPolicy = "error",
    ) -> None:
        if frames not in ("text", "binary"):
            raise ValueError("frames must be 'text' or 'binary'")
        if on_invalid not in ("error", "close") or on_malformed not in ("error", "close"):
            raise ValueError("on_invalid and on_malformed must be 'error' or 'close'")
        self.inbound: TypeAdapter[InT] = TypeAdapter(inbound)
        self.outbound: TypeAdapter[OutT] = TypeAdapter(outbound)
        self.frames = frames
        self.on_invalid: ErrorPolicy = on_invalid
        self.on_malformed: ErrorPolicy = on_malformed
        self._frame_type: type[str] | type[bytes] = str if frames == "text" else bytes
        # Per connection, the last message the hook validated, so the channel need not parse it again.
        self._validated: dict[WebSocket, tuple[str | bytes, InT]] = {}
        # Ids of the texts this object is sending itself (errors, channel sends): ws_send lets them through.
        self._own: set[int] = set()

    def channel(self, websocket: WebSocket) -> Channel[InT, OutT]:
        """A typed view of ``websocket`` that receives ``InT`` and sends ``OutT``."""
        return Channel(self, websocket)

    def json_schema(self) -> dict[str, dict[str, Any]]:
        """The JSON Schemas of the inbound and outbound messages (e.g. for an AsyncAPI document)."""
        return {"inbound": self.inbound.json_schema(), "outbound": self.outbound.json_schema()}

    # --- validation, shared by the hook and the channel ------------------------------------------

    def parse(self, data: str | bytes) -> InT:
        """Validate one inbound message straight from its JSON text or bytes (one parse).

        Raises :class:`Rejected` with what to do instead.
        """
        if type(data) is not self._frame_type:
            raise Rejected(_UNSUPPORTED)
        try:
            return self.inbound.validate_json(data)
        except ValidationError as exc:
            raise Rejected(self._reject(data, exc)) from None

    def _reject(self, data: str | bytes, exc: ValidationError) -> Close | str:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        if errors and errors[0]["type"] == "json_invalid":
            if isinstance(data, bytes) and not _is_utf8(data):
                return _NOT_UTF8
            return _MALFORMED if self.on_malformed == "close" else _MALFORMED_ERROR
        if self.on_invalid == "close":
            return _INVALID
        # Only where and what kind: pydantic's messages can quote the input or a validator's text.
        details = [{"loc": list(error["loc"]), "type": error["type"]} for error in errors[:_MAX_REPORTED_ERRORS]]
        return json.dumps({"type": "error", "error": "invalid_message", "errors": details}, separators=(",", ":"))

    def dump(self, message: object) -> str:
        """Check ``message`` (a model or a dict) against the outbound schema and serialise it.

        Raises :class:`OutboundError`, sending nothing, when it does not match.
        """
        try:
            checked = self.outbound.validate_python(message)
        except ValidationError as exc:
            raise OutboundError(f"outbound message does not match the schema ({exc.error_count()} errors)") from exc
        return self.outbound.dump_json(checked).decode("utf-8")

    async def send_trusted(self, websocket: WebSocket, text: str) -> None:
        """Send text this object built or already checked, without checking it again in ``ws_send``."""
        key = id(text)
        self._own.add(key)
        try:
            await websocket.send_text(text)
        finally:
            self._own.discard(key)

    async def answer(self, websocket: WebSocket, action: Close | str) -> None:
        """Carry out a rejection from the app side: send the error text, or close."""
        if isinstance(action, Close):
            await websocket.close(action.code, action.reason)
        else:
            await self.send_trusted(websocket, action)

    # --- hooks --------------------------------------------------------------------------------

    async def ws_receive(self, websocket: WebSocket, data: str | bytes) -> MessageResult:
        try:
            model = self.parse(data)
        except Rejected as rejected:
            if isinstance(rejected.action, Close):
                return rejected.action
            await self.send_trusted(websocket, rejected.action)
            return toolkit.DROP
        self._validated[websocket] = (data, model)
        return None

    def ws_send(self, websocket: WebSocket, data: str | bytes) -> MessageResult:
        if id(data) not in self._own:
            try:
                self.outbound.validate_json(data)
            except ValidationError:
                raise OutboundError("the app sent a message that does not match its outbound schema") from None
        return None

    def ws_close(self, websocket: WebSocket, code: int, reason: str, closed_by: toolkit.ClosedBy) -> None:
        self._validated.pop(websocket, None)

    def take_validated(self, websocket: WebSocket, data: str | bytes) -> tuple[bool, InT | None]:
        """The model the hook validated for exactly this ``data``, if any (consumed)."""
        stored = self._validated.pop(websocket, None)
        if stored is not None and stored[0] is data:
            return True, stored[1]
        return False, None


@final
class Channel(Generic[InT, OutT]):
    """A WebSocket seen through a :class:`Messages` schema: receive ``InT``, send ``OutT``."""

    __slots__ = ("messages", "websocket")

    def __init__(self, messages: Messages[InT, OutT], websocket: WebSocket) -> None:
        self.messages = messages
        self.websocket = websocket

    async def receive(self) -> InT:
        """The next valid message. Invalid ones are answered per the policy and skipped.

        Raises ``WebSocketDisconnect`` when the connection ends (including a policy close).
        """
        messages, websocket = self.messages, self.websocket
        while True:
            message = await websocket.receive()
            if message["type"] != "websocket.receive":
                raise WebSocketDisconnect(message["code"], message.get("reason"))
            data = message.get("text")
            if data is None:
                data = message["bytes"]
            found, model = messages.take_validated(websocket, data)
            if found:
                return model  # type: ignore[return-value]  # found => the hook stored an InT
            try:
                return messages.parse(data)
            except Rejected as rejected:
                await messages.answer(websocket, rejected.action)
                if isinstance(rejected.action, Close):
                    raise WebSocketDisconnect(rejected.action.code, rejected.action.reason) from None

    async def send(self, message: OutT) -> None:
        """Send a message; raises :class:`OutboundError` (sending nothing) if it does not match the schema."""
        await self.messages.send_trusted(self.websocket, self.messages.dump(message))

    def __aiter__(self) -> AsyncIterator[InT]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[InT]:
        try:
            while True:
                yield await self.receive()
        except WebSocketDisconnect:
            return


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
