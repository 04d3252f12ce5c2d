"""ws-toolkit: a Starlette-compatible WebSocket for ASGI that emits typed pluggy hooks.

Everything public is importable from here; the underscored modules are private.
"""

from ._app import WebSocketApp
from ._close import MAX_REASON_BYTES, Close
from ._datastructures import URL, Address, Headers, QueryParams, State
from ._exceptions import (
    InvalidJSON,
    InvalidUTF8,
    MessageError,
    PluginValidationError,
    UnexpectedFrameType,
    WebSocketDenied,
    WebSocketDisconnect,
    WebSocketDisconnected,
)
from ._hookspecs import (
    DROP,
    Accept,
    AcceptResult,
    ClosedBy,
    DenialResult,
    Drop,
    MessageResult,
    Plugin,
    hookimpl,
)
from ._plugins import PluginManager
from ._responses import DenialResponse, WebSocketClose
from ._types import ASGIApp, Message, Receive, Scope, Send
from ._websocket import WebSocket, WebSocketState

__all__ = [
    "DROP",
    "MAX_REASON_BYTES",
    "URL",
    "ASGIApp",
    "Accept",
    "AcceptResult",
    "Address",
    "Close",
    "ClosedBy",
    "DenialResponse",
    "DenialResult",
    "Drop",
    "Headers",
    "InvalidJSON",
    "InvalidUTF8",
    "Message",
    "MessageError",
    "MessageResult",
    "Plugin",
    "PluginManager",
    "PluginValidationError",
    "QueryParams",
    "Receive",
    "Scope",
    "Send",
    "State",
    "UnexpectedFrameType",
    "WebSocket",
    "WebSocketApp",
    "WebSocketClose",
    "WebSocketDenied",
    "WebSocketDisconnect",
    "WebSocketDisconnected",
    "WebSocketState",
    "hookimpl",
]
