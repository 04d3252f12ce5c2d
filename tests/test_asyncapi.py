"""toolkit_messages.asyncapi: documents valid against the official AsyncAPI 3.0.0 JSON Schema, self-contained."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import jsonschema
import pytest
from pydantic import BaseModel, Field
from toolkit_messages import Messages, asyncapi

from toolkit import CloseCode

# tests/asyncapi/README.md says where this file comes from.
SCHEMA: Final = json.loads((Path(__file__).parent / "asyncapi" / "asyncapi-3.0.0.json").read_text())


class Point(BaseModel):
    x: int
    y: int


class Move(BaseModel):
    type: Literal["move"]
    to: Point


class Ping(BaseModel):
    type: Literal["ping"]


class Moved(BaseModel):
    type: Literal["moved"]
    who: str = Field(alias="by")
    to: Point


class Pong(BaseModel):
    type: Literal["ping"]  # the same tag both ways
    at: float


Inbound = Annotated[Move | Ping, Field(discriminator="type")]
Outbound = Annotated[Moved | Pong, Field(discriminator="type")]

game: Final = Messages(Inbound, Outbound)
lobby: Final = Messages(Ping, Ping, on_invalid="close", on_malformed="close")


def document() -> dict[str, Any]:
    return asyncapi("Game", "2.1", {"/game": game, "/": lobby}, servers={"local": "ws://127.0.0.1:8000/api"})


def assert_valid(doc: dict[str, Any]) -> None:
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema"
    errors = [
        f"{list(error.absolute_path)}: {error.message}" for error in jsonschema.Draft7Validator(SCHEMA).iter_errors(doc)
    ]
    assert errors == []


def refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def message(doc: dict[str, Any], ref: str) -> dict[str, Any]:
    """The message an operation's reference names, through the channel's own reference."""
    found: dict[str, Any] = resolve(doc, ref)
    while "$ref" in found:
        found = resolve(doc, found["$ref"])
    return found


def test_the_document_is_valid_asyncapi_3() -> None:
    doc = document()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"] == {"title": "Game", "version": "2.1"}
    assert doc["servers"] == {"local": {"host": "127.0.0.1:8000", "protocol": "ws", "pathname": "/api"}}
    assert_valid(doc)


def test_the_schema_really_checks_what_it_is_given() -> None:
    """The validator is not vacuous: a wrong action and an OpenAPI-style discriminator object are rejected."""
    doc = document()
    doc["operations"]["game.receive"]["action"] = "reply"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, SCHEMA, cls=jsonschema.Draft7Validator)
    doc = document()
    doc["components"]["schemas"]["Move"]["discriminator"] = {"propertyName": "type"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, SCHEMA, cls=jsonschema.Draft7Validator)


def test_every_ref_resolves_inside_the_document() -> None:
    doc = document()
    found = list(refs(doc))
    assert found
    for ref in found:
        assert not ref.startswith("#/$defs"), ref
        resolve(doc, ref)  # a KeyError fails the test
    assert "$defs" not in json.dumps(doc)


def test_channels_one_per_path_with_operations_from_the_server_s_point_of_view() -> None:
    doc = document()
    assert {channel_id: channel["address"] for channel_id, channel in doc["channels"].items()} == {
        "game": "/game",
        "root": "/",
    }
    ops = doc["operations"]
    assert {name: (op["action"], op["channel"]["$ref"]) for name, op in ops.items()} == {
        "game.receive": ("receive", "#/channels/game"),
        "game.send": ("send", "#/channels/game"),
        "root.receive": ("receive", "#/channels/root"),
        "root.send": ("send", "#/channels/root"),
    }
    for op in ops.values():  # AsyncAPI 3: an operation's messages are the channel's
        channel_ref = op["channel"]["$ref"]
        assert all(ref["$ref"].startswith(channel_ref + "/messages/") for ref in op["messages"])
    received = [message(doc, ref["$ref"])["name"] for ref in ops["game.receive"]["messages"]]
    sent = [message(doc, ref["$ref"])["name"] for ref in ops["game.send"]["messages"]]
    assert received == ["move", "ping"]  # what clients send: the server receives it
    assert sent == ["moved", "ping", "error"]  # what the server sends


def test_one_message_per_union_variant_with_the_model_s_own_properties() -> None:
    doc = document()
    channel = doc["channels"]["game"]["messages"]
    # "ping" goes both ways with different schemas, so the keys say which side sends it.
    assert sorted(channel) == ["error", "move", "moved", "ping.client", "ping.server"]
    move = message(doc, "#/channels/game/messages/move")
    assert move["name"] == "move"
    assert move["payload"]["properties"]["type"]["const"] == "move"
    assert move["payload"]["properties"]["to"] == {"$ref": "#/components/schemas/Point"}
    assert move["payload"]["required"] == ["type", "to"]
    moved = message(doc, "#/channels/game/messages/moved")["payload"]
    assert sorted(moved["properties"]) == ["by", "to", "type"]  # outbound: by alias, as on the wire
    assert message(doc, "#/channels/game/messages/ping.server")["payload"]["properties"]["at"]["type"] == "number"
    assert sorted(message(doc, "#/channels/game/messages/ping.client")["payload"]["properties"]) == ["type"]
    assert doc["components"]["schemas"]["Point"]["required"] == ["x", "y"]


def test_a_single_model_is_one_message_and_close_policies_have_no_error_message() -> None:
    doc = document()
    assert sorted(doc["channels"]["root"]["messages"]) == ["ping.client", "ping.server"]
    assert "close" in doc["channels"]["root"]["description"]


def test_the_error_message_is_sent_under_the_error_policy() -> None:
    doc = document()
    error = message(doc, "#/channels/game/messages/error")
    assert error["name"] == "error"
    assert error["payload"]["properties"]["type"]["const"] == "error"
    assert error["payload"]["properties"]["error"]["enum"] == ["invalid_json", "malformed_message", "invalid_message"]
    assert error["payload"]["properties"]["errors"]["items"] == {"$ref": "#/components/schemas/ErrorDetail"}
    assert error["payload"]["required"] == ["type", "error"]


def test_close_codes_are_listed_per_channel() -> None:
    doc = document()
    for channel in doc["channels"].values():
        listed = {entry["code"]: entry for entry in channel["x-close-codes"]}
        assert sorted(listed) == sorted(int(code) for code in CloseCode if code.sendable)
        assert 1005 not in listed
        assert 1006 not in listed
        assert listed[1008] == {"code": 1008, "name": "POLICY_VIOLATION", "reason": "policy violation"}


def test_two_models_of_the_same_name_stay_apart() -> None:
    def make() -> type[BaseModel]:
        class Point(BaseModel):  # another Point, with other fields
            lat: float

        return Point

    other = make()
    doc = asyncapi("Maps", "1", {"/a": game, "/b": Messages(other, other)})
    assert_valid(doc)
    for ref in refs(doc):
        resolve(doc, ref)
    points = [schema for schema in doc["components"]["schemas"].values() if schema.get("title") == "Point"]
    assert sorted(sorted(schema["properties"]) for schema in points) == [["lat"], ["x", "y"]]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="same channel id"):
        asyncapi("t", "1", {"/a b": game, "/a_b": game})
    with pytest.raises(ValueError, match="scheme and a host"):
        asyncapi("t", "1", {"/": game}, servers={"local": "127.0.0.1:8000"})


def test_other_shapes_are_one_message_each_and_still_valid() -> None:
    plain = Messages(Move | Point, list[int])  # a union without a discriminator, a list
    doc = asyncapi("Shapes", "1", {"/plain": plain, "/point": Messages(Point, Point)})
    assert_valid(doc)
    for ref in refs(doc):
        resolve(doc, ref)
    assert sorted(doc["channels"]["plain"]["messages"]) == ["error", "inbound", "outbound"]
    inbound = message(doc, "#/channels/plain/messages/inbound")["payload"]
    assert inbound["anyOf"] == [{"$ref": "#/components/schemas/Move"}, {"$ref": "#/components/schemas/Point"}]
    assert message(doc, "#/channels/plain/messages/outbound")["payload"] == {
        "items": {"type": "integer"},
        "type": "array",
    }
    # A model without a "type" tag is named after its title.
    assert sorted(doc["channels"]["point"]["messages"]) == ["Point.client", "Point.server", "error"]
