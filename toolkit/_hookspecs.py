"""The five hook specifications, the markers, and the typed base class for plugins.

Hook order follows pluggy: ``tryfirst`` first, ``trylast`` last, otherwise the
most recently registered plugin first; ``wrapper=True`` generators wrap the rest.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final, TypeAlias

import pluggy

from ._close import Close
from ._responses import DenialResponse, check_headers

if TYPE_CHECKING:
    from ._websocket import WebSocket

__all__ = [
    "ASYNC_HOOKS",
    "DROP",
    "HOOK_NAMES",
    "Accept",
    "AcceptResult",
    "ClosedBy",
    "DenialResult",
    "Drop",
    "MessageResult",
    "Plugin",
    "ReceiveResult",
    "Reply",
    "hookimpl",
    "hookspec",
]

PROJECT: Final = "toolkit"
#: Marks a function or method as a hook implementation: ``@toolkit.hookimpl(tryfirst=True)``.
hookimpl: Final = pluggy.HookimplMarker(PROJECT)
hookspec: Final = pluggy.HookspecMarker(PROJECT)


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

#: Hooks whose implementations may be ``async def``. The others run where awaiting is
#: impossible or pointless (``ws_close`` also runs during cancellation), so they must be sync.
ASYNC_HOOKS: Final = frozenset({"ws_accept", "ws_receive", "ws_send"})
HOOK_NAMES: Final = ("ws_accept", "ws_receive", "ws_send", "ws_close", "ws_denial")


class HookSpecs:
    """The hook specifications registered with every :class:`toolkit.PluginManager`."""

    @hookspec
    def ws_accept(self, websocket: WebSocket, accept: Accept) -> AcceptResult | Awaitable[AcceptResult]:
        """The app (or the toolkit for it) is about to accept the connection.

        Return ``None`` to keep ``accept``, a changed :class:`Accept` (the next
        implementation sees it), or a :class:`DenialResponse` to refuse the
        connection; a denial stops the chain. May be ``async``.
        """

    @hookspec
    def ws_receive(self, websocket: WebSocket, data: str | bytes) -> ReceiveResult | Awaitable[ReceiveResult]:
        """A data message arrived from the client, before the app sees it.

        Return ``None`` to keep it, a ``str``/``bytes`` to replace it (the next
        implementation sees the replacement), :data:`DROP` to discard it,
        :class:`Reply` to discard it and answer the client, or :class:`Close` to
        close the connection. May be ``async``.
        """

    @hookspec
    def ws_send(self, websocket: WebSocket, data: str | bytes) -> MessageResult | Awaitable[MessageResult]:
        """The app is sending a data message. Same results as ``ws_receive``. May be ``async``."""

    @hookspec
    def ws_close(self, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None:
        """The connection ended. Fires exactly once per connection, denials included (code 1006).

        Sync only: it also runs while the task is being cancelled.
        """

    @hookspec
    def ws_denial(self, websocket: WebSocket, response: DenialResponse) -> DenialResult:
        """A denial is about to go out, whoever sent it. Return a replacement to change it. Sync only."""


class Plugin:
    """Optional typed base class for plugins.

    Subclass it and define only the hooks you need: mypy then checks each
    method's signature against the hook, and an ``async def`` for a sync-only
    hook is a type error. The base defines no methods at run time, so hooks you
    leave out cost nothing. Methods need no ``@hookimpl`` unless they take options.
    """

    if TYPE_CHECKING:

        def ws_accept(self, websocket: WebSocket, accept: Accept) -> AcceptResult | Awaitable[AcceptResult]:
            raise NotImplementedError

        def ws_receive(self, websocket: WebSocket, data: str | bytes) -> ReceiveResult | Awaitable[ReceiveResult]:
            raise NotImplementedError

        def ws_send(self, websocket: WebSocket, data: str | bytes) -> MessageResult | Awaitable[MessageResult]:
            raise NotImplementedError

        def ws_close(self, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None:
            raise NotImplementedError

        def ws_denial(self, websocket: WebSocket, response: DenialResponse) -> DenialResult:
            raise NotImplementedError
