"""Exceptions raised by the toolkit.

The Starlette-compatible ones keep Starlette's names, bases and attributes so
``except`` clauses written for Starlette keep working. The message errors carry
the close code that the close-code policy (docs/close-codes.md) assigns them.
"""

from __future__ import annotations

import json
from typing import ClassVar

from ._close import CloseCode
from ._compat import DisconnectBase, DisconnectedBase

__all__ = [
    "InvalidJSON",
    "InvalidUTF8",
    "MessageError",
    "PluginValidationError",
    "UnexpectedFrameType",
    "WebSocketDenied",
    "WebSocketDisconnect",
    "WebSocketDisconnected",
]


class WebSocketDisconnect(DisconnectBase):
    """The connection ended: the client left, the app or a plugin closed it, or a send failed.

    A subclass of Starlette's ``WebSocketDisconnect`` when Starlette is installed.
    """

    def __init__(self, code: int = CloseCode.NORMAL.value, reason: str | None = None) -> None:
        Exception.__init__(self, code, reason or "")
        #: The close code; 1005 when the client sent none, 1006 when the peer vanished.
        self.code = code
        #: The close reason, ``""`` when there is none.
        self.reason: str = reason or ""


class WebSocketDenied(WebSocketDisconnect):
    """The handshake was refused (by a plugin or the failure policy) instead of accepted.

    Raised by :meth:`toolkit.WebSocket.accept`. It subclasses
    :class:`WebSocketDisconnect`, so handlers that already end on a disconnect
    also end cleanly on a denial.
    """

    def __init__(self, status: int) -> None:
        # 1006: a refused handshake never carried a close frame; browsers report 1006 too.
        super().__init__(CloseCode.ABNORMAL.value, "")
        #: The HTTP status the client was sent (403 when the server lacks the denial extension).
        self.status = status


class WebSocketDisconnected(DisconnectedBase):
    """Raised when attempting to use a WebSocket that is already disconnected (a ``RuntimeError``).

    A subclass of Starlette's ``WebSocketDisconnected`` when Starlette is installed.
    """


class MessageError(ValueError):
    """An inbound message could not be read as asked. ``close_code`` says how to close for it."""

    #: The close code the policy assigns to this error.
    close_code: ClassVar[int] = CloseCode.UNSUPPORTED_DATA
    #: A short, generic close reason that never contains the input.
    close_reason: ClassVar[str] = "unsupported data"


class UnexpectedFrameType(MessageError, TypeError):
    """A text frame arrived where bytes were expected, or the reverse."""


class InvalidJSON(MessageError, json.JSONDecodeError):
    """An inbound message is not valid JSON (NaN and Infinity included).

    Also a ``json.JSONDecodeError``, which is what Starlette's ``receive_json`` raises.
    ``doc`` is left empty: the input never travels with the error.
    """

    close_reason = "invalid JSON"

    def __init__(self, msg: str) -> None:
        json.JSONDecodeError.__init__(self, msg, "", 0)

    def __str__(self) -> str:
        return self.msg


class InvalidUTF8(MessageError, UnicodeDecodeError):
    """A binary message that had to be read as text is not valid UTF-8.

    Also a ``UnicodeDecodeError``, which is what Starlette's ``receive_json(mode="binary")`` raises.
    """

    close_code: ClassVar[int] = CloseCode.INVALID_DATA
    close_reason = "invalid utf-8"

    def __init__(self, msg: str) -> None:
        UnicodeDecodeError.__init__(self, "utf-8", b"", 0, 0, msg)

    def __str__(self) -> str:
        return self.reason


class PluginValidationError(TypeError):
    """A plugin cannot be registered: unknown hook name, bad signature or async where sync is required."""
