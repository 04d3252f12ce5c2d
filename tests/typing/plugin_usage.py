"""Plugin code that must type-check under ``mypy --strict`` (mypy checks this file with the tests).

It is also imported by tests/test_typing.py, so it runs, not only type-checks.
"""

from __future__ import annotations

from collections.abc import Generator

import toolkit
from toolkit import Accept, Close, ClosedBy, DenialResponse, MessageResult, ReceiveResult, WebSocket, Wrapper


class Everything(toolkit.Plugin):
    """Implements every hook with the exact signatures, sync and async."""

    async def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Accept | DenialResponse | None:
        if "token" not in websocket.query_params:
            return DenialResponse(401, "missing token")
        return accept.replace(subprotocol="chat.v1")

    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> MessageResult:
        if isinstance(data, bytes):
            return Close(1003, "unsupported data")
        return toolkit.DROP if not data else data.strip()

    async def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> str | None:
        return None

    def ws_close(self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None:
        websocket.state.closed = (code, closed_by)

    def ws_denial(self, *, websocket: WebSocket, response: DenialResponse) -> DenialResponse | None:
        return None


class Partial(toolkit.Plugin):
    """Typed hooks that take only some of their arguments (``**_`` receives the rest), and typed wrappers."""

    def ws_send(self, *, data: str | bytes, **_: object) -> MessageResult:
        return data.upper() if isinstance(data, str) else None

    def ws_close(self, *, code: int, closed_by: ClosedBy, **_: object) -> None:
        del code, closed_by

    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Wrapper[ReceiveResult]:
        outcome = yield  # a generator method is a wrapper: no decorator needed
        websocket.state.last_outcome = outcome
        return outcome

    @toolkit.hookimpl(tryfirst=True)
    def ws_denial(self, *, response: DenialResponse, **_: object) -> Wrapper[DenialResponse | None]:
        outcome = yield
        return outcome or response


class Timing:
    """A plain object with decorated hooks and a wrapper, no base class."""

    @toolkit.hookimpl(wrapper=True, tryfirst=True)
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Generator[None, MessageResult, MessageResult]:
        result = yield
        return result

    @toolkit.hookimpl(trylast=True)
    def ws_send(self, data: str | bytes) -> None:  # no base class: no checker compares it with the hook
        return None


def build() -> toolkit.PluginManager:
    manager = toolkit.PluginManager(Everything())
    manager.register(Timing(), name="timing")
    manager.register(Partial(), name="partial")
    return manager


async def endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    async for message in websocket.iter_json():
        await websocket.send_json(message)


app = toolkit.WebSocketApp(endpoint, plugins=build())
