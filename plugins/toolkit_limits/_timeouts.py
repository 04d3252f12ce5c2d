"""Bounded sends: give up on a client that stops reading, instead of waiting for it forever.

A client that stops reading fills its TCP window; the server's ``send`` then waits
for room that never comes. The writer task hangs, and so does the ``close()`` that
would end it, and with them everything the connection holds (its slot in a
:class:`~toolkit_limits.ConnectionLimit`, its outbox, its task). The websockets
library bounds both waits (its ``write_limit`` and ``close_timeout``); ASGI servers
leave it to the app. This middleware bounds them for any ASGI app, on asyncio and
trio (through anyio, from the ``limits`` extra).
"""

from __future__ import annotations

import math
from typing import Final, final

from toolkit import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SendTimeout", "SendTimeouts"]

_CLOSES: Final = frozenset({"websocket.close", "websocket.http.response.body"})


class SendTimeout(OSError):
    """The server did not take a message within the limit: the client stopped reading.

    An ``OSError``, which is what ASGI servers raise from ``send`` when the connection
    is gone (ASGI 2.4): a ``toolkit.WebSocket`` turns it into close code 1006 for the
    app (``WebSocketDisconnect(1006)``) and for ``ws_close`` (``closed_by="client"``).
    """


def _limit(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds or None, got {value!r}")
    return float(value)


@final
class SendTimeouts:
    """ASGI middleware: every WebSocket send may take ``send`` seconds, the close ``close`` seconds.

    ``app`` is what it wraps (a :class:`toolkit.WebSocketApp`, a
    :class:`toolkit.ToolkitMiddleware` stack, any ASGI app); put it outermost, next
    to the server, so the toolkit sees what it raises. When a send takes longer, it
    is abandoned and raises :class:`SendTimeout`; so does every later send of that
    connection, at once. ``None`` leaves that kind of send unbounded. HTTP requests
    and lifespan pass through untouched.

    What is freed: the app's side at once (its task ends, ``ws_close`` fires, the
    plugins' per-connection state goes). The TCP connection itself is the server's:
    uvicorn closes it when the app returns, after its write buffer drains or the
    client goes.
    """

    __slots__ = ("_move_on_after", "app", "close", "send")

    def __init__(self, app: ASGIApp, *, send: float | None = 10.0, close: float | None = 5.0) -> None:
        try:
            from anyio import move_on_after  # noqa: PLC0415 - only this middleware needs it, not the limits
        except ModuleNotFoundError as missing:
            raise ModuleNotFoundError(
                "toolkit_limits.SendTimeouts needs anyio, from the limits extra: pip install 'ws-toolkit[limits]'",
                name=missing.name,
            ) from missing
        self._move_on_after = move_on_after
        self.app: ASGIApp = app
        #: Seconds a data message (or the accept, or a denial's start) may take to go out.
        self.send: float | None = _limit("send", send)
        #: Seconds the close (or the last part of a denial) may take to go out.
        self.close: float | None = _limit("close", close)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or (self.send is None and self.close is None):
            await self.app(scope, receive, send)
            return
        move_on_after = self._move_on_after
        abandoned: str | None = None

        async def bounded(message: Message) -> None:
            nonlocal abandoned
            if abandoned is not None:
                raise SendTimeout(abandoned)
            limit = self.close if message["type"] in _CLOSES else self.send
            if limit is None:
                await send(message)
                return
            with move_on_after(limit) as deadline:
                await send(message)
            if deadline.cancelled_caught:
                abandoned = f"the client took no {message['type']} within {limit:g} s: given up"
                raise SendTimeout(abandoned)

        await self.app(scope, receive, bounded)
