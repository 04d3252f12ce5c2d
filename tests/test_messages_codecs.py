"""toolkit_messages codecs: ``Messages(..., codec=MsgpackCodec())`` over the in-memory transport.

The schemas and the ``serve`` helper are tests/test_messages.py's; each behaviour runs with ``Messages``
as a channel only and registered as a plugin too, on every backend conftest parametrises.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgpack
import pytest
from pydantic import BaseModel
from toolkit_messages import Codec, JsonCodec, Messages, MsgpackCodec, OutboundError, asyncapi

from tests.support import Transport, binary, connect, disconnect, make_scope, text
from tests.test_asyncapi import assert_valid
from tests.test_messages import MODES, SECRET, Inbound, Outbound, Said, Served, serve
from toolkit import Message, PluginManager, WebSocket, WebSocketApp

pytestmark = pytest.mark.anyio

SAID_HI: Final = {"type": "said", "text": "hi", "sentBy": "server"}


def msgpack_messages(**options: Any) -> Messages[Any, Any]:
    return Messages(Inbound, Outbound, codec=MsgpackCodec(), **options)


def packed(value: object) -> Message:
    return binary(msgpack.packb(value))


def unpack(frame: str | bytes) -> object:
    assert isinstance(frame, bytes)
    return msgpack.unpackb(frame)


def seen(served: Served) -> list[object]:
    """What the client saw after the accept: msgpack-decoded messages, and ("close", code, reason)."""
    assert served.transport.sent[0]["type"] == "websocket.accept"
    out: list[object] = []
    for message in served.transport.sent[1:]:
        if message["type"] == "websocket.close":
            out.append(("close", message.get("code", 1000), message.get("reason", "")))
            continue
        assert message.get("text") is None, "msgpack goes out in binary frames only"
        data = message["bytes"]
        assert isinstance(data, bytes)
        out.append(msgpack.unpackb(data))
    return out


# --- the codecs themselves ------------------------------------------------------------------------


def test_codecs_are_codecs() -> None:
    codecs: list[Codec] = [JsonCodec(), JsonCodec("binary"), MsgpackCodec()]
    assert [(c.frames, c.media_type) for c in codecs] == [
        ("text", "application/json"),
        ("binary", "application/json"),
        ("binary", "application/msgpack"),
    ]
    assert JsonCodec().decode(JsonCodec().encode({"a": [1]})) == {"a": [1]}
    assert JsonCodec("binary").encode({"a": 1}) == b'{"a":1}'
    with pytest.raises(ValueError, match="expected value"):
        JsonCodec().decode('{"a": NaN}')
    assert MsgpackCodec().decode(MsgpackCodec().encode({"a": [1, "é", None]})) == {"a": [1, "é", None]}


@pytest.mark.parametrize(
    "frame",
    [
        b"",  # nothing
        b"\xc1",  # a byte msgpack never uses
        msgpack.packb({"a": 1}) + b"\x01",  # trailing data
        msgpack.packb({"a": 1})[:-1],  # truncated
        msgpack.packb({1: "a"}),  # a key that is not a string
        b"\xa2\xff\xfe",  # a str that is not UTF-8
        msgpack.packb(msgpack.ExtType(5, SECRET.encode())),  # an extension type
        b"\x91" * 100_000 + b"\xc0",  # nesting 100,000 deep
        b"\xdd\xff\xff\xff\xff",  # an array claiming 4 billion items
    ],
)
def test_msgpack_decode_failures_are_value_errors_that_never_quote_the_input(frame: bytes) -> None:
    with pytest.raises(ValueError, match=r"^malformed msgpack$") as caught:
        MsgpackCodec().decode(frame)
    assert caught.value.__cause__ is None


def test_msgpack_timestamp_decodes_to_an_aware_datetime() -> None:
    frame = msgpack.packb(datetime(2026, 1, 2, tzinfo=UTC), datetime=True)
    assert MsgpackCodec().decode(frame) == datetime(2026, 1, 2, tzinfo=UTC)


def test_messages_takes_its_frames_from_the_codec() -> None:
    assert msgpack_messages().frames == "binary"
    assert isinstance(msgpack_messages().codec, MsgpackCodec)
    assert Messages(int, int).codec.frames == "text"
    assert Messages(int, int, frames="binary").codec.frames == "binary"
    assert "codec=MsgpackCodec()" in repr(msgpack_messages())
    with pytest.raises(ValueError, match="contradicts"):
        Messages(int, int, frames="text", codec=MsgpackCodec())
    with pytest.raises(TypeError, match="Codec"):
        Messages(int, int, codec=object())  # type: ignore[arg-type]


# --- msgpack end to end over the in-memory transport ----------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_msgpack_valid_messages_are_answered_in_msgpack(mode: str) -> None:
    served = await serve(
        msgpack_messages(),
        packed({"type": "chat", "text": "hi"}),
        packed({"type": "join", "room": "ops"}),
        disconnect(1000),
        mode=mode,
    )
    assert [type(m).__name__ for m in served.received] == ["Chat", "Join"]
    assert seen(served) == [SAID_HI, {"type": "joined", "room": "ops", "topic": "#ops"}]


@pytest.mark.parametrize("mode", MODES)
async def test_msgpack_schema_invalid_gets_a_msgpack_error_without_the_input(mode: str) -> None:
    served = await serve(
        msgpack_messages(),
        packed({"type": "login", "token": SECRET}),
        packed({"type": "join", "room": "ops", SECRET: 1}),
        packed({"type": "chat", "text": "hi"}),
        disconnect(1000),
        mode=mode,
    )
    assert seen(served) == [
        {"type": "error", "error": "invalid_message", "errors": [{"loc": ["login", "token"], "type": "value_error"}]},
        {"type": "error", "error": "invalid_message", "errors": [{"loc": ["join", "*"], "type": "extra_forbidden"}]},
        SAID_HI,
    ]
    assert SECRET.encode() not in b"".join(m.get("bytes") or b"" for m in served.transport.sent)


@pytest.mark.parametrize("mode", MODES)
async def test_msgpack_schema_invalid_closes_1008_with_on_invalid_close(mode: str) -> None:
    served = await serve(msgpack_messages(on_invalid="close"), packed({"type": "chat"}), mode=mode)
    assert seen(served) == [("close", 1008, "invalid message")]


@pytest.mark.parametrize("mode", MODES)
async def test_msgpack_malformed_gets_a_malformed_message_error(mode: str) -> None:
    served = await serve(
        msgpack_messages(),
        binary(b"\xc1" + SECRET.encode()),
        binary(b"\x91" * 100_000),
        packed({"type": "chat", "text": "hi"}),
        disconnect(1000),
        mode=mode,
    )
    assert seen(served) == [{"type": "error", "error": "malformed_message"}] * 2 + [SAID_HI]


@pytest.mark.parametrize("mode", MODES)
async def test_msgpack_malformed_closes_1003_with_on_malformed_close(mode: str) -> None:
    served = await serve(msgpack_messages(on_malformed="close"), binary(b"\xc1"), mode=mode)
    assert seen(served) == [("close", 1003, "malformed message")]
    assert served.ended == (1003, "malformed message")


@pytest.mark.parametrize("mode", MODES)
async def test_msgpack_refuses_text_frames_with_1003(mode: str) -> None:
    served = await serve(msgpack_messages(), text('{"type":"chat","text":"hi"}'), mode=mode)
    assert seen(served) == [("close", 1003, "unsupported data")]


@pytest.mark.parametrize("mode", MODES)
async def test_msgpack_deep_nesting_and_huge_ints_do_not_crash(mode: str) -> None:
    served = await serve(
        msgpack_messages(),
        packed({"type": "tally", "counts": {"a": 2**64 - 1}, "items": [-(2**63)]}),  # msgpack's widest ints
        binary(b"\x81\xa5items" + b"\x91" * 5000 + b"\x01"),  # 5,000 deep: msgpack or the schema refuses it
        binary(b"\xcf" + b"\xff" * 8 + b"\x00"),  # a uint64 with trailing data
        disconnect(1000),
        mode=mode,
    )
    assert seen(served)[0] == {"type": "said", "text": "tally", "sentBy": "server"}
    assert all(isinstance(m, dict) and m["type"] == "error" for m in seen(served)[1:])
    assert len(seen(served)) == 3


class Big(BaseModel):
    type: Literal["big"]
    n: int


async def test_msgpack_outbound_that_msgpack_cannot_carry_is_an_outbound_error() -> None:
    messages: Messages[Big, Big] = Messages(Big, Big, codec=MsgpackCodec())
    with pytest.raises(OutboundError, match="cannot be encoded") as caught:
        messages.dump(Big(type="big", n=2**70))
    assert caught.value.__cause__ is None
    assert unpack(messages.dump({"type": "big", "n": 2**63})) == {"type": "big", "n": 2**63}
    with pytest.raises(OutboundError):
        messages.dump({"type": "big", "n": "many"})


@pytest.mark.parametrize("raw", ["said", "wrong", "text", "malformed"])
async def test_msgpack_plugin_checks_what_the_app_sends_around_the_channel(raw: str) -> None:
    messages = msgpack_messages()
    frames: dict[str, str | bytes] = {
        "said": msgpack.packb({"type": "said", "text": "hi"}),
        "wrong": msgpack.packb({"type": "said", "text": 1}),  # strict, as for JSON: no int for a str
        "text": json.dumps({"type": "said", "text": "hi"}),
        "malformed": b"\xc1",
    }
    sent = frames[raw]

    async def app(websocket: WebSocket) -> None:
        await websocket.accept()
        if isinstance(sent, str):
            await websocket.send_text(sent)
        else:
            await websocket.send_bytes(sent)
        await websocket.close()

    transport = Transport([connect()])
    await WebSocketApp(app, plugins=PluginManager(messages))(make_scope(), transport.receive, transport.send)
    kinds = [m["type"] for m in transport.sent]
    if raw == "said":
        assert kinds == ["websocket.accept", "websocket.send", "websocket.close"]
    else:  # an OutboundError in ws_send: a plugin failure, so nothing is sent and the connection closes 1011
        assert kinds == ["websocket.accept", "websocket.close"]
        assert transport.sent[-1].get("code") == 1011


async def test_msgpack_channel_send_accepts_models_and_dicts() -> None:
    messages = msgpack_messages()
    assert unpack(messages.dump(Said(type="said", text="hi"))) == SAID_HI
    assert unpack(messages.dump({"type": "said", "text": "hi"})) == SAID_HI


def test_asyncapi_gives_msgpack_messages_their_content_type() -> None:
    document = asyncapi("Packed", "1.0.0", {"/json": Messages(Inbound, Outbound), "/packed": msgpack_messages()})
    assert_valid(document)
    assert document["defaultContentType"] == "application/json"
    components = document["components"]["messages"]
    assert components["packed.chat"]["contentType"] == "application/msgpack"
    assert components["packed.error"]["contentType"] == "application/msgpack"
    assert "contentType" not in components["json.chat"]
    assert document["channels"]["packed"]["description"].startswith("Messages are msgpack in binary frames.")
