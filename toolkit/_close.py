"""Close codes and reasons (RFC 6455 section 7.4): what may be sent, and the checked ``Close`` action."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_REASON_BYTES", "Close", "check_close"]

#: A close frame's payload is at most 125 bytes; two of them hold the code (RFC 6455 5.5).
MAX_REASON_BYTES: Final = 123

# 1004 is reserved; 1005, 1006 and 1015 only ever describe a closure locally and
# must never appear in a close frame (RFC 6455 7.4.1). 1016-2999 are unassigned,
# and peers such as the `websockets` library fail the connection on them.
_SENDABLE_BELOW_3000: Final = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


def check_close(code: int, reason: str) -> None:
    """Raise ``ValueError`` unless ``code`` and ``reason`` may go out in a close frame."""
    if type(code) is not int or not (code in _SENDABLE_BELOW_3000 or 3000 <= code <= 4999):
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

    code: int = 1000
    reason: str = ""

    def __post_init__(self) -> None:
        check_close(self.code, self.reason)
