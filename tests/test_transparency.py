"""The transparency corpus (issue 9): with plugins that only observe, ``ToolkitMiddleware`` changes nothing.

Each case is a real app (raw ASGI, Starlette, FastAPI, Litestar) driven by its framework's own test
client, once as it is and once wrapped in ``ToolkitMiddleware`` with a plugin that implements every hook
and returns None. An outermost :class:`Wire` records every ASGI message crossing the server boundary, in
both directions and in order, with the types of their values, and how the app call ended. Both runs must
give the same transcript and the test client must see the same exception. The middleware run must also
fire ``ws_close`` exactly once, with the case's expected code and ``closed_by`` (what the hook is told is
normalised for the hook only), and leave the scope dict the server passed as it was.

Each case also pins what its unwrapped run does (the client's exception, the messages the app sent), so
a case cannot pass by exercising nothing. Everything is bounded: the app call runs under a deadline, the
client waits for each message under a deadline, and every script waits (bounded) for the app to finish
before the client leaves, so nothing depends on how the client's teardown races the app.
"""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
import warnings
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

import anyio
import anyio.lowlevel
import pytest
from fastapi import FastAPI, WebSocketDisconnect
from fastapi import WebSocket as FastAPIWebSocket
from fastapi import WebSocketException as FastAPIWebSocketException
from litestar import Litestar, websocket_stream
from litestar import WebSocket as LitestarWebSocket
from litestar import websocket as litestar_websocket
from litestar.exceptions import NotAuthorizedException
from litestar.exceptions import WebSocketDisconnect as LitestarWebSocketDisconnect
from litestar.handlers import send_websocket_stream
from litestar.testing import TestClient as LitestarTestClient
from litestar.testing import WebSocketTestSession as LitestarSession
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning, WebSocketException
from starlette.responses import PlainTextResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket as StarletteWebSocket

import toolkit
from toolkit import Accept, ClosedBy, DenialResponse, Message, PluginManager, ToolkitMiddleware, WebSocket

with warnings.catch_warnings():
    # Starlette 1.10 prefers the httpx2 fork and warns on import when only httpx is installed; httpx still works.
    warnings.filterwarnings("ignore", "Using `httpx`", StarletteDeprecationWarning)
    from starlette.testclient import TestClient as StarletteTestClient
    from starlette.testclient import WebSocketTestSession as StarletteSession

#: Seconds any one step may take: the app call, one message to the client, the app finishing.
TIMEOUT: Final = 5.0

Framework = Literal["asgi", "starlette", "fastapi", "litestar"]
Backend = Literal["asyncio", "trio"]

# --- the server boundary ----------------------------------------------------------------------------


def typed(value: Any) -> Any:
    """``value`` with the type of every leaf, so 1000 and ``CloseCode.NORMAL`` or "" and None differ."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return (type(value).__name__, [typed(item) for item in value])
    return (type(value).__name__, value)


def describe(exc: BaseException) -> tuple[Any, ...]:
    """An exception as a test can compare it: its type, text and the attributes clients read."""
    attributes = ("code", "reason", "status_code", "content", "detail")
    details = tuple((name, typed(getattr(exc, name))) for name in attributes if hasattr(exc, name))
    if isinstance(exc, BaseExceptionGroup):
        details += (("exceptions", tuple(describe(inner) for inner in exc.exceptions)),)
    return (f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc), details)


HANDSHAKE_ANSWERS: Final = frozenset({"websocket.accept", "websocket.close", "websocket.http.response.start"})


class Wire:
    """The outermost layer, standing for the server: records what crosses the boundary.

    It hands the app the ``websocket.connect`` at once, as servers do. The app call runs under a deadline.
    An app that returns without answering the handshake is answered as a server would answer it (uvicorn
    with an HTTP error), since the test clients would wait forever; that answer is logged as the
    server's, never as the app's.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.log: list[tuple[str, Any]] = []
        #: The scope the server passed, and a shallow copy taken when the app was called.
        self.scopes: list[tuple[dict[str, Any], dict[str, Any]]] = []
        #: Set when the app call has ended, however it ended (a thread event: the client waits on it).
        self.done = threading.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        self.scopes.append((scope, dict(scope)))
        answered = False
        # Servers queue the websocket.connect before they call the app (uvicorn does): so does this one, so
        # that an app's first receive never waits on the test client's thread.
        first: Message | None = await receive()

        async def wire_receive() -> Message:
            nonlocal first
            if first is not None:
                message, first = first, None
            else:
                message = await receive()
            self.log.append(("server->app", typed(copy.deepcopy(message))))
            return message

        async def wire_send(message: Message) -> None:
            nonlocal answered
            self.log.append(("app->server", typed(copy.deepcopy(message))))
            answered = answered or message.get("type") in HANDSHAKE_ANSWERS
            try:
                await send(message)
            except BaseException as exc:
                self.log.append(("server send raised", describe(exc)))
                raise

        try:
            with anyio.fail_after(TIMEOUT):
                await self.app(scope, wire_receive, wire_send)
        except BaseException as exc:
            self.log.append(("app raised", describe(exc)))
            raise
        else:
            self.log.append(("app returned", None))
            if not answered:
                self.log.append(("server answers the handshake", 403))
                if "websocket.http.response" in (scope.get("extensions") or {}):
                    await send({"type": "websocket.http.response.start", "status": 403, "headers": []})
                    await send({"type": "websocket.http.response.body", "body": b"", "more_body": False})
                else:
                    await send({"type": "websocket.close", "code": 1000, "reason": ""})
        finally:
            self.done.set()


