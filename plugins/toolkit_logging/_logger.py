"""``ConnectionLogger``: one record when a connection opens, one when it ends, messages at DEBUG.

Every string that reaches a record is escaped (no control character, line separator or
bidi control survives), and credentials are redacted by name before they are logged:
query parameters, request headers and JSON object keys.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterable
from typing import Any, Final, final
from urllib.parse import unquote_plus

import toolkit
from toolkit import Accept, CloseCode, ClosedBy, DenialResponse, StateKey, WebSocket

__all__ = ["DEFAULT_REDACT_HEADERS", "DEFAULT_REDACT_KEYS", "REDACTED", "ConnectionLogger", "Names", "escape_char"]

#: What a redacted value is replaced with.
REDACTED: Final = "[redacted]"

#: Query parameter names and JSON keys redacted by default. A name matches when, lower-cased and
#: without ``-``, ``_``, ``.`` and spaces, it *ends with* an entry treated the same way: ``token``
#: also covers ``access_token``, ``refresh_token``, ``X-Auth-Token`` and ``csrftoken``.
DEFAULT_REDACT_KEYS: Final = frozenset(
    {
        "token",
        "access_token",
        "authorization",
        "cookie",
        "password",
        "passwd",
        "secret",
        "api_key",
        "apikey",
        "private_key",
        "session_id",
        "credential",
        "credentials",
        "jwt",
    }
)
#: Request header names redacted by default: the keys above (``authorization`` covers
#: ``Proxy-Authorization``, ``cookie`` covers ``Set-Cookie``, ``api_key`` covers ``X-Api-Key``), plus
#: ``Sec-WebSocket-Protocol``, which browsers use to carry tokens (the offered list is hidden whole).
DEFAULT_REDACT_HEADERS: Final = DEFAULT_REDACT_KEYS | {"sec-websocket-protocol"}

_log = logging.getLogger("toolkit_logging")

#: Longest string field (path, query, header value, principal, client) logged; the rest is cut.
_MAX_FIELD: Final = 1024
_MAX_PRINCIPAL: Final = 200
#: Binary payloads show at most this many leading bytes, in hex.
_MAX_HEX_BYTES: Final = 16
#: Payloads larger than this are not parsed as JSON at DEBUG (shown as other text: cut, and hidden if the
#: shown part names a secret). It bounds what the log costs for a message a size limit will refuse, even
#: when the log runs before that limit (parsing 0.9 MiB of JSON took 130-150 ms of CPU).
_MAX_JSON_CHARS: Final = 64 * 1024
#: JSON nested deeper than this is shown as ``"[...]"`` (redaction walks the tree recursively).
_MAX_JSON_DEPTH: Final = 32
#: A chosen subprotocol this long, or shaped like a JWT, is treated as a token and redacted.
_MAX_SUBPROTOCOL: Final = 40
_TRUNCATED: Final = "..."
_NOT_SHOWN: Final = "[not shown: may contain a secret]"
_SEPARATORS: Final = str.maketrans("", "", "-_. ")
_NAMED_ESCAPES: Final = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_LOGFMT_QUOTE: Final = frozenset(' "=')

_OPEN: Final = "websocket open conn=%s path=%s query=%s client=%s subprotocol=%s principal=%s"
_CLOSE: Final = (
    "websocket close conn=%s path=%s code=%d reason=%s closed_by=%s duration=%.3fs "
    "msgs_in=%d msgs_out=%d bytes_in=%d bytes_out=%d"
)
_DENIAL: Final = "websocket denied conn=%s path=%s query=%s client=%s status=%s closed_by=%s principal=%s"
_MESSAGE: Final = "websocket message conn=%s %s %s %d B: %s"


def escape_char(char: str) -> str:
    """One character as it is logged: itself if printable, else its escape (``\\n``, ``\\x1b``, ``\\u2028``)."""
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    if char.isprintable():
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape(value: str) -> str:
    """``value`` with every non-printable character escaped, and backslashes doubled (so it is unambiguous).

    Non-printable covers C0 and C1 controls (CR, LF, ESC...), DEL, U+2028/U+2029, bidi and other
    format characters, unassigned code points and lone surrogates: nothing that could end a log
    line, drive a terminal, or reorder what a reader sees.
    """
    if value.isprintable() and "\\" not in value:
        return value
    return "".join(escape_char(char) for char in value)


def _field(value: str, limit: int = _MAX_FIELD) -> str:
    if len(value) > limit:
        value = value[:limit] + _TRUNCATED
    return escape(value)


def _json_escape_char(char: str) -> str:
    if char.isprintable():
        return char
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # a UTF-16 surrogate pair, as JSON spells characters beyond the BMP
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def _json_field(serialized: str, limit: int) -> str:
    """JSON text cut to ``limit`` with non-printable characters as ``\\uXXXX``: still JSON, still one line.

    ``json.dumps`` already escapes C0 controls; with ``ensure_ascii=False`` it keeps the others
    (U+2028, C1, bidi controls), which can only occur inside strings, where ``\\uXXXX`` is valid.
    """
    if len(serialized) > limit:
        serialized = serialized[:limit] + _TRUNCATED
    if serialized.isprintable():
        return serialized
    return "".join(_json_escape_char(char) for char in serialized)


def _logfmt(value: object) -> str:
    """A value for the human-readable message: ``-`` for None, quoted when it holds a space, ``"`` or ``=``."""
    if value is None:
        return "-"
    text = str(value)
    if text and _LOGFMT_QUOTE.isdisjoint(text):
        return text
    return '"' + text.replace('"', '\\"') + '"'


