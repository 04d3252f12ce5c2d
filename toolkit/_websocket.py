"""The WebSocket: Starlette's API over raw ASGI, with hooks at the two choke points.

Every high-level method goes through :meth:`WebSocket.receive` or
:meth:`WebSocket.send`; those two alone change state and call hooks, so no
method can bypass a plugin. docs/design.md gives the state machine and the
order in which hooks fire.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any, Final, NoReturn

from ._chains import Chains, ChainSource, HookFailure, log_hook_failure, run_async, run_observers
from ._close import Close, check_close
from ._connstate import PluginState
from ._datastructures import URL, Address, Headers, QueryParams, State, parse_cookies
from ._exceptions import UnexpectedFrameType, WebSocketDenied, WebSocketDisconnect, WebSocketDisconnected
from ._json import dumps, loads
from ._responses import DenialResponse
from ._results import DROP, Accept, ClosedBy, Reply
from ._types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["WebSocket", "WebSocketState"]


class WebSocketState(enum.Enum):
    """The state of one side of the connection; the same members and values as Starlette's."""

    #: Before the handshake: the client's ``websocket.connect`` / the app's accept or denial.
    CONNECTING = 0
    #: Handshake done, messages flow (RFC 6455 section 4).
    CONNECTED = 1
    #: Closed or denied; nothing more may be sent (or received, for the client side).
    DISCONNECTED = 2
    #: The app is sending an HTTP denial response (ASGI "websocket.http.response" extension).
    RESPONSE = 3


_CONNECTING: Final = WebSocketState.CONNECTING
_CONNECTED: Final = WebSocketState.CONNECTED
_DISCONNECTED: Final = WebSocketState.DISCONNECTED
_RESPONSE: Final = WebSocketState.RESPONSE

