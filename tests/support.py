"""Test helpers: an in-memory ASGI transport and a plugin that records every hook call."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import toolkit
from toolkit import ClosedBy, DenialResponse, Message, Scope

DENIAL_EXTENSION: dict[str, Any] = {"websocket.http.response": {}}

#: The first-party plugin packages shipped in this distribution (pyproject.toml's wheel packages).
PLUGIN_PACKAGES = (
    "toolkit_auth",
    "toolkit_broadcast",
    "toolkit_demo",
    "toolkit_limits",
    "toolkit_logging",
    "toolkit_messages",
    "toolkit_otel",
    "toolkit_pytest",
)


def make_scope(
    *,
    path: str = "/ws",
    query_string: bytes = b"",
    headers: Iterable[tuple[bytes, bytes]] = ((b"host", b"testserver"),),
    extensions: dict[str, Any] | None = None,
    subprotocols: list[str] | None = None,
) -> Scope:
    """A websocket scope as a server would build it."""
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "scheme": "ws",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query_string,
        "headers": list(headers),
        "subprotocols": subprotocols or [],
        "extensions": extensions if extensions is not None else {},
    }


class Exhausted(AssertionError):
    """The code under test received more messages than the test scripted (it would hang on a server)."""


@dataclass
class Transport:
    """Scripted ``receive`` and recording ``send``. Bounded: never waits for anything."""

    incoming: list[Message] = field(default_factory=list)
    sent: list[Message] = field(default_factory=list)
    #: When set, every ``send`` raises this (a server whose client vanished raises an OSError).
    send_error: BaseException | None = None

    async def receive(self) -> Message:
        if not self.incoming:
            raise Exhausted("no more scripted messages")
        return self.incoming.pop(0)

    async def send(self, message: Message) -> None:
        if self.send_error is not None:
            raise self.send_error
        self.sent.append(message)

    def sent_types(self) -> list[str]:
        return [m["type"] for m in self.sent]


def connect() -> Message:
    return {"type": "websocket.connect"}


def text(data: str) -> Message:
    return {"type": "websocket.receive", "text": data}


def binary(data: bytes) -> Message:
    return {"type": "websocket.receive", "bytes": data}


def disconnect(code: int | None = 1000, reason: str = "") -> Message:
    message: Message = {"type": "websocket.disconnect", "reason": reason}
    if code is not None:
        message["code"] = code
    return message


@dataclass
class Recorder(toolkit.Plugin):
    """Records every hook call as ``(hook name, details)``; returns None (keeps everything)."""

    calls: list[tuple[str, Any]] = field(default_factory=list)

    def ws_accept(self, *, websocket: toolkit.WebSocket, accept: toolkit.Accept) -> None:
        self.calls.append(("ws_accept", accept))

    def ws_receive(self, *, websocket: toolkit.WebSocket, data: str | bytes) -> None:
        self.calls.append(("ws_receive", data))

    def ws_send(self, *, websocket: toolkit.WebSocket, data: str | bytes) -> None:
        self.calls.append(("ws_send", data))

    def ws_close(self, *, websocket: toolkit.WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None:
        self.calls.append(("ws_close", (code, reason, closed_by)))

    def ws_denial(self, *, websocket: toolkit.WebSocket, response: DenialResponse) -> None:
        self.calls.append(("ws_denial", response))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def closes(self) -> list[tuple[int, str, ClosedBy]]:
        return [details for name, details in self.calls if name == "ws_close"]
