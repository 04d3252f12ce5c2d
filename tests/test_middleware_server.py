"""``ToolkitMiddleware`` end to end: Starlette, FastAPI and Litestar apps on a real uvicorn server.

Each app uses its framework's own WebSocket class and knows nothing of the toolkit; the middleware,
installed the framework's way, adds an auth gate (``toolkit_auth``), message validation
(``toolkit_messages``, as a plugin) and connection logging (``toolkit_logging``).

The server, the ``live`` fixture and the client helpers are tests/test_server.py's: one server per uvicorn
WebSocket implementation serves the module, each test mounts its own app, and after each test the fixture
waits (bounded) until the server is idle (every ``ws_close`` has fired) and fails on any error the server
or the toolkit logged. The client is asyncio-only; every client step is bounded.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast

import pytest
from fastapi import FastAPI
from fastapi import WebSocket as FastAPIWebSocket
from fastapi import WebSocketDisconnect as FastAPIWebSocketDisconnect
from litestar import Litestar
from litestar import WebSocket as LitestarWebSocket
from litestar import get as litestar_get
from litestar import websocket as litestar_websocket
from litestar.exceptions import WebSocketDisconnect as LitestarWebSocketDisconnect
from litestar.middleware import DefineMiddleware
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket as StarletteWebSocket
from starlette.websockets import WebSocketDisconnect as StarletteWebSocketDisconnect
from toolkit_auth import AuthGate, StaticTokens
from toolkit_logging import ConnectionLogger
from toolkit_messages import Messages

from tests.support import Recorder
from tests.test_server import (
    TEST_TIMEOUT,
    Live,
    anyio_backend,
    client,
    expect_close,
    expect_rejected,
    http_get,
    live,
    module_server,
    recv,
)
from toolkit import ASGIApp, ClosedBy, PluginManager, ToolkitMiddleware

pytestmark = [pytest.mark.server, pytest.mark.anyio]

#: tests/test_server.py's fixtures, which pytest finds by name in this module.
SERVER_FIXTURES = (anyio_backend, live, module_server)

TOKEN: Final = "alice-token"  # tests/conftest.py checks that no log record of the run contains it
AUTHORIZED: Final = {"Authorization": f"Bearer {TOKEN}"}
#: A child of the "toolkit" logger, whose records the live server captures.
LOG: Final = logging.getLogger("toolkit.middleware_server")
FRAMEWORKS: Final = ["starlette", "fastapi", "litestar"]


class Say(BaseModel):
    type: Literal["say"]
    text: str


class Said(BaseModel):
    type: Literal["said"]
    text: str
    user: str


def no_forbidden_words(user: str, data: str | bytes) -> bool:
    return not (isinstance(data, str) and "forbidden" in data)


@dataclass
class Setup:
    """One framework's app with the middleware installed, and what its handler and the plugins saw."""

    recorder: Recorder = field(default_factory=Recorder)
    #: How many handlers got past ``accept()``.
    accepted: int = 0
    #: The close code of each disconnect a handler caught, as its framework reported it.
    disconnects: list[int] = field(default_factory=list)
    app: ASGIApp | None = None

    def plugins(self) -> PluginManager:
        return PluginManager(
            self.recorder,
            ConnectionLogger(LOG),
            Messages(Say, Said),
            AuthGate(StaticTokens({TOKEN: "alice"}), authorize=no_forbidden_words),
        )

    def reply(self, data: Any, user: str) -> dict[str, str] | None:
        """The reply to one message, or None for "bye" (the handler closes with 4000)."""
        text: str = data["text"]
        return None if text == "bye" else {"type": "said", "text": text, "user": user}


def starlette_app(setup: Setup) -> ASGIApp:
    async def chat(websocket: StarletteWebSocket) -> None:
        await websocket.accept()
        setup.accepted += 1
        try:
            while True:
                reply = setup.reply(await websocket.receive_json(), websocket.user)
                if reply is None:
                    await websocket.close(4000, "bye")
                    return
                await websocket.send_json(reply)
        except StarletteWebSocketDisconnect as exc:
            setup.disconnects.append(exc.code)

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[WebSocketRoute("/ws", chat), Route("/health", health)],
        middleware=[Middleware(ToolkitMiddleware, plugins=setup.plugins())],
    )