def _utf8_len(data: str) -> int:
    # Lone surrogates (possible in a plugin's replacement) must not make counting fail.
    return len(data.encode("utf-8", "surrogatepass"))


@final
class Names:
    """A set of names matched case-insensitively, ignoring separators, by suffix."""

    __slots__ = ("_suffixes",)

    def __init__(self, names: Iterable[str], what: str) -> None:
        if isinstance(names, (str, bytes)):
            raise TypeError(f"{what} must be a collection of names, not a single string")
        suffixes: set[str] = set()
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"{what} must contain strings, got {type(name).__name__}")
            normalized = self.normalize(name)
            if not normalized:
                raise ValueError(f"{what} contains an empty name, which would redact everything")
            suffixes.add(normalized)
        self._suffixes = tuple(sorted(suffixes))

    @staticmethod
    def normalize(name: str) -> str:
        return name.casefold().translate(_SEPARATORS)

    def __call__(self, name: str) -> bool:
        """Whether ``name`` is to be redacted."""
        return bool(self._suffixes) and self.normalize(name).endswith(self._suffixes)

    def mentioned_in(self, text: str) -> bool:
        """Whether any name occurs in ``text`` (a safety net for payloads that are not JSON)."""
        normalized = self.normalize(text)
        return any(suffix in normalized for suffix in self._suffixes)


