"""What travels on a channel: an envelope (origin, per-publisher sequence, trace context) around a payload.

The wire form is ``b"tkb1 " + header + b"\\n" + payload``: a 5-byte magic with the version, a small
JSON header, then the payload's bytes as its codec made them. No I/O here: pure functions and values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Generic, Literal, TypeVar, final

import pydantic_core

__all__ = ["MAGIC", "Envelope", "Gap", "Malformed", "Message", "decode_envelope", "encode_envelope"]

T = TypeVar("T")

#: The first bytes of every message this package publishes: the envelope's version is the digit.
MAGIC: Final = b"tkb1 "
_OTHER_VERSION: Final = re.compile(rb"tkb\d+ ")
_ORIGIN: Final = re.compile(r"[0-9a-f]{1,32}")


class Malformed(ValueError):
    """A message on a channel that is not ours, not this version, too big, or broken; ``kind`` says which."""

    def __init__(self, kind: Literal["foreign", "version", "too big", "header", "payload"]) -> None:
        super().__init__(kind)
        #: Which rule the message broke (never its content).
        self.kind: Final = kind


@final
@dataclass(frozen=True, slots=True)
class Envelope:
    """The header of one published message."""

    #: The publisher: a random id per :class:`~toolkit_broadcast.Broadcast`.
    origin: str
    #: 1, 2, 3, ... per publisher and channel: a jump means messages were lost.
    seq: int
    #: W3C trace context (``traceparent``) of the publish, if any.
    trace: str | None


@final
@dataclass(frozen=True, slots=True)
class Message(Generic[T]):
    """One message received on a channel."""

    #: The channel's name.
    channel: str
    #: The payload, as the channel's codec decoded it.
    payload: T
    #: Who published it and in which order, with the trace context.
    envelope: Envelope
    #: The stream entry id in the Redis Streams mode (pass it as ``last_id`` to resume), else None.
    id: str | None = None


@final
@dataclass(frozen=True, slots=True)
class Gap:
    """Messages were lost before the next one: never silently.

    ``missed`` is how many, when known (a jump in a publisher's sequence, or the outbox dropping them),
    else None (the link to Redis was lost, or a resume fell outside the window). ``origin`` is the
    publisher they came from, when known.
    """

    #: The channel's name.
    channel: str
    #: How many messages were lost, or None if unknown.
    missed: int | None
    #: The publisher whose messages were lost, or None if unknown or several.
    origin: str | None
    #: Why: "sequence" (a publisher's sequence jumped), "overflow" (this subscriber's outbox was full),
    #: "link" (the connection to Redis was lost), "window" (resume beyond the kept history).
    reason: Literal["sequence", "overflow", "link", "window"]


def encode_envelope(envelope: Envelope, payload: bytes) -> bytes:
    header = pydantic_core.to_json({"o": envelope.origin, "s": envelope.seq, "t": envelope.trace})
    return b"".join((MAGIC, header, b"\n", payload))


def decode_envelope(data: bytes, max_bytes: int) -> tuple[Envelope, bytes]:
    """The envelope and the payload's bytes; :class:`Malformed` for anything else."""
    if len(data) > max_bytes:
        raise Malformed("too big")
    if not data.startswith(MAGIC):
        raise Malformed("version" if _OTHER_VERSION.match(data) else "foreign")
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + 512)
    if end < 0:
        raise Malformed("header")
    try:
        header = pydantic_core.from_json(data[len(MAGIC) : end])
    except ValueError:
        raise Malformed("header") from None
    if not isinstance(header, dict):
        raise Malformed("header")
    origin, seq, trace = header.get("o"), header.get("s"), header.get("t")
    if (
        not isinstance(origin, str)
        or not _ORIGIN.fullmatch(origin)
        or type(seq) is not int
        or seq < 1
        or not (trace is None or (isinstance(trace, str) and len(trace) <= 256))
    ):
        raise Malformed("header")
    return Envelope(origin, seq, trace), data[end + 1 :]
