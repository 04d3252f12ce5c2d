"""An in-memory WebSocket client for ASGI apps: every wait is bounded, so a test never hangs.

This is the one module of the package that needs anyio; the package imports it on first use,
because pytest loads the plugin wherever ws-toolkit and pytest are installed, anyio or not.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Literal, final

try:
    import anyio
    import anyio.lowlevel
    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
except ModuleNotFoundError as _missing:
    raise ModuleNotFoundError(
        f"toolkit_pytest's client needs {_missing.name}, from the testing extra: pip install 'ws-toolkit[testing]'",
        name=_missing.name,
    ) from _missing

from toolkit import ASGIApp, CloseCode, Message, Scope, WebSocketDisconnect

__all__ = [
    "DEFAULT_TIMEOUT",
    "AppDidNotFinish",
    "ClientDisconnected",
    "ClientFactory",
    "Connection",
    "ConnectionDenied",
    "ReceiveTimeout",
    "WebSocketClient",
    "connect",
]

#: Seconds a client waits for the app, per message and for the app to finish.
DEFAULT_TIMEOUT: Final = 5.0
#: The logger the toolkit reports plugin failures on (with the plugin's exception as the record's exc_info).
_TOOLKIT_LOGGER: Final = "toolkit"
# Close codes as plain ints in the ASGI messages the client makes, as a server's are.
_NORMAL: Final = int(CloseCode.NORMAL)
_FAILED: Final = int(CloseCode.INTERNAL_ERROR)


class ReceiveTimeout(AssertionError):
    """The app sent nothing within the client's timeout: the test fails instead of hanging."""


class AppDidNotFinish(AssertionError):
    """The app was still running a timeout after the client left; it has been cancelled."""


class ClientDisconnected(OSError):
    """Raised by the app's ``send`` once the client has gone (ASGI 2.4), as servers do."""


