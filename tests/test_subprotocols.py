"""``WebSocket.subprotocols``: what the client offered, from the scope's list or the headers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import Transport, connect, disconnect, make_scope
from toolkit import WebSocket, WebSocketApp

pytestmark = pytest.mark.anyio


def headers_scope(*values: bytes) -> dict[str, Any]:
    """A scope without the "subprotocols" key (a hand-built one), with these Sec-WebSocket-Protocol headers."""
    scope = dict(make_scope(headers=[(b"host", b"testserver"), *((b"sec-websocket-protocol", v) for v in values)]))
    del scope["subprotocols"]
    return scope


def test_from_the_scopes_list_in_order() -> None:
    assert WebSocket(make_scope(subprotocols=["chat.v2", "chat.v1"])).subprotocols == ("chat.v2", "chat.v1")


def test_the_scopes_list_wins_over_the_headers_and_non_strings_are_left_out() -> None:
    scope = make_scope(headers=[(b"sec-websocket-protocol", b"from.header")], subprotocols=["from.scope"])
    assert WebSocket(scope).subprotocols == ("from.scope",)
    scope["subprotocols"] = ["a", 7, None, b"b"]
    assert WebSocket(scope).subprotocols == ("a",)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ((b"chat.v1, chat.v2",), ("chat.v1", "chat.v2")),
        ((b"chat.v1", b"chat.v2,chat.v3"), ("chat.v1", "chat.v2", "chat.v3")),  # several headers, in order
        ((b" \tchat.v1 ,\tchat.v2\t",), ("chat.v1", "chat.v2")),
        ((b"chat.v1,,chat.v2,",), ("chat.v1", "chat.v2")),
    ],
)
def test_from_the_headers_without_the_scopes_list(values: tuple[bytes, ...], expected: tuple[str, ...]) -> None:
    assert WebSocket(headers_scope(*values)).subprotocols == expected


@pytest.mark.parametrize("values", [(), (b"",), (b",",), (b" , ,, ",), (b"  ",), (b"\t", b",")])
def test_none_offered_or_only_garbage_is_an_empty_tuple(values: tuple[bytes, ...]) -> None:
    assert WebSocket(headers_scope(*values)).subprotocols == ()


def test_none_offered_in_the_scope_is_an_empty_tuple() -> None:
    assert WebSocket(make_scope()).subprotocols == ()


@pytest.mark.parametrize(("offered", "accepted"), [(["chat.v1", "chat.v2"], "chat.v1"), ([], None), ([" , "], None)])
async def test_an_app_accepts_the_first_offered_or_none(offered: list[str], accepted: str | None) -> None:
    # On asyncio and trio: the pattern the docs teach, and no IndexError when nothing was offered.
    seen: list[tuple[str, ...]] = []

    async def endpoint(websocket: WebSocket) -> None:
        seen.append(websocket.subprotocols)
        await websocket.accept(subprotocol=next(iter(websocket.subprotocols), None))

    if offered == [" , "]:
        scope = headers_scope(b" , ")
    else:
        scope = dict(make_scope(subprotocols=offered))
    transport = Transport([connect(), disconnect()])
    await WebSocketApp(endpoint)(scope, transport.receive, transport.send)
    assert seen == [tuple(offered) if offered != [" , "] else ()]
    assert transport.sent[0] == {"type": "websocket.accept", "subprotocol": accepted, "headers": []}
