"""An AsyncAPI 3.0 document of the WebSocket endpoints that :class:`~toolkit_messages.Messages` describe.

One channel per path, two operations per channel from the server's point of view
(``receive`` what clients send, ``send`` what the server sends), one message per variant
of a discriminated union (named after its tag), the error message when a bad-input
policy answers with one, and the close codes as documentation (``x-close-codes``).

The schemas of every route are generated together by pydantic, with one ``$defs``
namespace, straight into ``#/components/schemas/...``: a model used by two routes is
described once, and two different models of the same name get distinct names.
OpenAPI-style discriminator objects become AsyncAPI Schema's own form (the property
name as a string), so the default schema format applies and every ``$ref`` resolves
inside the document.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import TypeAdapter

from toolkit import CloseCode

from ._messages import _ERROR_ADAPTER, Messages

__all__ = ["ASYNCAPI_VERSION", "asyncapi"]

#: The AsyncAPI version of the documents :func:`asyncapi` builds.
ASYNCAPI_VERSION: Final = "3.0.0"

_SCHEMAS: Final = "#/components/schemas/"
_ID: Final = re.compile(r"[^\w.\-]")
_ERROR_KEY: Final = "__error__"
# Messages of another codec (e.g. msgpack) say their own contentType.
_DEFAULT_CONTENT_TYPE: Final = "application/json"


def asyncapi(
    title: str,
    version: str,
    routes: Mapping[str, Messages[Any, Any]],
    *,
    servers: Mapping[str, str] | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """An AsyncAPI 3.0.0 document (a JSON-ready ``dict``) for the endpoints in ``routes``.

    ``routes`` maps each WebSocket path (``"/ws"``) to the :class:`Messages` of its endpoint;
    ``servers`` maps a server's name to its URL (``{"local": "ws://127.0.0.1:8000"}``).
    ``title`` and ``version`` are the API's own (``info``). Raises ``ValueError`` when two
    paths would get the same channel id, or a server URL has no ``ws``/``wss``-like scheme and host.
    """
    ids = {path: _channel_id(path) for path in routes}
    if len(set(ids.values())) != len(ids):
        raise ValueError(f"two paths map to the same channel id: {sorted(ids)}")
    inputs: list[tuple[tuple[str, str], Literal["validation", "serialization"], TypeAdapter[Any]]] = [
        ((_ERROR_KEY, "error"), "validation", _ERROR_ADAPTER)
    ]
    for path, messages in routes.items():
        inputs.append(((path, "inbound"), "validation", messages.inbound))
        inputs.append(((path, "outbound"), "serialization", messages.outbound))
    top, definitions = TypeAdapter.json_schemas(inputs, ref_template=_SCHEMAS + "{model}")
    schemas: dict[str, Any] = {name: _asyncapi_schema(schema) for name, schema in definitions.get("$defs", {}).items()}
    error_schema = _asyncapi_schema(top[(_ERROR_KEY, "error"), "validation"])

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    component_messages: dict[str, Any] = {}
    for path, messages in routes.items():
        channel_id = ids[path]
        inbound = _variants(_asyncapi_schema(top[(path, "inbound"), "validation"]), schemas, "inbound")
        outbound = _variants(_asyncapi_schema(top[(path, "outbound"), "serialization"]), schemas, "outbound")
        if "error" in (messages.on_invalid, messages.on_malformed):
            outbound.append(
                ("error", _inline(error_schema, schemas), "An answer to a bad message; the connection stays.")
            )
        clashes = {name for name, _, _ in inbound} & {name for name, _, _ in outbound}
        channel_messages: dict[str, Any] = {}
        sides: dict[str, list[str]] = {"receive": [], "send": []}
        for action, variants in (("receive", inbound), ("send", outbound)):
            for name, payload, summary in variants:
                key = f"{name}.{'client' if action == 'receive' else 'server'}" if name in clashes else name
                component = _ID.sub("_", f"{channel_id}.{key}")
                message: dict[str, Any] = {"name": name, "payload": payload}
                if messages.codec.media_type != _DEFAULT_CONTENT_TYPE:  # e.g. msgpack: the payload's wire format
                    message["contentType"] = messages.codec.media_type
                if summary:
                    message["description"] = summary
                component_messages[component] = message
                channel_messages[key] = {"$ref": f"#/components/messages/{component}"}
                sides[action].append(key)
        channels[channel_id] = {
            "address": path,
            "title": path,
            "description": _channel_description(messages),
            "messages": channel_messages,
            "x-close-codes": _close_codes(),
        }
        for action, keys in sides.items():
            operations[f"{channel_id}.{action}"] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "summary": "What clients send." if action == "receive" else "What the server sends.",
                "messages": [{"$ref": f"#/channels/{channel_id}/messages/{key}"} for key in keys],
            }

    info: dict[str, Any] = {"title": title, "version": version}
    if description is not None:
        info["description"] = description
    document: dict[str, Any] = {"asyncapi": ASYNCAPI_VERSION, "info": info}
    if servers:
        document["servers"] = {name: _server(url) for name, url in servers.items()}
    document["defaultContentType"] = _DEFAULT_CONTENT_TYPE
    document["channels"] = channels
    document["operations"] = operations
    document["components"] = {"schemas": schemas, "messages": component_messages}
    return document


def _channel_id(path: str) -> str:
    """A channel id from a path: ``"/ws"`` -> ``"ws"``, ``"/"`` -> ``"root"``; AsyncAPI allows ``[\\w.-]`` only."""
    return _ID.sub("_", path.strip("/")) or "root"


def _server(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"a server URL needs a scheme and a host, like ws://127.0.0.1:8000: {url!r}")
    server: dict[str, Any] = {"host": parts.netloc, "protocol": parts.scheme}
    if parts.path not in ("", "/"):
        server["pathname"] = parts.path
    return server


def _asyncapi_schema(schema: Any) -> Any:
    """``schema`` with OpenAPI-style discriminator objects turned into AsyncAPI Schema's property-name string.

    The mapping is dropped: each variant already says its tag (a ``const``), and ``oneOf`` lists them.
    """
    if isinstance(schema, dict):
        converted = {key: _asyncapi_schema(value) for key, value in schema.items()}
        discriminator = converted.get("discriminator")
        if isinstance(discriminator, dict) and "propertyName" in discriminator:
            converted["discriminator"] = discriminator["propertyName"]
        return converted
    if isinstance(schema, list):
        return [_asyncapi_schema(item) for item in schema]
    return schema


def _inline(schema: dict[str, Any], schemas: Mapping[str, Any]) -> dict[str, Any]:
    """The schema a top-level ``$ref`` points to, copied (so a payload shows the model's own properties)."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(_SCHEMAS) and len(schema) == 1:
        return copy.deepcopy(schemas[ref.removeprefix(_SCHEMAS)])
    return schema


def _variants(schema: dict[str, Any], schemas: Mapping[str, Any], fallback: str) -> list[tuple[str, Any, str]]:
    """``(name, payload, summary)`` per message: one per variant of a discriminated union, named after its tag.

    A single model is one message named after its tag (a ``const`` discriminator-like ``type``) or
    its title; anything else (a plain union, a list) is one message named ``fallback``.
    """
    prop = schema.get("discriminator")
    if isinstance(prop, str) and isinstance(schema.get("oneOf"), list):
        variants = []
        for member in schema["oneOf"]:
            payload = _inline(member, schemas)
            tag = payload.get("properties", {}).get(prop, {}).get("const")
            if not isinstance(tag, str):  # a variant without a string tag: keep the union whole
                return [(fallback, schema, "")]
            variants.append((tag, payload, payload.get("description", "")))
        return variants
    payload = _inline(schema, schemas)
    tag = payload.get("properties", {}).get("type", {}).get("const")
    name = tag if isinstance(tag, str) else payload.get("title", fallback)
    return [(str(name), payload, payload.get("description", ""))]


def _channel_description(messages: Messages[Any, Any]) -> str:
    malformed = "JSON gets" if messages.codec.media_type == _DEFAULT_CONTENT_TYPE else "messages get"
    answers = {
        "error": "an `error` message, and the connection stays open",
        "close": "a close",
    }
    return (
        f"Messages are {_format_name(messages.codec.media_type)} in {messages.frames} frames. "
        f"Schema-invalid messages get {answers[messages.on_invalid]}"
        f"{' (1008)' if messages.on_invalid == 'close' else ''}; "
        f"malformed {malformed} {answers[messages.on_malformed]}"
        f"{' (1003)' if messages.on_malformed == 'close' else ''}. "
        "The close codes the toolkit and its plugins can send are listed in `x-close-codes`."
    )


def _format_name(media_type: str) -> str:
    """``JSON`` for ``application/json``, ``msgpack`` for ``application/msgpack``: the subtype, readable."""
    subtype = media_type.partition("/")[2] or media_type
    return "JSON" if subtype == "json" else subtype


def _close_codes() -> list[dict[str, Any]]:
    """Every close code that may appear in a close frame, with its name and default reason."""
    return [{"code": int(code), "name": code.name, "reason": code.reason} for code in CloseCode if code.sendable]
