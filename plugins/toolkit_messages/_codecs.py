"""Codecs: how :class:`~toolkit_messages.Messages` turns frames into values and values into frames.

The core's hooks carry ``str | bytes`` frames; a codec works inside ``Messages``, on either side
of the schema: ``decode`` before validation, ``encode`` after serialisation. JSON is the default
and keeps its own fast path (pydantic-core parses JSON frames straight into models); any other
codec decodes to plain Python values, which are then validated with ``validate_python``.
"""

from __future__ import annotations

import json
from typing import Final, Literal, Protocol, final, runtime_checkable

import pydantic_core

__all__ = ["Codec", "JsonCodec", "MsgpackCodec"]


@runtime_checkable
class Codec(Protocol):
    """The wire format of a :class:`~toolkit_messages.Messages`: frames to values and back.

    ``decode`` gets a frame of the codec's own type (``str`` for ``frames="text"``, ``bytes``
    for ``"binary"``; ``Messages`` refuses the other type with close 1003 before calling it)
    and returns plain values: ``dict``, ``list``, ``str``, ``int``, ``float``, ``bool``,
    ``None`` (and ``bytes`` if the format has them). It raises ``ValueError`` for a malformed
    frame; the exception's text is never sent or logged with the input. ``encode`` gets what
    ``model_dump(mode="json", by_alias=True)`` returns and gives a frame of the codec's type.
    """

    @property
    def frames(self) -> Literal["text", "binary"]:
        """The frame type the codec's messages travel in, both ways."""
        ...

    @property
    def media_type(self) -> str:
        """The format's media type, e.g. ``"application/msgpack"`` (for documents such as AsyncAPI)."""
        ...

    def decode(self, frame: str | bytes) -> object:
        """The value in ``frame``. Raises ``ValueError`` when the frame is malformed."""
        ...

    def encode(self, value: object) -> str | bytes:
        """The frame for ``value``. Raises ``ValueError`` or ``OverflowError`` for a value it cannot carry."""
        ...


@final
class JsonCodec:
    """JSON (RFC 8259), the default codec, in text or binary (UTF-8) frames.

    ``Messages`` does not call it for each message: it recognises the JSON codec and parses
    frames straight into models with pydantic-core (``validate_json``). ``decode`` and
    ``encode`` are there for code that uses a codec directly.
    """

    __slots__ = ("_frames",)

    def __init__(self, frames: Literal["text", "binary"] = "text") -> None:
        if frames not in ("text", "binary"):
            raise ValueError("frames must be 'text' or 'binary'")
        self._frames: Final = frames

    def __repr__(self) -> str:
        return f"JsonCodec({self._frames!r})"

    @property
    def frames(self) -> Literal["text", "binary"]:
        """The frame type: JSON text, or its UTF-8 bytes in binary frames."""
        return self._frames

    @property
    def media_type(self) -> str:
        """``"application/json"``."""
        return "application/json"

    def decode(self, frame: str | bytes) -> object:
        """The JSON value in ``frame``; ``NaN`` and ``Infinity`` are malformed, as in ``Messages``."""
        return pydantic_core.from_json(frame, allow_inf_nan=False)

    def encode(self, value: object) -> str | bytes:
        """Compact JSON: ``str`` for text frames, UTF-8 ``bytes`` for binary frames."""
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
        return text if self._frames == "text" else text.encode("utf-8")


@final
class MsgpackCodec:
    """MessagePack in binary frames. Needs the ``msgpack`` extra (``pip install 'ws-toolkit[msgpack]'``).

    ``msgpack`` is imported when the codec is made, so ``toolkit_messages`` works without it.
    Decoding is strict: map keys must be strings, a frame holds exactly one value, a ``str``
    must be valid UTF-8, and extension types are malformed, except msgpack's timestamp, which
    becomes an aware ``datetime`` (UTC). Outbound values are ``model_dump(mode="json")``'s, so a
    ``datetime`` goes out as an ISO 8601 string, as in JSON.
    """

    __slots__ = ("_msgpack",)

    def __init__(self) -> None:
        try:
            import msgpack  # noqa: PLC0415 - optional dependency, imported only when used
        except ImportError as exc:  # pragma: no cover - the dev environment has it
            raise ImportError("MsgpackCodec needs msgpack: pip install 'ws-toolkit[msgpack]'") from exc
        self._msgpack: Final = msgpack

    def __repr__(self) -> str:
        return "MsgpackCodec()"

    @property
    def frames(self) -> Literal["text", "binary"]:
        """Always ``"binary"``: a text frame is refused with close 1003."""
        return "binary"

    @property
    def media_type(self) -> str:
        """``"application/msgpack"``."""
        return "application/msgpack"

    def decode(self, frame: str | bytes) -> object:
        """The one value in ``frame``. Raises ``ValueError`` (with a fixed text) when it is malformed."""
        try:
            if not isinstance(frame, bytes):
                raise TypeError("msgpack travels in binary frames")
            return self._msgpack.unpackb(frame, raw=False, strict_map_key=True, ext_hook=_refuse_ext, timestamp=3)
        except Exception:  # msgpack's errors (ExtraData, FormatError, StackError, ...) can quote the input
            raise ValueError("malformed msgpack") from None

    def encode(self, value: object) -> bytes:
        """The MessagePack bytes for ``value`` (``OverflowError`` for an int beyond 64 bits)."""
        return self._msgpack.packb(value, use_bin_type=True)


def _refuse_ext(code: int, data: bytes) -> object:
    raise ValueError("msgpack extension types are not accepted")
