"""``ToolkitMiddleware``: the toolkit's hooks and plugins around any ASGI app.

For a websocket scope the middleware opens a :class:`WebSocket` on the server's
``receive`` and ``send`` and gives the app raw channels that go through it, so
every message the app receives or sends passes the state machine and the hooks,
whatever WebSocket class the app uses (Starlette's, FastAPI's, Litestar's, none).
The connection is finished as :class:`WebSocketApp` finishes it: ``ws_close``
fires exactly once. docs/middleware.md says what changes for the app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeAlias, final

from ._close import check_close
from ._exceptions import WebSocketDisconnect
from ._plugins import PluginManager
from ._types import Message
from ._websocket import RUNNING_PLUGINS, WebSocket, WebSocketState

__all__ = ["ToolkitMiddleware"]

#: Any ASGI app, whatever types its framework gives the three arguments: Starlette's mappings,
#: Litestar's TypedDicts. ``toolkit.ASGIApp`` is the mappings kind, which a TypedDict is not (for mypy).
_AnyApp: TypeAlias = Callable[[Any, Any, Any], Awaitable[None]]

_DISCONNECTED: Final = WebSocketState.DISCONNECTED
#: Messages after which the app's own side of the connection is over.
_APP_ENDINGS: Final = frozenset({"websocket.close", "websocket.http.response.body"})


@final
class ToolkitMiddleware:
    """Run a :class:`toolkit.PluginManager`'s hooks around any ASGI app.

    ``ToolkitMiddleware(app, plugins=manager)`` is itself an ASGI app. HTTP and
    lifespan scopes go to ``app`` untouched. A websocket scope goes to ``app``
    with its ``receive`` and ``send`` routed through a :class:`toolkit.WebSocket`,
    so plugins see, change, drop and close whatever the app's own WebSocket class
    does, and deny its handshake. The connection is finished for the app as
    :class:`toolkit.WebSocketApp` finishes it, so ``ws_close`` fires exactly once.

    With no hook implemented (an empty manager) the app is called directly, with
    the server's own channels: nothing changes, byte for byte. A ``WebSocket`` or
    ``WebSocketApp`` inside the app built with the *same* manager leaves the hooks
    to the middleware, so each still fires once per event; another manager runs
    its own.
    """

    __slots__ = ("app", "plugins")

    def __init__(self, app: _AnyApp, *, plugins: PluginManager) -> None:
        self.app = app
        self.plugins = plugins

    # Typed Any, as `_AnyApp`: every framework's typed middleware slot takes this class.
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        plugins = self.plugins
        running: tuple[PluginManager, ...] = scope.get(RUNNING_PLUGINS, ())
        if plugins in running or not _has_hooks(plugins):  # nothing to add, or added further out
            await self.app(scope, receive, send)
            return
        websocket = WebSocket(scope, receive, send, plugins=plugins)
        # Marked after the WebSocket took its hooks: the app's own WebSocket of this manager runs none.
        scope[RUNNING_PLUGINS] = (*running, plugins)
        relay = _Relay(websocket)
        async with websocket:
            await self.app(scope, relay.receive, relay.send)


def _has_hooks(plugins: PluginManager) -> bool:
    return bool(plugins.chains)


@final
class _Relay:
    """The app's ``receive`` and ``send``: through the WebSocket, and past its end as a server would be.

    When the toolkit ends the connection under the app (a plugin closes or denies
    it, or fails; the server's send fails), the app learns it the way it learns
    that a client left: a ``websocket.disconnect`` from ``receive``, or
    ``WebSocketDisconnect`` from ``send``; its own ``websocket.close`` afterwards
    is a no-op. The middleware's ``async with`` swallows a ``WebSocketDisconnect``
    the app lets escape, so the server never sees one.
    """

    __slots__ = ("_app_ended", "_code", "_reason", "websocket")

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self._app_ended = False  # the app closed or denied the connection itself
        # How the connection ended, as the app was last told (1006: it ended before the app heard why).
        self._code = 1006
        self._reason = ""

    async def receive(self) -> Message:
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            self._code, self._reason = message["code"], message.get("reason") or ""
        return message

    async def send(self, message: Message) -> None:
        websocket = self.websocket
        message_type = message["type"]
        if websocket.application_state is _DISCONNECTED and not self._app_ended:
            # Ended by the toolkit, not the app: a close is already done; anything else finds the connection gone.
            if message_type == "websocket.close":
                return
            raise WebSocketDisconnect(self._code, self._reason)
        if message_type == "websocket.close" and websocket.client_state is _DISCONNECTED and not _sendable(message):
            # The client has left, so no frame will carry this close; a code like 1005 (echoed back from the
            # client's codeless close, as Litestar does) may not be sent anyway. The connection is over either way.
            return
        try:
            await websocket.send(message)
        except WebSocketDisconnect as exc:  # a plugin closed, denied (WebSocketDenied) or failed; the client left
            self._code, self._reason = exc.code, exc.reason
            raise
        if message_type in _APP_ENDINGS and websocket.application_state is _DISCONNECTED:
            self._app_ended = True


def _sendable(close: Message) -> bool:
    try:
        check_close(close.get("code", 1000), close.get("reason") or "")
    except (TypeError, ValueError):
        return False
    return True
