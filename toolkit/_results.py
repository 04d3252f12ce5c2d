"""The values hooks receive and return: ``Accept``, ``DROP``, ``Reply``, ``ClosedBy`` and the result aliases.

They sit below the WebSocket and the hook machinery, which both speak in them.
"""

from __future__ import annotations

import enum
from collections.abc import Generator
from dataclasses import dataclass, replace
from typing import Final, TypeAlias, TypeVar

from ._close import Close
from ._responses import DenialResponse, check_headers

__all__ = [
    "DROP",
    "Accept",
    "AcceptResult",
    "ClosedBy",
    "DenialResult",
    "Drop",
    "MessageResult",
    "ReceiveResult",
    "Reply",
    "Wrapper",
]


class Drop(enum.Enum):
    """Type of :data:`DROP`."""

    DROP = "drop"


#: Hook result that discards the message: it is neither delivered nor sent.
DROP: Final = Drop.DROP


@dataclass(frozen=True, slots=True)
class Reply:
    """``ws_receive`` result: drop the message and send ``data`` back to the client instead.

    For a plugin that answers a bad message itself (an error message) without
    the app ever seeing it: the toolkit sends the reply as the app's next data
    message would go, through the ``ws_send`` hooks, then waits for the next
    message. It stops the chain, as :data:`DROP` does. Nothing is sent when the
    app has already closed its side; if the client has left, the app hears of it
    from its ``receive``. Only ``ws_receive`` may return it; a plain ``def`` that
    returns it keeps the hook synchronous, which is what makes it cheap.
    """

    data: str | bytes

    def __post_init__(self) -> None:
        if not isinstance(self.data, str | bytes):  # run-time check of untyped input
            raise TypeError(f"Reply needs str or bytes, got {type(self.data).__name__}")


class _Keep(enum.Enum):
    KEEP = "keep"


class ClosedBy(enum.StrEnum):
    """Who ended a connection, as reported to ``ws_close``."""

    #: The app closed, denied, or returned (closed with 1000 for it).
    APP = "app"
    #: The client sent a close frame (code 1005 if it gave none) or vanished (1006).
    CLIENT = "client"
    #: A plugin returned ``Close`` or a denial, or raised (1011 / denied).
    PLUGIN = "plugin"
    #: The app raised (1011) or was cancelled (1006: nothing could be sent).
    SERVER = "server"


@dataclass(frozen=True, slots=True)
class Accept:
    """The accept a ``ws_accept`` hook sees; return ``accept.replace(...)`` to change it."""

    subprotocol: str | None = None
    headers: tuple[tuple[bytes, bytes], ...] = ()

    def __post_init__(self) -> None:
        # Servers set Sec-WebSocket-Protocol from `subprotocol`; a second copy in `headers`
        # would contradict it, and CR/LF in a value would split the response.
        headers = tuple(check_headers(self.headers))
        if any(name.lower() == b"sec-websocket-protocol" for name, _ in headers):
            raise ValueError("set the subprotocol with `subprotocol`, not as a header")
        object.__setattr__(self, "headers", headers)
        subprotocol: object = self.subprotocol  # run-time check of untyped input
        if subprotocol is not None and (
            not isinstance(subprotocol, str) or not subprotocol.isascii() or not subprotocol.isprintable()
        ):
            raise ValueError("a subprotocol must be printable ASCII")

    @classmethod
    def _unchecked(cls, subprotocol: object, headers: object) -> Accept:
        """The accept exactly as someone else's app wrote it, unchecked, for the hooks to see.

        :class:`toolkit.ToolkitMiddleware` relays an app's accept as the app wrote it (the
        server judges it); a plugin's replacement is checked as usual.
        """
        accept = object.__new__(cls)
        object.__setattr__(accept, "subprotocol", subprotocol)
        object.__setattr__(accept, "headers", tuple(headers or ()))  # type: ignore[arg-type]
        return accept

    def replace(
        self,
        *,
        subprotocol: str | _Keep | None = _Keep.KEEP,
        headers: tuple[tuple[bytes, bytes], ...] | None = None,
    ) -> Accept:
        """A copy with the given fields changed; fields not given are kept."""
        return replace(
            self,
            subprotocol=self.subprotocol if subprotocol is _Keep.KEEP else subprotocol,
            headers=self.headers if headers is None else headers,
        )


#: What ``ws_accept`` may return: keep (None), change (Accept) or deny (DenialResponse).
AcceptResult: TypeAlias = Accept | DenialResponse | None
#: What ``ws_send`` may return: keep (None), replace, drop, or close.
MessageResult: TypeAlias = str | bytes | Drop | Close | None
#: What ``ws_receive`` may return: as ``ws_send``, or drop and answer (:class:`Reply`).
ReceiveResult: TypeAlias = str | bytes | Drop | Close | Reply | None
#: What ``ws_denial`` may return: keep (None) or a replacement response.
DenialResult: TypeAlias = DenialResponse | None

_R = TypeVar("_R")
#: What a wrapper implementation returns: a generator that yields once, receives the outcome of the
#: implementations it wraps (or has their exception thrown in) and returns the outcome that stands
#: (``None`` keeps it). ``def ws_send(...) -> Wrapper[MessageResult]``.
Wrapper: TypeAlias = Generator[None, _R, _R]
