"""``WebSocketApp``: an ASGI app that runs one endpoint function per connection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import final

from ._plugins import PluginManager
from ._types import Receive, Scope, Send
from ._websocket import WebSocket

__all__ = ["WebSocketApp"]


@final
class WebSocketApp:
    """Wrap ``async def endpoint(websocket)`` as an ASGI app with plugins attached.

    The connection is finished for the endpoint (see :meth:`WebSocket.__aexit__`):
    ``ws_close`` fires exactly once whether the endpoint returns, raises or is
    cancelled. Mount it anywhere an ASGI app goes, e.g. Starlette's
    ``WebSocketRoute("/ws", WebSocketApp(endpoint, plugins=manager))``.
    HTTP requests get 426 Upgrade Required; lifespan events are acknowledged.
    """

    __slots__ = ("_open", "endpoint", "plugins")

    def __init__(
        self, endpoint: Callable[[WebSocket], Awaitable[None]], *, plugins: PluginManager | None = None
    ) -> None:
        self.endpoint: Callable[[WebSocket], Awaitable[None]] = endpoint
        self.plugins: PluginManager | None = plugins
        self._open: dict[WebSocket, None] = {}  # insertion-ordered set

    @property
    def connections(self) -> tuple[WebSocket, ...]:
        """The connections whose endpoint is running now, oldest first.

        For a graceful shutdown: close each (``await websocket.close(1001)``) before the
        server stops. ``close()`` from another task is safe: the endpoint's next send
        raises ``WebSocketDisconnected`` and its receive returns the client's reply.
        """
        return tuple(self._open)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            async with WebSocket(scope, receive, send, plugins=self.plugins) as websocket:
                self._open[websocket] = None
                try:
                    await self.endpoint(websocket)
                finally:
                    del self._open[websocket]
        elif kind == "http":
            body = b"This endpoint speaks WebSocket only."
            headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
            await send(
                {"type": "http.response.start", "status": 426, "headers": [*headers, (b"upgrade", b"websocket")]}
            )
            await send({"type": "http.response.body", "body": body})
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
