"""Small ASGI responses for the handshake: an HTTP denial and a plain close."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus

from ._close import CloseCode, check_close
from ._types import Receive, Scope, Send

__all__ = ["DenialResponse", "WebSocketClose", "check_headers"]


def _check_header(name: bytes, value: bytes) -> None:
    # A CR or LF in a header would let a value start a new header or the body (response splitting).
    if type(name) is not bytes or type(value) is not bytes:  # run-time check of untyped input
        raise TypeError("header names and values must be bytes")
    if not name or any(c in name for c in b"\r\n\0: ") or any(c in value for c in b"\r\n\0"):
        raise ValueError("header name or value contains a forbidden character")


def check_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Return the headers as a list with lower-cased names (as ASGI requires), refusing malformed pairs and CR/LF."""
    checked = []
    for pair in headers:
        name, value = pair
        _check_header(name, value)
        checked.append((name.lower(), value))
    return checked


@dataclass(frozen=True, slots=True)
class DenialResponse:
    """An HTTP response that refuses the WebSocket handshake.

    Usable as a hook result (``ws_accept``, ``ws_denial``) and as an ASGI
    app for :meth:`toolkit.WebSocket.send_denial_response`. ``body`` given as
    ``str`` is sent as UTF-8 text.
    """

    status: int = 403
    body: bytes | str = b""
    headers: tuple[tuple[bytes, bytes], ...] = field(default=())
    media_type: str = "text/plain; charset=utf-8"

    def __post_init__(self) -> None:
        if type(self.status) is not int or not 400 <= self.status <= 599:
            raise ValueError("a denial status must be an HTTP error status (400-599)")
        object.__setattr__(self, "headers", tuple(check_headers(self.headers)))
        if isinstance(self.body, str):
            object.__setattr__(self, "body", self.body.encode("utf-8"))
        _check_header(b"content-type", self.media_type.encode("latin-1"))

    @classmethod
    def for_status(cls, status: int) -> DenialResponse:
        """A denial whose body is the status's standard phrase, e.g. ``"Forbidden"``."""
        return cls(status, HTTPStatus(status).phrase)

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers to send, with ``content-type`` and ``content-length`` filled in."""
        headers = list(self.headers)
        names = {name.lower() for name, _ in headers}
        if self.body and b"content-type" not in names:
            headers.append((b"content-type", self.media_type.encode("latin-1")))
        headers = [(n, v) for n, v in headers if n.lower() != b"content-length"]
        headers.append((b"content-length", str(len(self.body)).encode("ascii")))
        return headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        prefix = "websocket." if scope["type"] == "websocket" else ""
        await send({"type": prefix + "http.response.start", "status": self.status, "headers": self.raw_headers()})
        await send({"type": prefix + "http.response.body", "body": self.body, "more_body": False})


class WebSocketClose:
    """An ASGI app that closes the connection (before accept: the client sees HTTP 403)."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int = CloseCode.NORMAL.value, reason: str | None = None) -> None:
        check_close(code, reason or "")
        self.code: int = code
        self.reason: str = reason or ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "websocket.close", "code": self.code, "reason": self.reason})
