"""End to end: toolkit apps on a real uvicorn server on 127.0.0.1, driven by a real ``websockets`` client.

One server per uvicorn WebSocket implementation serves the whole module; each test mounts its own app
on it (``live.serve(app)``). After each test the ``live`` fixture waits (bounded) until the server holds
no connection and runs no app task, so every ``ws_close`` has fired, and fails the test if the server
or the toolkit logged an error the test did not claim with ``live.take_errors()``.

The client is asyncio-only, so these tests run on asyncio; the server runs its own loop in its thread.
Every client operation is bounded (``open_timeout``/``close_timeout``, ``asyncio.timeout``).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import pytest
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket as StarletteWebSocket
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Response as HandshakeResponse

import toolkit
from tests.server import WS_IMPLEMENTATIONS, LiveServer, SwitchableApp, run_server, wait_until
from tests.support import Recorder
from toolkit import (
    DROP,
    Accept,
    ASGIApp,
    Close,
    ClosedBy,
    DenialResponse,
    Drop,
    PluginManager,
    Receive,
    Scope,
    Send,
    WebSocket,
    WebSocketApp,
    WebSocketDenied,
    WebSocketDisconnect,
)

pytestmark = [pytest.mark.server, pytest.mark.anyio]

#: Bound on one client step: a handshake, a receive, a close.
STEP: Final = 5.0
#: Bound on a whole test body.
TEST_TIMEOUT: Final = 20.0

#: uvicorn's websockets-sansio implementation logs this error after every denial sent through the
#: "websocket.http.response" extension, whoever sends it (a raw ASGI app too): it never marks the
#: handshake complete on that path. It is uvicorn's noise, not a toolkit failure, so it is ignored there;
#: the wsproto run still catches an app that really returns without accepting or denying.
SANSIO_DENIAL_NOISE: Final = "uvicorn.error: ASGI callable returned without completing handshake."


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the websockets client needs asyncio


@dataclass
class Live:
    """The module's server with one test's app mounted."""

    server: LiveServer
    switch: SwitchableApp

    @property
    def ws(self) -> str:
        return self.server.ws

    def serve(self, app: ASGIApp, path: str = "/ws") -> str:
        """Mount ``app`` and return a URL for it."""
        self.switch.app = app
        return self.server.url + path

    def take_errors(self) -> list[str]:
        """The ERROR records logged since the last call, as ``"logger: message"``; they count as expected.

        Surrounding whitespace is stripped, and :data:`SANSIO_DENIAL_NOISE` left out.
        """
        errors = [f"{r.name}: {r.getMessage().strip()}" for r in self.server.logs.take(logging.ERROR)]
        return [e for e in errors if not (self.ws == "websockets-sansio" and e == SANSIO_DENIAL_NOISE)]


@pytest.fixture(scope="module", params=WS_IMPLEMENTATIONS)
def module_server(request: pytest.FixtureRequest) -> Iterator[tuple[LiveServer, SwitchableApp]]:
    switch = SwitchableApp()
    with run_server(switch, ws=request.param) as server:
        yield server, switch
    assert not server.running


@pytest.fixture
async def live(module_server: tuple[LiveServer, SwitchableApp]) -> AsyncIterator[Live]:
    server, switch = module_server
    server.logs.take()
    live = Live(server, switch)
    yield live
    await server.wait_idle(STEP)
    switch.app = None
    unexpected = live.take_errors()
    assert not unexpected, f"the server logged errors: {unexpected}"


# --- client helpers -------------------------------------------------------------------------------


def client(url: str, **kwargs: Any) -> connect:
    """A websockets client connection with every wait bounded and no keepalive pings."""
    kwargs.setdefault("open_timeout", STEP)
    kwargs.setdefault("close_timeout", STEP)
    kwargs.setdefault("ping_interval", None)
    return connect(url, **kwargs)


async def recv(conn: ClientConnection) -> str | bytes:
    async with asyncio.timeout(STEP):
        return await conn.recv()


async def expect_close(conn: ClientConnection) -> tuple[int, str]:
    """Wait for the server to close (no message may come first); return the code and reason it sent."""
    try:
        message = await recv(conn)
    except ConnectionClosed as exc:
        frame = exc.rcvd
    else:
        pytest.fail(f"expected a close, got a message: {message!r}")
    assert frame is not None, "the server dropped the connection without a close frame"
    return frame.code, frame.reason


async def expect_rejected(url: str, **kwargs: Any) -> HandshakeResponse:
    """Connect and expect the handshake to be refused; return the HTTP response."""
    with pytest.raises(InvalidStatus) as info:
        async with client(url, **kwargs):
            pass
    return info.value.response


# --- plugins and endpoints used by several tests ----------------------------------------------------


@dataclass
class Closes(toolkit.Plugin):
    """Records ``ws_close`` per connection, keyed by the ``id`` query parameter."""

    seen: list[tuple[str, int, str, ClosedBy]] = field(default_factory=list)

    def ws_close(self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None:
        self.seen.append((websocket.query_params.get("id", ""), code, reason, closed_by))

    def by_id(self) -> dict[str, list[tuple[int, str, ClosedBy]]]:
        result: dict[str, list[tuple[int, str, ClosedBy]]] = {}
        for key, code, reason, closed_by in self.seen:
            result.setdefault(key, []).append((code, reason, closed_by))
        return result


async def echo(websocket: WebSocket) -> None:
    """Accept and echo text and bytes back until the client leaves."""
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await websocket.send_text(message["text"])
        else:
            await websocket.send_bytes(message["bytes"])


# --- data both ways ------------------------------------------------------------------------------


async def test_text_bytes_and_json_round_trip(live: Live) -> None:
    got: list[object] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        got.append(text)
        await websocket.send_text(text[::-1])
        data = await websocket.receive_bytes()
        got.append(data)
        await websocket.send_bytes(data[::-1])
        value = await websocket.receive_json()
        got.append(value)
        await websocket.send_json({"echo": value})
        value = await websocket.receive_json(mode="binary")
        got.append(value)
        await websocket.send_json([value], mode="binary")

    url = live.serve(WebSocketApp(endpoint))
    async with asyncio.timeout(TEST_TIMEOUT), client(url) as conn:
        await conn.send("héllo ☃")
        assert await recv(conn) == "☃ olléh"
        await conn.send(b"\x00\x01\xff")
        assert await recv(conn) == b"\xff\x01\x00"
        await conn.send(json.dumps({"n": 2**70, "s": "é"}))
        # Compact, non-ASCII kept, big integers exact, in a text frame.
        assert await recv(conn) == '{"echo":{"n":1180591620717411303424,"s":"é"}}'
        await conn.send(json.dumps({"b": [1.5, None]}).encode())
        reply = await recv(conn)
        assert isinstance(reply, bytes)
        assert json.loads(reply) == [{"b": [1.5, None]}]
        # The endpoint returned: the toolkit closed normally for it.
        assert await expect_close(conn) == (1000, "")
    assert got == ["héllo ☃", b"\x00\x01\xff", {"n": 2**70, "s": "é"}, {"b": [1.5, None]}]


async def test_scope_views_match_starlettes_on_a_real_scope(live: Live) -> None:
    seen: list[dict[str, object]] = []

    def views(websocket: WebSocket | StarletteWebSocket) -> dict[str, object]:
        client_address = websocket.client
        return {
            "url": str(websocket.url),
            "path": websocket.url.path,
            "base_url": str(websocket.base_url),
            "query": websocket.query_params.getlist("tag"),
            "header": websocket.headers.getlist("x-test"),
            "cookies": websocket.cookies,
            "client": None if client_address is None else client_address.host,
        }

    async def endpoint(websocket: WebSocket) -> None:
        seen.append(views(websocket))
        seen.append(views(StarletteWebSocket(websocket.scope, websocket.receive, websocket.send)))
        await websocket.accept()

    url = live.serve(WebSocketApp(endpoint), "/a%20b/c?tag=1&tag=two")
    headers = [("X-Test", "yes"), ("X-Test", "again"), ("Cookie", "session=abc; theme=dark")]
    async with asyncio.timeout(TEST_TIMEOUT), client(url, additional_headers=headers) as conn:
        assert await expect_close(conn) == (1000, "")
    base = f"ws://127.0.0.1:{live.server.port}"
    assert seen[0] == {
        "url": f"{base}/a b/c?tag=1&tag=two",  # the server unquotes the path; Starlette keeps it so
        "path": "/a b/c",
        "base_url": f"{base}/",
        "query": ["1", "two"],
        "header": ["yes", "again"],
        "cookies": {"session": "abc", "theme": "dark"},
        "client": "127.0.0.1",
    }
    assert seen[1] == seen[0]


# --- the handshake ------------------------------------------------------------------------------


class PreferV2(toolkit.Plugin):
    """Switches the app's subprotocol to "v2" when the client offered it."""

    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Accept | None:
        if "v2" in websocket.scope["subprotocols"]:
            return accept.replace(subprotocol="v2")
        return None


