"""The WebSocket: Starlette's API over raw ASGI, an async shell around the lifecycle machine.

Every high-level method goes through :meth:`WebSocket.receive` or
:meth:`WebSocket.send`. Those two ask the lifecycle machine (toolkit/_lifecycle.py)
what each message means, run the hooks it calls for, and do the I/O; the machine
alone changes state. docs/design.md gives the state machine and the order in
which hooks fire.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any, Final, NoReturn

from ._chains import Chains, ChainSource, HookFailure, log_hook_failure, run_async, run_observers
from ._close import Close, CloseCode
from ._connstate import PluginState
from ._datastructures import URL, Address, Headers, QueryParams, State, parse_cookies
from ._exceptions import UnexpectedFrameType, WebSocketDenied, WebSocketDisconnect, WebSocketDisconnected
from ._json import dumps, loads
from ._lifecycle import AppAction, ClientAction, Ending, Lifecycle, Outcome, WebSocketState
from ._responses import DenialResponse
from ._results import DROP, Accept, ClosedBy, Reply
from ._types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RUNNING_PLUGINS", "WebSocket"]

_CONNECTING: Final = WebSocketState.CONNECTING
_CONNECTED: Final = WebSocketState.CONNECTED
_DISCONNECTED: Final = WebSocketState.DISCONNECTED
_DATA: Final = ClientAction.DATA
_LEFT: Final = ClientAction.LEFT

_INTERNAL_ERROR: Final = Close.of(CloseCode.INTERNAL_ERROR)
_DENIAL_EXTENSION: Final = "websocket.http.response"
#: Scope key: the plugin managers whose hooks a ``ToolkitMiddleware`` already runs on this connection,
#: each with that connection's plugin state (a WebSocket of the same manager inside shares it).
RUNNING_PLUGINS: Final = "toolkit.plugins"


async def _no_receive() -> NoReturn:
    raise RuntimeError("This WebSocket was created without a receive channel.")


async def _no_send(message: Message) -> NoReturn:
    raise RuntimeError("This WebSocket was created without a send channel.")


class WebSocket(Mapping[str, Any]):
    """A WebSocket connection, drop-in for ``starlette.websockets.WebSocket``.

    ``plugins`` attaches a :class:`toolkit.PluginManager`; without it the
    connection behaves exactly like Starlette's, with clearer errors.
    Used as ``async with WebSocket(...) as ws:`` (or through
    :class:`toolkit.WebSocketApp`), it also closes for the app on return
    (1000) or error (1011) and reports cancellation to ``ws_close``. A
    connection with plugins that is dropped unfinished outside ``async with``
    reports 1006 to ``ws_close`` when it is garbage-collected, with a
    ``ResourceWarning``.
    """

    def __init__(
        self,
        scope: Scope,
        receive: Receive | None = None,
        send: Send | None = None,
        *,
        plugins: ChainSource | None = None,
    ) -> None:
        if scope.get("type") != "websocket":
            raise ValueError(f"WebSocket needs a 'websocket' scope, got {scope.get('type')!r}")
        self.scope = scope
        self._receive = receive or _no_receive
        self._send = send or _no_send
        self._machine = Lifecycle()
        #: The plugin manager this connection runs, or None.
        self.plugins = plugins
        chains: Chains
        running: Mapping[object, PluginState] = scope.get(RUNNING_PLUGINS) or {}
        shared: PluginState | None = None
        if plugins is None:
            chains = {}
        elif plugins in running:  # an enclosing ToolkitMiddleware runs this manager's hooks: once each
            chains = {}
            shared = running[plugins]  # the middleware's: what its plugins keep, the app's socket sees
        else:
            chains = plugins.chains
        self._hooked = bool(chains)
        self._accept_chain = chains.get("ws_accept")
        self._receive_chain = chains.get("ws_receive")
        self._send_chain = chains.get("ws_send")
        self._close_chain = chains.get("ws_close")
        self._denial_chain = chains.get("ws_denial")
        self._response_parts: list[Message] | None = None
        #: Per-connection state for plugins, keyed by :class:`toolkit.StateKey`; emptied right after ``ws_close``.
        self.plugin_state: PluginState = PluginState() if shared is None else shared
        #: A task is waiting in the server's receive (one at a time, unless relayed).
        self._receiving = False
        #: Data messages received from the client (before any hook; dropped ones included).
        self.messages_received: int = 0
        #: Data messages the server took from the app (after the hooks: dropped ones not included).
        self.messages_sent: int = 0
        #: The plugin whose result last ended a hook chain (written by toolkit/_chains.py; may be stale).
        self._chain_ender: str | None = None
        self._ended_by_plugin: str | None = None

    @property
    def ended_by_plugin(self) -> str | None:
        """The name of the plugin that closed, denied or failed this connection, else ``None``.

        Set when the toolkit ends the connection because of a plugin (``ClosedBy.PLUGIN``): the
        plugin whose hook returned the ``Close`` or ``DenialResponse`` (for a ``wrapper=True``
        that replaced the outcome, the outermost wrapper), or whose hook raised or returned
        something its hook may not. Readable from ``ws_denial`` and ``ws_close`` on; read-only.
        """
        return self._ended_by_plugin

    @property
    def client_state(self) -> WebSocketState:
        """What the client has done: ``CONNECTING``, ``CONNECTED`` or ``DISCONNECTED``."""
        return self._machine.client

    @client_state.setter
    def client_state(self, state: WebSocketState) -> None:  # Starlette's is a plain attribute; tests set it
        self._machine.client = state

    @property
    def application_state(self) -> WebSocketState:
        """What the app has done: ``CONNECTING``, ``CONNECTED``, ``RESPONSE`` (a denial) or ``DISCONNECTED``."""
        return self._machine.app

    @application_state.setter
    def application_state(self, state: WebSocketState) -> None:
        self._machine.app = state

    # --- the scope, read-only -----------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self.scope[key]

    def __iter__(self) -> Any:
        return iter(self.scope)

    def __len__(self) -> int:
        return len(self.scope)

    # Two connections are never equal unless they are the same object, whatever their scopes.
    def __eq__(self, value: object, /) -> bool:
        return True if value is self else NotImplemented  # as object.__eq__ (Mapping's compares items)

    __hash__ = object.__hash__

    @property
    def app(self) -> Any:
        return self.scope["app"]

    @property
    def url(self) -> URL:
        try:
            return self._url
        except AttributeError:
            self._url: URL = URL.from_scope(self.scope)
            return self._url

    @property
    def base_url(self) -> URL:
        root = self.scope.get("app_root_path", self.scope.get("root_path", ""))
        scope = {**self.scope, "path": root if root.endswith("/") else root + "/", "query_string": b""}
        return URL.from_scope(scope)

    @property
    def headers(self) -> Headers:
        try:
            return self._headers
        except AttributeError:
            self._headers: Headers = Headers(scope=self.scope)
            return self._headers

    @property
    def subprotocols(self) -> tuple[str, ...]:
        """The subprotocols the client offered, in its order; empty when it offered none.

        The scope's ``"subprotocols"`` list as the server split it (entries that are
        not strings left out); without that key, the ``Sec-WebSocket-Protocol``
        headers, split on commas, each item stripped of whitespace, empty ones dropped.
        """
        offered = self.scope.get("subprotocols")
        if offered is not None:
            return tuple(entry for entry in offered if isinstance(entry, str))
        return tuple(
            item
            for header in self.headers.getlist("sec-websocket-protocol")
            for item in (part.strip(" \t") for part in header.split(","))
            if item
        )

    @property
    def query_params(self) -> QueryParams:
        try:
            return self._query_params
        except AttributeError:
            self._query_params: QueryParams = QueryParams(self.scope.get("query_string", b""))
            return self._query_params

    @property
    def path_params(self) -> dict[str, Any]:
        params: dict[str, Any] = self.scope.get("path_params", {})
        return params

    @property
    def cookies(self) -> dict[str, str]:
        try:
            return self._cookies
        except AttributeError:
            cookies: dict[str, str] = {}
            for header in self.headers.getlist("cookie"):
                cookies.update(parse_cookies(header))
            self._cookies: dict[str, str] = cookies
            return cookies

    @property
    def client(self) -> Address | None:
        client = self.scope.get("client")
        return None if client is None else Address(*client)

    @property
    def session(self) -> dict[str, Any]:
        return self._scope_entry("session", "SessionMiddleware must be installed to access websocket.session")  # type: ignore[no-any-return]

    @property
    def auth(self) -> Any:
        return self._scope_entry("auth", "AuthenticationMiddleware must be installed to access websocket.auth")

    @property
    def user(self) -> Any:
        return self._scope_entry("user", "AuthenticationMiddleware must be installed to access websocket.user")

    def _scope_entry(self, key: str, missing: str) -> Any:
        if key not in self.scope:
            # AssertionError keeps Starlette's exception type; raised explicitly so `-O` keeps it.
            raise AssertionError(missing)
        return self.scope[key]

    @property
    def state(self) -> State:
        try:
            return self._state
        except AttributeError:
            self._state: State = State(self.scope.setdefault("state", {}))
            return self._state

    def url_for(self, name: str, /, **path_params: Any) -> Any:
        """The absolute URL of a named route (needs a Starlette router in the scope)."""
        router = self.scope.get("router") or self.scope.get("app")
        if router is None:
            raise RuntimeError("The `url_for` method can only be used inside a Starlette application or with a router.")
        return router.url_path_for(name, **path_params).make_absolute_url(base_url=self.base_url)

    # --- the choke points ---------------------------------------------------------------------

    async def receive(self) -> Message:
        """Receive the next ASGI message, enforcing the state machine and running ``ws_receive``.

        A disconnect without a code reports 1005. When a plugin closes the
        connection, a ``websocket.disconnect`` with the plugin's code is returned.
        """
        machine = self._machine
        if self._receiving and not machine.relay:
            raise RuntimeError("Another task is already receiving on this WebSocket; only one may receive at a time.")
        self._receiving = True  # until the message is the app's: hooks included (an async one may suspend)
        try:
            while True:
                connected = machine.client is _CONNECTED
                if not connected:
                    machine.check_receive()  # raises once the client has left
                message = await self._receive()
                message_type = message["type"]
                # A data message while connected changes no state: the one transition the shell takes on its own.
                if message_type != "websocket.receive" or not connected:
                    action = machine.received(message_type)
                    if action is not _DATA:
                        return self._client_left(message) if action is _LEFT else message
                self.messages_received += 1
                chain = self._receive_chain  # None after ws_close: the app is only draining
                if chain is None:
                    return message
                data = message.get("text")
                if data is None:
                    data = message.get("bytes")
                    if data is None:
                        raise RuntimeError('ASGI message "websocket.receive" has neither "text" nor "bytes"')
                before = machine.app
                try:
                    run = chain.run_sync
                    result = run(self, data) if run is not None else await run_async(chain, self, data)
                except HookFailure as failure:
                    log_hook_failure(failure)
                    self._ended_by_plugin = failure.plugin_name
                    return await self._plugin_closed(_INTERNAL_ERROR)
                if machine.app is not before:  # a hook closed the connection itself
                    return self._closed_message()
                if result is data:
                    return message
                if isinstance(result, str):
                    return {"type": "websocket.receive", "text": result}
                if isinstance(result, bytes):
                    return {"type": "websocket.receive", "bytes": result}
                if result is DROP:
                    continue
                if isinstance(result, Reply):
                    await self._reply(result.data)
                    if machine.app is not before:  # the client left, or a ws_send hook closed
                        return self._closed_message()
                    continue
                self._ended_by_plugin = self._chain_ender
                return await self._plugin_closed(result)
        finally:
            self._receiving = False

    async def _reply(self, data: str | bytes) -> None:
        """Send a ``ws_receive`` hook's :class:`Reply`, as the app's own send would go (``ws_send`` included)."""
        key = "text" if isinstance(data, str) else "bytes"
        with contextlib.suppress(WebSocketDisconnect):  # the app hears of it from this receive
            await self.send({"type": "websocket.send", key: data})

    def _client_left(self, message: Message) -> Message:
        code = message.get("code")
        if code is None:
            message = {**message, "code": CloseCode.NO_STATUS.value}  # RFC 6455 7.1.5: no status code was present
        self._report(self._machine.client_left(code, message.get("reason") or ""))
        return message

    def _closed_message(self) -> Message:
        ending = self._machine.told_closed()
        return {"type": "websocket.disconnect", "code": ending.code, "reason": ending.reason}

    async def send(self, message: Message) -> None:
        """Send an ASGI message, enforcing the state machine and running the hooks.

        A close with a code that may not be sent, or a reason over 123 UTF-8
        bytes, raises ``ValueError`` and changes nothing. A failing server send
        (``OSError``) becomes ``WebSocketDisconnect(1006)``.
        """
        machine = self._machine
        message_type = message["type"]
        # A data message while connected changes no state: the one transition the shell takes on its own.
        state = machine.app
        if message_type != "websocket.send" or state is not _CONNECTED:
            return await self._send_other(machine.app_sends(message_type), message)
        chain = self._send_chain
        if chain is not None:
            data = message.get("text")
            if data is None:
                data = message["bytes"]
            try:
                run = chain.run_sync
                result = run(self, data) if run is not None else await run_async(chain, self, data)
            except HookFailure as failure:
                log_hook_failure(failure)
                self._ended_by_plugin = failure.plugin_name
                closed = await self._plugin_closed(_INTERNAL_ERROR)  # what ws_close saw (1006 if it failed)
                raise WebSocketDisconnect(closed["code"], closed["reason"]) from None
            if machine.app is not _CONNECTED:  # a hook closed the connection itself
                closed = self._closed_message()
                raise WebSocketDisconnect(closed["code"], closed["reason"])
            if result is not data:
                if isinstance(result, str):
                    message = {"type": "websocket.send", "text": result}
                elif isinstance(result, bytes):
                    message = {"type": "websocket.send", "bytes": result}
                elif result is DROP:
                    return None
                else:  # Close: the chain's policy refuses anything else from ws_send
                    self._ended_by_plugin = self._chain_ender
                    closed = await self._plugin_closed(result)
                    raise WebSocketDisconnect(closed["code"], closed["reason"])
        try:
            await self._send(message)
        except OSError:
            raise self._vanished() from None
        self.messages_sent += 1
        return None

    def _vanished(self) -> WebSocketDisconnect:
        """The server's send raised ``OSError`` (ASGI 2.4: the client is gone): report it, and what to raise."""
        self._report(self._machine.send_failed())
        return WebSocketDisconnect(CloseCode.ABNORMAL.value)

    def _gone_mid_denial(self) -> None:
        """The server's send raised ``OSError`` during the app's denial response: the client left before it ended.

        The state stays as Starlette leaves it; only the ending is recorded, so ``ws_close`` says who ended it.
        """
        self._report(self._machine.client_vanished())

    async def _send_other(self, action: AppAction, message: Message) -> None:
        """Every app message but data while connected: the handshake, the close, a denial."""
        machine = self._machine
        if action is AppAction.CLOSE:
            code: int = message.get("code", CloseCode.NORMAL)
            reason: str = message.get("reason") or ""
            machine.closing(code, reason)
            try:
                await self._send(message)
            except OSError:
                raise self._vanished() from None
            self._report(machine.end(code, reason, ClosedBy.APP))
        elif action is AppAction.ACCEPT:
            await self._accept(message)
        elif action is AppAction.DENY:
            machine.check_close(message.get("code", CloseCode.NORMAL), message.get("reason") or "")
            await self._deny(None, ClosedBy.APP, message)
        elif action is AppAction.RESPONSE_START:
            machine.response_starts(message["status"])
            if self._denial_chain is None:
                try:
                    await self._send(message)
                except OSError:
                    self._gone_mid_denial()
                    raise  # as Starlette: the app's own response, the server's own error
            else:
                self._response_parts = [message]
        else:  # RESPONSE_BODY (SEND never comes here: it is send()'s fast path)
            last = machine.response_body(message.get("more_body", False)) is AppAction.RESPONSE_END
            parts = self._response_parts
            if parts is not None:
                parts.append(message)
                if last:
                    await self._flush_app_denial(parts)
                return
            try:
                await self._send(message)
            except OSError:
                self._gone_mid_denial()
                raise  # as Starlette: the app's own response, the server's own error
            if last:
                self._report(machine.end(CloseCode.ABNORMAL, "", ClosedBy.APP))

    async def _accept(self, message: Message) -> None:
        machine = self._machine
        chain = self._accept_chain
        if chain is not None:
            if machine.relay:  # someone else's app: its accept goes out as written unless a plugin changes it
                accept = Accept._unchecked(message.get("subprotocol"), message.get("headers"))
            else:
                accept = Accept(message.get("subprotocol"), tuple(message.get("headers") or ()))
            try:
                run = chain.run_sync
                outcome = run(self, accept) if run is not None else await run_async(chain, self, accept)
            except HookFailure as failure:
                log_hook_failure(failure)
                if machine.app is not _CONNECTING:  # a hook already closed or denied: send nothing more
                    raise WebSocketDenied(machine.denial_status) from None
                self._ended_by_plugin = failure.plugin_name
                status = await self._deny(DenialResponse.for_status(500), ClosedBy.PLUGIN)
                raise WebSocketDenied(status) from None
            if machine.app is not _CONNECTING:  # a hook closed or denied by itself: never accept
                raise WebSocketDenied(machine.denial_status)
            if isinstance(outcome, DenialResponse):
                self._ended_by_plugin = self._chain_ender
                status = await self._deny(outcome, ClosedBy.PLUGIN)
                raise WebSocketDenied(status)
            if outcome is not accept:
                message = {
                    "type": "websocket.accept",
                    "subprotocol": outcome.subprotocol,
                    "headers": list(outcome.headers),
                }
        machine.accepted()
        try:
            await self._send(message)
        except OSError:
            raise self._vanished() from None

    async def _deny(self, response: DenialResponse | None, closed_by: ClosedBy, close: Message | None = None) -> int:
        """Refuse the handshake: an HTTP response through the extension, else a close (the client sees 403)."""
        if self._denial_chain is not None:
            proposed = response or DenialResponse.for_status(403)
            adjusted = run_observers(self._denial_chain, self, proposed)
            if adjusted is not proposed:  # else an app's plain close stays a plain close
                response = adjusted
        self._machine.denying()
        status = 403
        try:
            if response is not None and self.has_denial_extension:
                await self._send(
                    {
                        "type": "websocket.http.response.start",
                        "status": response.status,
                        "headers": response.raw_headers(),
                    }
                )
                await self._send({"type": "websocket.http.response.body", "body": response.body, "more_body": False})
                status = response.status
            else:
                await self._send(close or {"type": "websocket.close", "code": CloseCode.NORMAL.value, "reason": ""})
        except OSError:
            pass  # the client left mid-handshake; the denial stands either way
        self._report(self._machine.denied(status, closed_by))
        return status

    async def _flush_app_denial(self, parts: list[Message]) -> None:
        """Send a buffered app denial after ``ws_denial`` has seen it."""
        self._response_parts = None
        start, bodies = parts[0], parts[1:]
        body = b"".join(part.get("body", b"") for part in bodies)
        try:
            response = DenialResponse(start["status"], body, tuple(start.get("headers") or ()))
        except (TypeError, ValueError):
            response = None  # not something ws_denial can describe (e.g. a 3xx): sent unchanged
        if response is not None and self._denial_chain is not None:
            adjusted = run_observers(self._denial_chain, self, response)
            if adjusted is not response:
                parts = [
                    {
                        "type": "websocket.http.response.start",
                        "status": adjusted.status,
                        "headers": adjusted.raw_headers(),
                    },
                    {"type": "websocket.http.response.body", "body": adjusted.body, "more_body": False},
                ]
        try:
            for part in parts:
                await self._send(part)
        finally:
            self._report(self._machine.denied(parts[0]["status"], ClosedBy.APP))

    async def _plugin_closed(self, close: Close) -> Message:
        """Close because a plugin asked to (or failed): send the close once, report it, tell the app."""
        machine = self._machine
        if machine.plugin_closes():
            try:
                await self._send({"type": "websocket.close", "code": close.code, "reason": close.reason})
            except OSError:
                self._report(machine.send_failed())  # the client vanished before the plugin's close could go
            else:
                self._report(machine.end(close.code, close.reason, ClosedBy.PLUGIN))
        return self._closed_message()

    def _report(self, ending: Ending | None) -> None:
        """Fire ``ws_close`` for the connection's ending (``None``: it ended before), then free the plugin state."""
        if ending is None:
            return
        close = self._close_chain
        # No hook runs after ws_close: the chains go first, so nothing ws_close does can reach another hook.
        self._accept_chain = self._receive_chain = self._send_chain = self._close_chain = self._denial_chain = None
        if close is not None:
            run_observers(close, self, ending.code, ending.reason, ending.closed_by)
        self.plugin_state.clear()

    @property
    def has_denial_extension(self) -> bool:
        """Whether the server can send an HTTP response instead of accepting ("websocket.http.response")."""
        extensions = self.scope.get("extensions") or {}
        return _DENIAL_EXTENSION in extensions

    # --- Starlette's high-level API -----------------------------------------------------------

    async def accept(
        self, subprotocol: str | None = None, headers: Iterable[tuple[bytes, bytes]] | None = None
    ) -> None:
        """Accept the connection. Raises :class:`toolkit.WebSocketDenied` if a plugin refuses it."""
        if self._machine.client is _CONNECTING:
            await self.receive()
        await self.send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": list(headers or ())})

    def _check_connected(self) -> None:
        if self._machine.app is not _CONNECTED:
            raise WebSocketDisconnected('WebSocket is not connected. Need to call "accept" first.')

    async def receive_text(self) -> str:
        """The next text message. Raises ``WebSocketDisconnect`` at the end, ``UnexpectedFrameType`` on bytes."""
        if self._machine.app is not _CONNECTED:
            self._check_connected()
        message = await self.receive()
        if message["type"] == "websocket.receive":
            text = message.get("text")
            if text is not None:
                return text  # type: ignore[no-any-return]
            raise UnexpectedFrameType("expected a text message, got a binary one")
        raise WebSocketDisconnect(message["code"], message.get("reason"))

    async def receive_bytes(self) -> bytes:
        """The next binary message. Raises ``WebSocketDisconnect`` at the end, ``UnexpectedFrameType`` on text."""
        if self._machine.app is not _CONNECTED:
            self._check_connected()
        message = await self.receive()
        if message["type"] == "websocket.receive":
            data = message.get("bytes")
            if data is not None:
                return data  # type: ignore[no-any-return]
            raise UnexpectedFrameType("expected a binary message, got a text one")
        raise WebSocketDisconnect(message["code"], message.get("reason"))

    async def receive_json(self, mode: str = "text") -> Any:
        """The next message parsed as JSON, from a text (``mode="text"``) or binary frame.

        Raises :class:`toolkit.InvalidJSON` (close code 1003) or
        :class:`toolkit.InvalidUTF8` (1007), both ``ValueError``.
        """
        if mode == "text":
            return loads(await self.receive_text())
        if mode == "binary":
            return loads(await self.receive_bytes())
        raise RuntimeError('The "mode" argument should be "text" or "binary".')

    async def iter_text(self) -> AsyncIterator[str]:
        try:
            while True:
                yield await self.receive_text()
        except WebSocketDisconnect:
            pass

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        try:
            while True:
                yield await self.receive_bytes()
        except WebSocketDisconnect:
            pass

    async def iter_json(self) -> AsyncIterator[Any]:
        try:
            while True:
                yield await self.receive_json()
        except WebSocketDisconnect:
            pass

    async def send_text(self, data: str) -> None:
        await self.send({"type": "websocket.send", "text": data})

    async def send_bytes(self, data: bytes) -> None:
        await self.send({"type": "websocket.send", "bytes": data})

    async def send_json(self, data: Any, mode: str = "text") -> None:
        """Send ``data`` as compact JSON with non-ASCII kept, in a text or binary frame."""
        if mode == "text":
            await self.send({"type": "websocket.send", "text": dumps(data)})
        elif mode == "binary":
            await self.send({"type": "websocket.send", "bytes": dumps(data).encode("utf-8")})
        else:
            raise RuntimeError('The "mode" argument should be "text" or "binary".')

    async def close(self, code: int = CloseCode.NORMAL.value, reason: str | None = None) -> None:
        """Close (before accept: deny; the client sees HTTP 403). Refuses codes that may not be sent.

        Once the app's side is closed (by an earlier ``close()``, another task, a plugin
        or a denial), it does nothing: Starlette's raises ``WebSocketDisconnected`` there,
        which turns every race between two closers into an error. A raw
        ``send({"type": "websocket.close"})`` still raises, as Starlette's does.
        """
        machine = self._machine
        if machine.app is _DISCONNECTED:
            machine.check_close(code, reason or "")  # a code that may not be sent is a bug either way
            return
        await self.send({"type": "websocket.close", "code": code, "reason": reason or ""})

    async def send_denial_response(self, response: ASGIApp) -> None:
        """Refuse the handshake with an HTTP response (any ASGI response app, e.g. Starlette's ``Response``).

        Raises ``RuntimeError`` if the server lacks the "websocket.http.response" extension.
        """
        if not self.has_denial_extension:
            raise RuntimeError("The server doesn't support the Websocket Denial Response extension.")
        await response(self.scope, self.receive, self.send)

    # --- lifetime -----------------------------------------------------------------------------

    async def __aenter__(self) -> WebSocket:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        """Finish the connection for the app; ``ws_close`` fires exactly once, even if cancelled meanwhile.

        Returned normally: close with 1000 (or deny, if never accepted).
        ``WebSocketDisconnect``: the connection already ended; swallowed.
        Other exceptions: close with 1011 (or deny with 500) and re-raise.
        Cancellation: nothing can be sent; ``ws_close`` reports 1006.
        """
        if exc is None:
            outcome = Outcome.RETURNED
        elif isinstance(exc, WebSocketDisconnect):
            outcome = Outcome.DISCONNECTED
        elif isinstance(exc, Exception):
            outcome = Outcome.RAISED
        else:
            outcome = Outcome.CANCELLED
        try:
            await self._finish(outcome, exc)
        finally:
            # No-op unless the finishing itself was cancelled or failed before anything ended the connection.
            self._report(self._machine.finished(Outcome.CANCELLED))
        return outcome is Outcome.DISCONNECTED

    async def _finish(self, outcome: Outcome, exc: BaseException | None) -> None:
        action = self._machine.finish(outcome)
        raised = outcome is Outcome.RAISED
        if action is AppAction.CLOSE:
            close = Close()
            if raised:
                close = _INTERNAL_ERROR
            elif isinstance(exc, WebSocketDisconnect):
                with contextlib.suppress(TypeError, ValueError):  # never send a code that may not be sent
                    close = Close(exc.code)
            await self._close_for_app(close, ClosedBy.SERVER if raised else ClosedBy.APP)
        elif action is AppAction.DENY:
            await self._deny(
                DenialResponse.for_status(500) if raised else None, ClosedBy.SERVER if raised else ClosedBy.APP
            )
        elif action is AppAction.RESPONSE_END:
            # An app that began a denial response and stopped: end its body so the server can finish.
            with contextlib.suppress(OSError):
                await self.send({"type": "websocket.http.response.body", "body": b"", "more_body": False})
        self._report(self._machine.finished(outcome))

    async def _close_for_app(self, close: Close, closed_by: ClosedBy) -> None:
        machine = self._machine
        machine.closing(close.code, close.reason)
        try:
            await self._send({"type": "websocket.close", "code": close.code, "reason": close.reason})
        except OSError:
            self._report(machine.send_failed())
        else:
            self._report(machine.end(close.code, close.reason, closed_by))

    def __del__(self) -> None:
        # A connection with plugins, started and dropped unfinished outside `async with`: its ws_close
        # would never fire (a ConnectionLimit slot never given back). Report it now, and say how to fix it.
        machine: Lifecycle | None = getattr(self, "_machine", None)
        if machine is None or not self._hooked or machine.ending is not None:
            return
        if machine.client is _CONNECTING and machine.app is _CONNECTING:  # never started: no hook ran
            return
        self._report(machine.end(CloseCode.ABNORMAL, "", ClosedBy.SERVER))
        warnings.warn(
            "a toolkit.WebSocket with plugins was dropped before its connection ended; ws_close reported 1006. "
            "Use `async with toolkit.WebSocket(...) as websocket:` or toolkit.WebSocketApp to finish it.",
            ResourceWarning,
            stacklevel=1,
            source=self,
        )