def fastapi_app(setup: Setup) -> ASGIApp:
    app = FastAPI()

    @app.websocket("/ws")
    async def chat(websocket: FastAPIWebSocket) -> None:
        await websocket.accept()
        setup.accepted += 1
        try:
            while True:
                reply = setup.reply(await websocket.receive_json(), websocket.scope["user"])
                if reply is None:
                    await websocket.close(4000, "bye")
                    return
                await websocket.send_json(reply)
        except FastAPIWebSocketDisconnect as exc:
            setup.disconnects.append(exc.code)

    @app.get("/health")
    async def health() -> str:
        return "ok"

    app.add_middleware(ToolkitMiddleware, plugins=setup.plugins())
    return app


def as_asgi(app: Litestar) -> ASGIApp:
    """Litestar types its ASGI arguments as TypedDicts, which mypy does not take for ``toolkit.ASGIApp``'s mappings."""
    return cast(ASGIApp, app)


def litestar_app(setup: Setup) -> ASGIApp:
    @litestar_websocket("/ws")
    async def chat(socket: LitestarWebSocket[Any, Any, Any]) -> None:
        await socket.accept()
        setup.accepted += 1
        try:
            while True:
                reply = setup.reply(await socket.receive_json(), socket.user)
                if reply is None:
                    await socket.close(4000, "bye")
                    return
                await socket.send_json(reply)
        except LitestarWebSocketDisconnect as exc:
            setup.disconnects.append(exc.code)

    @litestar_get("/health", sync_to_thread=False)
    def health() -> str:
        return "ok"

    return as_asgi(Litestar([chat, health], middleware=[DefineMiddleware(ToolkitMiddleware, plugins=setup.plugins())]))


BUILDERS: Final[dict[str, Callable[[Setup], ASGIApp]]] = {
    "starlette": starlette_app,
    "fastapi": fastapi_app,
    "litestar": litestar_app,
}


@pytest.fixture(params=FRAMEWORKS)
def setup(request: pytest.FixtureRequest) -> Setup:
    setup = Setup()
    setup.app = BUILDERS[request.param](setup)
    return setup


def mount(live: Live, setup: Setup) -> str:
    assert setup.app is not None
    return live.serve(setup.app)


def records(live: Live, event: str) -> list[logging.LogRecord]:
    return [r for r in live.server.logs.records() if r.name == LOG.name and getattr(r, "ws_event", None) == event]


