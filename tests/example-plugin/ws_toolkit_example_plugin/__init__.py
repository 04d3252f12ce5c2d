"""An example third-party ws-toolkit plugin, found through the ``ws_toolkit.plugins`` entry point.

It shows each kind of hook implementation the ``ws-toolkit plugins`` command reports:

- ``ws_accept`` (``tryfirst``) adds an ``x-example-plugin`` header to the accept;
- ``ws_receive`` (``async``) redacts the word "secret" in text messages;
- ``ws_send`` (a ``wrapper``) counts the messages sent on each connection in ``websocket.state``;
- ``ws_close`` remembers how each connection ended.
"""

from __future__ import annotations

import toolkit
from toolkit import Accept, ClosedBy, MessageResult, WebSocket, Wrapper

__all__ = ["ExamplePlugin"]


class ExamplePlugin:
    """Registered by ``toolkit.load_plugins()`` under the entry point's name, ``example``."""

    def __init__(self) -> None:
        #: ``(code, closed_by)`` of every connection that ended.
        self.closes: list[tuple[int, ClosedBy]] = []

    @toolkit.hookimpl(tryfirst=True)
    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Accept:
        return accept.replace(headers=(*accept.headers, (b"x-example-plugin", b"1")))

    async def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> str | None:
        return data.replace("secret", "******") if isinstance(data, str) else None

    @toolkit.hookimpl(wrapper=True)
    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> Wrapper[MessageResult]:
        outcome = yield
        websocket.state.example_sent = getattr(websocket.state, "example_sent", 0) + 1
        return outcome

    def ws_close(self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None:
        self.closes.append((code, closed_by))