# --- the client side ---------------------------------------------------------------------------------


class Peer(Protocol):
    """The client, as the scripts drive it: raw ASGI messages, each wait bounded."""

    def send(self, message: Message) -> None: ...

    def receive(self) -> Message: ...

    def wait_done(self) -> None: ...


class ClientTimeout(AssertionError):
    """The client waited longer than TIMEOUT for a message or for the app to finish."""


@dataclass
class StarlettePeer:
    session: StarletteSession
    wire: Wire

    def send(self, message: Message) -> None:
        self.session.send(message)

    def receive(self) -> Message:
        stream = self.session._send_rx  # the test client's own receive has no deadline

        async def bounded() -> Message:
            with anyio.move_on_after(TIMEOUT):
                return await stream.receive()
            raise ClientTimeout("no message from the app")

        return self.session.portal.call(bounded)

    def wait_done(self) -> None:
        if not self.wire.done.wait(TIMEOUT):
            raise ClientTimeout("the app is still running")


@dataclass
class LitestarPeer:
    session: LitestarSession
    wire: Wire

    def send(self, message: Message) -> None:
        self.session.receive_queue.put(message)  # type: ignore[arg-type]  # raw messages, codeless ones too

    def receive(self) -> Message:
        try:
            message = self.session.send_queue.get(timeout=TIMEOUT)
        except queue.Empty:
            raise ClientTimeout("no message from the app") from None
        if isinstance(message, BaseException):
            raise message  # as Litestar's own receive does
        return dict(message)

    def wait_done(self) -> None:
        if not self.wire.done.wait(TIMEOUT):
            raise ClientTimeout("the app is still running")


Script = Callable[[Peer], None]


def text(data: str) -> Message:
    return {"type": "websocket.receive", "text": data}


def binary(data: bytes) -> Message:
    return {"type": "websocket.receive", "bytes": data}


def leave(code: int | None = 1000, reason: str | None = None) -> Message:
    message: Message = {"type": "websocket.disconnect"}
    if code is not None:
        message["code"] = code
    if reason is not None:
        message["reason"] = reason
    return message


LEAVE: Final = leave()


def exchange(*messages: Message, first: int = 0, replies: int | None = None, then: Message | None = LEAVE) -> Script:
    """Read ``first`` messages; send each message and read one reply to it (or ``replies`` in all, after
    them); send ``then`` (leave, by default); wait for the app to finish."""

    def script(peer: Peer) -> None:
        for _ in range(first):
            peer.receive()
        for message in messages:
            peer.send(message)
            if replies is None:
                peer.receive()
        for _ in range(replies or 0):
            peer.receive()
        if then is not None:
            peer.send(dict(then))
        peer.wait_done()

    return script


def read(count: int) -> Script:
    """Read ``count`` messages (a close included), then wait for the app to finish."""
    return exchange(replies=count, then=None)


def just_wait(peer: Peer) -> None:
    peer.wait_done()


# --- the observing plugins ---------------------------------------------------------------------------


