"""Starlette interoperability that needs no Starlette: its exception classes as our bases when installed.

Code written for Starlette catches ``starlette.websockets.WebSocketDisconnect``;
when Starlette is importable our exceptions subclass its ones, so those
``except`` clauses keep working unchanged on a ``toolkit.WebSocket``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["DisconnectBase", "DisconnectedBase"]

if TYPE_CHECKING:
    DisconnectBase = Exception
    DisconnectedBase = RuntimeError
else:
    try:
        from starlette.websockets import WebSocketDisconnect as DisconnectBase
        from starlette.websockets import WebSocketDisconnected as DisconnectedBase
    except ImportError:  # Starlette is optional; without it the plain bases stand in
        DisconnectBase = Exception
        DisconnectedBase = RuntimeError
