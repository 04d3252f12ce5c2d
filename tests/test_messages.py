"""toolkit_messages: typed, validated messages over the in-memory transport.

Most behaviour is checked in both modes: ``"channel"`` (the app reads through
``messages.channel(websocket)``, nothing registered) and ``"plugin"`` (the same
``Messages`` is also registered as a plugin, so its hooks validate first and hand
the model to the channel). Tests that need the plugin alone read the raw WebSocket.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import pydantic_core
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PydanticUserError,
    TypeAdapter,
    computed_field,
    field_validator,
)
from toolkit_messages import Channel, ErrorMessage, Messages, OutboundError

import toolkit
from tests.support import Recorder, Transport, binary, connect, disconnect, make_scope, text
from toolkit import (
    Close,
    ClosedBy,
    Message,
    MessageResult,
    PluginManager,
    WebSocket,
    WebSocketApp,
    WebSocketDisconnect,
    WebSocketDisconnected,
)

pytestmark = pytest.mark.anyio

#: Looks like a credential; must never come back to the client or reach an error message.
SECRET: Final = "sk_live_51HcZQeJ8gT3bQv"
#: Part of a validator's own error text; must never reach the client either.
VALIDATOR_TEXT: Final = "internal-check-7f3a"


# --- the schemas under test ---------------------------------------------------------------------


class Chat(BaseModel):
    type: Literal["chat"]
    text: str
    room: str = "general"


class Join(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["join"]
    room: str


class Login(BaseModel):
    type: Literal["login"]
    token: str

    @field_validator("token")
    @classmethod
    def known(cls, value: str) -> str:
        if value != "letmein":
            raise ValueError(f"unknown token {value!r} ({VALIDATOR_TEXT})")
        return value


class Tally(BaseModel):
    type: Literal["tally"]
    counts: dict[str, int]
    items: list[int] = []


Inbound = Annotated[Chat | Join | Login | Tally, Field(discriminator="type")]


class Said(BaseModel):
    type: Literal["said"]
    text: str
    sent_by: str = Field(default="server", alias="sentBy")


class Joined(BaseModel):
    type: Literal["joined"]
    room: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def topic(self) -> str:
        return f"#{self.room}"


Outbound = Annotated[Said | Joined, Field(discriminator="type")]


def reply(message: Chat | Join | Login | Tally) -> Said | Joined:
    if isinstance(message, Join):
        return Joined(type="joined", room=message.room)
    if isinstance(message, Chat):
        return Said(type="said", text=message.text)
    return Said(type="said", text=message.type)


INBOUND: Final[TypeAdapter[Chat | Join | Login | Tally]] = TypeAdapter(Inbound)


def make_messages(**options: Any) -> Messages[Chat | Join | Login | Tally, Said | Joined]:
    return Messages(Inbound, Outbound, **options)


# --- running a connection -----------------------------------------------------------------------

MODES: Final = ["channel", "plugin"]


@dataclass
class Served:
    transport: Transport
    #: The models the app received, in order.
    received: list[object] = field(default_factory=list)
    #: How the app's receive loop ended: (code, reason) of the WebSocketDisconnect.
    ended: tuple[int, str] | None = None

    def seen(self) -> list[object]:
        """What the client saw after the accept: decoded JSON messages, and ("close", code, reason)."""
        assert self.transport.sent[0]["type"] == "websocket.accept"
        return [decode(message) for message in self.transport.sent[1:]]


def decode(message: Message) -> object:
    if message["type"] == "websocket.close":
        return ("close", message.get("code", 1000), message.get("reason", ""))
    assert message["type"] == "websocket.send"
    data = message.get("text")
    if data is None:
        data = message["bytes"]
        assert isinstance(data, bytes)
    return json.loads(data)


def raw_sends(transport: Transport) -> list[str | bytes]:
    return [m.get("text") or m.get("bytes") or "" for m in transport.sent if m["type"] == "websocket.send"]


async def serve(
    messages: Messages[Any, Any],
    *incoming: Message,
    mode: str,
    others: tuple[object, ...] = (),
    after: tuple[object, ...] = (),
    endpoint: Callable[[WebSocket, Channel[Any, Any], Served], Awaitable[None]] | None = None,
) -> Served:
    """Run one scripted connection to its end through a ``WebSocketApp``; the default app echoes replies."""
    transport = Transport([connect(), *incoming])
    served = Served(transport)
    plugins = PluginManager(*others, messages, *after) if mode == "plugin" else PluginManager(*others, *after)

    async def echo(websocket: WebSocket, channel: Channel[Any, Any], served: Served) -> None:
        while True:
            message = await channel.receive()
            served.received.append(message)
            await channel.send(reply(message))

    async def app(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            await (endpoint or echo)(websocket, messages.channel(websocket), served)
        except WebSocketDisconnect as exc:
            served.ended = (exc.code, exc.reason)

    await WebSocketApp(app, plugins=plugins)(make_scope(), transport.receive, transport.send)
    return served


@pytest.fixture
def errors_logged(caplog: pytest.LogCaptureFixture) -> Callable[[], list[logging.LogRecord]]:
    caplog.set_level(logging.DEBUG)
    return lambda: [r for r in caplog.records if r.levelno >= logging.WARNING]


CHAT: Final = '{"type":"chat","text":"hi"}'
SAID_HI: Final = {"type": "said", "text": "hi", "sentBy": "server"}
INVALID_JSON: Final = {"type": "error", "error": "invalid_json"}


def invalid(*details: tuple[list[str | int], str]) -> dict[str, object]:
    return {
        "type": "error",
        "error": "invalid_message",
        "errors": [{"loc": loc, "type": kind} for loc, kind in details],
    }


# --- valid messages -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_valid_messages_arrive_as_their_models_and_replies_go_out_by_alias(mode: str) -> None:
    served = await serve(
        make_messages(),
        text(CHAT),
        text('{"type":"join","room":"lobby"}'),
        text('{"type":"chat","text":"yo","room":"x"}'),
        disconnect(1000),
        mode=mode,
    )
    assert served.received == [
        Chat(type="chat", text="hi"),
        Join(type="join", room="lobby"),
        Chat(type="chat", text="yo", room="x"),
    ]
    assert [type(m) for m in served.received] == [Chat, Join, Chat]
    assert served.seen() == [
        SAID_HI,
        {"type": "joined", "room": "lobby", "topic": "#lobby"},  # computed field: serialization mode
        {"type": "said", "text": "yo", "sentBy": "server"},
    ]
    assert served.ended == (1000, "")
    assert all(type(m.get("text")) is str for m in served.transport.sent[1:])


@pytest.mark.parametrize("mode", MODES)
async def test_async_for_yields_models_until_the_client_leaves(mode: str) -> None:
    messages = make_messages()
    got: list[object] = []

    async def endpoint(websocket: WebSocket, channel: Channel[Any, Any], served: Served) -> None:
        async for message in channel:
            got.append(message)
        got.append("end")

    served = await serve(messages, text(CHAT), text("{"), text(CHAT), disconnect(4001), mode=mode, endpoint=endpoint)
    assert got == [Chat(type="chat", text="hi"), Chat(type="chat", text="hi"), "end"]
    assert served.seen() == [INVALID_JSON]  # the client left: nothing more to send
    assert served.transport.incoming == []


@pytest.mark.parametrize("mode", MODES)
async def test_binary_frames_in_and_out(mode: str) -> None:
    served = await serve(
        make_messages(frames="binary"),
        binary(CHAT.encode()),
        binary(b'{"type":"chat","text":"caf\xc3\xa9"}'),
        binary(b"{"),
        binary(b'{"type":"chat"}'),
        disconnect(1000),
        mode=mode,
    )
    assert served.received == [Chat(type="chat", text="hi"), Chat(type="chat", text="café")]
    sent = served.transport.sent[1:]
    assert all(set(m) == {"type", "bytes"} and isinstance(m["bytes"], bytes) for m in sent)
    assert served.seen() == [
        SAID_HI,
        {"type": "said", "text": "café", "sentBy": "server"},
        INVALID_JSON,
        invalid((["chat", "text"], "missing")),
    ]
    assert sent[1]["bytes"] == '{"type":"said","text":"café","sentBy":"server"}'.encode()


# --- the policy: every branch, in both modes ----------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_schema_invalid_default_answers_with_locations_and_keeps_the_connection(
    mode: str, errors_logged: Callable[[], list[logging.LogRecord]]
) -> None:
    served = await serve(
        make_messages(),
        text('{"type":"chat","text":5}'),
        text('{"type":"chat"}'),
        text('{"type":"nope","text":"hi"}'),
        text('{"text":"hi"}'),
        text("[1,2]"),
        text(CHAT),
        disconnect(1000),
        mode=mode,
    )
    assert served.seen() == [
        invalid((["chat", "text"], "string_type")),
        invalid((["chat", "text"], "missing")),
        invalid(([], "union_tag_invalid")),
        invalid(([], "union_tag_not_found")),
        invalid(([], "dict_type")),
        SAID_HI,
    ]
    assert served.received == [Chat(type="chat", text="hi")]
    assert served.ended == (1000, "")
    assert errors_logged() == []


@pytest.mark.parametrize("mode", MODES)
async def test_schema_invalid_with_close_policy_closes_1008(mode: str) -> None:
    served = await serve(
        make_messages(on_invalid="close"),
        text(CHAT),
        text('{"type":"chat","text":5}'),
        text(CHAT),
        mode=mode,
    )
    assert served.seen() == [SAID_HI, ("close", 1008, "invalid message")]
    assert served.ended == (1008, "invalid message")
    assert served.received == [Chat(type="chat", text="hi")]
    assert served.transport.incoming == [text(CHAT)]  # nothing read after the close


@pytest.mark.parametrize("mode", MODES)
async def test_on_invalid_close_still_answers_malformed_json_with_an_error(mode: str) -> None:
    served = await serve(make_messages(on_invalid="close"), text("{"), text(CHAT), disconnect(1000), mode=mode)
    assert served.seen() == [INVALID_JSON, SAID_HI]


@pytest.mark.parametrize("mode", MODES)
async def test_malformed_json_default_answers_invalid_json_and_keeps_the_connection(mode: str) -> None:
    served = await serve(make_messages(), text("{"), text("not json"), text(CHAT), disconnect(1000), mode=mode)
    assert served.seen() == [INVALID_JSON, INVALID_JSON, SAID_HI]
    assert served.ended == (1000, "")


@pytest.mark.parametrize("mode", MODES)
async def test_malformed_json_with_close_policy_closes_1003(mode: str) -> None:
    served = await serve(make_messages(on_malformed="close"), text("{"), text(CHAT), mode=mode)
    assert served.seen() == [("close", 1003, "invalid JSON")]
    assert served.ended == (1003, "invalid JSON")
    assert served.received == []


@pytest.mark.parametrize("mode", MODES)
async def test_on_malformed_close_still_answers_schema_errors(mode: str) -> None:
    served = await serve(make_messages(on_malformed="close"), text("{}"), text(CHAT), disconnect(1000), mode=mode)
    assert served.seen() == [invalid(([], "union_tag_not_found")), SAID_HI]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("on_malformed", ["error", "close"])
@pytest.mark.parametrize(
    "payload",
    [
        b"\xff",
        b'{"type":"chat","text":"\xff"}',  # inside a string that would otherwise validate
        b'{"type":"chat","text":"hi"}\xc3',  # a truncated sequence at the end
        b'{"type":"chat","text":"\xed\xa0\x80"}',  # an encoded surrogate
    ],
)
async def test_invalid_utf8_in_binary_mode_closes_1007_whatever_the_policy(
    mode: str, on_malformed: Literal["error", "close"], payload: bytes
) -> None:
    served = await serve(make_messages(frames="binary", on_malformed=on_malformed), binary(payload), mode=mode)
    assert served.seen() == [("close", 1007, "invalid utf-8")]
    assert served.ended == (1007, "invalid utf-8")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("frames", "wrong"),
    [("text", binary(CHAT.encode())), ("binary", text(CHAT))],
    ids=["bytes-in-text", "text-in-binary"],
)
async def test_wrong_frame_type_closes_1003(mode: str, frames: Literal["text", "binary"], wrong: Message) -> None:
    served = await serve(make_messages(frames=frames), wrong, text(CHAT), mode=mode)
    assert served.seen() == [("close", 1003, "unsupported data")]
    assert served.ended == (1003, "unsupported data")
    assert served.received == []


# --- what an error message may contain ------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_errors_never_echo_values_validator_text_or_input_keys(mode: str) -> None:
    hostile = [
        json.dumps({"type": "chat", "text": {"password": SECRET}}),
        json.dumps({"type": "login", "token": SECRET}),  # the validator's message quotes the token
        json.dumps({"type": "join", "room": "x", SECRET: 1}),  # an extra field named like a secret
        json.dumps({"type": "tally", "counts": {SECRET: "many"}}),  # a dict key from the input
        json.dumps({"type": SECRET}),
        json.dumps({"type": "chat", "text": SECRET, "room": [SECRET]}),
    ]
    served = await serve(make_messages(), *map(text, hostile), disconnect(1000), mode=mode)
    assert served.seen() == [
        invalid((["chat", "text"], "string_type")),
        invalid((["login", "token"], "value_error")),
        invalid((["join", "*"], "extra_forbidden")),
        invalid((["tally", "counts", "*"], "int_parsing")),
        invalid(([], "union_tag_invalid")),
        invalid((["chat", "room"], "string_type")),
    ]
    for data in raw_sends(served.transport):
        assert isinstance(data, str)
        assert SECRET not in data
        assert VALIDATOR_TEXT not in data
        assert "unknown token" not in data
        assert "Input should be" not in data  # pydantic's message text
        assert "pydantic" not in data  # no documentation URLs


@pytest.mark.parametrize("mode", MODES)
async def test_union_member_and_key_markers_are_redacted_but_schema_names_kept(mode: str) -> None:
    messages: Messages[Any, Any] = Messages(dict[str, int | list[int]], Said)
    served = await serve(messages, text('{"a":"x"}'), disconnect(1000), mode=mode)
    # Each union member's name (int, list[int]) is an internal: replaced, and duplicates merged.
    assert served.seen() == [invalid((["*", "*"], "int_parsing"), (["*", "*"], "list_type"))]

    payload = '{"type":"tally","counts":{"a":1},"items":[1,"x",2,"y"]}'
    served = await serve(make_messages(), text(payload), disconnect(1000), mode=mode)
    assert served.seen()[0] == invalid((["tally", "items", 1], "int_parsing"), (["tally", "items", 3], "int_parsing"))


@pytest.mark.parametrize("mode", MODES)
async def test_at_most_twenty_errors_are_listed(mode: str) -> None:
    payload = json.dumps({"type": "tally", "counts": {}, "items": ["x"] * 500})
    served = await serve(make_messages(), text(payload), disconnect(1000), mode=mode)
    error = served.seen()[0]
    assert isinstance(error, dict)
    assert error["errors"] == [{"loc": ["tally", "items", i], "type": "int_parsing"} for i in range(20)]
    assert len(raw_sends(served.transport)[0]) < 2000


async def test_a_schema_without_json_schema_redacts_every_name() -> None:
    class Opaque:
        @classmethod
        def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> pydantic_core.CoreSchema:
            return pydantic_core.core_schema.typed_dict_schema(
                {"secret_field": pydantic_core.core_schema.typed_dict_field(pydantic_core.core_schema.int_schema())}
            )

        @classmethod
        def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> Any:
            raise PydanticUserError("no JSON Schema for this type", code=None)

    messages: Messages[Any, Any] = Messages(Opaque, Said)
    served = await serve(messages, text('{"secret_field":"x"}'), disconnect(1000), mode="channel")
    assert served.seen() == [invalid((["*"], "int_parsing"))]


class Buggy(BaseModel):
    type: Literal["buggy"]

    @field_validator("type")
    @classmethod
    def crash(cls, value: str) -> str:
        raise RuntimeError(f"validator bug near {SECRET}")  # not a ValueError: a bug, not bad input


async def test_a_crashing_validator_is_an_app_error_in_channel_mode() -> None:
    messages: Messages[Buggy, Said] = Messages(Buggy, Said)
    with pytest.raises(RuntimeError, match="validator bug"):
        await serve(messages, text('{"type":"buggy"}'), mode="channel")


async def test_a_crashing_validator_fails_closed_in_plugin_mode(caplog: pytest.LogCaptureFixture) -> None:
    messages: Messages[Buggy, Said] = Messages(Buggy, Said)
    with caplog.at_level(logging.ERROR, logger="toolkit"):
        served = await serve(messages, text('{"type":"buggy"}'), text(CHAT), mode="plugin")
    assert served.seen() == [("close", 1011, "internal error")]
    assert served.ended == (1011, "internal error")
    assert [r.getMessage() for r in caplog.records] == ["plugin 'Messages' failed in ws_receive: raised"]
    assert all(SECRET not in str(m) for m in served.transport.sent)


# --- hostile input --------------------------------------------------------------------------------

HOSTILE_MALFORMED: Final = {
    "deep-nesting": "[" * 100_000,
    "deep-nesting-closed": '{"type":"chat","text":"hi","x":' + "[" * 100_000 + "]" * 100_000 + "}",
    "5000-digit-int": '{"type":"tally","counts":{"a":' + "9" * 5000 + "}}",
    "5000-digit-int-unused": '{"type":"chat","text":"hi","x":' + "7" * 5000 + "}",
    "NaN": '{"type":"tally","counts":{},"x":NaN}',
    "Infinity": '{"type":"chat","text":"hi","x":Infinity}',
    "-Infinity": "[-Infinity]",
    "trailing-garbage": CHAT + " trailing",
    "two-documents": CHAT + CHAT,
    "empty": "",
    "whitespace": "   ",
    "byte-order-mark": "\ufeff" + CHAT,
    "single-quotes": "{'type':'chat','text':'hi'}",
    "lone-surrogate": '{"type":"chat","text":"\ud800"}',
    "escaped-lone-surrogate": '{"type":"chat","text":"\\ud800"}',
    "comment": '{"type":"chat","text":"hi"} // x',
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("payload", HOSTILE_MALFORMED.values(), ids=HOSTILE_MALFORMED.keys())
async def test_hostile_text_is_malformed_json_and_the_connection_survives(mode: str, payload: str) -> None:
    served = await serve(make_messages(), text(payload), text(CHAT), disconnect(1000), mode=mode)
    assert served.seen() == [INVALID_JSON, SAID_HI]
    assert served.received == [Chat(type="chat", text="hi")]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("payload", HOSTILE_MALFORMED.values(), ids=HOSTILE_MALFORMED.keys())
async def test_hostile_text_with_close_policy_closes_1003(mode: str, payload: str) -> None:
    served = await serve(make_messages(on_malformed="close"), text(payload), text(CHAT), mode=mode)
    assert served.seen() == [("close", 1003, "invalid JSON")]


@pytest.mark.parametrize("mode", MODES)
async def test_hostile_binary_is_malformed_json_when_it_is_utf8(mode: str) -> None:
    payloads = [p.encode("utf-8", "surrogatepass") for p in HOSTILE_MALFORMED.values() if "\ud800" not in p]
    served = await serve(make_messages(frames="binary"), *map(binary, payloads), disconnect(1000), mode=mode)
    assert served.seen() == [INVALID_JSON] * len(payloads)


@pytest.mark.parametrize("mode", MODES)
async def test_nan_words_inside_strings_and_big_valid_numbers_are_fine(mode: str) -> None:
    served = await serve(
        make_messages(),
        text('{"type":"chat","text":"NaN and Infinity are words"}'),
        text('{"type":"tally","counts":{"NaN":' + "9" * 4000 + '},"items":[-0,1e2]}'),
        disconnect(1000),
        mode=mode,
    )
    assert served.received == [
        Chat(type="chat", text="NaN and Infinity are words"),
        Tally(type="tally", counts={"NaN": int("9" * 4000)}, items=[0, 100]),
    ]


SCHEMA_NAMES: Final = {"type", "text", "room", "token", "counts", "items", "chat", "join", "login", "tally"}
JSON_VALUES: Final = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)
MESSAGE_LIKE: Final = st.fixed_dictionaries(
    {"type": st.sampled_from(["chat", "join", "login", "tally", "other"])},
    optional=dict.fromkeys(("text", "room", "token", "counts", "items", "extra"), JSON_VALUES),
)


def drive(awaitable: Awaitable[Any]) -> Any:
    """Run a coroutine that never suspends (the in-memory transport never waits) to its end."""
    steps = awaitable.__await__()
    try:
        steps.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("suspended")


@settings(max_examples=300, deadline=None)
@given(payload=st.one_of(st.text(), JSON_VALUES.map(json.dumps), MESSAGE_LIKE.map(json.dumps)))
def test_any_input_is_delivered_answered_or_closed_and_never_echoed(payload: str) -> None:
    transport = Transport([connect(), text(payload), disconnect(1000)])
    websocket = WebSocket(make_scope(), transport.receive, transport.send, plugins=PluginManager(make_messages()))
    drive(websocket.accept())
    received = drive(websocket.receive())
    sent = transport.sent[1:]
    try:
        pydantic_core.from_json(payload, allow_inf_nan=False)
        INBOUND.validate_json(payload)
    except ValueError:
        valid = False
    else:
        valid = True
    if received["type"] == "websocket.receive":  # delivered: valid, and nothing was sent
        assert valid
        assert received["text"] == payload
        assert sent == []
        drive(websocket.close())  # finished: a socket with plugins dropped open warns (ResourceWarning)
        return
    assert not valid
    assert (received["type"], received["code"]) == (
        "websocket.disconnect",
        1000,
    )  # answered, dropped: next is the close
    [answer] = sent
    error = json.loads(answer["text"])
    assert error["type"] == "error"
    if error["error"] == "invalid_json":
        assert error == INVALID_JSON
        return
    assert error["error"] == "invalid_message"
    assert 1 <= len(error["errors"]) <= 20
    for detail in error["errors"]:
        assert set(detail) == {"loc", "type"}
        assert re.fullmatch(r"[a-z_]+", detail["type"])
        for part in detail["loc"]:
            assert isinstance(part, int) or part in SCHEMA_NAMES | {"*"}


# --- one parse per message ----------------------------------------------------------------------


class Counting:
    """Wraps a pydantic-core validator and counts the calls into it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def validate_json(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["validate_json"] += 1
        return self.inner.validate_json(*args, **kwargs)

    def validate_python(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["validate_python"] += 1
        return self.inner.validate_python(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class ParseCounts:
    inbound: Counting
    outbound: Counting
    other_parsers: Counter[str]


@pytest.fixture
def count_parses(monkeypatch: pytest.MonkeyPatch) -> Callable[[Messages[Any, Any]], ParseCounts]:
    """Count validator calls, and every call to the other JSON parsers a message could go through."""
    other: Counter[str] = Counter()

    def counted(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            other[name] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(json, "loads", counted("json.loads", json.loads))
    monkeypatch.setattr(pydantic_core, "from_json", counted("from_json", pydantic_core.from_json))
    monkeypatch.setattr(TypeAdapter, "validate_json", counted("TypeAdapter.validate_json", TypeAdapter.validate_json))

    def install(messages: Messages[Any, Any]) -> ParseCounts:
        counts = ParseCounts(Counting(messages.inbound.validator), Counting(messages.outbound.validator), other)
        monkeypatch.setattr(messages.inbound, "validator", counts.inbound)
        monkeypatch.setattr(messages.outbound, "validator", counts.outbound)
        return counts

    return install


@pytest.mark.parametrize("mode", MODES)
async def test_each_inbound_message_is_parsed_exactly_once(
    mode: str, count_parses: Callable[[Messages[Any, Any]], ParseCounts]
) -> None:
    messages = make_messages()
    counts = count_parses(messages)
    incoming = [text(CHAT), text('{"type":"join","room":"r"}'), text("{"), text('{"type":"chat"}'), text(CHAT)]
    served = await serve(messages, *incoming, disconnect(1000), mode=mode)
    assert len(served.received) == 3
    assert counts.inbound.calls == Counter({"validate_json": len(incoming)})
    # Replies are model instances: checked by type, serialised once, never parsed back.
    assert counts.outbound.calls == Counter()
    assert counts.other_parsers == Counter()


async def test_a_hand_over_for_another_connection_is_not_taken(
    count_parses: Callable[[Messages[Any, Any]], ParseCounts],
) -> None:
    # The hook's hand-over lives in the plugin state of the connection it validated for: the channel
    # takes it only from its own connection, for its own message object; else it validates the message itself.
    messages = make_messages()
    counts = count_parses(messages)
    payload = '{"type":"join","room":"mine"}'
    other = WebSocket(make_scope(), Transport().receive, Transport().send)
    transport = Transport([connect(), text(payload), disconnect(1000)])
    websocket = WebSocket(make_scope(), transport.receive, transport.send)  # no plugin: the hook never runs here
    await websocket.accept()
    assert (
        messages.ws_receive(websocket=other, data=payload) is None
    )  # another connection's hook, the very same str object
    got = await messages.channel(websocket).receive()
    assert got == Join(type="join", room="mine")
    assert counts.inbound.calls == Counter({"validate_json": 2})


async def test_with_the_plugin_the_channel_takes_the_hooks_model(
    count_parses: Callable[[Messages[Any, Any]], ParseCounts],
) -> None:
    messages = make_messages()
    counts = count_parses(messages)
    seen_by_hook: list[object] = []

    class Spy(toolkit.Plugin):
        @toolkit.hookimpl(trylast=True)  # registered after Messages, so it runs after it
        def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> MessageResult:
            seen_by_hook.append(counts.inbound.calls["validate_json"])
            return None

    served = await serve(messages, text(CHAT), text(CHAT), disconnect(1000), mode="plugin", after=(Spy(),))
    assert seen_by_hook == [1, 2]  # validated in the hook, before the channel asked
    assert counts.inbound.calls["validate_json"] == 2
    assert served.received == [Chat(type="chat", text="hi")] * 2
    assert served.received[0] is not served.received[1]


async def test_a_different_messages_object_as_plugin_does_not_hand_over(
    count_parses: Callable[[Messages[Any, Any]], ParseCounts],
) -> None:
    plugin, channel_side = make_messages(), make_messages()
    plugin_counts, channel_counts = count_parses(plugin), count_parses(channel_side)
    received: list[object] = []

    async def app(websocket: WebSocket) -> None:
        await websocket.accept()
        received.append(await channel_side.channel(websocket).receive())

    transport = Transport([connect(), text(CHAT)])
    await WebSocketApp(app, plugins=PluginManager(plugin))(make_scope(), transport.receive, transport.send)
    assert received == [Chat(type="chat", text="hi")]
    # Each validated it: the hand-over is between a plugin and its own channels only.
    assert plugin_counts.inbound.calls["validate_json"] == 1
    assert channel_counts.inbound.calls["validate_json"] == 1


async def test_nan_words_cost_one_strict_parse_more(count_parses: Callable[[Messages[Any, Any]], ParseCounts]) -> None:
    messages = make_messages()
    counts = count_parses(messages)
    served = await serve(
        messages, text('{"type":"chat","text":"NaN"}'), text("[NaN]"), disconnect(1000), mode="channel"
    )
    assert counts.other_parsers == Counter({"from_json": 2})
    assert counts.inbound.calls == Counter({"validate_json": 1})  # "[NaN]" never reached the validator
    assert served.seen() == [{"type": "said", "text": "NaN", "sentBy": "server"}, INVALID_JSON]


# --- outbound ---------------------------------------------------------------------------------


async def run_app(
    messages: Messages[Any, Any], app: Callable[[WebSocket], Awaitable[None]], *, plugin: bool
) -> Transport:
    transport = Transport([connect(), disconnect(1000)])
    plugins = PluginManager(messages) if plugin else None
    await WebSocketApp(app, plugins=plugins)(make_scope(), transport.receive, transport.send)
    return transport


@pytest.mark.parametrize("plugin", [False, True], ids=["channel", "plugin"])
@pytest.mark.parametrize(
    "bad",
    [
        Chat(type="chat", text="an inbound model"),
        {"type": "said"},
        {"type": "said", "text": [SECRET]},
        {"type": "shouted", "text": "hi"},
        "said",
        None,
    ],
    ids=["wrong-model", "dict-missing-field", "dict-wrong-type", "dict-unknown-tag", "str", "none"],
)
async def test_channel_send_of_a_mismatch_raises_and_sends_nothing(plugin: bool, bad: Any) -> None:
    messages = make_messages()
    raised: list[OutboundError] = []

    async def app(websocket: WebSocket) -> None:
        await websocket.accept()
        channel = messages.channel(websocket)
        with pytest.raises(OutboundError, match="does not match the schema") as info:
            await channel.send(bad)
        raised.append(info.value)
        await channel.send(Said(type="said", text="still open"))

    transport = await run_app(messages, app, plugin=plugin)
    assert [decode(m) for m in transport.sent[1:]] == [
        {"type": "said", "text": "still open", "sentBy": "server"},
        ("close", 1000, ""),
    ]
    assert SECRET not in str(raised[0])  # locations and types, not values


@pytest.mark.parametrize("plugin", [False, True], ids=["channel", "plugin"])
async def test_channel_send_validates_dicts_and_serialises_by_alias(plugin: bool) -> None:
    messages = make_messages()

    async def app(websocket: WebSocket) -> None:
        await websocket.accept()
        channel = messages.channel(websocket)
        await channel.send({"type": "said", "text": "from a dict", "sentBy": "me", "extra": "dropped"})
        await channel.send({"type": "joined", "room": "r"})

    transport = await run_app(messages, app, plugin=plugin)
    assert raw_sends(transport) == [
        '{"type":"said","text":"from a dict","sentBy":"me"}',
        '{"type":"joined","room":"r","topic":"#r"}',
    ]


class Strict(BaseModel):
    model_config = ConfigDict(revalidate_instances="always")
    type: Literal["strict"]
    count: int


class Loose(BaseModel):
    type: Literal["loose"]
    anything: Any = None


async def test_mutated_model_is_caught_when_the_model_revalidates() -> None:
    messages: Messages[Any, Strict | Loose] = Messages(Chat, Strict | Loose)
    model = Strict(type="strict", count=1)
    model.count = "many"  # type: ignore[assignment]
    with pytest.raises(OutboundError, match="count: int_parsing"):
        messages.dump(model)
    with pytest.raises(OutboundError, match="cannot be serialised"):
        messages.dump(Loose(type="loose", anything=object()))
    assert messages.dump(Strict(type="strict", count=2)) == '{"type":"strict","count":2}'


OUTBOUND_SHAPES: Final[list[Any]] = [
    Said,
    Said | Joined,
    Annotated[Said | Joined, Field(discriminator="type")],
    list[Said],
    Annotated[Said, AfterValidator(lambda said: said)],
]


@pytest.mark.parametrize("shape", OUTBOUND_SHAPES, ids=["model", "union", "tagged-union", "list", "annotated"])
async def test_dump_is_what_pydantic_dumps_by_alias(shape: Any) -> None:
    messages: Messages[Any, Any] = Messages(Chat, shape, frames="binary")
    value: Any = Said(type="said", text="é", sentBy="x")
    if shape == list[Said]:
        value = [value, Said(type="said", text="2")]
    assert messages.dump(value) == TypeAdapter(shape).dump_json(value, by_alias=True)


async def test_validators_on_the_outbound_type_still_run_for_model_instances() -> None:
    def no_shouting(said: Said) -> Said:
        if said.text.isupper():
            raise ValueError("no shouting")
        return said

    messages: Messages[Any, Any] = Messages(Chat, Annotated[Said, AfterValidator(no_shouting)])
    assert messages.dump(Said(type="said", text="ok")) == '{"type":"said","text":"ok","sentBy":"server"}'
    with pytest.raises(OutboundError, match="value_error"):
        messages.dump(Said(type="said", text="LOUD"))


async def test_a_subclass_instance_is_validated_not_taken_as_is() -> None:
    class Louder(Said):
        volume: int = 11

    messages = make_messages()
    assert messages.dump(Louder(type="said", text="hi")) == '{"type":"said","text":"hi","sentBy":"server"}'


async def test_plugin_closes_1011_when_the_app_sends_a_mismatch_around_the_channel(
    caplog: pytest.LogCaptureFixture,
) -> None:
    messages = make_messages()
    caught: list[WebSocketDisconnect] = []

    async def app(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text('{"type":"said","text":"fine","sentBy":"raw"}')
        try:
            await websocket.send_text(json.dumps({"type": "said", "text": 5, "token": SECRET}))
        except WebSocketDisconnect as exc:
            caught.append(exc)

    with caplog.at_level(logging.ERROR, logger="toolkit"):
        transport = await run_app(messages, app, plugin=True)
    assert raw_sends(transport) == ['{"type":"said","text":"fine","sentBy":"raw"}']
    assert transport.sent[-1] == {"type": "websocket.close", "code": 1011, "reason": "internal error"}
    assert [(e.code, e.reason) for e in caught] == [(1011, "internal error")]
    [record] = caplog.records
    assert record.getMessage() == "plugin 'Messages' failed in ws_send: raised"
    assert record.exc_info is not None
    error = record.exc_info[1]
    assert isinstance(error, OutboundError)
    assert "said.text: string_type" in str(error)
    assert SECRET not in str(error)


class Count(BaseModel):
    type: Literal["count"]
    n: int
    label: str = Field(default="", alias="Label")


@pytest.mark.parametrize(
    ("raw", "passes"),
    [
        ('{"type":"count","n":5,"Label":"x"}', True),
        ('{"type":"count","n":"5"}', False),  # lax mode would take the string
        ('{"type":"count","n":5.0}', False),
        ('{"type":"count","n":5,"label":7}', True),  # not the alias: an ignored extra key
        ('{"type":"count","n":5,"Label":7}', False),
    ],
)
async def test_plugin_checks_raw_sends_strictly_and_by_alias(raw: str, passes: bool) -> None:
    messages: Messages[Any, Count] = Messages(Chat, Count)
    closed: list[int] = []

    async def app(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            await websocket.send_text(raw)
        except WebSocketDisconnect as exc:
            closed.append(exc.code)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(logging.getLogger("toolkit"), "disabled", True)
        transport = await run_app(messages, app, plugin=True)
    assert raw_sends(transport) == ([raw] if passes else [])
    assert closed == ([] if passes else [1011])


# --- the plugin with the raw WebSocket API ------------------------------------------------------


async def test_plugin_alone_keeps_bad_messages_from_the_app(
    errors_logged: Callable[[], list[logging.LogRecord]],
) -> None:
    got: list[str] = []
    recorder = Recorder()

    async def app(websocket: WebSocket) -> None:
        await websocket.accept()
        async for data in websocket.iter_text():
            got.append(data)

    transport = Transport([connect(), text("{"), text('{"type":"chat"}'), text(CHAT), disconnect(1000)])
    plugins = PluginManager(make_messages(), recorder)
    await WebSocketApp(app, plugins=plugins)(make_scope(), transport.receive, transport.send)
    assert got == [CHAT]
    assert [decode(m) for m in transport.sent[1:]] == [INVALID_JSON, invalid((["chat", "text"], "missing"))]
    # The answers went through the send chain like any message: no plugin is bypassed.
    assert [data for name, data in recorder.calls if name == "ws_send"] == raw_sends(transport)
    assert errors_logged() == []


@pytest.mark.parametrize(
    ("options", "incoming", "close"),
    [
        ({"on_invalid": "close"}, text("{}"), (1008, "invalid message")),
        ({"on_malformed": "close"}, text("{"), (1003, "invalid JSON")),
        ({"frames": "binary"}, binary(b"\x80"), (1007, "invalid utf-8")),
        ({}, binary(b"{}"), (1003, "unsupported data")),
    ],
)
async def test_plugin_alone_closes_per_policy(
    options: dict[str, Any], incoming: Message, close: tuple[int, str]
) -> None:
    recorder = Recorder()
    raised: list[tuple[int, str]] = []

    async def app(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            await (websocket.receive_bytes() if options.get("frames") == "binary" else websocket.receive_text())
        except WebSocketDisconnect as exc:
            raised.append((exc.code, exc.reason))

    transport = Transport([connect(), incoming, text(CHAT)])
    await WebSocketApp(app, plugins=PluginManager(make_messages(**options), recorder))(
        make_scope(), transport.receive, transport.send
    )
    assert transport.sent[1:] == [{"type": "websocket.close", "code": close[0], "reason": close[1]}]
    assert recorder.closes() == [(*close, ClosedBy.PLUGIN)]
    assert raised == [close]


async def test_plugin_validates_what_earlier_plugins_made_of_the_message() -> None:
    class Legacy(toolkit.Plugin):
        """Turns 'say:<text>' into the JSON form."""

        def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> MessageResult:
            if isinstance(data, str) and data.startswith("say:"):
                return json.dumps({"type": "chat", "text": data[4:]})
            return None

    # Registered after Legacy, so without trylast it would run first and see "say:...".
    served = await serve(make_messages(), text("say:hello"), disconnect(1000), mode="plugin", others=(Legacy(),))
    assert served.received == [Chat(type="chat", text="hello")]


async def test_plugin_checks_what_the_app_sent_before_later_plugins_change_it() -> None:
    class Envelope(toolkit.Plugin):
        def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> MessageResult:
            assert isinstance(data, str)
            return '{"envelope":' + data + "}"

    messages = make_messages()
    plugins = PluginManager(Envelope(), messages)  # messages registered last: it would run first anyway

    async def app(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text('{"type":"joined","room":"r"}')
        await messages.channel(websocket).send(Joined(type="joined", room="s"))

    transport = Transport([connect(), disconnect(1000)])
    await WebSocketApp(app, plugins=plugins)(make_scope(), transport.receive, transport.send)
    assert raw_sends(transport) == [
        '{"envelope":{"type":"joined","room":"r"}}',
        '{"envelope":{"type":"joined","room":"s","topic":"#s"}}',
    ]

    plugins = PluginManager(messages, Envelope())  # Envelope registered last: would run first
    again = Transport([connect(), disconnect(1000)])
    await WebSocketApp(app, plugins=plugins)(make_scope(), again.receive, again.send)
    assert raw_sends(again) == raw_sends(transport)


def test_the_hook_is_sync_and_answers_through_the_core() -> None:
    # A plain def: the chain stays on the core's sync path; the answer goes back as a Reply.
    transport = Transport()
    websocket = WebSocket(make_scope(), transport.receive, transport.send)
    answer = make_messages().ws_receive(websocket=websocket, data="{")
    assert answer == toolkit.Reply(json.dumps(INVALID_JSON, separators=(",", ":")))
    assert make_messages(on_malformed="close").ws_receive(websocket=websocket, data="{") == Close(1003, "invalid JSON")
    assert make_messages().ws_receive(websocket=websocket, data='{"type":"join","room":"r"}') is None
    assert transport.sent == []  # the hook itself sends nothing


@pytest.mark.parametrize("mode", MODES)
async def test_client_gone_while_answering_ends_the_connection_quietly(
    mode: str, errors_logged: Callable[[], list[logging.LogRecord]]
) -> None:
    messages = make_messages()

    async def endpoint(websocket: WebSocket, channel: Channel[Any, Any], served: Served) -> None:
        served.transport.send_error = OSError("connection reset")
        served.received.append(await channel.receive())

    served = await serve(messages, text("{"), text(CHAT), mode=mode, endpoint=endpoint)
    assert served.ended == (1006, "")
    assert served.received == []
    assert served.transport.incoming == [text(CHAT)]
    assert errors_logged() == []


@pytest.mark.parametrize("mode", MODES)
async def test_a_plugin_closing_on_the_answer_ends_the_connection(mode: str) -> None:
    class NoErrors(toolkit.Plugin):
        def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> MessageResult:
            return Close(4000, "no errors here") if '"error"' in str(data) else None

    recorder = Recorder()
    served = await serve(make_messages(), text("{"), text(CHAT), mode=mode, others=(recorder, NoErrors()))
    assert served.seen() == [("close", 4000, "no errors here")]
    assert served.ended == (4000, "no errors here")
    assert recorder.closes() == [(4000, "no errors here", ClosedBy.PLUGIN)]


# --- the channel ---------------------------------------------------------------------------------


async def test_channel_before_accept_refuses_like_receive_text() -> None:
    transport = Transport([connect()])
    websocket = WebSocket(make_scope(), transport.receive, transport.send)
    with pytest.raises(WebSocketDisconnected, match="accept"):
        await make_messages().channel(websocket).receive()


async def test_channel_receive_raises_the_disconnect_with_its_code() -> None:
    transport = Transport([connect(), disconnect(4321, "bye")])
    websocket = WebSocket(make_scope(), transport.receive, transport.send)
    await websocket.accept()
    channel = make_messages().channel(websocket)
    with pytest.raises(WebSocketDisconnect) as info:
        await channel.receive()
    assert (info.value.code, info.value.reason) == (4321, "bye")
    with pytest.raises(WebSocketDisconnected):  # as with Starlette: nothing to receive after the end
        await channel.receive()


async def test_channel_and_messages_describe_themselves() -> None:
    messages = make_messages(frames="binary", on_invalid="close")
    assert repr(messages).startswith("Messages(typing.Annotated[")
    assert repr(messages).endswith("frames='binary', on_invalid='close', on_malformed='error')")
    assert (messages.frames, messages.on_invalid, messages.on_malformed) == ("binary", "close", "error")
    with pytest.raises(AttributeError):
        messages.on_invalid = "error"  # type: ignore[misc]  # fixed at construction
    websocket = WebSocket(make_scope())
    channel = messages.channel(websocket)
    assert channel.messages is messages
    assert channel.websocket is websocket
    assert repr(channel) == f"Channel({messages!r}, {websocket!r})"
    assert aiter(channel) is channel


@pytest.mark.parametrize(
    "options",
    [{"frames": "json"}, {"on_invalid": "ignore"}, {"on_malformed": "drop"}, {"on_invalid": None}],
)
async def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        make_messages(**options)


async def test_a_type_pydantic_cannot_validate_is_refused_at_once() -> None:
    class Unknown:
        pass

    with pytest.raises(PydanticUserError):
        Messages(Chat, Unknown)
    with pytest.raises(PydanticUserError, match="Unable to generate pydantic-core schema"):
        Messages(object(), Chat)  # type: ignore[arg-type]


def test_forward_references_resolve_where_messages_is_called() -> None:
    class Local(BaseModel):
        y: int

    messages = Messages(list["Local"], "Chat")
    assert messages.inbound.validate_json('[{"y":1}]') == [Local(y=1)]
    assert messages.dump({"type": "chat", "text": "t"}) == '{"type":"chat","text":"t","room":"general"}'


async def test_registers_as_a_plugin_with_the_hooks_it_needs() -> None:
    messages = make_messages()
    manager = PluginManager(messages)
    assert manager.hooks_of(messages) == ["ws_receive", "ws_send"]
    assert manager.list_name_plugin() == [("Messages", messages)]


# --- JSON Schema ----------------------------------------------------------------------------------


def test_json_schema_exports_inbound_outbound_and_error_messages() -> None:
    schemas = make_messages().json_schema()
    assert set(schemas) == {"inbound", "outbound", "error"}
    json.dumps(schemas)  # plain JSON

    inbound = schemas["inbound"]
    assert inbound["discriminator"]["propertyName"] == "type"
    assert set(inbound["discriminator"]["mapping"]) == {"chat", "join", "login", "tally"}
    assert set(inbound["$defs"]) == {"Chat", "Join", "Login", "Tally"}
    assert inbound["$defs"]["Chat"]["required"] == ["type", "text"]
    assert inbound["$defs"]["Join"]["additionalProperties"] is False

    outbound = schemas["outbound"]
    assert set(outbound["discriminator"]["mapping"]) == {"said", "joined"}
    assert "sentBy" in outbound["$defs"]["Said"]["properties"]  # by alias, as on the wire
    assert "topic" in outbound["$defs"]["Joined"]["properties"]  # computed fields go out too
    assert "topic" in outbound["$defs"]["Joined"]["required"]

    error = schemas["error"]
    assert error["properties"]["type"] == {"const": "error", "title": "Type", "type": "string"}
    assert error["properties"]["error"]["enum"] == ["invalid_json", "malformed_message", "invalid_message"]
    assert error["required"] == ["type", "error"]


def test_json_schema_of_plain_types() -> None:
    messages: Messages[int, list[str]] = Messages(int, list[str])
    assert messages.json_schema()["inbound"] == {"type": "integer"}
    assert messages.json_schema()["outbound"] == {"items": {"type": "string"}, "type": "array"}


@pytest.mark.parametrize("mode", MODES)
async def test_error_messages_match_the_exported_error_schema(mode: str) -> None:
    served = await serve(make_messages(), text("{"), text('{"type":"chat"}'), disconnect(1000), mode=mode)
    error_schema = make_messages().json_schema()["error"]
    detail_schema = error_schema["$defs"]["ErrorDetail"]
    assert detail_schema["required"] == ["loc", "type"]
    assert error_schema["properties"]["errors"]["items"] == {"$ref": "#/$defs/ErrorDetail"}
    for sent in served.seen():
        assert isinstance(sent, dict)
        assert set(error_schema["required"]) <= set(sent) <= set(error_schema["properties"])
        assert sent["error"] in error_schema["properties"]["error"]["enum"]
        for detail in sent.get("errors", []):
            assert set(detail) == set(detail_schema["properties"])
    # The exported TypedDict validates them too.
    assert [TypeAdapter(ErrorMessage).validate_python(sent) for sent in served.seen()] == served.seen()


# --- typing ---------------------------------------------------------------------------------------


async def test_typed_usage_example_runs() -> None:
    from tests.typing import messages_usage

    transport = Transport(
        [
            connect(),
            text('{"type":"chat","text":"hello"}'),
            text('{"type":"join","room":"lobby"}'),
            text('{"type":"chat","text":7}'),
            disconnect(1000),
        ]
    )
    await messages_usage.app(make_scope(), transport.receive, transport.send)
    assert [decode(m) for m in transport.sent[1:]] == [
        {"type": "said", "text": "hello"},
        {"type": "joined", "room": "lobby"},
        invalid((["chat", "text"], "string_type")),
    ]


# --- docs/messages.md -----------------------------------------------------------------------------

DOCS: Final = Path(__file__).parent.parent / "docs" / "messages.md"


async def test_docs_example_runs_the_session_the_page_shows() -> None:
    source = DOCS.read_text()
    namespace: dict[str, Any] = {"__name__": "docs_messages"}
    for block in re.findall(r"```python\n(.*?)```", source, flags=re.DOTALL):
        # dont_inherit: the page is a module of its own, without this file's `from __future__ import annotations`.
        exec(compile(block, str(DOCS), "exec", dont_inherit=True), namespace)  # noqa: S102 - our own docs
    session = re.search(r"A session, client messages on the left:\n\n```\n(.*?)```", source, flags=re.DOTALL)
    assert session is not None
    exchanges = [re.split(r"\s{2,}", line.strip()) for line in session.group(1).splitlines()]
    assert len(exchanges) == 4
    assert all(len(pair) == 2 for pair in exchanges)

    transport = Transport([connect(), *(text(sent) for sent, _ in exchanges), disconnect(1000)])
    await namespace["app"](make_scope(), transport.receive, transport.send)
    assert raw_sends(transport) == [reply for _, reply in exchanges]
    assert namespace["app"].plugins.is_registered(namespace["chat"])