class Observer(toolkit.Plugin):
    """Implements every hook, returning None; counts ``ws_close``."""

    def __init__(self) -> None:
        self.closes: list[tuple[int, str, ClosedBy]] = []

    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> None:
        return None

    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> None:
        return None

    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> None:
        return None

    def ws_close(self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None:
        self.closes.append((code, reason, closed_by))

    def ws_denial(self, *, websocket: WebSocket, response: DenialResponse) -> None:
        return None


class AsyncObserver(Observer):
    """As :class:`Observer`, with ``async def`` for the three hooks that may await (and a checkpoint in each)."""

    async def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> None:  # type: ignore[override]
        await anyio.lowlevel.checkpoint()

    async def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> None:  # type: ignore[override]
        await anyio.lowlevel.checkpoint()

    async def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> None:  # type: ignore[override]
        await anyio.lowlevel.checkpoint()


class WrapperObserver:
    """Every hook as a ``wrapper=True`` generator that passes the result through."""

    def __init__(self) -> None:
        self.closes: list[tuple[int, str, ClosedBy]] = []

    @toolkit.hookimpl(wrapper=True)
    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Generator[None, Any, Any]:
        return (yield)

    @toolkit.hookimpl(wrapper=True)
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Generator[None, Any, Any]:
        return (yield)

    @toolkit.hookimpl(wrapper=True)
    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> Generator[None, Any, Any]:
        return (yield)

    @toolkit.hookimpl(wrapper=True)
    def ws_close(
        self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy
    ) -> Generator[None, Any, Any]:
        self.closes.append((code, reason, closed_by))
        return (yield)

    @toolkit.hookimpl(wrapper=True)
    def ws_denial(self, *, websocket: WebSocket, response: DenialResponse) -> Generator[None, Any, Any]:
        return (yield)


OBSERVERS: Final[dict[str, Callable[[], Observer | WrapperObserver]]] = {
    "sync": Observer,
    "async": AsyncObserver,
    "wrapper": WrapperObserver,
}


# --- raw ASGI apps ------------------------------------------------------------------------------------

ACCEPT: Final[Message] = {"type": "websocket.accept"}


async def raw_echo(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "websocket.accept", "subprotocol": "chat", "headers": [(b"x-echo", b"1")]})
    while (message := await receive())["type"] == "websocket.receive":
        # Both keys, one None, as uvicorn sends them and the ASGI spec allows.
        await send({"type": "websocket.send", "bytes": message.get("bytes"), "text": message.get("text")})


