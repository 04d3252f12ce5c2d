"""``Messages``: a schema pair with a bad-input policy, usable as a plugin and as a typed channel.

Each inbound message is parsed once, by pydantic-core, straight from the frame's
text or bytes. When the plugin and a channel are used together, the hook's model
is handed to the channel through the connection's own plugin state
(``websocket.plugin_state``, under a key of this ``Messages`` object): the hook runs
inside the app's own ``receive()`` call, and the channel takes the model only for
the very message object it received. Outbound text is trusted the same way: the
channel marks, in the same state, the exact objects it is sending, and the
``ws_receive`` hook the error answer it returns; the ``ws_send`` hook checks every
other outbound message against the schema. Nothing per connection lives on the
shared ``Messages`` object, so connections never see each other's hand-overs,
whatever awaits between the hooks; the core empties the state when the connection ends.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Iterable
from typing import Any, Final, Generic, Literal, NotRequired, TypeAlias, TypeVar, final

import pydantic_core
from pydantic import BaseModel, TypeAdapter, ValidationError
from typing_extensions import TypedDict, TypeForm  # pydantic needs typing_extensions' TypedDict on 3.11

import toolkit
from toolkit import (
    Close,
    CloseCode,
    MessageResult,
    ReceiveResult,
    Reply,
    StateKey,
    UnexpectedFrameType,
    WebSocket,
    WebSocketDisconnect,
    WebSocketState,
)

from ._codecs import Codec, JsonCodec

__all__ = ["Channel", "ErrorDetail", "ErrorMessage", "ErrorPolicy", "MessageSchemas", "Messages", "OutboundError"]

InT = TypeVar("InT")
OutT = TypeVar("OutT")

#: ``"error"``: answer with an error message and keep the connection; ``"close"``: close it.
ErrorPolicy: TypeAlias = Literal["error", "close"]

# The close-code policy (docs/close-codes.md): fixed reasons, never input or exception text.
_UNSUPPORTED: Final = Close.of(CloseCode.UNSUPPORTED_DATA)
_MALFORMED: Final = Close.of(CloseCode.UNSUPPORTED_DATA, "invalid JSON")
#: Malformed input for any codec but JSON: one fixed reason, whatever the codec calls itself.
_MALFORMED_OTHER: Final = Close.of(CloseCode.UNSUPPORTED_DATA, "malformed message")
_NOT_UTF8: Final = Close.of(CloseCode.INVALID_DATA)
_INVALID: Final = Close.of(CloseCode.POLICY_VIOLATION, "invalid message")
_CONNECTED: Final = WebSocketState.CONNECTED

#: At most this many field errors are listed in one error message.
MAX_REPORTED_ERRORS: Final = 20
#: What replaces a ``loc`` segment that the schema does not name (a dict key from the input,
#: the name of a union member or validator): the input is never echoed.
REDACTED: Final = "*"


class OutboundError(ValueError):
    """The app tried to send a message that does not match its declared outbound schema. Nothing was sent."""


class ErrorDetail(TypedDict):
    """One failure in an ``invalid_message`` error: where (schema names, list indexes, ``"*"``) and what kind."""

    loc: list[str | int]
    type: str


class ErrorMessage(TypedDict):
    """What the client is sent for a bad message when the policy is ``"error"``."""

    type: Literal["error"]
    #: ``"malformed_message"`` is what a codec other than JSON answers for a frame it cannot decode.
    error: Literal["invalid_json", "malformed_message", "invalid_message"]
    errors: NotRequired[list[ErrorDetail]]


class MessageSchemas(TypedDict):
    """JSON Schemas of one endpoint's messages."""

    #: What the client may send (validation mode).
    inbound: dict[str, Any]
    #: What the app sends (serialization mode, by alias: the form on the wire).
    outbound: dict[str, Any]
    #: The error messages the endpoint sends for bad input under the ``"error"`` policies.
    error: dict[str, Any]