async def test_subprotocol_chosen_by_app_and_changed_by_plugin(live: Live) -> None:
    offered: list[list[str]] = []

    async def endpoint(websocket: WebSocket) -> None:
        subprotocols: list[str] = websocket.scope["subprotocols"]
        offered.append(subprotocols)
        await websocket.accept(subprotocol=subprotocols[0] if subprotocols else None)

    url = live.serve(WebSocketApp(endpoint, plugins=PluginManager(PreferV2())))
    async with asyncio.timeout(TEST_TIMEOUT):
        async with client(url, subprotocols=["v1", "v2"]) as conn:
            assert conn.subprotocol == "v2"  # the plugin's choice, not the app's
            assert conn.response is not None
            assert conn.response.headers["Sec-WebSocket-Protocol"] == "v2"
        async with client(url, subprotocols=["v1"]) as conn:
            assert conn.subprotocol == "v1"  # the app's choice, kept
        async with client(url) as conn:
            assert conn.subprotocol is None
            assert conn.response is not None
            assert "Sec-WebSocket-Protocol" not in conn.response.headers
    assert offered == [["v1", "v2"], ["v1"], []]


class AddHeader(toolkit.Plugin):
    async def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Accept:
        await asyncio.sleep(0)  # an async hook, awaited on the server's loop
        return accept.replace(headers=(*accept.headers, (b"x-plugin", b"added")))


