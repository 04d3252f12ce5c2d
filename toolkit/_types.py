"""ASGI type aliases shared by the toolkit's modules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeAlias

__all__ = ["ASGIApp", "Message", "RawHeaders", "Receive", "Scope", "Send"]

#: An ASGI connection scope. Left loosely typed on purpose: servers add their own keys.
Scope: TypeAlias = MutableMapping[str, Any]
#: An ASGI event dictionary, as passed to ``send`` or returned by ``receive``.
Message: TypeAlias = MutableMapping[str, Any]
#: The ASGI ``receive`` channel: the next event from the server.
Receive: TypeAlias = Callable[[], Awaitable[Message]]
#: The ASGI ``send`` channel: one event to the server.
Send: TypeAlias = Callable[[Message], Awaitable[None]]
#: An ASGI application: ``await app(scope, receive, send)``.
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]
#: Raw ASGI headers: lower-case names and values as bytes.
RawHeaders: TypeAlias = "list[tuple[bytes, bytes]]"
