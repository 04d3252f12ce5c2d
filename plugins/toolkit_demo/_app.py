"""The demo's ASGI app: the page, its static files, and the chat endpoint with every first-party plugin."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections.abc import AsyncGenerator, Iterable, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from toolkit_auth import AuthGate, OriginGate, StaticTokens, Subprotocol
from toolkit_broadcast import Broadcast, RedisBackend
from toolkit_limits import (
    ConnectionLimit,
    MessageSizeLimit,
    RateLimit,
    RedisStore,
    SharedConnectionLimit,
    SharedRateLimit,
)
from toolkit_logging import ConnectionLogger
from toolkit_messages import asyncapi

from toolkit import Plugin, PluginManager, WebSocket, WebSocketApp

from ._chat import SUBPROTOCOL, Chat, Room, RoomRelay, chat_messages

__all__ = [
    "CHAT_PATH",
    "CONFIG_VARIABLE",
    "MAX_MESSAGE_BYTES",
    "NAMES",
    "STATIC",
    "TOKEN_PREFIX",
    "app_from_environment",
    "asyncapi_document",
    "create_app",
    "demo_tokens",
    "local_origins",
]

#: The page, its script and its style sheet, shipped in the package.
STATIC: Final = Path(__file__).parent / "static"
#: The people the demo has tokens for.
NAMES: Final = ("alice", "bob", "carol")
#: Inbound messages over this many UTF-8 bytes close the connection (1009) before anything parses them.
MAX_MESSAGE_BYTES: Final = 4096
#: The chat's WebSocket path.
CHAT_PATH: Final = "/ws"
#: The prefix of the subprotocol that carries the token: the page offers ``["chat.v1", "bearer.<token>"]``.
TOKEN_PREFIX: Final = "bearer."  # noqa: S105 - a prefix, not a secret
#: With ``--workers``, each worker process builds its app from this environment variable (JSON: the
#: tokens, origins and Redis URL the parent chose), so the tokens printed at start work on every worker.
CONFIG_VARIABLE: Final = "TOOLKIT_DEMO_CONFIG"

# The page may talk only to this server, and nothing may frame it.
_PAGE_HEADERS: Final = {
    "content-security-policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def demo_tokens(names: Iterable[str] = NAMES) -> dict[str, str]:
    """A fresh random token for each name: ``{token: name}``. URL-safe, so it fits in a subprotocol."""
    return {secrets.token_urlsafe(12): name for name in names}


def local_origins(port: int, host: str = "127.0.0.1") -> list[str]:
    """The origins the page is served from: ``http://127.0.0.1:PORT``, ``http://localhost:PORT``, and ``host``'s."""
    origins = [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]
    if host not in ("127.0.0.1", "localhost", "0.0.0.0", "::", ""):  # noqa: S104 - a wildcard is not an origin
        origin = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        origins.append(origin)
    return origins


def asyncapi_document(servers: Iterable[str] = ()) -> dict[str, Any]:
    """The chat's AsyncAPI 3.0 document, generated from :data:`chat_messages` at :data:`CHAT_PATH`.

    ``servers`` are the ``ws://``/``wss://`` URLs it is served at, each named after its host and port.
    """
    named = {re.sub(r"[^A-Za-z0-9_-]", "-", urlsplit(url).netloc): url for url in servers}
    return asyncapi(
        "ws-toolkit demo chat",
        "1.0.0",
        {CHAT_PATH: chat_messages},
        servers=named,
        description=f"Join the room, then say things. Connect with the subprotocols `{SUBPROTOCOL}` and "
        f"`{TOKEN_PREFIX}<token>`, from an allowed origin.",
    )


def create_app(
    tokens: Mapping[str, str],
    origins: Iterable[str],
    *,
    rate: float = 5.0,
    burst: int = 10,
    queue_size: int = 64,
    connections_per_person: int = 5,
    redis_url: str | None = None,
) -> Starlette:
    """The demo app: ``/`` the page, ``/static/...`` its files, ``/ws`` the chat, ``/asyncapi.json`` its description.

    ``tokens`` maps each token to the name of the person it lets in (see :func:`demo_tokens`);
    ``origins`` lists the pages allowed to connect (see :func:`local_origins`). Each person may
    send ``burst`` messages at once, then ``rate`` per second (whichever of their connections
    sends them), may have ``connections_per_person`` connections open, and each connection may
    fall ``queue_size`` messages behind before it is disconnected.

    Without ``redis_url`` everything lives in this process. With it, the limits count in Redis and
    the room is relayed through Redis, so any number of workers (processes or hosts) serve one chat;
    the app's lifespan connects to Redis (run it with lifespan on, as uvicorn does by default).
    """
    origins = list(origins)  # used twice
    auth = AuthGate(StaticTokens(dict(tokens)), sources=[Subprotocol(TOKEN_PREFIX)])

    def person(websocket: WebSocket) -> str | None:
        return auth.principal(websocket)

    room = Room(queue_size)
    limits: list[Plugin]
    lifespan = None
    if redis_url is None:
        limits = [ConnectionLimit(max_per_key=connections_per_person, key=person), RateLimit(rate, burst, key=person)]
    else:
        import coredis  # noqa: PLC0415 - the redis extra, only for --redis

        client = coredis.Redis.from_url(redis_url)
        store = RedisStore(client, prefix="toolkit-demo:limits:")
        limits = [
            SharedConnectionLimit(max_per_key=connections_per_person, store=store, key=person),
            SharedRateLimit(rate, burst, store=store, key=person),
        ]
        broadcast = Broadcast(RedisBackend(redis_url, prefix="toolkit-demo:broadcast:"))
        relay = RoomRelay(room, broadcast)

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncGenerator[None]:
            async with client, store, broadcast, anyio.create_task_group() as tasks:
                await tasks.start(relay.run)
                yield
                tasks.cancel_scope.cancel()

    plugins = PluginManager(
        chat_messages,  # trylast: validates what the endpoint gets, after the limits
        MessageSizeLimit(MAX_MESSAGE_BYTES),
        *limits,  # the connection cap is trylast too, after the gate; the rate limit tryfirst
        auth,
        OriginGate(origins),  # registered after the gate, so it runs first
        ConnectionLogger(),  # registered last, so it logs what crosses the wire
    )
    chat = WebSocketApp(Chat(room, auth), plugins=plugins)
    # The servers are the origins the page is served from, as WebSocket URLs: never the request's Host.
    servers = [re.sub(r"^http", "ws", origin) for origin in origins]
    document = json.dumps(asyncapi_document(servers), separators=(",", ":")).encode("utf-8")

    async def describe(request: Request) -> Response:
        return Response(document, media_type="application/json")

    return Starlette(
        routes=[
            Route("/", _page),
            Route("/asyncapi.json", describe),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
            WebSocketRoute(CHAT_PATH, chat),
        ],
        lifespan=lifespan,
    )


def app_from_environment() -> Starlette:
    """The app of one worker of ``python -m toolkit_demo --workers N``: :func:`create_app` with the
    tokens, origins and Redis URL the parent put in :data:`CONFIG_VARIABLE` (uvicorn's ``factory``)."""
    config = json.loads(os.environ[CONFIG_VARIABLE])
    return create_app(config["tokens"], config["origins"], redis_url=config["redis"])


async def _page(request: Request) -> FileResponse:
    return FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS)
