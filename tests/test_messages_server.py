"""toolkit_messages end to end: a real uvicorn server on 127.0.0.1 and a real ``websockets`` client.

The server, the ``live`` fixture and the client helpers are tests/test_server.py's: one server per uvicorn
WebSocket implementation serves the module, each test mounts its own app, and after each test the fixture
waits (bounded) until the server is idle and fails on any error the server logged. The client is
asyncio-only; every client step is bounded. Each behaviour runs with ``Messages`` as a channel only and
registered as a plugin too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated, Any, Final, Literal

import msgpack
import pytest
from pydantic import BaseModel, Field
from toolkit_messages import Messages, MsgpackCodec
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.test_server import (
    TEST_TIMEOUT,
    Live,
    anyio_backend,
    client,
    expect_close,
    live,
    module_server,
    recv,
)
from toolkit import PluginManager, WebSocket, WebSocketApp, WebSocketDisconnect

pytestmark = [pytest.mark.server, pytest.mark.anyio]

#: tests/test_server.py's fixtures, which pytest finds by name in this module.
SERVER_FIXTURES = (anyio_backend, live, module_server)


class Chat(BaseModel):
    type: Literal["chat"]
    text: str


class Join(BaseModel):
    type: Literal["join"]
    room: str


class Said(BaseModel):
    type: Literal["said"]
    text: str
    sent_by: str = Field(default="server", alias="sentBy")


class Joined(BaseModel):
    type: Literal["joined"]
    room: str


Inbound = Annotated[Chat | Join, Field(discriminator="type")]
Outbound = Annotated[Said | Joined, Field(discriminator="type")]

MODES: Final = ["channel", "plugin"]
INVALID_JSON: Final = {"type": "error", "error": "invalid_json"}


def chat_app(mode: str, **options: Any) -> WebSocketApp:
    """Replies to each chat and join, through the channel; ``Messages`` also registered in "plugin" mode."""
    messages = Messages(Inbound, Outbound, **options)

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        channel = messages.channel(websocket)
        async for message in channel:
            if isinstance(message, Chat):
                await channel.send(Said(type="said", text=message.text))
            else:
                await channel.send(Joined(type="joined", room=message.room))

    return WebSocketApp(endpoint, plugins=PluginManager(messages) if mode == "plugin" else None)


async def ask(conn: ClientConnection, message: str | bytes) -> Any:
    await conn.send(message)
    return json.loads(await recv(conn))


@pytest.mark.parametrize("mode", MODES)
async def test_valid_messages_get_typed_replies(live: Live, mode: str) -> None:
    url = live.serve(chat_app(mode))
    async with asyncio.timeout(TEST_TIMEOUT), client(url) as conn:
        assert await ask(conn, '{"type":"chat","text":"héllo"}') == {
            "type": "said",
            "text": "héllo",
            "sentBy": "server",
        }
        assert await ask(conn, '{"type":"join","room":"lobby"}') == {"type": "joined", "room": "lobby"}
        await conn.send('{"type":"chat","text":"x"}')
        assert await recv(conn) == '{"type":"said","text":"x","sentBy":"server"}'  # compact, by alias


@pytest.mark.parametrize("mode", MODES)
async def test_schema_invalid_gets_an_error_and_the_connection_stays(live: Live, mode: str) -> None:
    url = live.serve(chat_app(mode))
    async with asyncio.timeout(TEST_TIMEOUT), client(url) as conn:
        secret = "sk_live_do_not_echo"
        reply = await ask(conn, json.dumps({"type": "chat", "text": [secret]}))
        assert reply == {
            "type": "error",
            "error": "invalid_message",
            "errors": [{"loc": ["chat", "text"], "type": "string_type"}],
        }
        assert (await ask(conn, '{"type":"shout"}'))["errors"] == [{"loc": [], "type": "union_tag_invalid"}]
        assert await ask(conn, '{"type":"chat","text":"still here"}') == {
            "type": "said",
            "text": "still here",
            "sentBy": "server",
        }


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("payload", ["{", "[" * 100_000, '{"type":"chat","text":"a","n":NaN}', '{"a":1} x'])
async def test_malformed_json_gets_an_error_and_the_connection_stays(live: Live, mode: str, payload: str) -> None:
    url = live.serve(chat_app(mode))
    async with asyncio.timeout(TEST_TIMEOUT), client(url) as conn:
        assert await ask(conn, payload) == INVALID_JSON
        assert (await ask(conn, '{"type":"join","room":"r"}'))["type"] == "joined"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("options", "payload", "close"),
    [
        ({"on_invalid": "close"}, '{"type":"chat"}', (1008, "invalid message")),
        ({"on_malformed": "close"}, "{", (1003, "invalid JSON")),
        ({}, b'{"type":"chat","text":"binary"}', (1003, "unsupported data")),
        ({"frames": "binary"}, '{"type":"chat","text":"text"}', (1003, "unsupported data")),
        ({"frames": "binary"}, b'{"type":"chat","text":"\xff"}', (1007, "invalid utf-8")),
    ],
    ids=["invalid-1008", "malformed-1003", "bytes-in-text-1003", "text-in-binary-1003", "bad-utf8-1007"],
)
async def test_policy_closes_reach_the_client(
    live: Live, mode: str, options: dict[str, Any], payload: str | bytes, close: tuple[int, str]
) -> None:
    url = live.serve(chat_app(mode, **options))
    async with asyncio.timeout(TEST_TIMEOUT), client(url) as conn:
        await conn.send(payload)
        assert await expect_close(conn) == close


@pytest.mark.parametrize("mode", MODES)
async def test_binary_mode_replies_in_binary(live: Live, mode: str) -> None:
    url = live.serve(chat_app(mode, frames="binary"))
    async with asyncio.timeout(TEST_TIMEOUT), client(url) as conn:
        await conn.send('{"type":"chat","text":"café"}'.encode())
        assert await recv(conn) == '{"type":"said","text":"café","sentBy":"server"}'.encode()
        await conn.send(b"{")
        assert await recv(conn) == b'{"type":"error","error":"invalid_json"}'


async def test_plugin_closes_1011_when_the_app_sends_around_the_schema(live: Live) -> None:
    messages = Messages(Inbound, Outbound)
    outcome: list[int] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text('{"type":"joined","room":"ok"}')  # raw, but matches: goes out
        try:
            await websocket.send_json({"type": "said"})  # raw and missing "text": an app bug
        except WebSocketDisconnect as exc:
            outcome.append(exc.code)

    url = live.serve(WebSocketApp(endpoint, plugins=PluginManager(messages)))
    async with asyncio.timeout(TEST_TIMEOUT), client(url) as conn:
        assert json.loads(await recv(conn)) == {"type": "joined", "room": "ok"}
        assert await expect_close(conn) == (1011, "internal error")
    await live.server.wait_idle()
    assert outcome == [1011]
    assert live.take_errors() == ["toolkit: plugin 'Messages' failed in ws_send: raised"]


@pytest.mark.parametrize("mode", MODES)
async def test_many_bad_messages_in_a_row_leave_the_connection_usable(live: Live, mode: str) -> None:
    url = live.serve(chat_app(mode))
    async with asyncio.timeout(TEST_TIMEOUT), client(url) as conn:
        for i in range(50):
            await conn.send("{" if i % 2 else '{"type":"chat"}')
        replies = [json.loads(await recv(conn)) for _ in range(50)]
        assert [r["error"] for r in replies] == ["invalid_message", "invalid_json"] * 25
        assert (await ask(conn, '{"type":"chat","text":"ok"}'))["text"] == "ok"
        with contextlib.suppress(ConnectionClosed):
            await conn.close()


# --- msgpack (toolkit_messages.MsgpackCodec) over the wire ----------------------------------------


async def ask_packed(conn: ClientConnection, value: object) -> Any:
    await conn.send(msgpack.packb(value))
    reply = await recv(conn)
    assert isinstance(reply, bytes), "msgpack answers come in binary frames"
    return msgpack.unpackb(reply)


@pytest.mark.parametrize("mode", MODES)
async def test_msgpack_end_to_end(live: Live, mode: str) -> None:
    url = live.serve(chat_app(mode, codec=MsgpackCodec()))
    async with asyncio.timeout(TEST_TIMEOUT), client(url) as conn:
        said = {"type": "said", "text": "héllo", "sentBy": "server"}
        assert await ask_packed(conn, {"type": "chat", "text": "héllo"}) == said
        assert await ask_packed(conn, {"type": "join", "room": "ops"}) == {"type": "joined", "room": "ops"}
        assert await ask_packed(conn, {"type": "chat", "text": 2**64 - 1}) == {
            "type": "error",
            "error": "invalid_message",
            "errors": [{"loc": ["chat", "text"], "type": "string_type"}],
        }
        await conn.send(b"\xc1sk_live_do_not_echo")
        reply = await recv(conn)
        assert isinstance(reply, bytes)
        assert msgpack.unpackb(reply) == {"type": "error", "error": "malformed_message"}
        assert await ask_packed(conn, {"type": "chat", "text": "still here"}) == {**said, "text": "still here"}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("options", "payload", "close"),
    [
        ({}, '{"type":"chat","text":"text"}', (1003, "unsupported data")),
        ({"on_malformed": "close"}, b"\x91" * 100_000, (1003, "malformed message")),
        ({"on_invalid": "close"}, msgpack.packb({"type": "chat"}), (1008, "invalid message")),
    ],
    ids=["text-1003", "malformed-1003", "invalid-1008"],
)
async def test_msgpack_policy_closes_reach_the_client(
    live: Live, mode: str, options: dict[str, Any], payload: str | bytes, close: tuple[int, str]
) -> None:
    url = live.serve(chat_app(mode, codec=MsgpackCodec(), **options))
    async with asyncio.timeout(TEST_TIMEOUT), client(url) as conn:
        await conn.send(payload)
        assert await expect_close(conn) == close