async def test_accept_headers_from_app_and_plugin_reach_the_client(live: Live) -> None:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept(headers=[(b"x-app", b"one"), (b"set-cookie", b"a=1")])
        await websocket.send_text("ok")

    url = live.serve(WebSocketApp(endpoint, plugins=PluginManager(AddHeader())))
    async with asyncio.timeout(TEST_TIMEOUT), client(url) as conn:
        assert conn.response is not None
        headers = conn.response.headers
        assert headers["x-app"] == "one"
        assert headers["set-cookie"] == "a=1"
        assert headers["x-plugin"] == "added"
        assert await recv(conn) == "ok"


# --- closing ------------------------------------------------------------------------------------


async def test_client_close_code_and_reason_reach_the_app(live: Live) -> None:
    recorder = Recorder()
    disconnects: list[tuple[int, str]] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            await websocket.receive_text()
        except WebSocketDisconnect as exc:
            disconnects.append((exc.code, exc.reason))
            raise

    url = live.serve(WebSocketApp(endpoint, plugins=PluginManager(recorder)))
    async with asyncio.timeout(TEST_TIMEOUT), client(url) as conn:
        await conn.close(4001, "client says bye")
        assert conn.close_code == 4001  # the server echoed it
    await live.server.wait_idle(STEP)
    assert disconnects == [(4001, "client says bye")]
    assert recorder.closes() == [(4001, "client says bye", ClosedBy.CLIENT)]


async def test_app_close_code_and_reason_reach_the_client(live: Live) -> None:
    recorder = Recorder()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        await websocket.close(4002, "app says bye ✓")

    url = live.serve(WebSocketApp(endpoint, plugins=PluginManager(recorder)))
    async with asyncio.timeout(TEST_TIMEOUT), client(url) as conn:
        await conn.send("go")
        assert await expect_close(conn) == (4002, "app says bye ✓")
    await live.server.wait_idle(STEP)
    assert recorder.closes() == [(4002, "app says bye ✓", ClosedBy.APP)]


async def test_close_before_accept_is_http_403(live: Live) -> None:
    recorder = Recorder()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.close(4003, "never sent")  # before accept: a denial; code and reason are lost

    url = live.serve(WebSocketApp(endpoint, plugins=PluginManager(recorder)))
    async with asyncio.timeout(TEST_TIMEOUT):
        response = await expect_rejected(url)
    assert response.status_code == 403
    assert response.body == b""
    await live.server.wait_idle(STEP)
    assert recorder.names() == ["ws_denial", "ws_close"]
    denial = recorder.calls[0][1]
    assert isinstance(denial, DenialResponse)
    assert denial.status == 403  # ws_denial saw the plain close as a 403
    assert recorder.closes() == [(1006, "", ClosedBy.APP)]


async def test_endpoint_returning_without_accept_is_http_403(live: Live) -> None:
    recorder = Recorder()

    async def endpoint(websocket: WebSocket) -> None:
        return None

    url = live.serve(WebSocketApp(endpoint, plugins=PluginManager(recorder)))
    async with asyncio.timeout(TEST_TIMEOUT):
        response = await expect_rejected(url)
    assert response.status_code == 403
    await live.server.wait_idle(STEP)
    # uvicorn logs no "returned without completing handshake": the toolkit denied for the app.
    assert recorder.closes() == [(1006, "", ClosedBy.APP)]


