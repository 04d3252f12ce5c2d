"""``ToolkitMiddleware``: the toolkit's hooks and plugins around any ASGI app.

For a websocket scope the middleware opens a :class:`WebSocket` on the server's ``receive`` and ``send``
and gives the app raw channels that relay through it, so plugins see every message the app receives or
sends, whatever WebSocket class the app uses (Starlette's, FastAPI's, Litestar's, none), and may change,
drop, close or deny. The relay is transparent when plugins only observe: the server gets exactly the
messages the app sent, in order (the very same objects), the app gets exactly the server's messages, and
what the app raises goes on unchanged. The toolkit's own checks apply to what plugins do, never to the
app: a :class:`WebSocket` used directly stays strict. ``ws_close`` fires exactly once per connection.
docs/middleware.md says what plugins that act change for the app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any, Final, TypeAlias, final

from ._chains import run_observers
from ._close import CloseCode, may_send
from ._connstate import PluginState
from ._exceptions import WebSocketDisconnect
from ._lifecycle import Outcome, WebSocketState
from ._plugins import PluginManager
from ._responses import DenialResponse
from ._results import ClosedBy
from ._types import Message
from ._websocket import RUNNING_PLUGINS, WebSocket

__all__ = ["ToolkitMiddleware"]

#: Any ASGI app, whatever types its framework gives the three arguments: Starlette's mappings,
#: Litestar's TypedDicts. ``toolkit.ASGIApp`` is the mappings kind, which a TypedDict is not (for mypy).
_AnyApp: TypeAlias = Callable[[Any, Any, Any], Awaitable[None]]

_CONNECTING: Final = WebSocketState.CONNECTING
_CONNECTED: Final = WebSocketState.CONNECTED
_DISCONNECTED: Final = WebSocketState.DISCONNECTED
_RESPONSE: Final = WebSocketState.RESPONSE
#: Messages after which the app's own side of the connection is over.
_APP_ENDINGS: Final = frozenset({"websocket.close", "websocket.http.response.body"})

#: The server message a relay is handing its WebSocket, per task (see :meth:`_Relay.receive`).
_PENDING: Final[ContextVar[tuple[_Relay, Message] | None]] = ContextVar("toolkit_relay_pending", default=None)


@final
class ToolkitMiddleware:
    """Run a :class:`toolkit.PluginManager`'s hooks around any ASGI app.

    ``ToolkitMiddleware(app, plugins=manager)`` is itself an ASGI app. HTTP and
    lifespan scopes go to ``app`` untouched. A websocket scope goes to ``app``
    (as a shallow copy: the server's dict is never changed) with its ``receive``
    and ``send`` relayed through a :class:`toolkit.WebSocket`, so plugins see,
    change, drop and close whatever the app's own WebSocket class does, and deny
    its handshake. With plugins that only observe, the app and the server see
    exactly what they would see without the middleware; ``ws_close`` fires
    exactly once however the app ends.

    With no hook implemented (an empty manager) the app is called directly, with
    the server's own scope and channels. A ``WebSocket`` or ``WebSocketApp``
    inside the app built with the *same* manager leaves the hooks to the
    middleware, so each still fires once per event; another manager runs its own.
    """

    __slots__ = ("app", "plugins")

    def __init__(self, app: _AnyApp, *, plugins: PluginManager) -> None:
        self.app: _AnyApp = app
        self.plugins: PluginManager = plugins

    # Typed Any, as `_AnyApp`: every framework's typed middleware slot takes this class.
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        plugins = self.plugins
        running: Mapping[object, PluginState] = scope.get(RUNNING_PLUGINS) or {}
        if plugins in running or not plugins.chains:  # nothing to add, or added further out
            await self.app(scope, receive, send)
            return
        # The app's own copy: what plugins put in it (websocket.user) is what the app reads, and the
        # server's dict stays as the server made it.
        app_scope = dict(scope)
        relay = _Relay(app_scope, receive, send, plugins)
        # Marked after the WebSocket took its hooks: the app's own WebSocket of this manager runs none.
        # With its plugin state: a WebSocket of this manager inside sees what the plugins keep per connection.
        app_scope[RUNNING_PLUGINS] = {**running, plugins: relay.websocket.plugin_state}
        try:
            await self.app(app_scope, relay.receive, relay.send)
        except BaseException as exc:
            if not await relay.finish(exc):
                raise
        else:
            await relay.finish(None)


class _Again(Exception):
    """The WebSocket asked its channel for another message (after ``DROP`` or a ``Reply``).

    The relay takes it from the server itself, outside the WebSocket, so that any
    number of the app's tasks may wait in ``receive`` at once, as ASGI allows.
    """


@final
class _Relay:
    """The app's ``receive`` and ``send``: through the WebSocket's hooks, otherwise straight to the server.

    A message goes through the WebSocket when the toolkit has something to do with
    it (a handshake step, data, the app's denial) and its state machine expects it;
    anything else (a message out of order, after the connection ended, of a type
    the toolkit does not know) goes between the app and the server unchanged, for
    the server to judge. The app's close goes to the server as the app wrote it;
    only what ``ws_close`` is told is normalised.

    When the toolkit ends the connection under the app (a plugin closes or denies
    it, or fails), the app learns it the way it learns that a client left: a
    ``websocket.disconnect`` from ``receive``, or ``WebSocketDisconnect`` from
    ``send``; its own ``websocket.close`` afterwards is a no-op, and a
    ``WebSocketDisconnect`` it lets escape is swallowed.
    """

    __slots__ = ("_app_ended", "_broken", "_code", "_failed", "_reason", "_server_receive", "_server_send", "websocket")

    def __init__(self, scope: Any, receive: Any, send: Any, plugins: PluginManager) -> None:
        self._server_receive: Callable[[], Awaitable[Message]] = receive
        self._server_send: Callable[[Message], Awaitable[None]] = send
        self._app_ended = False  # the app closed or denied the connection itself
        self._broken = False  # the server failed to send one of the app's messages: the app talks to it directly
        self._failed: Exception | None = None  # what the server's send last raised
        # How the toolkit ended the connection, as the app was told (1006: before the app heard why).
        self._code: int = CloseCode.ABNORMAL
        self._reason = ""
        self.websocket = WebSocket(scope, self._pending_message, self._send_to_server, plugins=plugins)
        self.websocket._machine.relay = True  # someone else's app: its closes go out as written

    # --- the WebSocket's own channels ------------------------------------------------------------------

    async def _pending_message(self) -> Message:
        pending = _PENDING.get()
        if pending is None or pending[0] is not self:
            raise _Again
        _PENDING.set(None)
        return pending[1]

    async def _send_to_server(self, message: Message) -> None:
        try:
            await self._server_send(message)
        except Exception as exc:
            self._failed = exc
            raise

    def _take_failure(self) -> Exception | None:
        failed, self._failed = self._failed, None
        return failed

    def _ended_by_toolkit(self) -> bool:
        return self.websocket.application_state is _DISCONNECTED and not self._app_ended and not self._broken

    # --- receive ---------------------------------------------------------------------------------------

    async def receive(self) -> Message:
        websocket = self.websocket
        while True:
            if websocket.client_state is _DISCONNECTED and self._ended_by_toolkit():
                # A plugin closed and the app was told: no server message is due. Raises WebSocketDisconnected.
                return await websocket.receive()
            message: Message = await self._server_receive()
            state = websocket.client_state
            if state is _DISCONNECTED and self._ended_by_toolkit():
                # A plugin closed (on another task's message) while this task waited: told as that task was.
                return {"type": "websocket.disconnect", "code": self._code, "reason": self._reason}
            message_type = message.get("type")
            handed = message
            if state is _CONNECTING:
                if message_type != "websocket.connect":
                    return message
            elif state is not _CONNECTED:  # the client has left: what the app asks now is for the server
                return message
            elif message_type == "websocket.disconnect":
                handed = _disconnect_for_hooks(message)
            elif message_type != "websocket.receive" or (message.get("text") is None and message.get("bytes") is None):
                return message
            token = _PENDING.set((self, handed))
            try:
                result = await websocket.receive()
            except _Again:  # dropped, or answered with a Reply: the app waits for the next message
                continue
            finally:
                _PENDING.reset(token)
            if result is handed:
                return message  # the server's own message, even where ws_close was told a normalised copy
            if result["type"] == "websocket.disconnect":  # a plugin closed, or failed
                self._code, self._reason = result["code"], result["reason"]
            return result

    # --- send ------------------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        websocket = self.websocket
        message_type = message.get("type")
        if self._ended_by_toolkit():
            # Ended by the toolkit, not the app: a close is already done; anything else finds the connection gone.
            if message_type == "websocket.close":
                return
            raise WebSocketDisconnect(self._code, self._reason)
        state = websocket.application_state
        if self._broken or state is _DISCONNECTED:
            through = False  # after the app's own close or denial, or a failed send: between app and server
        elif state is _CONNECTED:
            if message_type == "websocket.close":
                await self._close(message)
                return
            through = message_type == "websocket.send" and (
                message.get("text") is not None or message.get("bytes") is not None
            )
        elif state is _CONNECTING:
            if message_type == "websocket.close":
                await self._deny_by_close(message)
                return
            through = message_type in ("websocket.accept", "websocket.http.response.start")
        else:  # _RESPONSE
            through = message_type == "websocket.http.response.body"
        if not through:
            await self._server_send(message)
            return
        self._failed = None
        try:
            await websocket.send(message)
        except WebSocketDisconnect as exc:
            failed = self._take_failure()
            if failed is None or exc.__context__ is not failed:  # a plugin closed or denied, or failed
                self._code, self._reason = exc.code, exc.reason
                raise
        else:
            if message_type in _APP_ENDINGS and websocket.application_state is _DISCONNECTED:
                self._app_ended = True
            return
        # The server's send failed (the toolkit reported 1006): the app gets the server's exception.
        self._broken = True
        raise failed

    async def _close(self, message: Message) -> None:
        """The app's close: to the server exactly as written; ``ws_close`` gets a code and a str reason."""
        websocket = self.websocket
        machine = websocket._machine
        code = _code_for_hooks(message.get("code"))
        reason = message.get("reason")
        reason = reason if isinstance(reason, str) else ""
        machine.closing(code, reason)  # a relay: not checked, the server judges the app's close
        self._app_ended = True
        try:
            await self._server_send(message)
        except OSError:
            websocket._report(machine.send_failed())  # as the WebSocket reports a close that could not go out
            raise
        websocket._report(machine.end(code, reason, ClosedBy.APP))

    async def _deny_by_close(self, message: Message) -> None:
        """The app's close before accept: ``ws_denial`` sees it; it goes out as written unless a plugin changes it."""
        self._app_ended = True
        self._failed = None
        await self.websocket._deny(None, ClosedBy.APP, message)
        failed = self._take_failure()
        if failed is not None:  # the WebSocket shrugs off a failed denial; the app hears of it as without us
            self._broken = True
            raise failed

    # --- the end ---------------------------------------------------------------------------------------

    async def finish(self, exc: BaseException | None) -> bool:
        """Fire ``ws_close`` if nothing has, sending nothing of the toolkit's own; True to swallow ``exc``.

        Returned: reported as the app's (1000; a denial with 1006 if never accepted).
        Raised: reported as the server's (1011; 1006 if never accepted), ``exc`` goes on.
        Cancelled: 1006, nothing awaited. A ``WebSocketDisconnect`` the toolkit raised
        into the app after a plugin ended the connection is swallowed.
        """
        websocket = self.websocket
        machine = websocket._machine
        try:
            if exc is not None and not isinstance(exc, Exception):
                return False  # cancelled: reported below
            if isinstance(exc, WebSocketDisconnect) and self._ended_by_toolkit():
                return True
            outcome = Outcome.RETURNED if exc is None else Outcome.RAISED
            state = machine.app
            if state is _CONNECTING:
                await self._unanswered(403 if exc is None else 500, ClosedBy.APP if exc is None else ClosedBy.SERVER)
            elif state is _RESPONSE:
                await self._unfinished_response(ClosedBy.APP if exc is None else ClosedBy.SERVER)
            websocket._report(machine.finished(outcome))  # no-op if something above ended it
            return False
        finally:
            # No-op unless cancelled (or failed) before anything ended it.
            websocket._report(machine.finished(Outcome.CANCELLED))

    async def _unanswered(self, status: int, closed_by: ClosedBy) -> None:
        """The app never answered the handshake; the server will. ``ws_denial`` sees the status it proposes.

        Nothing is sent unless a plugin replaces the denial; then the replacement goes out.
        """
        websocket = self.websocket
        chain = websocket._denial_chain
        response: DenialResponse | None = None
        if chain is not None:
            proposed = DenialResponse.for_status(status)
            adjusted = run_observers(chain, websocket, proposed)
            if adjusted is not proposed:
                response = adjusted
        websocket._machine.denying()
        if response is not None:
            try:
                if websocket.has_denial_extension:
                    start = {"type": "websocket.http.response.start", "status": response.status}
                    await self._server_send({**start, "headers": response.raw_headers()})
                    await self._server_send(
                        {"type": "websocket.http.response.body", "body": response.body, "more_body": False}
                    )
                else:
                    await self._server_send({"type": "websocket.close", "code": CloseCode.NORMAL.value, "reason": ""})
            except OSError:
                pass  # the client left mid-handshake; the denial stands either way
        websocket._report(websocket._machine.denied(403 if response is None else response.status, closed_by))

    async def _unfinished_response(self, closed_by: ClosedBy) -> None:
        """The app began a denial response and never finished it: what it sent goes out; the server ends it."""
        websocket = self.websocket
        parts = websocket._response_parts  # held for ws_denial until the body was complete
        websocket._response_parts = None
        machine = websocket._machine
        machine.denying()
        try:
            for part in parts or ():
                await self._server_send(part)
        except OSError:
            pass
        websocket._report(machine.denied(machine.denial_status, closed_by))


def _code_for_hooks(code: object) -> int:
    """The app's close code as ``ws_close`` is told it: none is a normal close (ASGI's default); a code no
    close frame may carry (a bool, a non-integer, a reserved or out-of-range number) is reported as abnormal."""
    if code is None:
        return CloseCode.NORMAL.value
    return int(code) if may_send(code) else CloseCode.ABNORMAL.value


def _disconnect_for_hooks(message: Message) -> Message:
    """The server's disconnect as ``ws_close`` is told it: 1005 without a code (RFC 6455 7.1.5), a str reason."""
    code = message.get("code")
    reason = message.get("reason")
    if isinstance(code, int) and (reason is None or isinstance(reason, str)):
        return message
    return {
        **message,
        "code": int(code) if isinstance(code, int) else CloseCode.NO_STATUS.value,
        "reason": reason if isinstance(reason, str) else "",
    }