class ConnectionDenied(Exception):
    """The app refused the handshake instead of accepting it."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        super().__init__(f"the app denied the connection with HTTP {status}")
        #: 403 when the app closed before accepting (as servers report it), else the status it sent.
        self.status = status
        self.headers = headers
        self.body = body


def _describe(message: Message) -> str:
    kind = message.get("type")
    if kind == "websocket.send":
        data = message.get("text")
        return f"a text message {data!r:.60}" if data is not None else f"a binary message {message.get('bytes')!r:.60}"
    if kind == "websocket.close":
        return f"a close (code {message.get('code', _NORMAL)}, reason {message.get('reason') or ''!r})"
    return f"a {kind!r} message"


def _header_pairs(headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]) -> list[tuple[bytes, bytes]]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [
        (
            (name.encode("latin-1") if isinstance(name, str) else name).lower(),
            value.encode("latin-1") if isinstance(value, str) else value,
        )
        for name, value in items
    ]


def _scope(
    path: str,
    query_string: bytes | str,
    headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]],
    subprotocols: Sequence[str],
    denial_extension: bool,
) -> Scope:
    pairs = _header_pairs(headers)
    if not any(name == b"host" for name, _ in pairs):
        pairs.insert(0, (b"host", b"testserver"))
    if subprotocols:
        pairs.append((b"sec-websocket-protocol", ", ".join(subprotocols).encode("latin-1")))
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "scheme": "ws",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query_string.encode() if isinstance(query_string, str) else query_string,
        "headers": pairs,
        "subprotocols": list(subprotocols),
        "extensions": {"websocket.http.response": {}} if denial_extension else {},
        "state": {},
    }


@final
class WebSocketClient:
    """The client end of one in-memory connection; get one from :func:`connect` or the ``ws_client`` fixture.

    Each ``receive_*`` waits at most :attr:`timeout` seconds, then fails the test with
    :class:`ReceiveTimeout`. A close from the app raises ``toolkit.WebSocketDisconnect(code, reason)``.
    """

    def __init__(self, scope: Scope, timeout: float) -> None:
        #: The ASGI scope the app is called with.
        self.scope = scope
        #: Seconds each receive waits for the app.
        self.timeout = timeout
        #: The app's ``websocket.accept`` message.
        self.accept_message: Message = {}
        #: What the app raised, if it did.
        self.app_error: Exception | None = None
        self._to_app: MemoryObjectSendStream[Message]
        self._app_inbox: MemoryObjectReceiveStream[Message]
        self._from_app: MemoryObjectSendStream[Message]
        self._client_inbox: MemoryObjectReceiveStream[Message]
        self._app_done: anyio.Event
        self._app_state: Literal["connecting", "accepted", "response", "closed"] = "connecting"
        #: The disconnect the app has been sent (by the client leaving, or echoing the app's close).
        self._disconnect: Message | None = None
        #: The close the client has received from the app.
        self._closed: tuple[int, str] | None = None
        self._client_left = False

    def _start(self) -> None:
        self._to_app, self._app_inbox = anyio.create_memory_object_stream[Message](math.inf)
        self._from_app, self._client_inbox = anyio.create_memory_object_stream[Message](math.inf)
        self._app_done = anyio.Event()
        self._to_app.send_nowait({"type": "websocket.connect"})

    # --- the app's side ---------------------------------------------------------------------------

    async def _app_receive(self) -> Message:
        if self._disconnect is not None and self._app_inbox.statistics().current_buffer_used == 0:
            await anyio.lowlevel.checkpoint()  # an app looping on receive still lets the test run
            return dict(self._disconnect)  # every receive after the end reports the end, as servers do
        return await self._app_inbox.receive()

    async def _app_send(self, message: Message) -> None:
        await anyio.lowlevel.checkpoint()  # as a server's send does: an app that only sends cannot starve the test
        if self._disconnect is not None:
            raise ClientDisconnected("the client has disconnected")
        self._from_app.send_nowait(message)
        kind = message["type"]
        if kind == "websocket.accept" and self._app_state == "connecting":
            self._app_state = "accepted"
        elif kind == "websocket.close":
            self._app_state = "closed"
            self._disconnect_app(message.get("code") or _NORMAL, message.get("reason") or "")  # the client echoes it
        elif kind == "websocket.http.response.start":
            self._app_state = "response"
        elif kind == "websocket.http.response.body" and not message.get("more_body", False):
            self._app_state = "closed"
            self._disconnect_app(int(CloseCode.ABNORMAL), "")

    def _disconnect_app(self, code: int, reason: str) -> None:
        if self._disconnect is None:
            self._disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
            self._to_app.send_nowait(self._disconnect)

    async def _run_app(self, app: ASGIApp) -> None:
        error = False
        try:
            await app(self.scope, self._app_receive, self._app_send)
        except Exception as exc:
            self.app_error, error = exc, True
        finally:
            # What a server does for an app that stops without finishing the handshake or the close.
            if self._app_state == "connecting":
                self._from_app.send_nowait(
                    {"type": "websocket.http.response.start", "status": 500 if error else 403, "headers": []}
                )
                self._from_app.send_nowait({"type": "websocket.http.response.body", "body": b""})
            elif self._app_state == "response":
                self._from_app.send_nowait({"type": "websocket.http.response.body", "body": b""})
            elif self._app_state == "accepted" and self._disconnect is None:
                self._from_app.send_nowait(
                    {"type": "websocket.close", "code": _FAILED if error else _NORMAL, "reason": ""}
                )
            self._app_state = "closed"
            self._from_app.close()
            self._app_done.set()

    # --- the client's side ------------------------------------------------------------------------

    async def _next(self) -> Message:
        if self._client_left:  # the app can send nothing more: only what it sent before is left
            try:
                return self._client_inbox.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                raise RuntimeError("the client has closed the connection: there is nothing more to receive") from None
        try:
            with anyio.fail_after(self.timeout):
                return await self._client_inbox.receive()
        except TimeoutError:
            raise ReceiveTimeout(f"the app sent nothing within {self.timeout:g}s") from None
        except anyio.EndOfStream:  # the app finished after a close this client already read
            raise RuntimeError("the app has finished: there is nothing more to receive") from None

    async def _handshake(self) -> None:
        message = await self._next()
        kind = message["type"]
        if kind == "websocket.accept":
            self.accept_message = message
            return
        if kind == "websocket.close":
            raise ConnectionDenied(403, [], b"")
        if kind == "websocket.http.response.start":
            status, headers, body = message["status"], list(message.get("headers", [])), b""
            while True:
                part = await self._next()
                body += part.get("body", b"")
                if not part.get("more_body", False):
                    raise ConnectionDenied(status, headers, body)
        raise AssertionError(f"the app sent {_describe(message)} before accepting the connection")

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the app accepted with."""
        subprotocol: str | None = self.accept_message.get("subprotocol")
        return subprotocol

    @property
    def accept_headers(self) -> list[tuple[bytes, bytes]]:
        """The extra headers the app accepted with."""
        return list(self.accept_message.get("headers", []))

    async def receive(self) -> Message:
        """The app's next ASGI message (``websocket.send`` or ``websocket.close``), waiting at most ``timeout``."""
        if self._closed is not None:
            raise WebSocketDisconnect(*self._closed)
        message = await self._next()
        if message["type"] == "websocket.close":
            self._closed = (message.get("code") or _NORMAL, message.get("reason") or "")
        return message

    async def _receive_data(self) -> Message:
        message = await self.receive()
        if message["type"] == "websocket.close":
            raise WebSocketDisconnect(*(self._closed or (_NORMAL, "")))
        return message

    async def receive_text(self) -> str:
        """The next message, which must be text."""
        message = await self._receive_data()
        if message.get("text") is None:
            raise AssertionError(f"expected a text message, got {_describe(message)}")
        text: str = message["text"]
        return text

    async def receive_bytes(self) -> bytes:
        """The next message, which must be binary."""
        message = await self._receive_data()
        if message.get("bytes") is None:
            raise AssertionError(f"expected a binary message, got {_describe(message)}")
        data: bytes = message["bytes"]
        return data

    async def receive_json(self) -> Any:
        """The next message, text or binary, parsed as JSON."""
        message = await self._receive_data()
        text = message.get("text")
        return json.loads(text if text is not None else message["bytes"])

    async def _send(self, message: Message) -> None:
        await anyio.lowlevel.checkpoint()
        if self._client_left:
            raise RuntimeError("the client has closed the connection")
        if self._disconnect is None:  # after the app closed, what the client sends goes nowhere
            self._to_app.send_nowait(message)

    async def send_text(self, data: str) -> None:
        await self._send({"type": "websocket.receive", "text": data})

    async def send_bytes(self, data: bytes) -> None:
        await self._send({"type": "websocket.receive", "bytes": data})

    async def send_json(self, data: Any, mode: Literal["text", "binary"] = "text") -> None:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        await self._send(
            {"type": "websocket.receive", **({"text": text} if mode == "text" else {"bytes": text.encode()})}
        )

    async def close(self, code: int = _NORMAL, reason: str = "") -> None:
        """Leave: the app's next ``receive`` gets ``websocket.disconnect`` with this code and reason."""
        self._client_left = True
        self._disconnect_app(code, reason)

    async def assert_closed(self, code: int | None = None, reason: str | None = None) -> tuple[int, str]:
        """The app's next message is a close (with this code and reason, if given); return ``(code, reason)``."""
        try:
            message = await self.receive()
        except WebSocketDisconnect as closed:  # the close was already read
            got = (closed.code, closed.reason)
        else:
            if message["type"] != "websocket.close":
                raise AssertionError(f"expected the app to close the connection, got {_describe(message)}")
            got = self._closed or (_NORMAL, "")
        if (code is not None and got[0] != code) or (reason is not None and got[1] != reason):
            expected = f"code {'any' if code is None else code}, reason {'any' if reason is None else repr(reason)}"
            raise AssertionError(f"expected a close with {expected}; got code {got[0]}, reason {got[1]!r}")
        return got

    async def assert_nothing_received(self, wait: float = 0.05) -> None:
        """The app sends nothing for ``wait`` seconds (e.g. a plugin dropped the message)."""
        with anyio.move_on_after(wait):
            try:
                message = await self._client_inbox.receive()
            except anyio.EndOfStream:  # the app finished without sending anything more
                return
            raise AssertionError(f"expected nothing from the app, got {_describe(message)}")

    def _close_streams(self) -> None:
        for stream in (self._to_app, self._app_inbox, self._from_app, self._client_inbox):
            stream.close()