# --- denial responses ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["toolkit", "starlette"])
async def test_app_denial_response_reaches_the_client(live: Live, kind: str) -> None:
    recorder = Recorder()
    response: ASGIApp
    if kind == "toolkit":
        response = DenialResponse(401, "who are you?", headers=((b"www-authenticate", b"Bearer"),))
    else:
        response = Response("who are you?", status_code=401, headers={"WWW-Authenticate": "Bearer"})

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.send_denial_response(response)

    url = live.serve(WebSocketApp(endpoint, plugins=PluginManager(recorder)))
    async with asyncio.timeout(TEST_TIMEOUT):
        rejected = await expect_rejected(url)
    assert rejected.status_code == 401
    assert rejected.body == b"who are you?"
    assert rejected.headers["www-authenticate"] == "Bearer"
    assert rejected.headers["content-length"] == "12"
    await live.server.wait_idle(STEP)
    assert recorder.names() == ["ws_denial", "ws_close"]
    seen = recorder.calls[0][1]
    assert isinstance(seen, DenialResponse)
    assert (seen.status, seen.body) == (401, b"who are you?")
    assert recorder.closes() == [(1006, "", ClosedBy.APP)]


class ExplainDenials(toolkit.Plugin):
    """Turns every bare 403 into a 401 that says what to do."""

    def ws_denial(self, *, websocket: WebSocket, response: DenialResponse) -> DenialResponse | None:
        if response.status == 403:
            return DenialResponse(401, "log in first", headers=((b"x-denied-by", b"plugin"),))
        return None


async def test_ws_denial_replaces_a_plain_close_before_accept(live: Live) -> None:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.close()

    url = live.serve(WebSocketApp(endpoint, plugins=PluginManager(ExplainDenials())))
    async with asyncio.timeout(TEST_TIMEOUT):
        rejected = await expect_rejected(url)
    assert (rejected.status_code, rejected.body) == (401, b"log in first")
    assert rejected.headers["x-denied-by"] == "plugin"


class TokenGate(toolkit.Plugin):
    """Denies at accept unless the query has ``token=secret``."""

    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> DenialResponse | None:
        if websocket.query_params.get("token") != "secret":
            return DenialResponse(401, "bad token", headers=((b"www-authenticate", b"Token"),))
        return None


def gated_app(plugins: PluginManager, denials: list[int]) -> WebSocketApp:
    async def endpoint(websocket: WebSocket) -> None:
        try:
            await websocket.accept()
        except WebSocketDenied as exc:
            denials.append(exc.status)
            raise
        await websocket.send_text("welcome")

    return WebSocketApp(endpoint, plugins=plugins)


async def test_plugin_denies_at_accept_with_its_status_and_body(live: Live) -> None:
    closes = Closes()
    denials: list[int] = []
    url = live.serve(gated_app(PluginManager(TokenGate(), closes), denials))
    async with asyncio.timeout(TEST_TIMEOUT):
        rejected = await expect_rejected(url + "?id=bad&token=guess")
        assert (rejected.status_code, rejected.body) == (401, b"bad token")
        assert rejected.headers["www-authenticate"] == "Token"
        async with client(url + "?id=good&token=secret") as conn:
            assert await recv(conn) == "welcome"
            assert await expect_close(conn) == (1000, "")
    await live.server.wait_idle(STEP)
    assert denials == [401]
    assert closes.by_id() == {"bad": [(1006, "", ClosedBy.PLUGIN)], "good": [(1000, "", ClosedBy.APP)]}


