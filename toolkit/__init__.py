"""ws-toolkit: a Starlette-compatible WebSocket for ASGI that emits typed pluggy hooks.

Everything public is importable from here; the underscored modules are private.
"""

from ._app import WebSocketApp
from ._chains import HookTimer, is_async
from ._close import MAX_REASON_BYTES, Close, CloseCode
from ._connstate import PluginState, StateKey
from ._datastructures import URL, Address, Headers, QueryParams, State
from ._discovery import (
    DISABLE_AUTOLOAD_ENV,
    ENTRY_POINT_GROUP,
    SKIP_PLUGINS_ENV,
    PluginEntryPoint,
    PluginLoadError,
    PluginLoadWarning,
    PluginStatus,
    find_plugins,
    load_plugins,
)
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
from ._hookspecs import Plugin, hookimpl
from ._lifecycle import WebSocketState
from ._middleware import ToolkitMiddleware
from ._plugins import HookImplementation, PluginManager
from ._responses import DenialResponse, WebSocketClose
from ._results import (
    DROP,
    Accept,
    AcceptResult,
    ClosedBy,
    DenialResult,
    Drop,
    MessageResult,
    ReceiveResult,
    Reply,
    Wrapper,
)
from ._stack import Middleware, RoutePlugins, compose
from ._types import ASGIApp, Message, Receive, Scope, Send
from ._websocket import WebSocket

__all__ = [
    "DISABLE_AUTOLOAD_ENV",
    "DROP",
    "ENTRY_POINT_GROUP",
    "MAX_REASON_BYTES",
    "SKIP_PLUGINS_ENV",
    "URL",
    "ASGIApp",
    "Accept",
    "AcceptResult",
    "Address",
    "Close",
    "CloseCode",
    "ClosedBy",
    "DenialResponse",
    "DenialResult",
    "Drop",
    "Headers",
    "HookImplementation",
    "HookTimer",
    "InvalidJSON",
    "InvalidUTF8",
    "Message",
    "MessageError",
    "MessageResult",
    "Middleware",
    "Plugin",
    "PluginEntryPoint",
    "PluginLoadError",
    "PluginLoadWarning",
    "PluginManager",
    "PluginState",
    "PluginStatus",
    "PluginValidationError",
    "QueryParams",
    "Receive",
    "ReceiveResult",
    "Reply",
    "RoutePlugins",
    "Scope",
    "Send",
    "State",
    "StateKey",
    "ToolkitMiddleware",
    "UnexpectedFrameType",
    "WebSocket",
    "WebSocketApp",
    "WebSocketClose",
    "WebSocketDenied",
    "WebSocketDisconnect",
    "WebSocketDisconnected",
    "WebSocketState",
    "Wrapper",
    "compose",
    "find_plugins",
    "hookimpl",
    "is_async",
    "load_plugins",
]