class _PluginFailures(logging.Handler):
    """Collects the plugin failures the toolkit logs (records of the ``toolkit`` logger with an exception)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.failures: list[tuple[BaseException, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == _TOOLKIT_LOGGER and record.exc_info and record.exc_info[1] is not None:
            self.failures.append((record.exc_info[1], record.getMessage()))

    def first(self) -> BaseException | None:
        """The first failure, with the toolkit's message (plugin and hook) as a note; ``None`` if none."""
        if not self.failures:
            return None
        failure, message = self.failures[0]
        failure.add_note(f"ws_client(raise_plugin_errors=True): {message}")
        return failure


@final
class Connection:
    """What :func:`connect` returns: ``async with`` it to run the app in a task beside the test."""

    def __init__(
        self, app: ASGIApp, client: WebSocketClient, raise_app_exceptions: bool, raise_plugin_errors: bool = False
    ) -> None:
        self._app = app
        self._client = client
        self._raise_app_exceptions = raise_app_exceptions
        self._plugin_failures = _PluginFailures() if raise_plugin_errors else None
        self._task_group: TaskGroup | None = None

    async def __aenter__(self) -> WebSocketClient:
        if self._plugin_failures is not None:
            logging.getLogger(_TOOLKIT_LOGGER).addHandler(self._plugin_failures)
        self._client._start()
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._client._run_app, self._app)
        try:
            await self._client._handshake()
        except BaseException as exc:
            await self.__aexit__(*sys.exc_info())
            if isinstance(exc, ConnectionDenied) and self._plugin_failures is not None:
                failure = self._plugin_failures.first()  # a plugin failed in ws_accept: that, not the 500
                if failure is not None:
                    raise failure from exc  # the denial (500) the client got is the context
            raise
        return self._client

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._task_group is not None  # noqa: S101 - entered
        client, task_group = self._client, self._task_group
        client._disconnect_app(_NORMAL, "")  # the client leaves (if it has not), so the app can finish
        hang: AppDidNotFinish | None = None
        # Only a cancellation (or KeyboardInterrupt) goes into the task group: an exception raised
        # inside it would come out wrapped in an ExceptionGroup.
        passed: tuple[type[BaseException] | None, BaseException | None, TracebackType | None] = (None, None, None)
        try:
            if exc is None or isinstance(exc, Exception):
                with anyio.move_on_after(client.timeout):
                    await client._app_done.wait()
                if not client._app_done.is_set():
                    hang = AppDidNotFinish(f"the app did not finish within {client.timeout:g}s of the client leaving")
                    task_group.cancel_scope.cancel()
            else:
                task_group.cancel_scope.cancel()
                passed = (exc_type, exc, tb)
        except BaseException as cancelled:  # cancelled from outside while waiting for the app
            task_group.cancel_scope.cancel()
            passed = (type(cancelled), cancelled, cancelled.__traceback__)
            raise
        finally:
            try:
                await task_group.__aexit__(*passed)
            finally:
                client._close_streams()
                if self._plugin_failures is not None:
                    logging.getLogger(_TOOLKIT_LOGGER).removeHandler(self._plugin_failures)
        if hang is not None:
            raise hang
        if self._plugin_failures is not None and exc is None:
            failure = self._plugin_failures.first()
            if failure is not None:
                raise failure
        if client.app_error is not None and self._raise_app_exceptions:
            raise client.app_error


