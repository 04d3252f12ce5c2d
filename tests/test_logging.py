"""toolkit_logging.ConnectionLogger over the in-memory transport: records, fields, redaction, escaping."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from toolkit_logging import DEFAULT_REDACT_HEADERS, DEFAULT_REDACT_KEYS, REDACTED, ConnectionLogger
from toolkit_logging import _logger as logger_module

import toolkit
from tests.support import DENIAL_EXTENSION, Transport, binary, connect, disconnect, make_scope, text
from toolkit import (
    DROP,
    Accept,
    AcceptResult,
    DenialResponse,
    Message,
    MessageResult,
    PluginManager,
    Scope,
    WebSocket,
    WebSocketApp,
)

pytestmark = pytest.mark.anyio

Endpoint = Callable[[WebSocket], Awaitable[None]]
ROOT = Path(__file__).parent.parent
CONN_ID = re.compile(r"[0-9a-f]{12}")


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Entry:
    """A captured record; its ``ws_*`` fields (set through ``extra``) read as attributes."""

    __slots__ = ("record",)

    def __init__(self, record: logging.LogRecord) -> None:
        self.record = record

    def __getattr__(self, name: str) -> Any:
        return getattr(self.record, name)


class Capture:
    """A private logger (not registered globally) whose records are kept."""

    def __init__(self, level: int) -> None:
        self.logger = logging.Logger("test.toolkit_logging", level)
        self.handler = ListHandler()
        self.logger.addHandler(self.handler)

    @property
    def records(self) -> list[Entry]:
        return [Entry(record) for record in self.handler.records]

    def events(self) -> list[str]:
        return [record.ws_event for record in self.records]

    def of(self, event: str) -> list[Entry]:
        return [record for record in self.records if record.ws_event == event]

    def one(self, event: str) -> Entry:
        found = self.of(event)
        assert len(found) == 1, f"expected one {event} record, got {self.events()}"
        return found[0]


@pytest.fixture
def info() -> Capture:
    return Capture(logging.INFO)


@pytest.fixture
def debug() -> Capture:
    return Capture(logging.DEBUG)


def ws_fields(record: logging.LogRecord | Entry) -> dict[str, Any]:
    if isinstance(record, Entry):
        record = record.record
    return {key: value for key, value in vars(record).items() if key.startswith("ws_")}


async def serve(
    endpoint: Endpoint,
    transport: Transport,
    plugin: ConnectionLogger,
    *,
    scope: Scope | None = None,
    before: tuple[object, ...] = (),
    after: tuple[object, ...] = (),
) -> None:
    """Run one connection through WebSocketApp; the logger must hold no state afterwards.

    ``before``/``after``: plugins registered before/after the logger.
    """
    app = WebSocketApp(endpoint, plugins=PluginManager(*before, plugin, *after))
    try:
        await app(scope or make_scope(), transport.receive, transport.send)
    finally:
        assert plugin.open_connections == 0


def placed(where: str, plugin: object) -> tuple[tuple[object, ...], tuple[object, ...]]:
    """``before`` and ``after`` arguments for :func:`serve` that register ``plugin`` on one side of the logger."""
    return ((plugin,), ()) if where == "before" else ((), (plugin,))


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await websocket.send_text(message["text"])
        else:
            await websocket.send_bytes(message["bytes"])


# --- open and close ------------------------------------------------------------------------------


async def test_one_open_and_one_close_record_with_fields_and_exact_counters(info: Capture) -> None:
    plugin = ConnectionLogger(info.logger)
    scope = make_scope(path="/chat", query_string=b"room=1")
    transport = Transport([connect(), text("hi"), binary(b"\x00\x01\x02"), text("héllo €"), disconnect(1001, "bye")])
    await serve(echo, transport, plugin, scope=scope)

    assert info.events() == ["open", "close"]
    assert all(record.levelno == logging.INFO for record in info.records)
    opened, closed = info.records
    assert CONN_ID.fullmatch(opened.ws_conn_id)
    assert ws_fields(opened) == {
        "ws_event": "open",
        "ws_conn_id": opened.ws_conn_id,
        "ws_path": "/chat",
        "ws_client": "127.0.0.1:50000",
        "ws_query": "room=1",
        "ws_headers": {"host": "testserver"},
        "ws_subprotocol": None,
        "ws_principal": None,
    }
    assert opened.getMessage() == (
        f"websocket open conn={opened.ws_conn_id} path=/chat query=room=1 client=127.0.0.1:50000 "
        "subprotocol=- principal=-".replace("query=room=1", 'query="room=1"')
    )
    size = 2 + 3 + len("héllo €".encode())
    duration = closed.ws_duration
    assert isinstance(duration, float)
    assert 0 <= duration < 5
    assert ws_fields(closed) == {
        "ws_event": "close",
        "ws_conn_id": opened.ws_conn_id,
        "ws_path": "/chat",
        "ws_client": "127.0.0.1:50000",
        "ws_subprotocol": None,
        "ws_principal": None,
        "ws_code": 1001,
        "ws_reason": "bye",
        "ws_closed_by": "client",
        "ws_status": None,
        "ws_duration": duration,
        "ws_msgs_in": 3,
        "ws_msgs_out": 3,
        "ws_bytes_in": size,
        "ws_bytes_out": size,
    }
    assert closed.getMessage() == (
        f"websocket close conn={opened.ws_conn_id} path=/chat code=1001 reason=bye closed_by=client "
        f"duration={duration:.3f}s msgs_in=3 msgs_out=3 bytes_in={size} bytes_out={size}"
    )


async def test_each_connection_gets_its_own_id(info: Capture) -> None:
    plugin = ConnectionLogger(info.logger)
    for _ in range(3):
        await serve(echo, Transport([connect(), disconnect()]), plugin)
    ids = [record.ws_conn_id for record in info.of("open")]
    assert len(set(ids)) == 3
    assert [record.ws_conn_id for record in info.of("close")] == ids


async def test_app_close_is_reported_with_its_code_and_reason(info: Capture) -> None:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("bye")
        await websocket.close(4000, "done")

    await serve(endpoint, Transport([connect()]), ConnectionLogger(info.logger))
    closed = info.one("close")
    assert (closed.ws_code, closed.ws_reason, closed.ws_closed_by) == (4000, "done", "app")
    assert (closed.ws_msgs_in, closed.ws_msgs_out, closed.ws_bytes_out) == (0, 1, 3)
    assert info.events() == ["open", "close"]


async def test_client_close_without_a_code_is_1005(info: Capture) -> None:
    await serve(echo, Transport([connect(), disconnect(None)]), ConnectionLogger(info.logger))
    assert info.one("close").ws_code == 1005


class Shaper(toolkit.Plugin):
    """Drops one inbound message, replaces one outbound message and drops another."""

    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> MessageResult:
        return DROP if data == "drop-me" else None

    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> MessageResult:
        if data == "hi":
            return "HELLO!"
        return DROP if data == "quiet" else None


@pytest.mark.parametrize("shaper_registered", ["before", "after"])
async def test_counters_see_the_wire_inbound_before_plugins_and_outbound_after(
    info: Capture, shaper_registered: str
) -> None:
    transport = Transport([connect(), text("hi"), text("drop-me"), text("quiet"), disconnect()])
    before, after = placed(shaper_registered, Shaper())
    await serve(echo, transport, ConnectionLogger(info.logger), before=before, after=after)
    assert transport.sent[1:] == [{"type": "websocket.send", "text": "HELLO!"}]
    closed = info.one("close")
    # Inbound: all three arrived (one dropped before the app). Outbound: one replaced, one dropped.
    assert (closed.ws_msgs_in, closed.ws_bytes_in) == (3, 2 + 7 + 5)
    assert (closed.ws_msgs_out, closed.ws_bytes_out) == (1, 6)


async def test_subprotocol_and_principal_are_logged(info: Capture) -> None:
    class User:
        is_authenticated = True
        display_name = "alice"

    async def endpoint(websocket: WebSocket) -> None:
        websocket.scope["user"] = User()
        await websocket.accept(subprotocol="graphql-transport-ws")

    await serve(endpoint, Transport([connect()]), ConnectionLogger(info.logger))
    opened, closed = info.records
    assert (opened.ws_subprotocol, opened.ws_principal) == ("graphql-transport-ws", "alice")
    assert (closed.ws_subprotocol, closed.ws_principal) == ("graphql-transport-ws", "alice")
    assert "subprotocol=graphql-transport-ws principal=alice" in opened.getMessage()


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("bob", "bob"),
        (type("Anonymous", (), {"is_authenticated": False, "display_name": ""})(), None),
        (type("Broken", (), {"__str__": lambda self: 1 / 0})(), "[unprintable]"),
    ],
)
async def test_principal_is_str_of_the_user_and_never_breaks_the_connection(
    info: Capture, user: object, expected: str | None
) -> None:
    scope = make_scope()
    scope["user"] = user
    transport = Transport([connect(), disconnect()])
    await serve(echo, transport, ConnectionLogger(info.logger), scope=scope)
    assert transport.sent_types() == ["websocket.accept"]
    assert info.one("open").ws_principal == expected


class Renamer(toolkit.Plugin):
    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Accept:
        return accept.replace(subprotocol="v2.chat")


@pytest.mark.parametrize("renamer_registered", ["before", "after"])
async def test_the_open_record_shows_the_accept_as_other_plugins_left_it(
    info: Capture, renamer_registered: str
) -> None:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol="v1.chat")

    transport = Transport([connect()])
    before, after = placed(renamer_registered, Renamer())
    await serve(endpoint, transport, ConnectionLogger(info.logger), before=before, after=after)
    assert transport.sent[0]["subprotocol"] == "v2.chat"
    assert info.one("open").ws_subprotocol == "v2.chat"


async def test_a_subprotocol_that_looks_like_a_token_is_redacted(info: Capture) -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol=jwt)

    await serve(endpoint, Transport([connect()]), ConnectionLogger(info.logger))
    assert [record.ws_subprotocol for record in info.records] == [REDACTED, REDACTED]
    assert all(jwt not in record.getMessage() for record in info.records)


# --- levels and cost -----------------------------------------------------------------------------


async def test_message_records_only_at_debug(info: Capture, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object) -> None:
        raise AssertionError("payload looked at although DEBUG is off")

    monkeypatch.setattr(ConnectionLogger, "_log_message", never)
    monkeypatch.setattr(ConnectionLogger, "_json_payload", never)
    transport = Transport([connect(), text('{"token": "x"}'), binary(b"{}"), disconnect()])
    await serve(echo, transport, ConnectionLogger(info.logger))
    assert info.events() == ["open", "close"]
    assert info.one("close").ws_msgs_in == 2


async def test_debug_logs_each_message_with_direction_type_and_size(debug: Capture) -> None:
    transport = Transport([connect(), text("hello"), binary(b"\x00\xff"), disconnect()])
    await serve(echo, transport, ConnectionLogger(debug.logger))
    assert debug.events() == ["open", "message", "message", "message", "message", "close"]
    messages = debug.of("message")
    assert all(record.levelno == logging.DEBUG for record in messages)
    conn_id = debug.one("open").ws_conn_id
    summary = [(r.ws_conn_id, r.ws_direction, r.ws_type, r.ws_size, r.ws_payload, r.ws_truncated) for r in messages]
    assert summary == [
        (conn_id, "in", "text", 5, "hello", False),
        (conn_id, "out", "text", 5, "hello", False),
        (conn_id, "in", "binary", 2, "00 ff", False),
        (conn_id, "out", "binary", 2, "00 ff", False),
    ]
    assert messages[0].getMessage() == f"websocket message conn={conn_id} in text 5 B: hello"
    assert messages[0].ws_path == "/ws"


async def test_log_messages_false_keeps_counting_but_logs_no_message(debug: Capture) -> None:
    transport = Transport([connect(), text("hello"), disconnect()])
    await serve(echo, transport, ConnectionLogger(debug.logger, log_messages=False))
    assert debug.events() == ["open", "close"]
    assert (debug.one("close").ws_msgs_in, debug.one("close").ws_bytes_out) == (1, 5)


async def test_a_logger_above_info_gets_nothing_and_state_is_still_freed() -> None:
    quiet = Capture(logging.WARNING)
    plugin = ConnectionLogger(quiet.logger)
    await serve(echo, Transport([connect(), text("x"), disconnect()]), plugin)
    assert quiet.records == []


async def test_internal_error_close_is_a_warning(info: Capture) -> None:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        raise RuntimeError("boom: s3cr3t detail")

    transport = Transport([connect(), text("go")])
    with pytest.raises(RuntimeError, match="boom"):
        await serve(endpoint, transport, ConnectionLogger(info.logger))
    closed = info.one("close")
    assert closed.levelno == logging.WARNING
    assert (closed.ws_code, closed.ws_reason, closed.ws_closed_by, closed.ws_msgs_in) == (
        1011,
        "internal error",
        "server",
        1,
    )
    assert all("s3cr3t" not in record.getMessage() for record in info.records)


class Failing(toolkit.Plugin):
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> None:
        raise ValueError("plugin bug")


async def test_a_failing_plugin_close_is_logged_as_1011_by_the_plugin(
    info: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    transport = Transport([connect(), text("x")])
    await serve(echo, transport, ConnectionLogger(info.logger), before=(Failing(),))
    closed = info.one("close")
    assert (closed.levelno, closed.ws_code, closed.ws_closed_by, closed.ws_msgs_in) == (
        logging.WARNING,
        1011,
        "plugin",
        1,
    )
    assert [r.name for r in caplog.records] == ["toolkit"]  # the core reports the plugin failure itself


async def test_cancellation_after_accept_is_logged_as_1006_by_the_server(info: Capture) -> None:
    plugin = ConnectionLogger(info.logger)
    with anyio.CancelScope() as scope:

        async def endpoint(websocket: WebSocket) -> None:
            await websocket.accept()
            scope.cancel()
            await anyio.sleep(5)

        await serve(endpoint, Transport([connect()]), plugin)
    assert scope.cancelled_caught
    closed = info.one("close")
    assert (closed.levelno, closed.ws_code, closed.ws_closed_by) == (logging.WARNING, 1006, "server")


# --- failed sends --------------------------------------------------------------------------------


async def test_a_failed_send_closes_as_1006_by_the_client(info: Capture) -> None:
    transport = Transport([connect()])

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("one")
        transport.send_error = OSError("client gone")
        await websocket.send_text("two")

    await serve(endpoint, transport, ConnectionLogger(info.logger))
    closed = info.one("close")
    assert (closed.ws_code, closed.ws_reason, closed.ws_closed_by) == (1006, "", "client")
    # Both messages were handed to the server; the second send then failed.
    assert (closed.ws_msgs_out, closed.ws_bytes_out) == (2, 6)
    assert info.events() == ["open", "close"]


async def test_a_failed_accept_still_pairs_the_open_with_a_close(info: Capture) -> None:
    transport = Transport([connect()], send_error=OSError("client gone"))
    await serve(echo, transport, ConnectionLogger(info.logger))
    assert info.events() == ["open", "close"]
    opened, closed = info.records
    assert opened.ws_conn_id == closed.ws_conn_id
    assert (closed.ws_code, closed.ws_closed_by, closed.ws_status) == (1006, "client", None)


# --- denials -------------------------------------------------------------------------------------


class Gate(toolkit.Plugin):
    def __init__(self, status: int) -> None:
        self.status = status

    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> DenialResponse:
        return DenialResponse(self.status, "no")


@pytest.mark.parametrize("gate_registered", ["before", "after"])
@pytest.mark.parametrize(("extensions", "status"), [(DENIAL_EXTENSION, 401), ({}, 403)])
async def test_a_plugin_denial_is_one_record_with_the_status_the_client_sees(
    info: Capture, extensions: dict[str, Any], status: int, gate_registered: str
) -> None:
    scope = make_scope(path="/private", query_string=b"token=abc", extensions=extensions)
    before, after = placed(gate_registered, Gate(401))
    await serve(echo, Transport([connect()]), ConnectionLogger(info.logger), scope=scope, before=before, after=after)
    assert info.events() == ["denial"]
    denied = info.records[0]
    assert denied.levelno == logging.INFO
    assert ws_fields(denied) == {
        "ws_event": "denial",
        "ws_conn_id": denied.ws_conn_id,
        "ws_path": "/private",
        "ws_client": "127.0.0.1:50000",
        "ws_query": f"token={REDACTED}",
        "ws_headers": {"host": "testserver"},
        "ws_principal": None,
        "ws_status": status,
        "ws_code": 1006,
        "ws_reason": "",
        "ws_closed_by": "plugin",
    }
    assert denied.getMessage() == (
        f'websocket denied conn={denied.ws_conn_id} path=/private query="token=[redacted]" '
        f"client=127.0.0.1:50000 status={status} closed_by=plugin principal=-"
    )


class Rewriter(toolkit.Plugin):
    def ws_denial(self, *, websocket: WebSocket, response: DenialResponse) -> DenialResponse:
        return DenialResponse(451, "unavailable")


@pytest.mark.parametrize("rewriter_registered", ["before", "after"])
async def test_a_denial_is_logged_with_the_response_as_other_plugins_left_it(
    info: Capture, rewriter_registered: str
) -> None:
    transport = Transport([connect()])
    before, after = placed(rewriter_registered, Rewriter())
    scope = make_scope(extensions=DENIAL_EXTENSION)
    await serve(echo, transport, ConnectionLogger(info.logger), scope=scope, before=(Gate(401), *before), after=after)
    assert transport.sent[0]["status"] == 451
    assert info.one("denial").ws_status == 451


async def test_an_app_denial_is_one_record(info: Capture) -> None:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.close()

    await serve(endpoint, Transport([connect()]), ConnectionLogger(info.logger))
    denied = info.one("denial")
    assert (denied.levelno, denied.ws_status, denied.ws_closed_by) == (logging.INFO, 403, "app")
    assert info.events() == ["denial"]


async def test_an_app_error_before_accept_is_a_warning_denial(info: Capture) -> None:
    async def endpoint(websocket: WebSocket) -> None:
        raise RuntimeError("boom")

    scope = make_scope(extensions=DENIAL_EXTENSION)
    with pytest.raises(RuntimeError, match="boom"):
        await serve(endpoint, Transport([connect()]), ConnectionLogger(info.logger), scope=scope)
    denied = info.one("denial")
    assert (denied.levelno, denied.ws_status, denied.ws_closed_by) == (logging.WARNING, 500, "server")
    assert info.events() == ["denial"]


async def test_cancellation_before_accept_is_a_warning_denial_without_status(info: Capture) -> None:
    plugin = ConnectionLogger(info.logger)
    with anyio.CancelScope() as scope:

        async def endpoint(websocket: WebSocket) -> None:
            scope.cancel()
            await anyio.sleep(5)

        await serve(endpoint, Transport([connect()]), plugin)
    denied = info.one("denial")
    assert (denied.levelno, denied.ws_status, denied.ws_closed_by) == (logging.WARNING, None, "server")


class LateDenial:
    """A wrapper that denies after every plain ws_accept (the logger's trylast one included) has run."""

    @toolkit.hookimpl(wrapper=True)
    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Generator[None, AcceptResult, AcceptResult]:
        yield
        return DenialResponse(429, "later")


async def test_a_denial_after_the_open_record_is_closed_consistently(info: Capture) -> None:
    transport = Transport([connect()])
    scope = make_scope(extensions=DENIAL_EXTENSION)
    await serve(echo, transport, ConnectionLogger(info.logger), scope=scope, before=(LateDenial(),))
    assert transport.sent[0]["status"] == 429
    assert info.events() == ["open", "close"]
    opened, closed = info.records
    assert opened.ws_conn_id == closed.ws_conn_id
    assert (closed.ws_code, closed.ws_closed_by, closed.ws_status) == (1006, "plugin", 429)


# --- state ---------------------------------------------------------------------------------------


async def test_state_lives_exactly_as_long_as_the_connection(info: Capture) -> None:
    plugin = ConnectionLogger(info.logger)
    seen: list[str | None] = []

    async def endpoint(websocket: WebSocket) -> None:
        seen.append(plugin.conn_id(websocket))
        await websocket.accept()
        seen.append(plugin.conn_id(websocket))
        assert plugin.open_connections == 1
        assert (await websocket.receive())["type"] == "websocket.disconnect"
        seen.append(plugin.conn_id(websocket))  # the client has left: ws_close has run

    await serve(endpoint, Transport([connect(), disconnect()]), plugin)
    assert seen == [None, info.one("open").ws_conn_id, None]
    assert plugin.open_connections == 0


async def test_no_state_remains_after_every_kind_of_ending(info: Capture) -> None:
    plugin = ConnectionLogger(info.logger)
    await serve(echo, Transport([connect(), disconnect()]), plugin)
    await serve(echo, Transport([connect()]), plugin, before=(Gate(403),))
    await serve(echo, Transport([connect()], send_error=OSError()), plugin)
    await serve(echo, Transport([connect()]), plugin, before=(LateDenial(),))
    with pytest.raises(RuntimeError):
        await serve(echo, Transport([connect(), {"type": "websocket.bogus"}]), plugin)
    assert info.events() == ["open", "close", "denial", "open", "close", "open", "close", "open", "close"]


# --- payloads ------------------------------------------------------------------------------------


async def payloads(capture: Capture, *messages: Message, **options: Any) -> list[Entry]:
    """The inbound message records for ``messages`` (the app receives and drops them)."""

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        for _ in messages:
            await websocket.receive()

    transport = Transport([connect(), *messages, disconnect()])
    await serve(endpoint, transport, ConnectionLogger(capture.logger, **options))
    return capture.of("message")


async def test_payloads_are_cut_to_max_payload(debug: Capture) -> None:
    records = await payloads(
        debug,
        text("x" * 50),
        text("y" * 10),
        text('{"a": "' + "z" * 40 + '"}'),
        binary(bytes(range(40))),
        max_payload=10,
    )
    assert [(r.ws_payload, r.ws_truncated, r.ws_size) for r in records] == [
        ("x" * 10 + "...", True, 50),
        ("y" * 10, False, 10),
        ('{"a":"zzzz...', True, 49),
        ("00 01 02 03 04 05 06 07 08 09...", True, 40),
    ]


async def test_binary_shows_at_most_16_bytes_and_max_payload_0_shows_sizes_only(debug: Capture) -> None:
    records = await payloads(debug, binary(bytes(range(20))), text("abc"), binary(b"\x01"))
    assert records[0].ws_payload == " ".join(f"{i:02x}" for i in range(16)) + "..."
    quiet = Capture(logging.DEBUG)
    records = await payloads(quiet, text("abc"), binary(b"\x01"), text("{}"), max_payload=0)
    assert [(r.ws_payload, r.ws_size) for r in records] == [("", 3), ("", 1), ("", 2)]


async def test_json_keys_are_redacted_at_any_depth_and_inside_json_strings(debug: Capture) -> None:
    message = {
        "type": "subscribe",
        "token": "SECRET-1",
        "data": {
            "Password": "SECRET-2",
            "items": [{"api-key": "SECRET-3", "n": 1}, {"refreshToken": {"nested": "SECRET-4"}}],
            "count": 2,
        },
        "identifier": json.dumps({"channel": "room", "access_token": "SECRET-5"}),
        "tokens": 7,
    }
    records = await payloads(
        debug, text(json.dumps(message)), binary(json.dumps([message]).encode()), max_payload=10_000
    )
    expected = {
        "type": "subscribe",
        "token": REDACTED,
        "data": {
            "Password": REDACTED,
            "items": [{"api-key": REDACTED, "n": 1}, {"refreshToken": REDACTED}],
            "count": 2,
        },
        "identifier": json.dumps({"channel": "room", "access_token": REDACTED}, separators=(",", ":")),
        "tokens": 7,
    }
    for record, wrap in zip(records, (False, True), strict=True):
        assert "SECRET" not in record.getMessage()
        assert json.loads(record.ws_payload) == ([expected] if wrap else expected)


async def test_custom_json_keys_replace_the_defaults(debug: Capture) -> None:
    records = await payloads(debug, text('{"ssn": "123", "token": "t"}'), redact_json_keys={"SSN"})
    assert json.loads(records[0].ws_payload) == {"ssn": REDACTED, "token": "t"}


async def test_text_that_is_not_json_is_shown_unless_it_names_a_secret(debug: Capture) -> None:
    records = await payloads(
        debug,
        text("just chatting"),
        text('{"token": "SECRET-1", oops'),  # looks like JSON, is not: cannot be redacted
        text('42["auth",{"password":"SECRET-2"}]'),  # socket.io framing around JSON
        text("AUTH token=SECRET-3"),
        binary(b"\x81\xa5token\xa8SECRET-4"),  # msgpack
        text("[1, 2"),
    )
    assert [r.ws_payload for r in records] == [
        "just chatting",
        "[not shown: may contain a secret]",
        "[not shown: may contain a secret]",
        "[not shown: may contain a secret]",
        "[not shown: may contain a secret]",
        "[1, 2",
    ]


async def test_deep_or_huge_json_is_handled_without_error(debug: Capture) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    nested = '{"a":' * 40 + '{"token": "SECRET"}' + "}" * 40
    records = await payloads(debug, text(deep), text(nested), max_payload=1000)
    assert records[0].ws_payload == "[" * 1000 + "..."
    assert "SECRET" not in records[1].ws_payload
    assert '"[...]"' in records[1].ws_payload


async def test_json_over_64_kib_is_not_parsed(debug: Capture, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the log does with a big message does not depend on a size limit running first."""
    parsed: list[int] = []
    real_loads = json.loads

    def counting_loads(text: str | bytes, **kwargs: Any) -> Any:
        parsed.append(len(text))
        return real_loads(text, **kwargs)

    monkeypatch.setattr(json, "loads", counting_loads)
    small = json.dumps({"items": list(range(100))})
    big = json.dumps({"items": list(range(20_000)), "password": "SECRET"})  # ~120 KiB, the secret at the end
    assert len(big) > 64 * 1024
    records = await payloads(debug, text(small), text(big), max_payload=50)
    assert parsed == [len(small)]  # the big one was never parsed (before: 1 MiB was, ~130 ms for 0.9 MiB)
    assert records[1].ws_payload == big[:50] + "..."  # shown as other text, cut before the secret
    assert records[1].ws_size == len(big)


async def test_outbound_payloads_are_redacted_too(debug: Capture) -> None:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"session": {"access_token": "SECRET"}})

    await serve(endpoint, Transport([connect()]), ConnectionLogger(debug.logger))
    (record,) = debug.of("message")
    assert (record.ws_direction, json.loads(record.ws_payload)) == ("out", {"session": {"access_token": REDACTED}})


# --- redaction of the handshake ------------------------------------------------------------------


async def test_query_parameters_are_redacted_by_decoded_case_insensitive_name(info: Capture) -> None:
    query = b"room=1&token=S1&Access_Token=S2&%74oken=S3&x-api-key=S4&password=&tokens=5&jwt&session.id=S5"
    await serve(
        echo, Transport([connect(), disconnect()]), ConnectionLogger(info.logger), scope=make_scope(query_string=query)
    )
    opened = info.one("open")
    assert opened.ws_query == (
        "room=1&token=[redacted]&Access_Token=[redacted]&%74oken=[redacted]&x-api-key=[redacted]"
        "&password=[redacted]&tokens=5&jwt&session.id=[redacted]"
    )
    assert not re.search(r"S[1-5]", opened.getMessage())


async def test_headers_are_redacted_by_name(info: Capture) -> None:
    headers = [
        (b"host", b"testserver"),
        (b"Authorization", b"Bearer S1"),
        (b"cookie", b"session=S2"),
        (b"cookie", b"other=S3"),
        (b"x-api-key", b"S4"),
        (b"sec-websocket-protocol", b"graphql-ws, S5"),
        (b"proxy-authorization", b"Basic S6"),
        (b"x-amz-security-token", b"S7"),
        (b"user-agent", b"test/1.0"),
        (b"accept", b"a"),
        (b"accept", b"b"),
    ]
    scope = make_scope(headers=headers)
    await serve(echo, Transport([connect(), disconnect()]), ConnectionLogger(info.logger), scope=scope)
    assert info.one("open").ws_headers == {
        "host": "testserver",
        "authorization": REDACTED,
        "cookie": f"{REDACTED}, {REDACTED}",
        "x-api-key": REDACTED,
        "sec-websocket-protocol": REDACTED,
        "proxy-authorization": REDACTED,
        "x-amz-security-token": REDACTED,
        "user-agent": "test/1.0",
        "accept": "a, b",
    }


def test_defaults_cover_the_documented_names() -> None:
    assert {"token", "access_token", "authorization", "cookie", "password", "api_key", "secret"} <= DEFAULT_REDACT_KEYS
    assert DEFAULT_REDACT_KEYS | {"sec-websocket-protocol"} == DEFAULT_REDACT_HEADERS


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_payload": -1}, ValueError),
        ({"max_payload": True}, ValueError),
        ({"redact_query": "token"}, TypeError),
        ({"redact_headers": [b"cookie"]}, TypeError),
        ({"redact_json_keys": ["token", "_"]}, ValueError),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        ConnectionLogger(**options)


def test_the_default_logger_is_toolkit_logging() -> None:
    assert ConnectionLogger().logger is logging.getLogger("toolkit_logging")


# --- log injection -------------------------------------------------------------------------------

HOSTILE = "a\r\nFAKE 200 OK\x1b[31mred\x1b[0m\u2028b\u2029c\x00\x7f\x85\u202e\\n"


def all_strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from all_strings(key)
            yield from all_strings(item)


async def test_control_characters_are_escaped_in_every_field_and_message(debug: Capture) -> None:
    scope = make_scope(
        path="/p" + HOSTILE,
        query_string=("q=" + HOSTILE).encode("utf-8"),
        headers=[(b"user-agent", ("ua" + HOSTILE).encode("utf-8"))],
    )
    scope["client"] = ("10.0.0.1\n", 1)
    scope["user"] = "bob" + HOSTILE

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        await websocket.send_text(HOSTILE)
        await websocket.send_json({"k" + HOSTILE: HOSTILE})
        await websocket.send_bytes(HOSTILE.encode())
        await websocket.receive_text()

    transport = Transport([connect(), text(HOSTILE), disconnect(4000, HOSTILE[:40])])
    await serve(endpoint, transport, ConnectionLogger(debug.logger), scope=scope)
    assert debug.events() == ["open", "message", "message", "message", "message", "close"]
    checked = 0
    for record in debug.records:
        message = record.getMessage()
        assert message.isprintable(), message
        for value in all_strings(ws_fields(record)):
            assert value.isprintable(), value
            checked += 1
    assert checked > 30
    opened, first = debug.records[0], debug.records[1]
    assert opened.ws_path == ("/pa\\r\\nFAKE 200 OK\\x1b[31mred\\x1b[0m\\u2028b\\u2029c\\x00\\x7f\\x85\\u202e\\\\n")
    assert first.ws_payload == opened.ws_path[2:]
    assert opened.ws_principal.startswith("bob")
    assert opened.ws_client == "10.0.0.1\\n:1"
    assert debug.records[-1].ws_reason == escape_expected(HOSTILE[:40])


def escape_expected(value: str) -> str:
    return logger_module.escape(value)


def test_escape_is_unambiguous_and_leaves_printable_text_alone() -> None:
    escape = logger_module.escape
    assert escape("héllo wörld ✓ 日本") == "héllo wörld ✓ 日本"
    assert escape("a\\nb") == "a\\\\nb"  # a literal backslash-n cannot pass for an escaped newline
    assert escape("a\nb") == "a\\nb"
    assert escape("\t\x1b\x9b\u2028\U000e0001\ud800") == "\\t\\x1b\\x9b\\u2028\\U000e0001\\ud800"


# --- formatted output: JSON and plain ------------------------------------------------------------


class JSONFormatter(logging.Formatter):
    """One JSON object per line: the usual fields plus every ``ws_*`` field."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"level": record.levelname, "logger": record.name, "message": record.getMessage()}
        entry.update(ws_fields(record))
        return json.dumps(entry, ensure_ascii=False, default=str)


SECRETS = ("SECRET-Q", "SECRET-H", "SECRET-C", "SECRET-P", "SECRET-J", "SECRET-B", "SECRET-A")


async def test_a_json_formatter_gets_every_field_and_no_credential(debug: Capture) -> None:
    stream_lines: list[str] = []

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            stream_lines.append(self.format(record))

    handler = Lines()
    handler.setFormatter(JSONFormatter())
    debug.logger.addHandler(handler)
    plain = Lines()
    plain.setFormatter(logging.Formatter("%(levelname)s %(message)s %(ws_conn_id)s"))
    debug.logger.addHandler(plain)

    scope = make_scope(
        query_string=b"room=1&access_token=SECRET-Q",
        headers=[
            (b"host", b"testserver"),
            (b"authorization", b"Bearer SECRET-H"),
            (b"cookie", b"sid=SECRET-C"),
            (b"sec-websocket-protocol", b"bearer, SECRET-P"),
        ],
    )
    scope["auth"] = {"token": "SECRET-A"}  # credentials beside the user: never logged
    scope["user"] = "carol"

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        await websocket.receive_bytes()
        await websocket.send_json({"ok": True, "password": "SECRET-J"})

    transport = Transport(
        [connect(), text('{"op":"login","token":"SECRET-J"}'), binary(b'{"secret":"SECRET-B"}'), disconnect()]
    )
    await serve(endpoint, transport, ConnectionLogger(debug.logger), scope=scope)

    json_lines, plain_lines = stream_lines[0::2], stream_lines[1::2]
    entries = [json.loads(line) for line in json_lines]
    assert [entry["ws_event"] for entry in entries] == ["open", "message", "message", "message", "close"]
    assert entries[0]["ws_query"] == "room=1&access_token=[redacted]"
    assert entries[0]["ws_headers"]["authorization"] == REDACTED
    assert entries[0]["ws_principal"] == "carol"
    assert json.loads(entries[1]["ws_payload"]) == {"op": "login", "token": REDACTED}
    assert entries[-1]["ws_msgs_in"] == 2
    assert entries[-1]["ws_msgs_out"] == 1
    assert all("\n" not in line for line in stream_lines)
    assert len({entry["ws_conn_id"] for entry in entries}) == 1
    assert all(line.endswith(entries[0]["ws_conn_id"]) for line in plain_lines)
    for line in stream_lines:
        for secret in SECRETS:
            assert secret not in line


# --- the documentation ---------------------------------------------------------------------------


async def test_the_logging_page_example_runs_and_logs_json(capsys: pytest.CaptureFixture[str]) -> None:
    page = (ROOT / "docs" / "logging.md").read_text()
    namespace: dict[str, Any] = {"__name__": "docs_logging"}
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.DOTALL)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/logging.md", "exec"), namespace)  # noqa: S102 - our own documentation
    handler: logging.Handler = namespace["handler"]
    app = namespace["app"]
    logger = logging.getLogger("toolkit_logging")
    try:
        transport = Transport([connect(), text('{"token": "SECRET"}'), disconnect()])
        await app(make_scope(query_string=b"token=SECRET"), transport.receive, transport.send)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["ws_event"] for line in lines] == ["open", "close"]
    assert lines[0]["ws_query"] == "token=[redacted]"
    assert transport.sent[1] == {"type": "websocket.send", "text": '{"token": "SECRET"}'}


async def test_open_connections_counts_state_until_ws_close() -> None:
    plugin = ConnectionLogger()
    seen: list[int] = []

    async def endpoint(websocket: toolkit.WebSocket) -> None:
        await websocket.accept()
        seen.append(plugin.open_connections)
        await websocket.receive_text()

    transport = Transport([connect(), text("hi"), disconnect(1000)])
    app = toolkit.WebSocketApp(endpoint, plugins=toolkit.PluginManager(plugin))
    await app(make_scope(), transport.receive, transport.send)
    assert seen == [1]
    assert plugin.open_connections == 0