def without_denial_extension(app: ASGIApp) -> ASGIApp:
    """Middleware that hides the server's "websocket.http.response" extension, as older servers lack it."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        extensions = {k: v for k, v in (scope.get("extensions") or {}).items() if k != "websocket.http.response"}
        await app({**scope, "extensions": extensions}, receive, send)

    return middleware


async def test_plugin_denial_without_the_extension_is_a_bare_403(live: Live) -> None:
    # The toolkit can only close before accept: the server answers 403 with no body,
    # and the plugin's status, body and headers are lost. The app learns the real status.
    closes = Closes()
    denials: list[int] = []
    url = live.serve(without_denial_extension(gated_app(PluginManager(TokenGate(), closes), denials)))
    async with asyncio.timeout(TEST_TIMEOUT):
        rejected = await expect_rejected(url + "?id=bad")
    assert (rejected.status_code, rejected.body) == (403, b"")
    assert "www-authenticate" not in rejected.headers
    await live.server.wait_idle(STEP)
    assert denials == [403]
    assert closes.by_id() == {"bad": [(1006, "", ClosedBy.PLUGIN)]}


async def test_send_denial_response_without_the_extension_raises_and_denies_with_403(live: Live) -> None:
    errors: list[str] = []

    async def endpoint(websocket: WebSocket) -> None:
        try:
            await websocket.send_denial_response(DenialResponse(401, "nope"))
        except RuntimeError as exc:
            errors.append(str(exc))

    url = live.serve(without_denial_extension(WebSocketApp(endpoint)))
    async with asyncio.timeout(TEST_TIMEOUT):
        rejected = await expect_rejected(url)
    assert (rejected.status_code, rejected.body) == (403, b"")
    assert errors == ["The server doesn't support the Websocket Denial Response extension."]


# --- plugins on messages ------------------------------------------------------------------------


class Inbound(toolkit.Plugin):
    """Sync ``ws_receive``: upper-cases text, drops "skip", reverses bytes."""

    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> str | bytes | Drop:
        if isinstance(data, bytes):
            return data[::-1]
        return DROP if data == "skip" else data.upper()


class Outbound(toolkit.Plugin):
    """Async ``ws_send``: drops "HIDDEN", marks other text with "!", brackets bytes."""

    async def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> str | bytes | Drop:
        await asyncio.sleep(0)
        if isinstance(data, bytes):
            return b"<" + data + b">"
        return DROP if data == "HIDDEN" else data + "!"


async def test_plugins_transform_and_drop_messages_both_ways(live: Live) -> None:
    app_saw: list[str | bytes] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("text")
            if data is None:
                data = message["bytes"]
            app_saw.append(data)
            if isinstance(data, str):
                await websocket.send_text(data)
            else:
                await websocket.send_bytes(data)

    url = live.serve(WebSocketApp(endpoint, plugins=PluginManager(Inbound(), Outbound())))
    async with asyncio.timeout(TEST_TIMEOUT), client(url) as conn:
        for message in ("hello", "skip", "hidden", b"abc", "last"):
            await conn.send(message)
        # "skip" never reached the app; "hidden" did, but its echo "HIDDEN" was dropped on the way out.
        assert [await recv(conn) for _ in range(3)] == ["HELLO!", b"<cba>", "LAST!"]
    await live.server.wait_idle(STEP)
    assert app_saw == ["HELLO", "HIDDEN", b"cba", "LAST"]


class Censor(toolkit.Plugin):
    """Closes with 4008 on "darn", in whichever direction it is installed for."""

    def __init__(self, direction: str) -> None:
        self.direction = direction

    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Close | None:
        return Close(4008, "watch your language") if self.direction == "receive" and data == "darn" else None

    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> Close | None:
        return Close(4008, "watch your language") if self.direction == "send" and data == "darn" else None


@pytest.mark.parametrize("direction", ["receive", "send"])
async def test_plugin_close_reaches_client_and_app(live: Live, direction: str) -> None:
    recorder = Recorder()
    disconnects: list[tuple[str, int, str]] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            step = "receive"
            try:
                text = await websocket.receive_text()
                step = "send"
                await websocket.send_text(text)
            except WebSocketDisconnect as exc:
                disconnects.append((step, exc.code, exc.reason))
                raise

    url = live.serve(WebSocketApp(endpoint, plugins=PluginManager(Censor(direction), recorder)))
    async with asyncio.timeout(TEST_TIMEOUT), client(url) as conn:
        await conn.send("gosh")
        assert await recv(conn) == "gosh"
        await conn.send("darn")
        assert await expect_close(conn) == (4008, "watch your language")
    await live.server.wait_idle(STEP)
    # The app's receive (or send) right after the plugin's close raises with the plugin's code.
    assert disconnects == [(direction, 4008, "watch your language")]
    # The recorder, registered last, runs first: it saw every message before Censor closed.
    if direction == "receive":  # "darn" never reached the app, which sent nothing more
        expected = ["ws_accept", "ws_receive", "ws_send", "ws_receive", "ws_close"]
    else:
        expected = ["ws_accept", "ws_receive", "ws_send", "ws_receive", "ws_send", "ws_close"]
    assert recorder.names() == expected
    assert recorder.closes() == [(4008, "watch your language", ClosedBy.PLUGIN)]


# --- failures -----------------------------------------------------------------------------------


class Fragile(toolkit.Plugin):
    """Raises on the message "boom", in whichever direction it is installed for."""

    def __init__(self, direction: str) -> None:
        self.direction = direction

    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> None:
        if self.direction == "receive" and data == "boom":
            raise ValueError("secret detail that must not reach the client")

    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> None:
        if self.direction == "send" and data == "boom":
            raise ValueError("secret detail that must not reach the client")


@pytest.mark.parametrize("direction", ["receive", "send"])
async def test_crashing_plugin_closes_only_its_connection(live: Live, direction: str) -> None:
    closes = Closes()
    url = live.serve(WebSocketApp(echo, plugins=PluginManager(Fragile(direction), closes)))
    async with asyncio.timeout(TEST_TIMEOUT):
        async with client(url + "?id=victim") as victim, client(url + "?id=bystander") as bystander:
            await bystander.send("before")
            assert await recv(bystander) == "before"
            await victim.send("boom")
            assert await expect_close(victim) == (1011, "internal error")
            await bystander.send("after")
            assert await recv(bystander) == "after"
        await live.server.wait_idle(STEP)
    assert closes.by_id() == {
        "victim": [(1011, "internal error", ClosedBy.PLUGIN)],
        "bystander": [(1000, "", ClosedBy.CLIENT)],
    }
    assert live.take_errors() == [f"toolkit: plugin 'Fragile' failed in ws_{direction}: raised"]


class BrokenGate(toolkit.Plugin):
    async def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> None:
        raise ValueError("the auth service is down")


async def test_crashing_accept_plugin_denies_with_500(live: Live) -> None:
    recorder = Recorder()
    denials: list[int] = []
    url = live.serve(gated_app(PluginManager(BrokenGate(), recorder), denials))
    async with asyncio.timeout(TEST_TIMEOUT):
        rejected = await expect_rejected(url)
    assert (rejected.status_code, rejected.body) == (500, b"Internal Server Error")
    await live.server.wait_idle(STEP)
    assert denials == [500]
    assert recorder.closes() == [(1006, "", ClosedBy.PLUGIN)]
    assert live.take_errors() == ["toolkit: plugin 'BrokenGate' failed in ws_accept: raised"]


async def test_endpoint_raising_after_accept_closes_with_1011(live: Live) -> None:
    recorder = Recorder()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        raise LookupError("app bug")

    url = live.serve(WebSocketApp(endpoint, plugins=PluginManager(recorder)))
    async with asyncio.timeout(TEST_TIMEOUT), client(url) as conn:
        await conn.send("trigger")
        assert await expect_close(conn) == (1011, "internal error")
    await live.server.wait_idle(STEP)
    assert recorder.closes() == [(1011, "internal error", ClosedBy.SERVER)]
    # The exception went on to the server, which logged it with its traceback.
    records = live.server.logs.take(logging.ERROR)
    assert [r.getMessage().strip() for r in records] == ["Exception in ASGI application"]
    assert records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], LookupError)


async def test_endpoint_raising_before_accept_denies_with_500(live: Live) -> None:
    recorder = Recorder()

    async def endpoint(websocket: WebSocket) -> None:
        raise LookupError("app bug")

    url = live.serve(WebSocketApp(endpoint, plugins=PluginManager(recorder)))
    async with asyncio.timeout(TEST_TIMEOUT):
        rejected = await expect_rejected(url)
    assert (rejected.status_code, rejected.body) == (500, b"Internal Server Error")
    await live.server.wait_idle(STEP)
    assert recorder.closes() == [(1006, "", ClosedBy.SERVER)]
    assert live.take_errors() == ["uvicorn.error: Exception in ASGI application"]


# --- ws_close, once per connection ------------------------------------------------------------------


class CloseOnCue(toolkit.Plugin):
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Close | None:
        return Close(4100, "plugin cue") if data == "plugin" else None


async def test_ws_close_fires_once_per_connection_with_who_closed(live: Live) -> None:
    closes = Closes()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            if text == "app":
                await websocket.close(4200, "app cue")
                return
            if text == "return":
                return
            if text == "raise":
                raise KeyError(text)
            await websocket.send_text(text)

    url = live.serve(WebSocketApp(endpoint, plugins=PluginManager(CloseOnCue(), closes)))
    cues = ["client", "app", "return", "raise", "plugin"]
    async with asyncio.timeout(TEST_TIMEOUT):
        async with (
            client(url + "?id=client") as by_client,
            client(url + "?id=app") as by_app,
            client(url + "?id=return") as by_return,
            client(url + "?id=raise") as by_raise,
            client(url + "?id=plugin") as by_plugin,
        ):
            connections = [by_client, by_app, by_return, by_raise, by_plugin]
            for cue, conn in zip(cues, connections, strict=True):
                await conn.send("ping")
                assert await recv(conn) == "ping"
                if cue == "client":
                    await conn.close(4300, "client cue")
                else:
                    await conn.send(cue)
            received = [await expect_close(conn) for conn in connections[1:]]
        await live.server.wait_idle(STEP)
    assert received == [(4200, "app cue"), (1000, ""), (1011, "internal error"), (4100, "plugin cue")]
    assert closes.by_id() == {
        "client": [(4300, "client cue", ClosedBy.CLIENT)],
        "app": [(4200, "app cue", ClosedBy.APP)],
        "return": [(1000, "", ClosedBy.APP)],
        "raise": [(1011, "internal error", ClosedBy.SERVER)],
        "plugin": [(4100, "plugin cue", ClosedBy.PLUGIN)],
    }
    assert live.take_errors() == ["uvicorn.error: Exception in ASGI application"]


@pytest.mark.parametrize(("raised", "sent"), [(4005, 4005), (1001, 1001), (2000, 1000), (1004, 1000), (999, 1000)])
async def test_endpoint_raising_websocket_disconnect_closes_with_a_sendable_code(
    live: Live, raised: int, sent: int
) -> None:
    # The toolkit closes with the code of a WebSocketDisconnect the endpoint raises, but only if that
    # code may be sent. A forbidden one used to go to the server: uvicorn's websockets-sansio raised
    # ProtocolError out of the toolkit (ws_close never fired, the client saw no close frame) and
    # wsproto sent it (the client failed the connection with 1002).
    recorder = Recorder()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        raise WebSocketDisconnect(raised)

    url = live.serve(WebSocketApp(endpoint, plugins=PluginManager(recorder)))
    async with asyncio.timeout(TEST_TIMEOUT), client(url) as conn:
        await conn.send("end")
        assert await expect_close(conn) == (sent, "")
    await live.server.wait_idle(STEP)
    assert recorder.closes() == [(sent, "", ClosedBy.APP)]


async def test_client_vanishing_is_reported_once_as_a_client_close(live: Live) -> None:
    recorder = Recorder()
    accepted = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        loop.call_soon_threadsafe(accepted.set)
        async for text in websocket.iter_text():
            await websocket.send_text(text)

    url = live.serve(WebSocketApp(endpoint, plugins=PluginManager(recorder)))
    async with asyncio.timeout(TEST_TIMEOUT), client(url) as conn:
        await accepted.wait()
        conn.transport.abort()  # no close frame: the TCP connection just goes away
    await live.server.wait_idle(STEP)
    # uvicorn reports a lost connection after the handshake as 1005 (no status), not 1006.
    assert recorder.closes() == [(1005, "", ClosedBy.CLIENT)]


class SlowGate(toolkit.Plugin):
    """An async ``ws_accept`` that waits (bounded) until the test releases it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    async def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> None:
        self.entered.set()
        for _ in range(round(STEP / 0.005)):
            if self.release.is_set():
                return
            await asyncio.sleep(0.005)