@final
class _Connection(Generic[InT]):
    """What one :class:`Messages` keeps per connection, in ``websocket.plugin_state``: its hand-overs.

    Created on a connection's first hand-over; the core empties the state when the connection ends.
    """

    __slots__ = ("others", "received", "reply", "sending")

    def __init__(self) -> None:
        #: The message the ``ws_receive`` hook validated last, and its model; the channel takes the
        #: model when it receives this very object.
        self.received: tuple[str | bytes, InT] | None = None
        #: The error answer the ``ws_receive`` hook returned as a ``Reply``: ``ws_send`` lets exactly it through.
        #: One connection receives in one task at a time, and the answer goes out within that receive.
        self.reply: str | bytes | None = None
        #: The object a channel of this connection is sending: ``ws_send`` lets exactly it through.
        self.sending: str | bytes | None = None
        #: Objects other tasks of the connection send meanwhile (a reader and a writer): rare, so made on demand.
        self.others: list[str | bytes] | None = None


class _Rejected(Exception):
    """An inbound message failed: ``action`` is the ``Close`` to close with, or the error message to send."""

    def __init__(self, action: Close | str | bytes) -> None:
        super().__init__("inbound message rejected")
        self.action = action


@final
class Messages(toolkit.Plugin, Generic[InT, OutT]):
    """The messages one endpoint receives (``inbound``) and sends (``outbound``).

    ``inbound``/``outbound`` are anything pydantic validates: a model, or a union
    discriminated by a ``type`` field (``Annotated[A | B, Field(discriminator="type")]``).
    mypy infers ``InT``/``OutT`` from them, so ``channel.receive()`` has the precise type.
    A type pydantic cannot build a schema for, or one not fully defined yet, raises
    ``PydanticUserError`` here rather than at the first message.

    Two ways to use it, which combine without validating anything twice:

    - as a typed channel (``messages.channel(websocket)``): ``receive()`` returns
      the validated model, ``send(model)`` raises :class:`OutboundError` locally
      and sends nothing when the model does not match;
    - as a plugin (``PluginManager(messages)``): invalid inbound messages never
      reach the app, whatever it reads them with, and outbound messages sent
      around the channel are checked too (a mismatch closes with 1011).

    ``codec`` sets the wire format (:class:`JsonCodec` by default, :class:`MsgpackCodec`, or
    any :class:`Codec`); it also sets the frame type, so ``frames`` is for JSON only.

    Bad input, per the close-code policy: wrong frame type -> close 1003;
    invalid UTF-8 -> close 1007; malformed JSON -> an error message, or close 1003
    with ``on_malformed="close"`` (for another codec: a ``malformed_message`` error, or close
    1003 "malformed message"); schema-invalid -> an error message listing the
    failing field locations and error types, or close 1008 with
    ``on_invalid="close"``. Error messages never contain input values or exception text.
    """

    def __init__(
        self,
        inbound: TypeForm[InT],
        outbound: TypeForm[OutT],
        *,
        frames: Literal["text", "binary"] | None = None,
        on_invalid: ErrorPolicy = "error",
        on_malformed: ErrorPolicy = "error",
        codec: Codec | None = None,
    ) -> None:
        if codec is None:
            codec = JsonCodec("text" if frames is None else frames)
        elif not isinstance(codec, Codec):
            raise TypeError("codec must be a Codec (frames, media_type, decode, encode)")
        elif frames is not None and frames != codec.frames:
            raise ValueError(f"frames={frames!r} contradicts the codec's frames ({codec.frames!r}); leave it out")
        frames = codec.frames
        if frames not in ("text", "binary"):
            raise ValueError("frames must be 'text' or 'binary'")
        if on_invalid not in ("error", "close") or on_malformed not in ("error", "close"):
            raise ValueError("on_invalid and on_malformed must be 'error' or 'close'")
        # _parent_depth: forward references ("Chat") resolve in the caller's namespace, not this module's.
        #: Validates inbound messages (``.validator``) and gives their JSON Schema.
        self.inbound: TypeAdapter[InT] = TypeAdapter(inbound, _parent_depth=3)
        #: Validates and serialises outbound messages.
        self.outbound: TypeAdapter[OutT] = TypeAdapter(outbound, _parent_depth=3)
        self._frames: Literal["text", "binary"] = frames
        self._codec: Codec = codec
        # None for JSON, which keeps its own fast path (validate_json straight from the frame).
        self._other: Codec | None = None if isinstance(codec, JsonCodec) else codec
        self._on_invalid: ErrorPolicy = on_invalid
        self._on_malformed: ErrorPolicy = on_malformed
        self._types = (inbound, outbound)
        self._text = frames == "text"
        self._frame_type: type[str | bytes] = str if self._text else bytes
        if self._other is None:
            self._malformed_answer: Close | str | bytes = (
                _MALFORMED if on_malformed == "close" else self._encode({"type": "error", "error": "invalid_json"})
            )
        else:
            self._malformed_answer = (
                _MALFORMED_OTHER
                if on_malformed == "close"
                else self._encode({"type": "error", "error": "malformed_message"})
            )
        self._known_names: frozenset[str] | None = None
        self._model_serializers = _model_serializers(self.outbound.core_schema)
        # Where this instance keeps its hand-overs on each connection. One key per instance: two
        # Messages registered on one manager must never take each other's models or trust.
        self._key: Final = StateKey[_Connection[InT]]("toolkit_messages")

    def __repr__(self) -> str:
        codec = "" if self._other is None else f", codec={self._other!r}"
        return (
            f"Messages({self._types[0]!r}, {self._types[1]!r}, frames={self.frames!r}, "
            f"on_invalid={self.on_invalid!r}, on_malformed={self.on_malformed!r}{codec})"
        )

    @property
    def frames(self) -> Literal["text", "binary"]:
        """The frame type messages travel in, both ways."""
        return self._frames

    @property
    def codec(self) -> Codec:
        """The wire format: :class:`JsonCodec` unless another codec was given."""
        return self._codec

    @property
    def on_invalid(self) -> ErrorPolicy:
        """What a schema-invalid message gets: an error message, or close 1008."""
        return self._on_invalid

    @property
    def on_malformed(self) -> ErrorPolicy:
        """What a malformed message (bad JSON, a frame the codec cannot decode) gets: an error, or close 1003."""
        return self._on_malformed

    def channel(self, websocket: WebSocket) -> Channel[InT, OutT]:
        """A typed view of ``websocket`` that receives ``InT`` and sends ``OutT``."""
        return Channel(self, websocket)

    def json_schema(self) -> MessageSchemas:
        """The JSON Schemas of the inbound, outbound and error messages (e.g. for an AsyncAPI document)."""
        return {
            "inbound": self.inbound.json_schema(mode="validation"),
            "outbound": self.outbound.json_schema(mode="serialization", by_alias=True),
            "error": _ERROR_ADAPTER.json_schema(),
        }

    # --- inbound ----------------------------------------------------------------------------

    def _parse(self, data: str | bytes) -> InT:
        """Validate one inbound message straight from its text or bytes. Raises :class:`_Rejected`."""
        if type(data) is not self._frame_type:
            raise _Rejected(_UNSUPPORTED)
        if self._other is not None:
            return self._parse_decoded(self._other, data)
        if _has_non_json_words(data) and not _strict_json(data):
            raise _Rejected(self._malformed(data))
        try:
            model: InT = self.inbound.validator.validate_json(data)
        except ValidationError as exc:
            raise _Rejected(self._rejection(data, exc)) from None
        return model

    def _parse_decoded(self, codec: Codec, data: str | bytes) -> InT:
        """Decode with ``codec``, then validate the value (as leniently as ``validate_json`` does)."""
        try:
            value = codec.decode(data)
        except ValueError:
            raise _Rejected(self._malformed_answer) from None
        try:
            model: InT = self.inbound.validator.validate_python(value)
        except ValidationError as exc:
            raise _Rejected(self._rejection(data, exc)) from None
        return model

    def _malformed(self, data: str | bytes) -> Close | str | bytes:
        if isinstance(data, bytes):
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                return _NOT_UTF8
        return self._malformed_answer

    def _rejection(self, data: str | bytes, exc: ValidationError) -> Close | str | bytes:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        first = errors[0]
        # "string_unicode" at the top: a str with a lone surrogate, which no text frame can carry.
        if self._other is None and (
            first["type"] == "json_invalid" or (first["type"] == "string_unicode" and not first["loc"])
        ):
            return self._malformed(data)
        if self._on_invalid == "close":
            return _INVALID
        # Only where and what kind: pydantic's messages can quote the input or a validator's text.
        known = self._names()
        details: list[ErrorDetail] = []
        for error in errors:
            detail: ErrorDetail = {
                "loc": [part if isinstance(part, int) or part in known else REDACTED for part in error["loc"]],
                "type": error["type"],
            }
            if detail not in details:
                details.append(detail)
                if len(details) == MAX_REPORTED_ERRORS:
                    break
        return self._encode({"type": "error", "error": "invalid_message", "errors": details})

    def _names(self) -> frozenset[str]:
        """The names the inbound schema publishes (properties, tags): safe to echo in a ``loc``."""
        if self._known_names is None:
            try:
                schema: object = self.inbound.json_schema(mode="validation")
            except Exception:  # a type without a JSON Schema: then no name is known to be safe
                schema = None
            self._known_names = frozenset(_schema_names(schema)) | {"[key]"}
        return self._known_names

    def _encode(self, error: ErrorMessage) -> str | bytes:
        if self._other is not None:
            return self._other.encode(error)
        text = json.dumps(error, separators=(",", ":"))
        return text if self._text else text.encode("utf-8")

    # --- outbound ---------------------------------------------------------------------------

    def dump(self, message: object) -> str | bytes:
        """Check ``message`` (a model or a dict) against the outbound schema and serialise it, by alias.

        Returns ``str`` for ``frames="text"``, ``bytes`` for ``"binary"``. A codec other than
        JSON encodes ``model_dump(mode="json", by_alias=True)``'s value. Raises
        :class:`OutboundError` when it does not match; nothing is sent then.

        An instance of a model the schema names is already valid (pydantic does not
        revalidate instances unless the model sets ``revalidate_instances``), so it
        goes straight to its serialiser.
        """
        serializer = self._model_serializers.get(type(message))
        other = self._other
        try:
            if serializer is None:
                outbound = self.outbound
                try:
                    message = outbound.validator.validate_python(message)
                except ValidationError as exc:
                    raise OutboundError(f"outbound message does not match the schema: {_summary(exc)}") from exc
                serializer = outbound.serializer
            if other is not None:
                frame = other.encode(serializer.to_python(message, mode="json", by_alias=True))
                if type(frame) is not self._frame_type:
                    raise TypeError(f"{other!r}.encode returned {type(frame).__name__}, not a {self._frames} frame")
                return frame
            data = serializer.to_json(message, by_alias=True)
        except OutboundError:
            raise
        except pydantic_core.PydanticSerializationError as exc:  # e.g. an `Any` field holding an object
            raise OutboundError("outbound message does not match the schema: it cannot be serialised") from exc
        except (ValueError, OverflowError):  # the codec cannot carry a value (e.g. msgpack, an int > 64 bits)
            raise OutboundError(f"outbound message cannot be encoded by {other!r}") from None
        return data.decode("utf-8") if self._text else data

    async def _send_own(self, websocket: WebSocket, data: str | bytes) -> None:
        """Send text this instance built or checked itself; ``ws_send`` lets exactly this object through."""
        state = websocket.plugin_state
        connection = state.get(self._key)
        if connection is None:
            if websocket.application_state is not _CONNECTED:  # the send fails as it should; keep no state
                await _send(websocket, data)
                return
            connection = state[self._key] = _Connection()
        if connection.sending is None:  # the common case: this task alone is sending on the connection
            connection.sending = data
            try:  # the send written out, not through _send(): one call less per message
                if isinstance(data, str):
                    await websocket.send_text(data)
                else:
                    await websocket.send_bytes(data)
            finally:
                connection.sending = None
            return
        others = connection.others
        if others is None:
            others = connection.others = []
        others.append(data)
        try:
            await _send(websocket, data)
        finally:
            for i, item in enumerate(others):
                if item is data:
                    del others[i]
                    break

    # --- hooks --------------------------------------------------------------------------------

    @toolkit.hookimpl(trylast=True)  # validate what the app will get, after the other plugins
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> ReceiveResult:
        try:
            model = self._parse(data)
        except _Rejected as rejected:
            action = rejected.action
            if isinstance(action, Close):
                return action
            # The toolkit sends the answer within this receive, through ws_send: let exactly this object through.
            self._connection(websocket).reply = action
            return Reply(action)
        state = websocket.plugin_state  # the _connection lookup, inlined: this runs for every valid message
        connection = state.get(self._key)
        if connection is None:
            connection = state[self._key] = _Connection()
        connection.received = (data, model)
        return None

    @toolkit.hookimpl(tryfirst=True)  # check what the app sent, before other plugins change it
    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> MessageResult:
        connection = websocket.plugin_state.get(self._key)
        if connection is not None:
            if data is connection.sending:
                return None
            if data is connection.reply:
                connection.reply = None
                return None
            others = connection.others
            if others and any(item is data for item in others):
                return None
        try:
            if self._other is None:
                self.outbound.validator.validate_json(data, strict=True)
            else:
                self._check_decoded(self._other, data)
        except ValidationError as exc:
            raise OutboundError(f"the app sent a message that does not match the schema: {_summary(exc)}") from exc
        return None

    def _check_decoded(self, codec: Codec, data: str | bytes) -> None:
        """Check an outbound frame of another codec as strictly as a JSON one: decoded, then as JSON.

        Only for what the app sends around the channel (the channel's own sends are trusted).
        """
        if type(data) is not self._frame_type:
            raise OutboundError(f"the app sent a {type(data).__name__} message; this codec uses {self._frames} frames")
        try:
            value = codec.decode(data)
            as_json = pydantic_core.to_json(value)
        except (ValueError, pydantic_core.PydanticSerializationError):
            raise OutboundError("the app sent a message that the codec cannot decode") from None
        self.outbound.validator.validate_json(as_json, strict=True)

    def _connection(self, websocket: WebSocket) -> _Connection[InT]:
        """This instance's hand-overs on ``websocket``, made on first use."""
        state = websocket.plugin_state
        connection = state.get(self._key)
        if connection is None:
            connection = state[self._key] = _Connection()
        return connection


