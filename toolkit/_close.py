"""Close codes and reasons (RFC 6455 section 7.4): what may be sent, and the checked ``Close`` action."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, TypeGuard

__all__ = ["MAX_REASON_BYTES", "SENDABLE", "Close", "CloseCode", "check_close", "may_send"]


class CloseCode(enum.IntEnum):
    """Every close code the toolkit and its first-party plugins use, with the reason each sends by default.

    The single source of close codes: code never writes them as bare numbers.
    ``CloseCode.X.reason`` is the short, fixed reason that goes with it, and
    ``CloseCode.X.sendable`` whether it may appear in a close frame at all.
    docs/close-codes.md is checked against this enum by the tests.
    """

    #: The endpoint finished, or ``close()`` without arguments (RFC 6455 7.4.1).
    NORMAL = 1000
    #: The server is shutting down, or an idle connection is dropped.
    GOING_AWAY = 1001
    #: The peer broke the WebSocket protocol (sent by servers, never by the toolkit).
    PROTOCOL_ERROR = 1002
    #: A frame of the wrong type (text for binary or the reverse), or malformed JSON.
    UNSUPPORTED_DATA = 1003
    #: Reported locally when a close frame carried no code; never sent.
    NO_STATUS = 1005
    #: Reported locally when the connection vanished without a close frame; never sent.
    ABNORMAL = 1006
    #: A binary message that had to be read as text is not valid UTF-8.
    INVALID_DATA = 1007
    #: A message or connection that breaks the app's policy (unauthorized, invalid, rate limited).
    POLICY_VIOLATION = 1008
    #: A message over the size limit.
    MESSAGE_TOO_BIG = 1009
    #: The app or a plugin failed.
    INTERNAL_ERROR = 1011
    #: Overloaded or too slow: the client may come back later.
    TRY_AGAIN_LATER = 1013

    @property
    def reason(self) -> str:
        """The reason sent with this code when no more specific one applies (``""`` for 1000)."""
        return _REASONS[self]

    @property
    def sendable(self) -> bool:
        """Whether this code may appear in a close frame (1005 and 1006 may not)."""
        return self in SENDABLE


_REASONS: Final[dict[CloseCode, str]] = {
    CloseCode.NORMAL: "",
    CloseCode.GOING_AWAY: "going away",
    CloseCode.PROTOCOL_ERROR: "protocol error",
    CloseCode.UNSUPPORTED_DATA: "unsupported data",
    CloseCode.NO_STATUS: "",
    CloseCode.ABNORMAL: "",
    CloseCode.INVALID_DATA: "invalid utf-8",
    CloseCode.POLICY_VIOLATION: "policy violation",
    CloseCode.MESSAGE_TOO_BIG: "message too big",
    CloseCode.INTERNAL_ERROR: "internal error",
    CloseCode.TRY_AGAIN_LATER: "try again later",
}

#: A close frame's payload is at most 125 bytes; two of them hold the code (RFC 6455 5.5).
MAX_REASON_BYTES: Final = 123

# 1004 is reserved; 1005, 1006 and 1015 only ever describe a closure locally and
# must never appear in a close frame (RFC 6455 7.4.1). 1016-2999 are unassigned,
# and peers such as the `websockets` library fail the connection on them.
_SENDABLE_BELOW_3000: Final = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
#: The toolkit's codes that may be sent in a close frame.
SENDABLE: Final = frozenset(code for code in CloseCode if code.value in _SENDABLE_BELOW_3000)


def may_send(code: object) -> TypeGuard[int]:
    """Whether ``code`` (an ``int``, not a ``bool``) may go out in a close frame (RFC 6455 7.4)."""
    return (type(code) is int or isinstance(code, CloseCode)) and (code in _SENDABLE_BELOW_3000 or 3000 <= code <= 4999)


def check_close(code: int, reason: str) -> None:
    """Raise ``ValueError`` unless ``code`` and ``reason`` may go out in a close frame."""
    if not may_send(code):
        raise ValueError(f"close code {code!r} may not be sent (RFC 6455 7.4)")
    if not isinstance(reason, str):
        raise TypeError("close reason must be a str")
    try:
        size = len(reason.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: no server can put it in a frame
        raise ValueError("close reason is not valid Unicode text") from None
    if size > MAX_REASON_BYTES:
        raise ValueError(f"close reason is longer than {MAX_REASON_BYTES} UTF-8 bytes")


@dataclass(frozen=True, slots=True)
class Close:
    """Hook result that closes the connection with ``code`` and ``reason``.

    Checked on construction, so a plugin can never make the toolkit send a
    forbidden code or an over-long reason.
    """

    code: int = CloseCode.NORMAL
    reason: str = ""

    def __post_init__(self) -> None:
        check_close(self.code, self.reason)
        object.__setattr__(self, "code", int(self.code))  # a plain int in ASGI messages, whatever the caller passed

    @classmethod
    def of(cls, code: CloseCode, reason: str | None = None) -> Close:
        """``Close(code, reason)``, the reason defaulting to the code's own: ``Close.of(CloseCode.MESSAGE_TOO_BIG)``."""
        return cls(code, code.reason if reason is None else reason)