async def test_no_token_is_denied_with_401_before_the_handler_runs(live: Live, setup: Setup) -> None:
    url = mount(live, setup)
    async with asyncio.timeout(TEST_TIMEOUT):
        response = await expect_rejected(url)
    assert (response.status_code, response.body) == (401, b"unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    await live.server.wait_idle()
    # The framework's accept() raised and its handler went no further; nothing reached the server.
    assert setup.accepted == 0
    assert setup.recorder.names() == ["ws_denial", "ws_close"]
    assert setup.recorder.closes() == [(1006, "", ClosedBy.PLUGIN)]
    [denial] = records(live, "denial")
    assert getattr(denial, "ws_status", None) == 401
    assert records(live, "open") == []


async def test_valid_messages_echo_and_invalid_ones_get_an_error(live: Live, setup: Setup) -> None:
    url = mount(live, setup)
    async with asyncio.timeout(TEST_TIMEOUT), client(url, additional_headers=AUTHORIZED) as conn:
        await conn.send(json.dumps({"type": "say", "text": "hi"}))
        assert json.loads(await recv(conn)) == {"type": "said", "text": "hi", "user": "alice"}
        await conn.send("{not json")
        assert json.loads(await recv(conn)) == {"type": "error", "error": "invalid_json"}
        await conn.send(json.dumps({"type": "say"}))
        assert json.loads(await recv(conn)) == {
            "type": "error",
            "error": "invalid_message",
            "errors": [{"loc": ["text"], "type": "missing"}],
        }
        # The connection stayed open: the handler never saw the bad messages.
        await conn.send(json.dumps({"type": "say", "text": "still here"}))
        assert json.loads(await recv(conn)) == {"type": "said", "text": "still here", "user": "alice"}
        await conn.close(1000)
    await live.server.wait_idle()
    assert setup.accepted == 1
    assert setup.disconnects == [1000]
    names = setup.recorder.names()
    assert (names[0], names.count("ws_receive"), names.count("ws_send"), names[-1]) == ("ws_accept", 4, 4, "ws_close")
    assert setup.recorder.closes() == [(1000, "", ClosedBy.CLIENT)]
    [opened] = records(live, "open")
    [closed] = records(live, "close")
    assert getattr(opened, "ws_principal", None) == "alice"
    assert (getattr(closed, "ws_msgs_in", None), getattr(closed, "ws_msgs_out", None)) == (4, 4)


async def test_a_plugin_close_ends_the_handler_like_a_client_close(live: Live, setup: Setup) -> None:
    url = mount(live, setup)
    async with asyncio.timeout(TEST_TIMEOUT), client(url, additional_headers=AUTHORIZED) as conn:
        await conn.send(json.dumps({"type": "say", "text": "hello"}))
        assert json.loads(await recv(conn)) == {"type": "said", "text": "hello", "user": "alice"}
        await conn.send(json.dumps({"type": "say", "text": "forbidden words"}))
        assert await expect_close(conn) == (1008, "unauthorized")
    await live.server.wait_idle()
    assert setup.disconnects == [1008]  # the handler's receive raised its framework's disconnect, with the code
    assert setup.recorder.closes() == [(1008, "unauthorized", ClosedBy.PLUGIN)]
    [closed] = records(live, "close")
    assert (getattr(closed, "ws_code", None), getattr(closed, "ws_closed_by", None)) == (1008, "plugin")


async def test_the_handlers_own_close_is_reported_once(live: Live, setup: Setup) -> None:
    url = mount(live, setup)
    async with asyncio.timeout(TEST_TIMEOUT), client(url, additional_headers=AUTHORIZED) as conn:
        await conn.send(json.dumps({"type": "say", "text": "bye"}))
        assert await expect_close(conn) == (4000, "bye")
    await live.server.wait_idle()
    assert setup.disconnects == []
    assert setup.recorder.names() == ["ws_accept", "ws_receive", "ws_close"]
    assert setup.recorder.closes() == [(4000, "bye", ClosedBy.APP)]
    assert len(records(live, "close")) == 1


class PassThrough:
    """A middleware that does nothing: what any middleware in Litestar's slot gets."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


async def test_litestar_answering_a_codeless_client_close_is_served_as_without_the_middleware(live: Live) -> None:
    # Litestar answers a disconnect its handler lets escape with a close of the same code: after a close frame
    # without a status code (what a browser's close() sends) that is 1005, which may not be sent. The server
    # judges it, as it would without the toolkit (the middleware used to drop it): with any middleware in
    # Litestar's slot, uvicorn's wsproto refuses it, Litestar's outer handler closes again and uvicorn logs
    # the error; websockets-sansio ends cleanly. The toolkit's run must log exactly what a no-op one logs.
    recorder = Recorder()

    @litestar_websocket("/ws")
    async def echo(socket: LitestarWebSocket[Any, Any, Any]) -> None:
        await socket.accept()
        while True:
            await socket.send_text(await socket.receive_text())

    errors: list[list[str]] = []
    for middleware in (
        DefineMiddleware(PassThrough),
        DefineMiddleware(ToolkitMiddleware, plugins=PluginManager(recorder)),
    ):
        url = live.serve(as_asgi(Litestar([echo], middleware=[middleware])))
        async with asyncio.timeout(TEST_TIMEOUT), client(url) as conn:
            await conn.send("hi")
            assert await recv(conn) == "hi"
            await conn.close(cast(int, None))  # websockets sends no status code for None
        await live.server.wait_idle()
        errors.append(live.take_errors())
    assert errors[1] == errors[0]
    assert errors[0] == (["uvicorn.error: Exception in ASGI application"] if live.ws == "wsproto" else [])
    assert recorder.closes() == [(1005, "", ClosedBy.CLIENT)]


async def test_http_requests_pass_through(live: Live, setup: Setup) -> None:
    mount(live, setup)
    async with asyncio.timeout(TEST_TIMEOUT):
        status, _, body = await asyncio.to_thread(http_get, "127.0.0.1", live.server.port, "/health")
    assert status == 200
    assert body in (b"ok", b'"ok"')  # FastAPI answers in JSON
    assert setup.recorder.calls == []