def connect(
    app: ASGIApp,
    path: str = "/ws",
    *,
    query_string: bytes | str = b"",
    headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]] = (),
    subprotocols: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
    denial_extension: bool = True,
    raise_app_exceptions: bool = True,
    raise_plugin_errors: bool = False,
) -> Connection:
    """Open an in-memory WebSocket connection to ``app``: ``async with connect(app) as client: ...``.

    The app runs in a task beside the test, on whichever loop anyio runs (asyncio or trio).
    Entering waits for the handshake: it returns the client once the app accepts, or raises
    :class:`ConnectionDenied`. Leaving sends a disconnect (1000) if neither side has closed, waits
    up to ``timeout`` for the app to finish (else cancels it and raises :class:`AppDidNotFinish`),
    then re-raises what the app raised unless ``raise_app_exceptions=False``.

    ``denial_extension`` offers the "websocket.http.response" extension, so denials arrive with
    their status and body; without it a denial is a close before accepting (403).

    ``raise_plugin_errors=True`` makes a plugin's exception fail the test: the toolkit turns it into
    a close (1011) or a denial (500) and logs it on the ``toolkit`` logger; while the connection is
    open, such records are collected, and leaving the block raises the first plugin exception (with
    the plugin's and the hook's name as a note), before what the app raised. Records of any
    connection of the same process count, and a ``toolkit`` logger set above ``ERROR`` hides them.
    """
    if not timeout > 0:
        raise ValueError("timeout must be a positive number of seconds")
    scope = _scope(path, query_string, headers, subprotocols, denial_extension)
    return Connection(app, WebSocketClient(scope, timeout), raise_app_exceptions, raise_plugin_errors)


@final
class ClientFactory:
    """The ``ws_client`` fixture: :func:`connect` with the timeout from the ``ws_toolkit_timeout`` ini option."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        #: The default timeout of the clients it opens.
        self.timeout = timeout

    def __call__(
        self,
        app: ASGIApp,
        path: str = "/ws",
        *,
        query_string: bytes | str = b"",
        headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]] = (),
        subprotocols: Sequence[str] = (),
        timeout: float | None = None,
        denial_extension: bool = True,
        raise_app_exceptions: bool = True,
        raise_plugin_errors: bool = False,
    ) -> Connection:
        """``async with ws_client(app) as client: ...``; see :func:`connect`."""
        return connect(
            app,
            path,
            query_string=query_string,
            headers=headers,
            subprotocols=subprotocols,
            timeout=self.timeout if timeout is None else timeout,
            denial_extension=denial_extension,
            raise_app_exceptions=raise_app_exceptions,
            raise_plugin_errors=raise_plugin_errors,
        )