_INTERNAL_ERROR: Final = (1011, "internal error")
_DENIAL_EXTENSION: Final = "websocket.http.response"
#: Scope key: the plugin managers whose hooks a ``ToolkitMiddleware`` already runs on this connection.
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
    (1000) or error (1011) and reports cancellation to ``ws_close``.
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
        self.client_state = _CONNECTING
        self.application_state = _CONNECTING
        #: The plugin manager this connection runs, or None.
        self.plugins = plugins
        chains: Chains
        if plugins is None or plugins in scope.get(RUNNING_PLUGINS, ()):
            chains = {}  # none, or an enclosing ToolkitMiddleware runs this manager's hooks: once each
        else:
            chains = plugins.chains
        self._accept_chain = chains.get("ws_accept")
        self._receive_chain = chains.get("ws_receive")
        self._send_chain = chains.get("ws_send")
        self._close_chain = chains.get("ws_close")
        self._denial_chain = chains.get("ws_denial")
        self._receiving = False
        self._ended = False
        self._response_parts: list[Message] | None = None
        self._denial_status = 403  # the HTTP status a denial showed the client (403: a close before accept)
        self._plugin_state: PluginState | None = None

    # --- the scope, read-only -----------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self.scope[key]

    def __iter__(self) -> Any:
        return iter(self.scope)

    def __len__(self) -> int:
        return len(self.scope)

    # Two connections are never equal unless they are the same object, whatever their scopes.
    __eq__ = object.__eq__
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
        while True:
            if self.client_state is not _CONNECTED or self._receiving:
                return await self._receive_handshake()
            self._receiving = True
            try:
                message = await self._receive()
            finally:
                self._receiving = False
            message_type = message["type"]
            if message_type == "websocket.receive":
                chain = self._receive_chain
                if chain is None or self._ended:  # after ws_close no hook runs: the app is only draining
                    return message
                data = message.get("text")
                if data is None:
                    data = message.get("bytes")
                    if data is None:
                        raise RuntimeError('ASGI message "websocket.receive" has neither "text" nor "bytes"')
                before = self.application_state
                try:
                    run = chain.run_sync
                    result = run(self, data) if run is not None else await run_async(chain, self, data)
                except HookFailure as failure:
                    log_hook_failure(failure)
                    return await self._plugin_closed(*_INTERNAL_ERROR)
                if self.application_state is not before:  # a hook closed the connection itself
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
                    if self.application_state is not before:  # the client left, or a ws_send hook closed
                        return self._closed_message()
                    continue
                return await self._plugin_closed(result.code, result.reason)
            if message_type == "websocket.disconnect":
                return self._client_left(message)
            raise RuntimeError(
                f'Expected ASGI message "websocket.receive" or "websocket.disconnect", but got {message_type!r}'
            )

    async def _reply(self, data: str | bytes) -> None:
        """Send a ``ws_receive`` hook's :class:`Reply`, as the app's own send would go (``ws_send`` included)."""
        key = "text" if isinstance(data, str) else "bytes"
        with contextlib.suppress(WebSocketDisconnect):  # the app hears of it from this receive
            await self.send({"type": "websocket.send", key: data})

    async def _receive_handshake(self) -> Message:
        if self._receiving:
            raise RuntimeError("Another task is already receiving on this WebSocket; only one may receive at a time.")
        if self.client_state is not _CONNECTING:
            raise WebSocketDisconnected('Cannot call "receive" once a disconnect message has been received.')
        self._receiving = True
        try:
            message = await self._receive()
        finally:
            self._receiving = False
        message_type = message["type"]
        if message_type != "websocket.connect":
            raise RuntimeError(f'Expected ASGI message "websocket.connect", but got {message_type!r}')
        self.client_state = _CONNECTED
        return message

    def _client_left(self, message: Message) -> Message:
        self.client_state = _DISCONNECTED
        code = message.get("code")
        if code is None:
            message = {**message, "code": 1005}  # RFC 6455 7.1.5: no status code was present
            code = 1005
        self._end(code, message.get("reason") or "", ClosedBy.CLIENT)
        return message

    def _closed_message(self) -> Message:
        self.client_state = _DISCONNECTED
        return {"type": "websocket.disconnect", "code": self._close_code, "reason": self._close_reason}

    async def send(self, message: Message) -> None:
        """Send an ASGI message, enforcing the state machine and running the hooks.

        A close with a code that may not be sent, or a reason over 123 UTF-8
        bytes, raises ``ValueError`` and changes nothing. A failing server send
        (``OSError``) becomes ``WebSocketDisconnect(1006)``.
        """
        if self.application_state is not _CONNECTED:
            return await self._send_other_state(message)
        message_type = message["type"]
        if message_type == "websocket.send":
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
                    closed = await self._plugin_closed(*_INTERNAL_ERROR)  # what ws_close saw (1006 if it failed)
                    raise WebSocketDisconnect(closed["code"], closed["reason"]) from None
                if self.application_state is not _CONNECTED:  # a hook closed the connection itself
                    raise WebSocketDisconnect(self._close_code, self._close_reason)
                if result is not data:
                    if isinstance(result, str):
                        message = {"type": "websocket.send", "text": result}
                    elif isinstance(result, bytes):
                        message = {"type": "websocket.send", "bytes": result}
                    elif result is DROP:
                        return None
                    elif isinstance(result, Close):
                        closed = await self._plugin_closed(result.code, result.reason)
                        raise WebSocketDisconnect(closed["code"], closed["reason"])
                    else:  # pragma: no cover - the chain runner refuses Reply from ws_send
                        raise AssertionError(result)
            try:
                await self._send(message)
            except OSError:
                self.application_state = _DISCONNECTED
                self._end(1006, "", ClosedBy.CLIENT)
                raise WebSocketDisconnect(code=1006) from None
            return None
        if message_type == "websocket.close":
            code: int = message.get("code", 1000)
            reason: str = message.get("reason") or ""
            check_close(code, reason)
            self.application_state = _DISCONNECTED
            try:
                await self._send(message)
            except OSError:
                self._end(1006, "", ClosedBy.CLIENT)
                raise WebSocketDisconnect(code=1006) from None
            self._end(code, reason, ClosedBy.APP)
            return None
        raise RuntimeError(f'Expected ASGI message "websocket.send" or "websocket.close", but got {message_type!r}')

    async def _send_other_state(self, message: Message) -> None:
        state = self.application_state
        message_type = message["type"]
        if state is _CONNECTING:
            if message_type == "websocket.accept":
                await self._accept(message)
            elif message_type == "websocket.close":
                check_close(message.get("code", 1000), message.get("reason") or "")
                await self._deny(None, ClosedBy.APP, message)
            elif message_type == "websocket.http.response.start":
                self._denial_status = message["status"]
                self.application_state = _RESPONSE
                if self._denial_chain is None:
                    await self._send(message)
                else:
                    self._response_parts = [message]
            else:
                raise RuntimeError(
                    'Expected ASGI message "websocket.accept", "websocket.close" or "websocket.http.response.start", '
                    f"but got {message_type!r}"
                )
        elif state is _RESPONSE:
            if message_type != "websocket.http.response.body":
                raise RuntimeError(f'Expected ASGI message "websocket.http.response.body", but got {message_type!r}')
            more = message.get("more_body", False)
            if self._response_parts is None:
                if not more:
                    self.application_state = _DISCONNECTED
                await self._send(message)
            else:
                self._response_parts.append(message)
                if not more:
                    await self._flush_app_denial(self._response_parts)
                    return
            if not more:
                self._end(1006, "", ClosedBy.APP)
        else:
            raise WebSocketDisconnected('Cannot call "send" once a close message has been sent.')

    async def _accept(self, message: Message) -> None:
        accept = Accept(message.get("subprotocol"), tuple(message.get("headers") or ()))
        chain = self._accept_chain
        if chain is not None:
            try:
                outcome = await run_async(chain, self, accept)
            except HookFailure as failure:
                log_hook_failure(failure)
                if self.application_state is not _CONNECTING:  # a hook already closed or denied: send nothing more
                    raise WebSocketDenied(self._denial_status) from None
                status = await self._deny(DenialResponse.for_status(500), ClosedBy.PLUGIN)
                raise WebSocketDenied(status) from None
            if self.application_state is not _CONNECTING:  # a hook closed or denied by itself: never accept
                raise WebSocketDenied(self._denial_status)
            if isinstance(outcome, DenialResponse):
                status = await self._deny(outcome, ClosedBy.PLUGIN)
                raise WebSocketDenied(status)
            if outcome is not accept:
                message = {
                    "type": "websocket.accept",
                    "subprotocol": outcome.subprotocol,
                    "headers": list(outcome.headers),
                }
        self.application_state = _CONNECTED
        try:
            await self._send(message)
        except OSError:
            self.application_state = _DISCONNECTED
            self._end(1006, "", ClosedBy.CLIENT)
            raise WebSocketDisconnect(code=1006) from None

    async def _deny(self, response: DenialResponse | None, closed_by: ClosedBy, close: Message | None = None) -> int:
        """Refuse the handshake: an HTTP response through the extension, else a close (the client sees 403)."""
        if self._denial_chain is not None:
            proposed = response or DenialResponse.for_status(403)
            adjusted = run_observers(self._denial_chain, self, proposed)
            if adjusted is not proposed:  # else an app's plain close stays a plain close
                response = adjusted
        self.application_state = _DISCONNECTED
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
                await self._send(close or {"type": "websocket.close", "code": 1000, "reason": ""})
        except OSError:
            pass  # the client left mid-handshake; the denial stands either way
        self._denial_status = status
        self._end(1006, "", closed_by)
        return status

    async def _flush_app_denial(self, parts: list[Message]) -> None:
        """Send a buffered app denial after ``ws_denial`` has seen it."""
        self._response_parts = None
        self.application_state = _DISCONNECTED
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
        self._denial_status = parts[0]["status"]
        try:
            for part in parts:
                await self._send(part)
        finally:
            self._end(1006, "", ClosedBy.APP)

    async def _plugin_closed(self, code: int, reason: str) -> Message:
        """Close because a plugin asked to (or failed): send the close once, report it, tell the app."""
        self.client_state = _DISCONNECTED
        if self.application_state is _CONNECTED:
            self.application_state = _DISCONNECTED
            try:
                await self._send({"type": "websocket.close", "code": code, "reason": reason})
            except OSError:
                code, reason = 1006, ""
            self._end(code, reason, ClosedBy.PLUGIN)
        return self._closed_message()

    def _end(self, code: int, reason: str, closed_by: ClosedBy) -> None:
        """Record how the connection ended and fire ``ws_close``: once, whatever calls it later."""
        if self._ended:
            return
        self._ended = True
        self._close_code = code
        self._close_reason = reason
        if self._close_chain is not None:
            run_observers(self._close_chain, self, code, reason, closed_by)
        if self._plugin_state is not None:
            self._plugin_state.clear()

    @property
    def plugin_state(self) -> PluginState:
        """Per-connection state for plugins, keyed by :class:`toolkit.StateKey`; emptied after ``ws_close``."""
        state = self._plugin_state
        if state is None:
            state = self._plugin_state = PluginState()
        return state

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
        if self.client_state is _CONNECTING:
            await self.receive()
        await self.send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": list(headers or ())})

    def _check_connected(self) -> None:
        if self.application_state is not _CONNECTED:
            raise WebSocketDisconnected('WebSocket is not connected. Need to call "accept" first.')

    async def receive_text(self) -> str:
        """The next text message. Raises ``WebSocketDisconnect`` at the end, ``UnexpectedFrameType`` on bytes."""
        if self.application_state is not _CONNECTED:
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
        if self.application_state is not _CONNECTED:
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

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close (before accept: deny; the client sees HTTP 403). Refuses codes that may not be sent."""
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
        """Finish the connection for the app (see :meth:`_finish`); ``ws_close`` fires even if cancelled meanwhile."""
        try:
            return await self._finish(exc)
        finally:
            self._end(1006, "", ClosedBy.SERVER)  # no-op unless cancelled (or failed) before anything ended it

    async def _finish(self, exc: BaseException | None) -> bool:
        """Finish the connection for the app.

        Returned normally: close with 1000 (or deny, if never accepted).
        ``WebSocketDisconnect``: the connection already ended; swallowed.
        Other exceptions: close with 1011 (or deny with 500) and re-raise.
        Cancellation: nothing can be sent; ``ws_close`` reports 1006.
        """
        if exc is None or isinstance(exc, WebSocketDisconnect):
            if self.application_state is _CONNECTED and self.client_state is not _DISCONNECTED:
                code = 1000
                if isinstance(exc, WebSocketDisconnect):
                    with contextlib.suppress(ValueError):  # never send a code that may not be sent
                        check_close(exc.code, "")
                        code = exc.code
                await self._close_quietly(code, "", ClosedBy.APP)
            elif self.application_state is _CONNECTING:
                await self._deny(None, ClosedBy.APP)
            elif self.application_state is _RESPONSE:
                await self._close_response()
            self._end(1000, "", ClosedBy.APP)  # no-op unless nothing above ended it
            return exc is not None
        if isinstance(exc, Exception):
            if self.application_state is _CONNECTED:
                await self._close_quietly(*_INTERNAL_ERROR, ClosedBy.SERVER)
            elif self.application_state is _CONNECTING:
                await self._deny(DenialResponse.for_status(500), ClosedBy.SERVER)
            elif self.application_state is _RESPONSE:
                await self._close_response()
            self._end(*_INTERNAL_ERROR, ClosedBy.SERVER)
            return False
        self._end(1006, "", ClosedBy.SERVER)
        return False

    async def _close_quietly(self, code: int, reason: str, closed_by: ClosedBy) -> None:
        self.application_state = _DISCONNECTED
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except OSError:
            code, reason, closed_by = 1006, "", ClosedBy.CLIENT
        self._end(code, reason, closed_by)

    async def _close_response(self) -> None:
        # An app that began a denial response and stopped: end its body so the server can finish.
        with contextlib.suppress(OSError):
            await self.send({"type": "websocket.http.response.body", "body": b"", "more_body": False})