async def raw_raise_before_accept(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    raise LookupError("raised before accept")


async def raw_raise_after_accept(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send(ACCEPT)
    await send({"type": "websocket.send", "text": "hello"})
    raise LookupError("raised after accept")


async def raw_return_without_accept(scope: Any, receive: Any, send: Any) -> None:
    await receive()


async def raw_return_after_accept(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send(ACCEPT)
    await send({"type": "websocket.send", "text": "bye"})


async def raw_concurrent_receivers(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send(ACCEPT)

    async def reader() -> None:
        message = await receive()
        await send({"type": "websocket.send", "text": f"got {message['text']}"})

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        tg.start_soon(reader)
        await anyio.lowlevel.checkpoint()  # both readers now wait in receive()
        await send({"type": "websocket.send", "text": "ready"})  # and only then does the client send
    await send({"type": "websocket.close", "code": 1000, "reason": "both read"})


def raw_closing(close: Message, *, accept: bool = True) -> Callable[[Any, Any, Any], Any]:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        if accept:
            await send(ACCEPT)
        await send(close)

    return app


async def raw_echo_close_code(scope: Any, receive: Any, send: Any) -> None:
    # Answers the client's close with its own code, as Litestar's exception handler does: 1005 after a
    # codeless close, which may not be sent.
    await receive()
    await send(ACCEPT)
    message = await receive()
    await send({"type": "websocket.close", "code": message.get("code", 1005), "reason": "echo"})


async def raw_denial(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    start = {"type": "websocket.http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]}
    await send(start)
    await send({"type": "websocket.http.response.body", "body": b"no", "more_body": True})
    await send({"type": "websocket.http.response.body", "body": b"pe"})


STREAMED: Final = 40


async def raw_stream(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send(ACCEPT)
    for i in range(STREAMED):
        if i % 2:
            await send({"type": "websocket.send", "bytes": i.to_bytes(2, "big")})
        else:
            await send({"type": "websocket.send", "text": str(i)})
    await send({"type": "websocket.close", "code": 1000})


async def raw_disconnect_mid_stream(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send(ACCEPT)
    for i in range(3):
        await send({"type": "websocket.send", "text": str(i)})
    await receive()  # the client leaves after reading three


# --- Starlette ------------------------------------------------------------------------------------------


def on_starlette(endpoint: Callable[[StarletteWebSocket], Any]) -> Callable[[], Any]:
    return lambda: Starlette(routes=[WebSocketRoute("/ws", endpoint)])


async def st_echo_text(websocket: StarletteWebSocket) -> None:
    await websocket.accept(subprotocol="chat")
    async for data in websocket.iter_text():
        await websocket.send_text(data)


async def st_echo_bytes(websocket: StarletteWebSocket) -> None:
    await websocket.accept()
    async for data in websocket.iter_bytes():
        await websocket.send_bytes(data)


async def st_raise_before_accept(websocket: StarletteWebSocket) -> None:
    raise LookupError("raised before accept")


async def st_raise_after_accept(websocket: StarletteWebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    raise LookupError("raised after accept")


async def st_return_without_accept(websocket: StarletteWebSocket) -> None:
    return None


async def st_return_after_accept(websocket: StarletteWebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("bye")


async def st_concurrent_receivers(websocket: StarletteWebSocket) -> None:
    await websocket.accept()

    async def reader() -> None:
        await websocket.send_text(f"got {await websocket.receive_text()}")

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        tg.start_soon(reader)
        await anyio.lowlevel.checkpoint()  # both readers now wait in receive()
        await websocket.send_text("ready")
    await websocket.close(1000, "both read")


async def st_denial_response(websocket: StarletteWebSocket) -> None:
    await websocket.send_denial_response(PlainTextResponse("nope", status_code=403))


async def st_disconnect_escapes(websocket: StarletteWebSocket) -> None:
    await websocket.accept()
    while True:  # Starlette's WebSocketDisconnect goes on to the server
        await websocket.send_text(await websocket.receive_text())


async def st_close_reason(websocket: StarletteWebSocket) -> None:
    await websocket.accept()
    await websocket.close(4001, "custom")


async def st_stream(websocket: StarletteWebSocket) -> None:
    await websocket.accept()
    for i in range(STREAMED):
        await websocket.send_json({"i": i})
    await websocket.close()


async def st_websocket_exception(websocket: StarletteWebSocket) -> None:
    await websocket.accept()
    raise WebSocketException(code=1008, reason="policy")


async def st_websocket_exception_before_accept(websocket: StarletteWebSocket) -> None:
    raise WebSocketException(code=1008, reason="not you")


# --- FastAPI -------------------------------------------------------------------------------------------


def fastapi_validation() -> FastAPI:
    app = FastAPI()

    @app.websocket("/ws")
    async def endpoint(websocket: FastAPIWebSocket, count: int) -> None:  # pragma: no cover - never valid
        await websocket.accept()

    return app


def fastapi_echo_json() -> FastAPI:
    app = FastAPI()

    @app.websocket("/ws")
    async def endpoint(websocket: FastAPIWebSocket) -> None:
        await websocket.accept()
        async for data in websocket.iter_json():
            await websocket.send_json({"echo": data})

    return app


def fastapi_raise_after_accept() -> FastAPI:
    app = FastAPI()

    @app.websocket("/ws")
    async def endpoint(websocket: FastAPIWebSocket) -> None:
        await websocket.accept()
        raise LookupError("raised after accept")

    return app


def fastapi_return_after_accept() -> FastAPI:
    app = FastAPI()

    @app.websocket("/ws")
    async def endpoint(websocket: FastAPIWebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("bye")

    return app


def on_fastapi(endpoint: Callable[[FastAPIWebSocket], Any]) -> Callable[[], Any]:
    def build() -> FastAPI:
        app = FastAPI()
        app.websocket("/ws")(endpoint)
        return app

    return build


async def fa_websocket_exception_before_accept(websocket: FastAPIWebSocket) -> None:
    raise FastAPIWebSocketException(code=1008, reason="not you")


async def fa_websocket_exception(websocket: FastAPIWebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    raise FastAPIWebSocketException(code=4003, reason="policy")


async def fa_denial_response(websocket: FastAPIWebSocket) -> None:
    # FastAPI's WebSocket is Starlette's, denial responses included.
    await websocket.send_denial_response(PlainTextResponse("nope", status_code=401))


async def fa_stream(websocket: FastAPIWebSocket) -> None:
    await websocket.accept()
    for i in range(STREAMED):
        if i % 2:
            await websocket.send_bytes(i.to_bytes(2, "big"))
        else:
            await websocket.send_json({"i": i})
    await websocket.close()


async def fa_client_leaves_mid_stream(websocket: FastAPIWebSocket) -> None:
    await websocket.accept()
    for i in range(3):
        await websocket.send_text(str(i))
    with contextlib.suppress(WebSocketDisconnect):
        await websocket.receive_text()  # the client leaves after reading three


# --- Litestar ------------------------------------------------------------------------------------------


def on_litestar(handler: Any) -> Callable[[], Any]:
    return lambda: Litestar([handler], logging_config=None)


@litestar_websocket("/ws")
async def ls_echo(socket: LitestarWebSocket[Any, Any, Any]) -> None:
    await socket.accept()
    async for data in socket.iter_data("text"):
        await socket.send_data(data)


@litestar_websocket("/ws")
async def ls_echo_uncaught(socket: LitestarWebSocket[Any, Any, Any]) -> None:
    await socket.accept()
    while True:  # the disconnect escapes: Litestar's exception handler answers with a close of its code
        await socket.send_text(await socket.receive_text())


@litestar_websocket("/ws")
async def ls_echo_bytes(socket: LitestarWebSocket[Any, Any, Any]) -> None:
    await socket.accept()
    async for data in socket.iter_data("binary"):
        await socket.send_bytes(data)


@websocket_stream("/ws")
async def ls_stream() -> AsyncGenerator[str, None]:
    for i in range(STREAMED):
        yield str(i)


@websocket_stream("/ws")
async def ls_stream_until_left() -> AsyncGenerator[str, None]:
    for i in range(3):
        yield str(i)
    await anyio.sleep_forever()  # the client leaves; the stream's disconnect listener cancels this
    yield "never"  # pragma: no cover


@litestar_websocket("/ws")
async def ls_stream_and_listen(socket: LitestarWebSocket[Any, Any, Any]) -> None:
    # Streams while send_websocket_stream listens for the disconnect in a second task and a third task of
    # the handler waits for a message too: two receivers at once. Whichever gets the disconnect ends it all.
    await socket.accept()

    async def numbers() -> AsyncGenerator[str, None]:
        yield "ready"
        await anyio.sleep_forever()
        yield "never"  # pragma: no cover

    async def reader(scope: anyio.CancelScope) -> None:
        with contextlib.suppress(LitestarWebSocketDisconnect):
            await socket.receive_data("text")
        scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader, tg.cancel_scope)
        await send_websocket_stream(socket, numbers(), listen_for_disconnect=True)
        tg.cancel_scope.cancel()


@litestar_websocket("/ws")
async def ls_concurrent_receivers(socket: LitestarWebSocket[Any, Any, Any]) -> None:
    await socket.accept()

    async def reader() -> None:
        await socket.send_text(f"got {await socket.receive_text()}")

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        tg.start_soon(reader)
        await anyio.lowlevel.checkpoint()  # both readers now wait in receive()
        await socket.send_text("ready")
    await socket.close(1000, "both read")


@litestar_websocket("/ws")
async def ls_raise_before_accept(socket: LitestarWebSocket[Any, Any, Any]) -> None:
    raise LookupError("raised before accept")


@litestar_websocket("/ws")
async def ls_raise_after_accept(socket: LitestarWebSocket[Any, Any, Any]) -> None:
    await socket.accept()
    await socket.send_text("hello")
    raise LookupError("raised after accept")


@litestar_websocket("/ws")
async def ls_return_without_accept(socket: LitestarWebSocket[Any, Any, Any]) -> None:
    return None


@litestar_websocket("/ws")
async def ls_return_after_accept(socket: LitestarWebSocket[Any, Any, Any]) -> None:
    await socket.accept()
    await socket.send_text("bye")


@litestar_websocket("/ws")
async def ls_close_reason(socket: LitestarWebSocket[Any, Any, Any]) -> None:
    await socket.accept()
    await socket.close(4001, "custom")


def ls_refuse(connection: Any, handler: Any) -> None:
    raise NotAuthorizedException("not you")


# Litestar 2 has no denial response on websockets (nothing in it sends websocket.http.response.*): a
# guard's refusal before accept is answered by its exception handler with a close, code 4500 whatever the
# exception's status and the exception's detail as reason, which the client sees as a disconnect.
@litestar_websocket("/ws", guards=[ls_refuse])
async def ls_guard_refuses(socket: LitestarWebSocket[Any, Any, Any]) -> None:  # pragma: no cover - refused
    await socket.accept()


# --- the corpus ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    framework: Framework
    build: Callable[[], Any]
    script: Script
    #: The unwrapped run, pinned: the test client's exception (type name or None), the types the app sent.
    client: str | None
    sent: tuple[str, ...]
    #: What ``ws_close`` is told in the middleware run: (code, closed_by).
    hook_close: tuple[int, ClosedBy]
    path: str = "/ws"
    subprotocols: tuple[str, ...] = ()
    backends: tuple[Backend, ...] = ("asyncio", "trio")


#: Litestar's ``@websocket_stream`` handler accepts from its stream task while its disconnect listener
#: already receives, so on trio (which randomises task order) the listener may take the connect and the
#: handshake hang, with or without the middleware. Those cases run on asyncio; ``litestar-stream-while-
#: reading`` streams with ``send_websocket_stream`` after an explicit accept on both backends.
ASYNCIO_ONLY: Final[tuple[Backend, ...]] = ("asyncio",)


A: Final = "websocket.accept"
S: Final = "websocket.send"
C: Final = "websocket.close"
START: Final = "websocket.http.response.start"
BODY: Final = "websocket.http.response.body"
DISCONNECT: Final = "WebSocketDisconnect"
DENIED: Final = "WebSocketDenialResponse"
APP, CLIENT, SERVER = ClosedBy.APP, ClosedBy.CLIENT, ClosedBy.SERVER

ECHO_BOTH: Final = exchange(
    {"type": "websocket.receive", "text": "hello", "bytes": None},
    {"type": "websocket.receive", "bytes": b"\x00\xff", "text": None},
    then=leave(1001, "going"),
)

#: Two tasks of the app wait in receive(); the client sends once they both do ("ready").
CONCURRENT: Final = exchange(text("one"), text("two"), first=1, replies=None, then=None)

CASES: Final[dict[str, Case]] = {
    # raw ASGI
    "asgi-echo-text-and-binary": Case(
        "asgi", lambda: raw_echo, ECHO_BOTH, None, (A, S, S), (1001, CLIENT), subprotocols=("chat",)
    ),
    "asgi-raise-before-accept": Case(
        "asgi", lambda: raw_raise_before_accept, just_wait, "LookupError", (), (1006, SERVER)
    ),
    "asgi-raise-after-accept": Case(
        "asgi", lambda: raw_raise_after_accept, read(1), "LookupError", (A, S), (1011, SERVER)
    ),
    "asgi-return-without-accept": Case("asgi", lambda: raw_return_without_accept, just_wait, DENIED, (), (1006, APP)),
    "asgi-return-after-accept": Case("asgi", lambda: raw_return_after_accept, read(1), None, (A, S), (1000, APP)),
    "asgi-concurrent-receivers": Case(
        "asgi",
        lambda: raw_concurrent_receivers,
        CONCURRENT,
        None,
        (A, S, S, S, C),
        (1000, APP),
    ),
    "asgi-close-without-code": Case(
        "asgi", lambda: raw_closing({"type": "websocket.close"}), read(1), None, (A, C), (1000, APP)
    ),
    "asgi-close-reason-none": Case(
        "asgi",
        lambda: raw_closing({"type": "websocket.close", "code": 4000, "reason": None}),
        read(1),
        None,
        (A, C),
        (4000, APP),
    ),
    "asgi-close-reason-not-str": Case(
        "asgi",
        lambda: raw_closing({"type": "websocket.close", "code": 4000, "reason": [{"loc": "q"}]}),
        read(1),
        None,
        (A, C),
        (4000, APP),
    ),
    "asgi-close-unsendable-code-while-connected": Case(
        "asgi",
        lambda: raw_closing({"type": "websocket.close", "code": 1006, "reason": ""}),
        read(1),
        None,
        (A, C),
        (1006, APP),
    ),
    "asgi-close-1005-echoed-after-codeless-leave": Case(
        "asgi", lambda: raw_echo_close_code, exchange(replies=0, then=leave(None)), None, (A, C), (1005, CLIENT)
    ),
    "asgi-close-before-accept": Case(
        "asgi",
        lambda: raw_closing({"type": "websocket.close", "code": 1008, "reason": "go away"}, accept=False),
        just_wait,
        DISCONNECT,
        (C,),
        (1006, APP),
    ),
    "asgi-close-before-accept-reason-not-str": Case(
        "asgi",
        lambda: raw_closing({"type": "websocket.close", "code": 1008, "reason": ["x"]}, accept=False),
        just_wait,
        DISCONNECT,
        (C,),
        (1006, APP),
    ),
    "asgi-denial-response-in-parts": Case(
        "asgi", lambda: raw_denial, just_wait, DENIED, (START, BODY, BODY), (1006, APP)
    ),
    "asgi-stream-text-and-binary": Case(
        "asgi", lambda: raw_stream, read(STREAMED + 1), None, (A, *[S] * STREAMED, C), (1000, APP)
    ),
    "asgi-client-leaves-mid-stream": Case(
        "asgi",
        lambda: raw_disconnect_mid_stream,
        exchange(replies=3, then=leave(1001)),
        None,
        (A, S, S, S),
        (1001, CLIENT),
    ),
    # Starlette
    "starlette-echo-text": Case(
        "starlette",
        on_starlette(st_echo_text),
        exchange(text("a"), text("é")),
        None,
        (A, S, S),
        (1000, CLIENT),
        subprotocols=("chat",),
    ),
    "starlette-echo-bytes": Case(
        "starlette",
        on_starlette(st_echo_bytes),
        exchange(binary(b"a"), binary(b"\x00")),
        None,
        (A, S, S),
        (1000, CLIENT),
    ),
    "starlette-raise-before-accept": Case(
        "starlette", on_starlette(st_raise_before_accept), just_wait, "LookupError", (), (1006, SERVER)
    ),
    "starlette-raise-after-accept": Case(
        "starlette", on_starlette(st_raise_after_accept), read(1), "LookupError", (A, S), (1011, SERVER)
    ),
    "starlette-return-without-accept": Case(
        "starlette", on_starlette(st_return_without_accept), just_wait, DENIED, (), (1006, APP)
    ),
    "starlette-return-after-accept": Case(
        "starlette", on_starlette(st_return_after_accept), read(1), None, (A, S), (1000, APP)
    ),
    "starlette-concurrent-receivers": Case(
        "starlette",
        on_starlette(st_concurrent_receivers),
        CONCURRENT,
        None,
        (A, S, S, S, C),
        (1000, APP),
    ),
    "starlette-send-denial-response": Case(
        "starlette", on_starlette(st_denial_response), just_wait, DENIED, (START, BODY), (1006, APP)
    ),
    "starlette-disconnect-escapes": Case(
        "starlette",
        on_starlette(st_disconnect_escapes),
        exchange(text("a"), then=leave(1001, "bye")),
        DISCONNECT,
        (A, S),
        (1001, CLIENT),
    ),
    "starlette-close-with-reason": Case("starlette", on_starlette(st_close_reason), read(1), None, (A, C), (4001, APP)),
    "starlette-stream": Case(
        "starlette", on_starlette(st_stream), read(STREAMED + 1), None, (A, *[S] * STREAMED, C), (1000, APP)
    ),
    "starlette-websocket-exception": Case(
        "starlette", on_starlette(st_websocket_exception), read(1), None, (A, C), (1008, APP)
    ),
    "starlette-websocket-exception-before-accept": Case(
        "starlette", on_starlette(st_websocket_exception_before_accept), just_wait, DISCONNECT, (C,), (1006, APP)
    ),
    # FastAPI
    "fastapi-dependency-validation-close": Case(
        "fastapi", fastapi_validation, just_wait, DISCONNECT, (C,), (1006, APP), path="/ws?count=many"
    ),
    "fastapi-echo-json": Case(
        "fastapi", fastapi_echo_json, exchange(text('{"a": 1}'), text("[2]")), None, (A, S, S), (1000, CLIENT)
    ),
    "fastapi-raise-after-accept": Case(
        "fastapi", fastapi_raise_after_accept, just_wait, "LookupError", (A,), (1011, SERVER)
    ),
    "fastapi-return-after-accept": Case("fastapi", fastapi_return_after_accept, read(1), None, (A, S), (1000, APP)),
    # FastAPI's WebSocket is Starlette's: the same endpoints, routed by FastAPI.
    "fastapi-raise-before-accept": Case(
        "fastapi", on_fastapi(st_raise_before_accept), just_wait, "LookupError", (), (1006, SERVER)
    ),
    "fastapi-return-without-accept": Case(
        "fastapi", on_fastapi(st_return_without_accept), just_wait, DENIED, (), (1006, APP)
    ),
    "fastapi-concurrent-receivers": Case(
        "fastapi", on_fastapi(st_concurrent_receivers), CONCURRENT, None, (A, S, S, S, C), (1000, APP)
    ),
    "fastapi-websocket-exception-before-accept": Case(
        "fastapi", on_fastapi(fa_websocket_exception_before_accept), just_wait, DISCONNECT, (C,), (1006, APP)
    ),
    "fastapi-websocket-exception-after-accept": Case(
        "fastapi", on_fastapi(fa_websocket_exception), read(2), None, (A, S, C), (4003, APP)
    ),
    "fastapi-send-denial-response": Case(
        "fastapi", on_fastapi(fa_denial_response), just_wait, DENIED, (START, BODY), (1006, APP)
    ),
    "fastapi-stream": Case(
        "fastapi", on_fastapi(fa_stream), read(STREAMED + 1), None, (A, *[S] * STREAMED, C), (1000, APP)
    ),
    "fastapi-client-leaves-mid-stream": Case(
        "fastapi",
        on_fastapi(fa_client_leaves_mid_stream),
        exchange(replies=3, then=leave(1001)),
        None,
        (A, S, S, S),
        (1001, CLIENT),
    ),
    # Litestar
    "litestar-echo": Case(
        "litestar", on_litestar(ls_echo), exchange(text("a"), text("b")), None, (A, S, S), (1000, CLIENT)
    ),
    "litestar-echo-bytes": Case(
        "litestar",
        on_litestar(ls_echo_bytes),
        exchange(binary(b"a"), binary(b"\x00")),
        None,
        (A, S, S),
        (1000, CLIENT),
    ),
    "litestar-disconnect-answered-with-its-code": Case(
        "litestar",
        on_litestar(ls_echo_uncaught),
        exchange(text("a"), then=leave(1001)),
        None,
        (A, S, C),
        (1001, CLIENT),
    ),
    "litestar-codeless-disconnect": Case(
        "litestar",
        on_litestar(ls_echo_uncaught),
        exchange(text("a"), then=leave(None)),
        None,
        (A, S, C),
        (1005, CLIENT),
    ),
    "litestar-websocket-stream": Case(
        "litestar",
        on_litestar(ls_stream),
        read(STREAMED + 1),
        None,
        (A, *[S] * STREAMED, C),
        (1000, APP),
        backends=ASYNCIO_ONLY,
    ),
    "litestar-client-leaves-mid-stream": Case(
        "litestar",
        on_litestar(ls_stream_until_left),
        exchange(replies=3, then=leave(1001)),
        None,
        (A, S, S, S),
        (1001, CLIENT),
        backends=ASYNCIO_ONLY,
    ),
    "litestar-stream-while-reading": Case(
        "litestar",
        on_litestar(ls_stream_and_listen),
        exchange(replies=1, then=leave(1001)),
        None,
        (A, S),
        (1001, CLIENT),
    ),
    "litestar-concurrent-receivers": Case(
        "litestar",
        on_litestar(ls_concurrent_receivers),
        CONCURRENT,
        None,
        (A, S, S, S, C),
        (1000, APP),
    ),
    "litestar-raise-before-accept": Case(
        "litestar", on_litestar(ls_raise_before_accept), just_wait, DISCONNECT, (C,), (1006, APP)
    ),
    "litestar-raise-after-accept": Case(
        "litestar", on_litestar(ls_raise_after_accept), read(2), None, (A, S, C), (4500, APP)
    ),
    "litestar-guard-refuses-before-accept": Case(
        "litestar", on_litestar(ls_guard_refuses), just_wait, DISCONNECT, (C,), (1006, APP)
    ),
    "litestar-return-without-accept": Case(
        "litestar", on_litestar(ls_return_without_accept), just_wait, DISCONNECT, (), (1006, APP)
    ),
    "litestar-return-after-accept": Case(
        "litestar", on_litestar(ls_return_after_accept), read(1), None, (A, S), (1000, APP)
    ),
    "litestar-close-with-reason": Case("litestar", on_litestar(ls_close_reason), read(1), None, (A, C), (4001, APP)),
}


# --- running a case ------------------------------------------------------------------------------------


@dataclass
class Run:
    wire: list[tuple[str, Any]]
    #: What escaped the test client's ``with websocket_connect(...)`` block, or None.
    client: tuple[Any, ...] | None
    scopes: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)

    def client_type(self) -> str | None:
        return None if self.client is None else str(self.client[0]).rsplit(".", 1)[-1]

    def sent_types(self) -> tuple[str, ...]:
        return tuple(entry[1]["type"][1] for entry in self.wire if entry[0] == "app->server")


def run(case: Case, backend: Backend, plugins: PluginManager | None) -> Run:
    app = case.build()
    wire = Wire(app if plugins is None else ToolkitMiddleware(app, plugins=plugins))
    outcome: tuple[Any, ...] | None = None
    try:
        if case.framework == "litestar":
            litestar_client = LitestarTestClient(wire, backend=backend, timeout=TIMEOUT)
            with litestar_client.websocket_connect(case.path, subprotocols=list(case.subprotocols)) as ls_session:
                case.script(LitestarPeer(ls_session, wire))
        else:
            starlette_client = StarletteTestClient(wire, backend=backend)
            with starlette_client.websocket_connect(case.path, subprotocols=list(case.subprotocols)) as session:
                case.script(StarlettePeer(session, wire))
    except Exception as exc:
        outcome = describe(exc)
    if not wire.done.wait(TIMEOUT):  # pragma: no cover - the clients wait for the app themselves
        raise ClientTimeout("the app is still running after the client left")
    return Run(list(wire.log), outcome, wire.scopes)


_BASELINES: dict[tuple[str, Backend], Run] = {}


def baseline(name: str, backend: Backend) -> Run:
    """The unwrapped run of a case; computed once per backend (it does not depend on the plugins)."""
    key = (name, backend)
    if key not in _BASELINES:
        _BASELINES[key] = run(CASES[name], backend, None)
    return _BASELINES[key]


RUNS: Final = [
    pytest.param(name, backend, id=f"{name}-{backend}") for name, case in CASES.items() for backend in case.backends
]


@pytest.mark.parametrize("observer", sorted(OBSERVERS))
@pytest.mark.parametrize(("name", "backend"), RUNS)
def test_observing_plugins_change_nothing(name: str, backend: Backend, observer: str) -> None:
    case = CASES[name]
    direct = baseline(name, backend)
    # The case does what it says without the middleware.
    assert (direct.client_type(), direct.sent_types()) == (case.client, case.sent), direct.wire

    plugin = OBSERVERS[observer]()
    wrapped = run(case, backend, PluginManager(plugin))
    assert wrapped.wire == direct.wire
    assert wrapped.client == direct.client
    # ws_close fired once, told a str reason and the case's code and closer.
    [(code, reason, closed_by)] = plugin.closes
    assert isinstance(reason, str)
    assert (code, closed_by) == case.hook_close
    # The server's scope dict is as the server passed it: same keys, the very same values.
    [(scope, before)] = wrapped.scopes
    assert list(scope) == list(before)
    assert all(scope[key] is before[key] for key in before)
