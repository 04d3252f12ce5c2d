"""The JSON codec behind ``send_json``/``receive_json``.

pydantic-core parses and serialises in Rust: about 2x faster than the stdlib on
loads and 4x on dumps for a 1 KB object (bench/), keeps integers exact (orjson
turns big ones into floats), reports deep nesting as an error instead of
``RecursionError``, and writes the same compact, non-ASCII-preserving text
as Starlette's ``json.dumps(..., separators=(",", ":"), ensure_ascii=False)``.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic_core

from ._exceptions import InvalidJSON, InvalidUTF8

__all__ = ["dumps", "loads"]

_to_json = pydantic_core.to_json
_from_json = pydantic_core.from_json
_SerializationError = pydantic_core.PydanticSerializationError


def dumps(data: Any) -> str:
    """Serialise like Starlette does; values it cannot serialise raise ``TypeError`` as with ``json``."""
    try:
        return _to_json(data).decode("utf-8")
    except _SerializationError:
        # Let the stdlib produce its usual TypeError (or succeed where it can).
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def loads(data: str | bytes) -> Any:
    """Parse one JSON document. NaN, Infinity, trailing data and >4300-digit numbers are refused.

    Raises :class:`InvalidJSON`, or :class:`InvalidUTF8` for bytes that are not UTF-8.
    """
    try:
        return _from_json(data, allow_inf_nan=False)
    except (ValueError, TypeError):  # TypeError: a str holding a lone surrogate
        if isinstance(data, bytes):
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidUTF8("message is not valid UTF-8") from None
        raise InvalidJSON("message is not valid JSON") from None