@final
class Channel(Generic[InT, OutT]):
    """A WebSocket seen through a :class:`Messages` schema: receive ``InT``, send ``OutT``.

    ``async for message in channel`` receives until the connection ends.
    """

    __slots__ = ("messages", "websocket")

    def __init__(self, messages: Messages[InT, OutT], websocket: WebSocket) -> None:
        self.messages: Messages[InT, OutT] = messages
        self.websocket: WebSocket = websocket

    def __repr__(self) -> str:
        return f"Channel({self.messages!r}, {self.websocket!r})"

    async def receive(self) -> InT:
        """The next valid message. Bad ones are answered per the policy and skipped.

        Raises ``WebSocketDisconnect`` when the connection ends, including when the
        policy closes it (with the policy's code and reason).
        """
        messages, websocket = self.messages, self.websocket
        while True:
            try:
                data: str | bytes = await (websocket.receive_text() if messages._text else websocket.receive_bytes())
            except UnexpectedFrameType:
                action: Close | str | bytes = _UNSUPPORTED
            else:
                connection = websocket.plugin_state.get(messages._key)
                if connection is not None:
                    received = connection.received
                    if received is not None and received[0] is data:
                        connection.received = None  # consumed: the hook validated exactly this message
                        return received[1]
                try:
                    return messages._parse(data)
                except _Rejected as rejected:
                    action = rejected.action
            if isinstance(action, Close):
                await websocket.close(action.code, action.reason)
                raise WebSocketDisconnect(action.code, action.reason)
            await messages._send_own(websocket, action)

    async def send(self, message: OutT | dict[str, Any]) -> None:
        """Send a message: a model, or a dict to validate.

        Raises :class:`OutboundError`, and sends nothing, when it does not match the outbound schema.
        """
        messages = self.messages
        await messages._send_own(self.websocket, messages.dump(message))

    def __aiter__(self) -> Channel[InT, OutT]:
        return self

    async def __anext__(self) -> InT:
        try:
            return await self.receive()
        except WebSocketDisconnect:
            raise StopAsyncIteration from None


