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
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from toolkit_auth import AuthGate, CredentialLocations, OriginGate, StaticTokens, Subprotocol
from toolkit_broadcast import Broadcast, RedisBackend
from toolkit_limits import (
    ConnectionLimit,
    MessageSizeLimit,
    RateLimit,
    RedisStore,
    SharedConnectionLimit,
    SharedRateLimit,
)
from toolkit_logging import DEFAULT_REDACT_HEADERS, DEFAULT_REDACT_KEYS, ConnectionLogger, RedactingFilter
from toolkit_messages import asyncapi
from toolkit_otel import WebSocketTelemetry
from toolkit_otel.prometheus import CONTENT_TYPE, PrometheusBridge, scrape

from toolkit import Plugin, PluginManager, WebSocketApp

from ._chat import OUTBOX_BYTES, SUBPROTOCOL, Chat, Room, RoomRelay, chat_messages

__all__ = [
    "CHAT_PATH",
    "CONFIG_VARIABLE",
    "CONNECTIONS_PER_PERSON",
    "MAX_MESSAGE_BYTES",
    "NAMES",
    "REDIS_DEADLINE",
    "STATIC",
    "TOKEN_PREFIX",
    "TOKEN_SOURCES",
    "app_from_environment",
    "asyncapi_document",
    "create_app",
    "demo_tokens",
    "local_origins",
    "log_filter",
]

#: The page, its script and its style sheet, shipped in the package.
STATIC: Final = Path(__file__).parent / "static"
#: The people the demo has tokens for.
NAMES: Final = ("alice", "bob", "carol")
#: Inbound messages over this many UTF-8 bytes close the connection (1009) before anything parses them.
MAX_MESSAGE_BYTES: Final = 4096
#: How many connections one person (one authenticated name) may have open at once: tabs, devices; with
#: ``--redis``, on all the workers together.
CONNECTIONS_PER_PERSON: Final = 10
#: Seconds each Redis call may take with ``--redis`` (the libraries' default is 0.05): a demo often runs
#: on a laptop or a small CI box next to its workers, its Redis and its tests, where 50 ms stalls happen.
REDIS_DEADLINE: Final = 0.25
#: The chat's WebSocket path.
CHAT_PATH: Final = "/ws"
#: The prefix of the subprotocol that carries the token: the page offers ``["chat.v1", "bearer.<token>"]``.
TOKEN_PREFIX: Final = "bearer."  # noqa: S105 - a prefix, not a secret
#: Where the chat's gate looks for the token: only the subprotocol.
TOKEN_SOURCES: Final = (Subprotocol(TOKEN_PREFIX),)
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


def log_filter() -> RedactingFilter:
    """The filter on every log handler of ``python -m toolkit_demo``: no token, no control character.

    The default names (``Authorization``, ``Cookie``, ``Sec-WebSocket-Protocol``, ``token=``...)
    plus wherever :data:`TOKEN_SOURCES` read a token (the ``bearer.`` subprotocol prefix), so a token
    is redacted wherever a client puts it, and the server's DEBUG lines stay clean.
    """
    locations = CredentialLocations.of(TOKEN_SOURCES)
    return RedactingFilter(
        headers=DEFAULT_REDACT_HEADERS | set(locations.headers),
        query=DEFAULT_REDACT_KEYS | set(locations.query),
        cookies=locations.cookies,
        subprotocol_prefixes=locations.subprotocol_prefixes,
    )