async def test_client_leaving_during_an_async_accept_hook(live: Live) -> None:
    gate = SlowGate()
    recorder = Recorder()
    outcomes: list[tuple[str, int]] = []

    async def endpoint(websocket: WebSocket) -> None:
        try:
            await websocket.accept()
        except WebSocketDisconnect as exc:
            outcomes.append((type(exc).__name__, exc.code))
            raise

    live.serve(WebSocketApp(endpoint, plugins=PluginManager(gate, recorder)))
    connections = live.server.server.server_state.connections
    async with asyncio.timeout(TEST_TIMEOUT):
        # A hand-written handshake, so the client can give up while the server is still deciding.
        _, writer = await asyncio.open_connection("127.0.0.1", live.server.port)
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await writer.drain()
        await wait_until(gate.entered.is_set, STEP, "the accept hook to start")
        writer.close()
        await writer.wait_closed()
        await wait_until(lambda: not connections, STEP, "the server to see the client go")
        gate.release.set()
    await live.server.wait_idle(STEP)
    # The accept could not be sent: the app's accept() raised a plain disconnect, not a denial.
    assert outcomes == [("WebSocketDisconnect", 1006)]
    assert recorder.closes() == [(1006, "", ClosedBy.CLIENT)]


@pytest.mark.parametrize("ws", WS_IMPLEMENTATIONS)
async def test_server_shutdown_closes_open_connections_with_1012(ws: str) -> None:
    recorder = Recorder()
    accepted = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        loop.call_soon_threadsafe(accepted.set)
        async for text in websocket.iter_text():
            await websocket.send_text(text)

    with run_server(WebSocketApp(endpoint, plugins=PluginManager(recorder)), ws=ws) as server:
        async with asyncio.timeout(TEST_TIMEOUT), client(server.url) as conn:
            await accepted.wait()
            await asyncio.to_thread(server.stop, STEP)  # the client's loop keeps running meanwhile
            assert not server.running
            assert await expect_close(conn) == (1012, "")
    assert recorder.closes() == [(1012, "", ClosedBy.CLIENT)]


