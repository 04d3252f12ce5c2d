"""toolkit_auth end to end: a real uvicorn server on 127.0.0.1 and a real ``websockets`` client.

One server per uvicorn WebSocket implementation serves the module; each test mounts its app on it.
After each test the fixture waits (bounded) until the server is idle, and fails the test if the server
or the toolkit logged an error the test did not claim, or logged a token anywhere (every token here
contains :data:`MARK`) unless the test says it expects that (the query-string trade-off).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Final

import pytest
from toolkit_auth import AuthGate, Bearer, Cookie, Credential, OriginGate, Query, StaticTokens, Subprotocol
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Response as HandshakeResponse

from tests.server import WS_IMPLEMENTATIONS, LiveServer, SwitchableApp, run_server
from toolkit import ASGIApp, PluginManager, WebSocket, WebSocketApp

pytestmark = [pytest.mark.server, pytest.mark.anyio]

MARK: Final = "TOPSECRET"
ALICE_TOKEN: Final = f"alice-{MARK}-a1"
#: Bound on one client step, and on a whole test body.
STEP: Final = 5.0
TEST_TIMEOUT: Final = 20.0
#: uvicorn's websockets-sansio logs this after every denial through the "websocket.http.response"
#: extension (whoever sends it); it is the server's noise, not a toolkit failure.
SANSIO_DENIAL_NOISE: Final = "uvicorn.error: ASGI callable returned without completing handshake."
APP_ORIGIN: Final = "https://app.example.com"


@dataclass(eq=False)
class User:
    name: str


ALICE: Final = User("alice")


def gate(**options: Any) -> AuthGate[User]:
    return AuthGate(StaticTokens({ALICE_TOKEN: ALICE}), **options)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the websockets client needs asyncio


@dataclass
class Live:
    server: LiveServer
    switch: SwitchableApp
    #: Set by a test that expects the token in the server's log (a token in the URL).
    token_logged: bool = False

    def serve(self, app: ASGIApp, path: str = "/ws") -> str:
        self.switch.app = app
        return self.server.url + path

    def log_text(self) -> str:
        return "\n".join(f"{r.name}: {r.getMessage()}" for r in self.server.logs.records())

    def take_errors(self) -> list[str]:
        errors = [f"{r.name}: {r.getMessage().strip()}" for r in self.server.logs.take(logging.ERROR)]
        return [e for e in errors if not (self.server.ws == "websockets-sansio" and e == SANSIO_DENIAL_NOISE)]


@pytest.fixture(scope="module", params=WS_IMPLEMENTATIONS)
def module_server(request: pytest.FixtureRequest) -> Iterator[tuple[LiveServer, SwitchableApp]]:
    switch = SwitchableApp()
    with run_server(switch, ws=request.param) as server:
        yield server, switch


@pytest.fixture
async def live(module_server: tuple[LiveServer, SwitchableApp]) -> AsyncIterator[Live]:
    server, switch = module_server
    server.logs.take()
    live = Live(server, switch)
    yield live
    await server.wait_idle(STEP)
    switch.app = None
    if not live.token_logged:
        assert MARK not in live.log_text(), "a token reached the server's log"
    unexpected = live.take_errors()
    assert not unexpected, f"the server logged errors: {unexpected}"


def client(url: str, **kwargs: Any) -> connect:
    kwargs.setdefault("open_timeout", STEP)
    kwargs.setdefault("close_timeout", STEP)
    kwargs.setdefault("ping_interval", None)
    return connect(url, **kwargs)


async def recv(conn: ClientConnection) -> str | bytes:
    async with asyncio.timeout(STEP):
        return await conn.recv()


async def expect_close(conn: ClientConnection) -> tuple[int, str]:
    try:
        message = await recv(conn)
    except ConnectionClosed as exc:
        frame = exc.rcvd
    else:
        pytest.fail(f"expected a close, got a message: {message!r}")
    assert frame is not None, "the server dropped the connection without a close frame"
    return frame.code, frame.reason


async def expect_rejected(url: str, **kwargs: Any) -> HandshakeResponse:
    with pytest.raises(InvalidStatus) as info:
        async with client(url, **kwargs):
            pass
    return info.value.response


async def whoami(websocket: WebSocket) -> None:
    """Accept, then tell the client who it is and how it authenticated."""
    await websocket.accept()
    await websocket.send_text(f"{websocket.user.name} via {websocket.auth.source}")


async def test_bearer_token_accepted_and_principal_visible_to_the_app(live: Live) -> None:
    url = live.serve(WebSocketApp(whoami, plugins=PluginManager(gate())))
    async with asyncio.timeout(TEST_TIMEOUT):
        async with client(url, additional_headers={"Authorization": f"Bearer {ALICE_TOKEN}"}) as conn:
            assert await recv(conn) == "alice via bearer"
            assert await expect_close(conn) == (1000, "")


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Bearer ", "Basic YWxpY2U6cHc="])
async def test_missing_or_bad_credential_is_401_with_body(live: Live, authorization: str | None) -> None:
    url = live.serve(WebSocketApp(whoami, plugins=PluginManager(gate())))
    headers = {} if authorization is None else {"Authorization": authorization}
    async with asyncio.timeout(TEST_TIMEOUT):
        response = await expect_rejected(url, additional_headers=headers)
    assert response.status_code == 401
    assert response.body == b"unauthorized"
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_cross_site_origin_is_403_even_with_a_valid_cookie(live: Live) -> None:
    plugins = PluginManager(gate(sources=[Cookie("session")]), OriginGate([APP_ORIGIN]))
    url = live.serve(WebSocketApp(whoami, plugins=plugins))
    cookie = {"Cookie": f"session={ALICE_TOKEN}"}
    async with asyncio.timeout(TEST_TIMEOUT):
        for bad in ("https://evil.example", "http://app.example.com", "https://app.example.com:8443"):
            response = await expect_rejected(url, origin=bad, additional_headers=cookie)
            assert (response.status_code, response.body) == (403, b"forbidden origin")
        response = await expect_rejected(url, additional_headers=cookie)  # no Origin: not allowed by default
        assert (response.status_code, response.body) == (403, b"forbidden origin")
        async with client(url, origin=APP_ORIGIN, additional_headers=cookie) as conn:
            assert await recv(conn) == "alice via cookie"


async def test_subprotocol_token_authenticates_and_is_never_echoed(live: Live) -> None:
    auth = gate(sources=[Subprotocol("bearer.")])
    chosen: list[str | None] = []

    async def endpoint(websocket: WebSocket) -> None:
        if websocket.query_params.get("naive"):
            choice = websocket.scope["subprotocols"][-1]  # picks the token entry
        else:
            offered = auth.offered_subprotocols(websocket)
            choice = offered[0] if offered else None
        chosen.append(choice if choice is None or MARK not in choice else "<token>")
        await websocket.accept(subprotocol=choice)
        await websocket.send_text(f"{websocket.user.name} via {websocket.auth.source}")

    url = live.serve(WebSocketApp(endpoint, plugins=PluginManager(auth)))
    offered: Any = ["chat.v1", f"bearer.{ALICE_TOKEN}"]
    async with asyncio.timeout(TEST_TIMEOUT):
        async with client(url, subprotocols=offered) as conn:
            assert conn.subprotocol == "chat.v1"
            assert await recv(conn) == "alice via subprotocol"
        async with client(url + "?naive=1", subprotocols=offered) as conn:
            assert conn.subprotocol is None  # the token entry was not sent back
            assert conn.response is not None
            assert "Sec-WebSocket-Protocol" not in conn.response.headers
            assert await recv(conn) == "alice via subprotocol"
        response = await expect_rejected(url, subprotocols=["chat.v1", "bearer.wrong"])
        assert (response.status_code, response.body) == (401, b"unauthorized")
    assert chosen == ["chat.v1", "<token>", "chat.v1"]  # the last one was denied at accept()


async def test_the_subprotocol_recipe_with_a_client_that_offers_none(live: Live) -> None:
    # docs/auth.md's recipe: a header client offering no subprotocol is accepted without one (it was
    # an IndexError, a 500); the real server's parsed list reaches websocket.subprotocols.
    auth = gate(sources=[Bearer(), Subprotocol("bearer.")])
    seen: list[tuple[str, ...]] = []

    async def endpoint(websocket: WebSocket) -> None:
        seen.append(websocket.subprotocols)
        offered = auth.offered_subprotocols(websocket)
        await websocket.accept(subprotocol=offered[0] if offered else None)
        await websocket.send_text(f"{websocket.user.name} via {websocket.auth.source}")

    url = live.serve(WebSocketApp(endpoint, plugins=PluginManager(auth)))
    async with asyncio.timeout(TEST_TIMEOUT):
        async with client(url, additional_headers={"Authorization": f"Bearer {ALICE_TOKEN}"}) as conn:
            assert conn.subprotocol is None
            assert await recv(conn) == "alice via bearer"
        offered: Any = ["chat.v2", "chat.v1"]
        async with client(
            url, additional_headers={"Authorization": f"Bearer {ALICE_TOKEN}"}, subprotocols=offered
        ) as conn:
            assert conn.subprotocol == "chat.v2"
            assert await recv(conn) == "alice via bearer"
    assert seen == [(), ("chat.v2", "chat.v1")]


@pytest.mark.logs_credentials
async def test_query_token_works_but_lands_in_the_access_log(live: Live) -> None:
    url = live.serve(WebSocketApp(whoami, plugins=PluginManager(gate(sources=[Query("token")]))))
    async with asyncio.timeout(TEST_TIMEOUT), client(f"{url}?token={ALICE_TOKEN}") as conn:
        assert await recv(conn) == "alice via query"
    await live.server.wait_idle(STEP)
    # The trade-off docs/auth.md describes: uvicorn logs the handshake line with the query string.
    assert MARK in live.log_text()
    live.token_logged = True


async def test_verifier_failure_is_500_and_logged_once(live: Live) -> None:
    async def verify(credential: Credential) -> User | None:
        raise ConnectionError("auth service unreachable")

    url = live.serve(WebSocketApp(whoami, plugins=PluginManager(AuthGate(verify))))
    async with asyncio.timeout(TEST_TIMEOUT):
        response = await expect_rejected(url, additional_headers={"Authorization": f"Bearer {ALICE_TOKEN}"})
    assert (response.status_code, response.body) == (500, b"Internal Server Error")
    await live.server.wait_idle(STEP)
    assert live.take_errors() == ["toolkit: plugin 'AuthGate' failed in ws_accept: raised"]


async def test_refused_message_closes_with_1008(live: Live) -> None:
    def authorize(user: User, data: str | bytes) -> bool:
        return data != "drop table"

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        async for data in websocket.iter_text():
            await websocket.send_text(data)

    url = live.serve(WebSocketApp(echo, plugins=PluginManager(gate(sources=[Bearer()], authorize=authorize))))
    async with asyncio.timeout(TEST_TIMEOUT):
        async with client(url, additional_headers={"Authorization": f"Bearer {ALICE_TOKEN}"}) as conn:
            await conn.send("select")
            assert await recv(conn) == "select"
            await conn.send("drop table")
            assert await expect_close(conn) == (1008, "unauthorized")