def _send(websocket: WebSocket, data: str | bytes) -> Awaitable[None]:
    """The send of ``data`` in its frame type (a plain def: no coroutine of its own per message)."""
    return websocket.send_text(data) if isinstance(data, str) else websocket.send_bytes(data)


def _has_non_json_words(data: str | bytes) -> bool:
    """Whether ``data`` might hold NaN or Infinity, which are not JSON but which pydantic's parser takes.

    A one-character search (memchr) first: searching for the words themselves costs about
    1 µs per KB, the letter about 30 ns. The strict parser then decides for the rare message
    that has one of the words.
    """
    if isinstance(data, str):
        return ("N" in data and "NaN" in data) or ("I" in data and "Infinity" in data)
    return (b"N" in data and b"NaN" in data) or (b"I" in data and b"Infinity" in data)


def _strict_json(data: str | bytes) -> bool:
    """Whether ``data`` is JSON by RFC 8259's rules (no NaN, no Infinity)."""
    try:
        pydantic_core.from_json(data, allow_inf_nan=False)
    except ValueError:
        return False
    return True


def _schema_names(schema: object) -> Iterable[str]:
    """Property names and discriminator tags anywhere in a JSON Schema."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            properties = node.get("properties")
            if isinstance(properties, dict):
                yield from properties
            discriminator = node.get("discriminator")
            if isinstance(discriminator, dict) and isinstance(discriminator.get("mapping"), dict):
                yield from discriminator["mapping"]
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _model_serializers(schema: pydantic_core.CoreSchema) -> dict[type, pydantic_core.SchemaSerializer]:
    """The model classes whose instances the schema takes as they are, each with its own serialiser.

    That is the schema's model, or the members of a union of models, when nothing
    (a validator, a custom serialiser) wraps them and the model does not revalidate
    instances. Serialising such an instance with its own serialiser gives the same
    JSON as the union's serialiser would, in half the time.
    """
    definitions: dict[str, Any] = {}
    if schema["type"] == "definitions":
        definitions = {d["ref"]: d for d in schema["definitions"] if "ref" in d}
        schema = schema["schema"]

    def model(choice: Any) -> type[BaseModel] | None:
        if isinstance(choice, tuple):  # a union choice with a label
            choice = choice[0]
        if choice.get("type") == "definition-ref" and "serialization" not in choice:
            choice = definitions.get(choice["schema_ref"], {})
        if choice.get("type") != "model" or "serialization" in choice:
            return None
        cls: type[BaseModel] = choice["cls"]
        if cls.model_config.get("revalidate_instances", "never") != "never":
            return None
        return cls

    if "serialization" in schema:
        return {}
    if schema["type"] in ("model", "definition-ref"):
        choices: list[Any] = [schema]
    elif schema["type"] == "union":
        choices = list(schema["choices"])
    elif schema["type"] == "tagged-union":
        choices = list(schema["choices"].values())
    else:
        return {}
    classes = [model(choice) for choice in choices]
    return {cls: cls.__pydantic_serializer__ for cls in classes if cls is not None}


def _summary(exc: ValidationError) -> str:
    """Locations and error types, never input values: these messages end up in logs."""
    parts = [f"{'.'.join(map(str, error['loc'])) or '(root)'}: {error['type']}" for error in exc.errors()[:5]]
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


_ERROR_ADAPTER: Final = TypeAdapter(ErrorMessage)