@pytest.mark.parametrize("ws", WS_IMPLEMENTATIONS)
async def test_shutdown_cancelling_a_stuck_endpoint_reports_1006_by_server(ws: str) -> None:
    recorder = Recorder()
    accepted = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        loop.call_soon_threadsafe(accepted.set)
        await asyncio.sleep(TEST_TIMEOUT)  # never reads, so never sees the disconnect

    app = WebSocketApp(endpoint, plugins=PluginManager(recorder))
    with run_server(app, ws=ws, timeout_graceful_shutdown=0.2) as server:
        async with asyncio.timeout(TEST_TIMEOUT), client(server.url) as conn:
            await accepted.wait()
            await asyncio.to_thread(server.stop, STEP)
            assert await expect_close(conn) == (1012, "")
    # uvicorn cancelled the endpoint after the grace period: nothing could be sent, ws_close still ran.
    assert recorder.closes() == [(1006, "", ClosedBy.SERVER)]
    errors = [r.getMessage().strip() for r in server.logs.records(logging.ERROR)]
    assert "Cancel 1 running task(s), timeout graceful shutdown exceeded" in errors


# --- Starlette and HTTP -------------------------------------------------------------------------


async def test_starlette_route_with_path_params(live: Live) -> None:
    recorder = Recorder()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        room = websocket.path_params["room"]
        await websocket.send_json(
            {
                "room": room,
                "path": websocket.url.path,
                "user": websocket.query_params.get("user"),
                "url_for": str(websocket.url_for("room", room="lobby")),
                "is_starlette": isinstance(websocket.app, Starlette),
            }
        )
        async for text in websocket.iter_text():
            await websocket.send_text(f"{room}: {text}")

    app = Starlette(
        routes=[WebSocketRoute("/rooms/{room}", WebSocketApp(endpoint, plugins=PluginManager(recorder)), name="room")]
    )
    url = live.serve(app, "/rooms/kitchen?user=ann")
    async with asyncio.timeout(TEST_TIMEOUT), client(url) as conn:
        assert json.loads(await recv(conn)) == {
            "room": "kitchen",
            "path": "/rooms/kitchen",
            "user": "ann",
            "url_for": f"ws://127.0.0.1:{live.server.port}/rooms/lobby",
            "is_starlette": True,
        }
        await conn.send("hi")
        assert await recv(conn) == "kitchen: hi"
    await live.server.wait_idle(STEP)
    assert recorder.names() == ["ws_accept", "ws_send", "ws_receive", "ws_send", "ws_close"]
    assert recorder.closes() == [(1000, "", ClosedBy.CLIENT)]


def http_get(host: str, port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(host, port, timeout=STEP)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


async def test_websocket_app_answers_http_with_426_and_runs_lifespan() -> None:
    with run_server(WebSocketApp(echo), lifespan="on") as server:
        status, headers, body = await asyncio.to_thread(http_get, "127.0.0.1", server.port, "/ws")
        assert status == 426
        assert headers["upgrade"] == "websocket"
        assert body == b"This endpoint speaks WebSocket only."
        async with asyncio.timeout(TEST_TIMEOUT), client(server.url) as conn:
            await conn.send("still a websocket app")
            assert await recv(conn) == "still a websocket app"
        await server.wait_idle(STEP)
    messages = [r.getMessage() for r in server.logs.records()]
    # uvicorn with lifespan "on" fails to start unless the app completes startup, and waits for shutdown.
    assert "Application startup complete." in messages
    assert "Application shutdown complete." in messages
    assert not server.logs.records(logging.ERROR)


async def test_wait_until_is_bounded() -> None:
    with pytest.raises(AssertionError, match=r"timed out after 0\.05 s waiting for never"):
        await wait_until(lambda: False, 0.05, "never")
