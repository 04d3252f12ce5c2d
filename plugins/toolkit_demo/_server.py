"""How ``python -m toolkit_demo`` runs uvicorn: limits taken from the demo's, and a shutdown that says goodbye.

uvicorn's defaults are made for any app; the demo knows better what it accepts:

- its largest message is 4 KiB, so the server refuses frames over :data:`WS_MAX_SIZE` before
  decompressing more than that (uvicorn's default of 16 MiB let a permessage-deflate bomb grow the
  server by 187 MiB before the toolkit's limit saw the message);
- a client has :data:`HANDSHAKE_SECONDS` to send its request head (uvicorn has no such deadline:
  100 half-sent handshakes, slowloris style, were all still held after 8 s);
- every send and close is bounded (:class:`toolkit_limits.SendTimeouts`), so a client that stops
  reading is given up on;
- Ctrl+C closes every chat connection with 1001 "going away", then stops within
  :data:`SHUTDOWN_SECONDS` even if a client never answers.

With ``--workers N``, uvicorn's supervisor starts each worker with the same configuration (an import
string, :func:`worker_app`, whose app is bounded by the same :class:`toolkit_limits.SendTimeouts`); its
workers run uvicorn's own server, so their shutdown is uvicorn's: 1012 (service restart), no 1001.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Sequence
from typing import Any, Final

import anyio
import uvicorn
from toolkit_limits import SendTimeouts
from uvicorn.protocols.http.h11_impl import H11Protocol

from toolkit import CloseCode, WebSocket, WebSocketApp, WebSocketDisconnect, WebSocketDisconnected

from ._app import MAX_MESSAGE_BYTES, app_from_environment

__all__ = [
    "CLOSE_SECONDS",
    "HANDSHAKE_SECONDS",
    "MAX_CONNECTIONS",
    "PING_INTERVAL",
    "PING_TIMEOUT",
    "SEND_SECONDS",
    "SHUTDOWN_SECONDS",
    "WS_MAX_SIZE",
    "DemoServer",
    "HandshakeDeadline",
    "going_away",
    "server_config",
    "worker_app",
]

#: The largest frame the server accepts, compressed or not: a few times the demo's 4 KiB message limit,
#: so the toolkit's own limit answers (1009 "message too big") for anything in between.
WS_MAX_SIZE: Final = 4 * MAX_MESSAGE_BYTES
#: Seconds a client has to send its whole request head (the handshake) once connected.
HANDSHAKE_SECONDS: Final = 5.0
#: Seconds one message may take to go out to a client, and the close.
SEND_SECONDS: Final = 10.0
CLOSE_SECONDS: Final = 2.0
#: Keepalive: a ping every PING_INTERVAL seconds; no pong within PING_TIMEOUT closes the connection.
PING_INTERVAL: Final = 20.0
PING_TIMEOUT: Final = 20.0
#: Connections (HTTP and WebSocket) the server takes at once; more get 503.
MAX_CONNECTIONS: Final = 1000
#: Seconds a shutdown may wait for connections and tasks before cancelling them.
SHUTDOWN_SECONDS: Final = 5


class HandshakeDeadline(H11Protocol):
    """uvicorn's h11 protocol, with a deadline for each request head.

    The clock starts when the connection opens (and again after each response on a kept-alive
    connection); it stops once the head is complete. A client still sending its head then is
    disconnected without an answer.
    """

    #: The deadline, in seconds.
    seconds: float = HANDSHAKE_SECONDS
    _deadline: asyncio.TimerHandle | None = None
    _waiting_for: object = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]  # uvicorn's own annotation is narrower
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._waiting_for = self.cycle  # a new cycle means a new request head has arrived
        self._deadline = self.loop.call_later(self.seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not self._waiting_for:
            self._disarm()

    def handle_websocket_upgrade(self, event: Any) -> None:
        self._disarm()  # the head is complete; the WebSocket protocol takes the connection from here
        super().handle_websocket_upgrade(event)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


async def going_away(apps: Sequence[WebSocketApp], within: float = CLOSE_SECONDS) -> None:
    """Close every running connection of ``apps`` with 1001 "going away", all at once, for at most ``within`` s."""
    code = CloseCode.GOING_AWAY

    async def close(websocket: WebSocket) -> None:
        # Already gone, or given up on by SendTimeouts: nothing left to say goodbye to.
        with contextlib.suppress(WebSocketDisconnect, WebSocketDisconnected, OSError):
            await websocket.close(code.value, code.reason)

    with anyio.move_on_after(within):
        async with anyio.create_task_group() as tasks:
            for app in apps:
                for websocket in app.connections:
                    tasks.start_soon(close, websocket)


class DemoServer(uvicorn.Server):
    """uvicorn's server, whose shutdown first says "going away" (1001) to every chat connection.

    uvicorn's own shutdown then closes what is left (1012 "service restart") and waits at most
    :data:`SHUTDOWN_SECONDS` for the apps' tasks; sockets still held after that are dropped.
    """

    def __init__(self, config: uvicorn.Config, chats: Sequence[WebSocketApp]) -> None:
        super().__init__(config)
        self.chats = tuple(chats)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # no new connections while the old ones are told to go
        await going_away(self.chats)
        await super().shutdown(sockets)
        # What uvicorn leaves: connections whose write buffer never drains (a client that stopped
        # reading). Their tasks are over; drop the sockets instead of leaving them to the exit.
        for connection in list(self.server_state.connections):
            transport: Any = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()


def _bounded(app: Any) -> SendTimeouts:
    return SendTimeouts(app, send=SEND_SECONDS, close=CLOSE_SECONDS)


def worker_app() -> SendTimeouts:
    """The app of one worker of ``python -m toolkit_demo --workers N`` (uvicorn's ``factory``): the demo
    built from :data:`~toolkit_demo.CONFIG_VARIABLE`, its sends bounded as :func:`server_config` bounds them."""
    return _bounded(app_from_environment())


def server_config(app: Any, **config: Any) -> uvicorn.Config:
    """uvicorn's configuration for the demo: its limits, bounded sends, websockets-sansio, lifespan off.

    ``config`` adds to it (or replaces ``lifespan``). An import string for ``app`` (uvicorn's workers load
    the app themselves) is passed as is: :func:`worker_app` bounds the sends of the app it makes.
    """
    return uvicorn.Config(
        app if isinstance(app, str) else _bounded(app),
        http=HandshakeDeadline,
        ws="websockets-sansio",
        ws_max_size=WS_MAX_SIZE,
        ws_ping_interval=PING_INTERVAL,
        ws_ping_timeout=PING_TIMEOUT,
        limit_concurrency=MAX_CONNECTIONS,
        timeout_graceful_shutdown=SHUTDOWN_SECONDS,
        **{"lifespan": "off", **config},
    )