@final
class _Connection:
    """What the logger keeps per open connection, in its ``websocket.plugin_state``; dropped in ``ws_close``."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "conn_id",
        "identity",
        "msgs_in",
        "msgs_out",
        "opened",
        "started",
        "status",
        "subprotocol",
    )

    def __init__(self) -> None:
        self.conn_id = secrets.token_hex(6)
        self.started = time.monotonic()
        #: True once the open record's moment has passed (``ws_accept`` let the connection through).
        self.opened = False
        #: The HTTP status of a denial, as the client sees it.
        self.status: int | None = None
        self.subprotocol: str | None = None
        #: ws_conn_id, ws_path, ws_client: built on first use.
        self.identity: dict[str, Any] | None = None
        self.msgs_in = 0
        self.msgs_out = 0
        self.bytes_in = 0
        self.bytes_out = 0


@final
class ConnectionLogger(toolkit.Plugin):
    """Log each connection on a stdlib :class:`logging.Logger`, with structured ``ws_*`` fields.

    - one INFO record when the connection opens, and one when it ends (WARNING when it ended on an
      internal error: close 1011, or the app failed or was cancelled);
    - a connection that is never accepted gets a single "denied" record instead (INFO for a 4xx,
      WARNING for a 5xx or a server-side failure);
    - with ``log_messages`` and DEBUG enabled on ``logger``, one record per message: direction,
      size, and the payload cut to ``max_payload`` characters, with JSON keys redacted.

    Message and byte counts are kept always; payloads are only looked at when DEBUG is enabled.
    Query parameters, request headers and JSON keys named in ``redact_query``,
    ``redact_headers`` and ``redact_json_keys`` are replaced by ``"[redacted]"``; a name matches
    case-insensitively, ignoring ``-_.`` and spaces, by suffix (``token`` covers ``access_token``).
    Every string logged is escaped (see ``docs/logging.md``), so no record can forge a log line.
    """

    __slots__ = ("_connection", "_headers", "_json_keys", "_open", "_query", "log_messages", "logger", "max_payload")

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        redact_query: Iterable[str] = DEFAULT_REDACT_KEYS,
        redact_headers: Iterable[str] = DEFAULT_REDACT_HEADERS,
        redact_json_keys: Iterable[str] = DEFAULT_REDACT_KEYS,
        max_payload: int = 200,
        log_messages: bool = True,
    ) -> None:
        checked: object = max_payload  # run-time check of untyped input
        if isinstance(checked, bool) or not isinstance(checked, int) or checked < 0:
            raise ValueError("max_payload must be an int >= 0")
        #: The logger every record goes to.
        self.logger: logging.Logger = _log if logger is None else logger
        #: Characters of each payload shown at DEBUG (0: sizes only).
        self.max_payload: int = max_payload
        #: Whether to log each message at DEBUG (counting happens regardless).
        self.log_messages: bool = log_messages
        self._query = Names(redact_query, "redact_query")
        self._headers = Names(redact_headers, "redact_headers")
        self._json_keys = Names(redact_json_keys, "redact_json_keys")
        # What this logger keeps on each connection, in the connection's plugin state. Per instance:
        # two loggers on one manager (a file and the console) count and name connections apart.
        self._connection: Final = StateKey[_Connection]("toolkit_logging.ConnectionLogger")
        # An aggregate across connections: how many hold this logger's state.
        self._open = 0

    @property
    def open_connections(self) -> int:
        """How many connections this logger holds state for (freed in ``ws_close``)."""
        return self._open

    def conn_id(self, websocket: WebSocket) -> str | None:
        """The id this logger gave ``websocket`` (the ``ws_conn_id`` field), while it is open; else None.

        Put it in your own records to tie them to the connection's.
        """
        connection = websocket.plugin_state.get(self._connection)
        return None if connection is None else connection.conn_id

    def _start(self, websocket: WebSocket) -> _Connection:
        """This logger's state for ``websocket``, made (and counted) on first use."""
        state = websocket.plugin_state
        connection = state.get(self._connection)
        if connection is None:
            connection = state[self._connection] = _Connection()
            self._open += 1
        return connection

    # --- hooks ------------------------------------------------------------------------------------

    @toolkit.hookimpl(trylast=True)
    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> None:
        # trylast: every other plugin has decided, so this sees the accept that goes out. A wrapper
        # may still deny, or sending the accept may fail: ws_close then logs a close record
        # (1006, with the denial's status) that pairs with this open record.
        connection = self._start(websocket)
        connection.opened = True
        connection.started = time.monotonic()
        connection.subprotocol = accept.subprotocol
        logger = self.logger
        if logger.isEnabledFor(logging.INFO):
            identity = self._identity(websocket, connection)
            query = self._query_of(websocket)
            subprotocol = self._subprotocol(accept.subprotocol)
            principal = _principal(websocket)
            extra = {
                "ws_event": "open",
                **identity,
                "ws_query": query,
                "ws_headers": self._headers_of(websocket),
                "ws_subprotocol": subprotocol,
                "ws_principal": principal,
            }
            logger.info(
                _OPEN,
                identity["ws_conn_id"],
                _logfmt(identity["ws_path"]),
                _logfmt(query),
                _logfmt(identity["ws_client"]),
                _logfmt(subprotocol),
                _logfmt(principal),
                extra=extra,
            )

    @toolkit.hookimpl(tryfirst=True)
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> None:
        # tryfirst: counts what the client sent, including messages a later plugin drops or refuses.
        connection = websocket.plugin_state.get(self._connection)
        if connection is not None:
            connection.msgs_in += 1
            connection.bytes_in += len(data) if isinstance(data, bytes) or data.isascii() else _utf8_len(data)
            if self.log_messages and self.logger.isEnabledFor(logging.DEBUG):
                self._log_message(websocket, connection, "in", data)

    @toolkit.hookimpl(trylast=True)
    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> None:
        # trylast: counts what goes to the server, after other plugins replaced or dropped it.
        connection = websocket.plugin_state.get(self._connection)
        if connection is not None:
            connection.msgs_out += 1
            connection.bytes_out += len(data) if isinstance(data, bytes) or data.isascii() else _utf8_len(data)
            if self.log_messages and self.logger.isEnabledFor(logging.DEBUG):
                self._log_message(websocket, connection, "out", data)

    @toolkit.hookimpl(trylast=True)
    def ws_denial(self, *, websocket: WebSocket, response: DenialResponse) -> None:
        # trylast: sees the response as other plugins left it. Logged once, by ws_close, which follows.
        connection = self._start(websocket)
        # Without the server's denial extension the toolkit sends a close; the client sees 403.
        connection.status = response.status if websocket.has_denial_extension else 403

    def ws_close(self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None:
        connection = websocket.plugin_state.pop(self._connection)
        if connection is None:  # never accepted and no ws_denial: e.g. cancelled before accept
            connection = _Connection()
        else:
            self._open -= 1
        logger = self.logger
        if connection.opened:
            failed = code == CloseCode.INTERNAL_ERROR or closed_by is ClosedBy.SERVER
            level = logging.WARNING if failed else logging.INFO
            if not logger.isEnabledFor(level):
                return
            identity = self._identity(websocket, connection)
            duration = time.monotonic() - connection.started
            escaped_reason = _field(reason)
            extra = {
                "ws_event": "close",
                **identity,
                "ws_subprotocol": self._subprotocol(connection.subprotocol),
                "ws_principal": _principal(websocket),
                "ws_code": code,
                "ws_reason": escaped_reason,
                "ws_closed_by": closed_by.value,
                "ws_status": connection.status,
                "ws_duration": duration,
                "ws_msgs_in": connection.msgs_in,
                "ws_msgs_out": connection.msgs_out,
                "ws_bytes_in": connection.bytes_in,
                "ws_bytes_out": connection.bytes_out,
            }
            logger.log(
                level,
                _CLOSE,
                identity["ws_conn_id"],
                _logfmt(identity["ws_path"]),
                code,
                _logfmt(escaped_reason),
                closed_by.value,
                duration,
                connection.msgs_in,
                connection.msgs_out,
                connection.bytes_in,
                connection.bytes_out,
                extra=extra,
            )
            return
        status = connection.status
        failed = (status is not None and status >= 500) or closed_by is ClosedBy.SERVER
        level = logging.WARNING if failed else logging.INFO
        if not logger.isEnabledFor(level):
            return
        identity = self._identity(websocket, connection)
        query = self._query_of(websocket)
        principal = _principal(websocket)
        extra = {
            "ws_event": "denial",
            **identity,
            "ws_query": query,
            "ws_headers": self._headers_of(websocket),
            "ws_principal": principal,
            "ws_status": status,
            "ws_code": code,
            "ws_reason": _field(reason),
            "ws_closed_by": closed_by.value,
        }
        logger.log(
            level,
            _DENIAL,
            identity["ws_conn_id"],
            _logfmt(identity["ws_path"]),
            _logfmt(query),
            _logfmt(identity["ws_client"]),
            _logfmt(status),
            closed_by.value,
            _logfmt(principal),
            extra=extra,
        )

    # --- fields -----------------------------------------------------------------------------------

    def _identity(self, websocket: WebSocket, connection: _Connection) -> dict[str, Any]:
        identity = connection.identity
        if identity is None:
            path = websocket.scope.get("path")
            client = websocket.scope.get("client")
            where: str | None = None
            if isinstance(client, (list, tuple)) and len(client) == 2:
                host, port = str(client[0]), client[1]
                where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            identity = connection.identity = {
                "ws_conn_id": connection.conn_id,
                "ws_path": _field(path) if isinstance(path, str) else None,
                "ws_client": None if where is None else _field(where),
            }
        return identity

    def _query_of(self, websocket: WebSocket) -> str:
        raw = websocket.scope.get("query_string") or b""
        if not isinstance(raw, bytes) or not raw:
            return ""
        parts = raw.decode("latin-1").split("&")
        for i, part in enumerate(parts):
            name, equals, _ = part.partition("=")
            # Match the decoded name: "%74oken" is "token" to the app, so it is "token" here too.
            if equals and self._query(unquote_plus(name)):
                parts[i] = f"{name}={REDACTED}"
        return _field("&".join(parts))

    def _headers_of(self, websocket: WebSocket) -> dict[str, str]:
        headers: dict[str, str] = {}
        for raw_name, raw_value in websocket.scope.get("headers") or ():
            name = bytes(raw_name).decode("latin-1").lower()
            value = REDACTED if self._headers(name) else _field(bytes(raw_value).decode("latin-1"))
            key = _field(name, 200)
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return headers

    @staticmethod
    def _subprotocol(subprotocol: str | None) -> str | None:
        # Tokens sent as a subprotocol must never be echoed back (the core and toolkit_auth never do),
        # but an app could; a long or JWT-shaped value is not logged.
        if subprotocol is None:
            return None
        if len(subprotocol) > _MAX_SUBPROTOCOL or subprotocol.startswith("eyJ"):
            return REDACTED
        return escape(subprotocol)

    # --- messages (DEBUG only) --------------------------------------------------------------------

    def _log_message(self, websocket: WebSocket, connection: _Connection, direction: str, data: str | bytes) -> None:
        if isinstance(data, str):
            kind, size = "text", _utf8_len(data)
            payload, truncated = self._text_payload(data)
        else:
            kind, size = "binary", len(data)
            payload, truncated = self._binary_payload(data)
        identity = self._identity(websocket, connection)
        extra = {
            "ws_event": "message",
            **identity,
            "ws_direction": direction,
            "ws_type": kind,
            "ws_size": size,
            "ws_payload": payload,
            "ws_truncated": truncated,
        }
        self.logger.debug(_MESSAGE, identity["ws_conn_id"], direction, kind, size, payload, extra=extra)

    def _text_payload(self, text: str) -> tuple[str, bool]:
        """The text to log for ``text``: redacted JSON, or the text itself unless it may hold a secret."""
        limit = self.max_payload
        if limit == 0:
            return "", bool(text)
        if text.lstrip()[:1] in ("{", "["):
            shown = self._json_payload(text)
            if shown is not None:
                return _json_field(shown, limit), len(shown) > limit
        if self._json_keys.mentioned_in(text[:limit]):
            return _NOT_SHOWN, len(text) > limit
        return _field(text, limit), len(text) > limit

    def _binary_payload(self, data: bytes) -> tuple[str, bool]:
        """Redacted JSON if ``data`` is UTF-8 JSON, else up to 16 leading bytes in hex."""
        limit = self.max_payload
        if limit == 0:
            return "", bool(data)
        if data.lstrip()[:1] in (b"{", b"["):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                shown = self._json_payload(text)
                if shown is not None:
                    return _json_field(shown, limit), len(shown) > limit
        head = data[: min(_MAX_HEX_BYTES, limit)]
        truncated = len(data) > len(head)
        if self._json_keys.mentioned_in(head.decode("latin-1")):
            return _NOT_SHOWN, truncated
        return head.hex(" ") + (_TRUNCATED if truncated else ""), truncated

    def _json_payload(self, text: str) -> str | None:
        """``text`` parsed, redacted and re-serialized; None if it is not JSON that can be redacted."""
        if len(text) > _MAX_JSON_CHARS:
            return None
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return None
        return json.dumps(self._redact(value, 0), ensure_ascii=False, separators=(",", ":"))

    def _redact(self, value: object, depth: int) -> object:
        if isinstance(value, dict):
            if depth >= _MAX_JSON_DEPTH:
                return "[...]"
            return {
                key: REDACTED if self._json_keys(key) else self._redact(item, depth + 1) for key, item in value.items()
            }
        if isinstance(value, list):
            if depth >= _MAX_JSON_DEPTH:
                return "[...]"
            return [self._redact(item, depth + 1) for item in value]
        if isinstance(value, str) and value[:1] in ("{", "["):
            # JSON inside a string (ActionCable identifiers, SockJS frames) is redacted too.
            try:
                inner = json.loads(value)
            except (ValueError, RecursionError):
                return value
            if isinstance(inner, (dict, list)):
                return json.dumps(self._redact(inner, depth + 1), ensure_ascii=False, separators=(",", ":"))
        return value


def _principal(websocket: WebSocket) -> str | None:
    """Who the connection belongs to: ``scope["user"]`` (its ``display_name`` if it has one), escaped."""
    user = websocket.scope.get("user")
    if user is None:
        return None
    try:
        if getattr(user, "is_authenticated", True) is False:  # Starlette's UnauthenticatedUser
            return None
        name = getattr(user, "display_name", None)
        text = name if isinstance(name, str) and name else str(user)
    except Exception:  # a user object that cannot describe itself must not break the connection
        return "[unprintable]"
    return _field(text, _MAX_PRINCIPAL)