def asyncapi_document(servers: Iterable[str] = ()) -> dict[str, Any]:
    """The chat's AsyncAPI 3.0 document, generated from :data:`chat_messages` at :data:`CHAT_PATH`.

    ``servers`` are the ``ws://``/``wss://`` URLs it is served at, each named after its host and port.
    """
    named = {re.sub(r"[^A-Za-z0-9_-]", "-", urlsplit(url).netloc): url for url in servers}
    return asyncapi(
        "ws-toolkit demo chat",
        "2.1.0",
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
    outbox_bytes: int = OUTBOX_BYTES,
    connections_per_person: int = CONNECTIONS_PER_PERSON,
    redis_url: str | None = None,
) -> Starlette:
    """The demo app: ``/`` the page, ``/static/...`` its files, ``/ws`` the chat, ``/asyncapi.json`` its description,
    ``/metrics`` the chat's metrics in Prometheus' text format (summed over workers in multiprocess mode).

    ``tokens`` maps each token to the name of the person it lets in (see :func:`demo_tokens`);
    ``origins`` lists the pages allowed to connect (see :func:`local_origins`). Each person may
    send ``burst`` messages at once, then ``rate`` per second (whichever of their connections sends
    them). Each connection may fall ``outbox_bytes`` bytes of messages behind before it is
    disconnected (who is in the room is merged, and never counts against it). One person may have
    ``connections_per_person`` connections open at once; the next is denied with 429 "too many
    connections".

    Without ``redis_url`` everything lives in this process. With it, the rate limit and the
    connection cap count in Redis (``SharedRateLimit``, ``SharedConnectionLimit``) and the room is
    relayed through Redis (:class:`~toolkit_demo.RoomRelay`), so any number of workers (processes or
    hosts) serve one chat; the app's lifespan connects to Redis (run it with lifespan on).
    """
    origins = list(origins)  # used twice
    auth = AuthGate(StaticTokens(dict(tokens)), sources=TOKEN_SOURCES)

    room = Room(outbox_bytes)
    rate_limit: Plugin
    connection_limit: Plugin
    lifespan = None
    if redis_url is None:
        rate_limit = RateLimit(rate, burst, key=auth.principal)
        connection_limit = ConnectionLimit(max_per_key=connections_per_person, key=auth.principal)
    else:
        try:
            import coredis  # noqa: PLC0415 - the redis extra, only for --redis
        except ModuleNotFoundError as missing:
            raise ModuleNotFoundError(
                f"create_app(redis_url) needs {missing.name}, from the redis extra: pip install 'ws-toolkit[redis]'",
                name=missing.name,
            ) from missing

        client = coredis.Redis.from_url(redis_url)
        store = RedisStore(client, prefix="toolkit-demo:limits:", deadline=REDIS_DEADLINE)
        rate_limit = SharedRateLimit(rate, burst, store=store, key=auth.principal)
        connection_limit = SharedConnectionLimit(max_per_key=connections_per_person, store=store, key=auth.principal)
        broadcast = Broadcast(RedisBackend(redis_url, prefix="toolkit-demo:broadcast:", deadline=REDIS_DEADLINE))
        relay = RoomRelay(room, broadcast)

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncGenerator[None]:
            async with client, store, broadcast, anyio.create_task_group() as tasks:
                await tasks.start(relay.run)
                yield
                tasks.cancel_scope.cancel()

    # Metrics through OpenTelemetry into prometheus-client (docs/observability.md, "Prometheus"); each
    # worker exports every 5 s, and a scrape exports its own worker's first.
    bridge = PrometheusBridge()
    reader = PeriodicExportingMetricReader(bridge, export_interval_millis=5000)
    telemetry = WebSocketTelemetry(meter_provider=MeterProvider(metric_readers=[reader]), route=CHAT_PATH)
    # ws_receive runs the tryfirst implementations latest-registered first: MessageSizeLimit is
    # registered last so that it measures each message before anything else looks at it (the
    # connection log parses JSON payloads at DEBUG, 130-150 ms of CPU for a 0.9 MiB array).
    plugins = PluginManager(
        chat_messages,  # trylast: validates what the endpoint gets, after the limits
        rate_limit,  # tryfirst on ws_receive, by the name the token gave
        auth,
        OriginGate(origins),  # registered after the gate, so it runs first
        # trylast on ws_accept: counts only connections the gates let in, by the name the token gave.
        connection_limit,
        ConnectionLogger(),  # trylast on ws_send, first registered of those: logs what crosses the wire
        telemetry,
        MessageSizeLimit(MAX_MESSAGE_BYTES),  # registered last: first on ws_receive
    )
    telemetry.time_hooks(plugins)
    chat = WebSocketApp(Chat(room, auth), plugins=plugins)
    # The servers are the origins the page is served from, as WebSocket URLs: never the request's Host.
    servers = [re.sub(r"^http", "ws", origin) for origin in origins]
    document = json.dumps(asyncapi_document(servers), separators=(",", ":")).encode("utf-8")

    async def describe(request: Request) -> Response:
        return Response(document, media_type="application/json")

    async def metrics(request: Request) -> Response:
        reader.force_flush()
        return Response(scrape(bridge.registry), media_type=CONTENT_TYPE)

    return Starlette(
        routes=[
            Route("/", _page),
            Route("/asyncapi.json", describe),
            Route("/metrics", metrics),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
            WebSocketRoute(CHAT_PATH, chat),
        ],
        lifespan=lifespan,
    )


def app_from_environment() -> Starlette:
    """The app of one worker of ``python -m toolkit_demo --workers N``: :func:`create_app` with the
    tokens, origins and Redis URL the parent put in :data:`CONFIG_VARIABLE`."""
    config = json.loads(os.environ[CONFIG_VARIABLE])
    return create_app(config["tokens"], config["origins"], redis_url=config["redis"])


async def _page(request: Request) -> FileResponse:
    return FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS)
