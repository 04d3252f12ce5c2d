"""The connection lifecycle machine (toolkit/_lifecycle.py) on its own: no I/O, no hooks, no event loop.

The tables below are the specification, written out by hand (Starlette's wording included):
what every message means in every state, on both sides, and what the endpoint's end leaves to
do. They are never computed from the module's own tables. A hypothesis state machine then
drives a ``Lifecycle`` with random events and checks the invariants the shell relies on.

The machine guards only what ``received``, ``check_receive``, ``app_sends`` and ``check_close``
check; the follow-up events trust the shell to call them when the action said so (``accepted``
from CONNECTING, for one). No event changes state and then raises: ``closing`` checks first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from toolkit import CloseCode, ClosedBy, WebSocketDisconnected
from toolkit._lifecycle import AppAction, ClientAction, Ending, Lifecycle, Outcome, WebSocketState

CONNECTING: Final = WebSocketState.CONNECTING
CONNECTED: Final = WebSocketState.CONNECTED
DISCONNECTED: Final = WebSocketState.DISCONNECTED
RESPONSE: Final = WebSocketState.RESPONSE

APP_STATES: Final = (CONNECTING, CONNECTED, DISCONNECTED, RESPONSE)
#: RESPONSE is the app's alone: the client side never reaches it.
CLIENT_STATES: Final = (CONNECTING, CONNECTED, DISCONNECTED)

BOGUS: Final = "websocket.bogus"
APP_TYPES: Final = (
    "websocket.accept",
    "websocket.send",
    "websocket.close",
    "websocket.http.response.start",
    "websocket.http.response.body",
    BOGUS,
)
CLIENT_TYPES: Final = ("websocket.connect", "websocket.receive", "websocket.disconnect", BOGUS)

APP = ClosedBy.APP
CLIENT = ClosedBy.CLIENT
PLUGIN = ClosedBy.PLUGIN
SERVER = ClosedBy.SERVER


@dataclass(frozen=True)
class Refused:
    """An expected exception: its exact type and its exact message (``{}`` stands for the message type's repr)."""

    exc: type[Exception]
    message: str

    def check(self, error: BaseException, message_type: str = "") -> None:
        assert type(error) is self.exc, f"{type(error).__name__} raised, {self.exc.__name__} expected"
        assert str(error) == self.message.replace("{}", repr(message_type))


# --- Starlette's wording (starlette/websockets.py), written out --------------------------------------

EXPECT_CONNECT = Refused(RuntimeError, 'Expected ASGI message "websocket.connect", but got {}')
EXPECT_DATA_OR_DISCONNECT = Refused(
    RuntimeError, 'Expected ASGI message "websocket.receive" or "websocket.disconnect", but got {}'
)
RECEIVE_AFTER_DISCONNECT = Refused(
    WebSocketDisconnected, 'Cannot call "receive" once a disconnect message has been received.'
)
EXPECT_ACCEPT_OR_DENY = Refused(
    RuntimeError,
    'Expected ASGI message "websocket.accept", "websocket.close" or "websocket.http.response.start", but got {}',
)
EXPECT_SEND_OR_CLOSE = Refused(RuntimeError, 'Expected ASGI message "websocket.send" or "websocket.close", but got {}')
EXPECT_BODY = Refused(RuntimeError, 'Expected ASGI message "websocket.http.response.body", but got {}')
SEND_AFTER_CLOSE = Refused(WebSocketDisconnected, 'Cannot call "send" once a close message has been sent.')

# --- the spec ----------------------------------------------------------------------------------------

#: (app state, message type the app sends) -> the action, or the refusal. app_sends never changes state.
APP_TABLE: Final[dict[tuple[WebSocketState, str], AppAction | Refused]] = {
    (CONNECTING, "websocket.accept"): AppAction.ACCEPT,
    (CONNECTING, "websocket.send"): EXPECT_ACCEPT_OR_DENY,
    (CONNECTING, "websocket.close"): AppAction.DENY,
    (CONNECTING, "websocket.http.response.start"): AppAction.RESPONSE_START,
    (CONNECTING, "websocket.http.response.body"): EXPECT_ACCEPT_OR_DENY,
    (CONNECTING, BOGUS): EXPECT_ACCEPT_OR_DENY,
    (CONNECTED, "websocket.accept"): EXPECT_SEND_OR_CLOSE,
    (CONNECTED, "websocket.send"): AppAction.SEND,
    (CONNECTED, "websocket.close"): AppAction.CLOSE,
    (CONNECTED, "websocket.http.response.start"): EXPECT_SEND_OR_CLOSE,
    (CONNECTED, "websocket.http.response.body"): EXPECT_SEND_OR_CLOSE,
    (CONNECTED, BOGUS): EXPECT_SEND_OR_CLOSE,
    (DISCONNECTED, "websocket.accept"): SEND_AFTER_CLOSE,
    (DISCONNECTED, "websocket.send"): SEND_AFTER_CLOSE,
    (DISCONNECTED, "websocket.close"): SEND_AFTER_CLOSE,
    (DISCONNECTED, "websocket.http.response.start"): SEND_AFTER_CLOSE,
    (DISCONNECTED, "websocket.http.response.body"): SEND_AFTER_CLOSE,
    (DISCONNECTED, BOGUS): SEND_AFTER_CLOSE,
    (RESPONSE, "websocket.accept"): EXPECT_BODY,
    (RESPONSE, "websocket.send"): EXPECT_BODY,
    (RESPONSE, "websocket.close"): EXPECT_BODY,
    (RESPONSE, "websocket.http.response.start"): EXPECT_BODY,
    (RESPONSE, "websocket.http.response.body"): AppAction.RESPONSE_BODY,
    (RESPONSE, BOGUS): EXPECT_BODY,
}

#: (client state, message type the server hands over) -> (the action or the refusal, the client state after).
CLIENT_TABLE: Final[dict[tuple[WebSocketState, str], tuple[ClientAction | Refused, WebSocketState]]] = {
    (CONNECTING, "websocket.connect"): (ClientAction.CONNECTED, CONNECTED),
    (CONNECTING, "websocket.receive"): (EXPECT_CONNECT, CONNECTING),
    (CONNECTING, "websocket.disconnect"): (EXPECT_CONNECT, CONNECTING),
    (CONNECTING, BOGUS): (EXPECT_CONNECT, CONNECTING),
    (CONNECTED, "websocket.connect"): (EXPECT_DATA_OR_DISCONNECT, CONNECTED),
    (CONNECTED, "websocket.receive"): (ClientAction.DATA, CONNECTED),
    (CONNECTED, "websocket.disconnect"): (ClientAction.LEFT, DISCONNECTED),
    (CONNECTED, BOGUS): (EXPECT_DATA_OR_DISCONNECT, CONNECTED),
    # A receive that began while the client was connected, and meanwhile a plugin closed: what the server
    # hands over is still delivered (check_receive refuses a receive that begins after the end).
    (DISCONNECTED, "websocket.connect"): (EXPECT_DATA_OR_DISCONNECT, DISCONNECTED),
    (DISCONNECTED, "websocket.receive"): (ClientAction.DATA, DISCONNECTED),
    (DISCONNECTED, "websocket.disconnect"): (ClientAction.LEFT, DISCONNECTED),
    (DISCONNECTED, BOGUS): (EXPECT_DATA_OR_DISCONNECT, DISCONNECTED),
}

#: check_receive, per client state: None lets the app wait for the next message.
CHECK_RECEIVE_TABLE: Final[dict[WebSocketState, Refused | None]] = {
    CONNECTING: None,
    CONNECTED: None,
    DISCONNECTED: RECEIVE_AFTER_DISCONNECT,
}

_R, _D, _X, _C = Outcome.RETURNED, Outcome.DISCONNECTED, Outcome.RAISED, Outcome.CANCELLED
#: (outcome, app state, client state) -> what finish says still has to go out.
FINISH_TABLE: Final[dict[tuple[Outcome, WebSocketState, WebSocketState], AppAction | None]] = {
    # returned: close with 1000 if both sides are open, deny if never accepted, end an unfinished denial
    (_R, CONNECTING, CONNECTING): AppAction.DENY,
    (_R, CONNECTING, CONNECTED): AppAction.DENY,
    (_R, CONNECTING, DISCONNECTED): None,  # the client left before any answer: nobody to deny
    (_R, CONNECTED, CONNECTING): AppAction.CLOSE,
    (_R, CONNECTED, CONNECTED): AppAction.CLOSE,
    (_R, CONNECTED, DISCONNECTED): None,
    (_R, DISCONNECTED, CONNECTING): None,
    (_R, DISCONNECTED, CONNECTED): None,
    (_R, DISCONNECTED, DISCONNECTED): None,
    (_R, RESPONSE, CONNECTING): AppAction.RESPONSE_END,
    (_R, RESPONSE, CONNECTED): AppAction.RESPONSE_END,
    (_R, RESPONSE, DISCONNECTED): AppAction.RESPONSE_END,
    # stopped on WebSocketDisconnect: as returned
    (_D, CONNECTING, CONNECTING): AppAction.DENY,
    (_D, CONNECTING, CONNECTED): AppAction.DENY,
    (_D, CONNECTING, DISCONNECTED): None,  # the client left before any answer: nobody to deny
    (_D, CONNECTED, CONNECTING): AppAction.CLOSE,
    (_D, CONNECTED, CONNECTED): AppAction.CLOSE,
    (_D, CONNECTED, DISCONNECTED): None,
    (_D, DISCONNECTED, CONNECTING): None,
    (_D, DISCONNECTED, CONNECTED): None,
    (_D, DISCONNECTED, DISCONNECTED): None,
    (_D, RESPONSE, CONNECTING): AppAction.RESPONSE_END,
    (_D, RESPONSE, CONNECTED): AppAction.RESPONSE_END,
    (_D, RESPONSE, DISCONNECTED): AppAction.RESPONSE_END,
    # raised: close (1011) if both sides are open (nobody to close for once the client left)
    (_X, CONNECTING, CONNECTING): AppAction.DENY,
    (_X, CONNECTING, CONNECTED): AppAction.DENY,
    (_X, CONNECTING, DISCONNECTED): None,  # the client left before any answer: nobody to deny
    (_X, CONNECTED, CONNECTING): AppAction.CLOSE,
    (_X, CONNECTED, CONNECTED): AppAction.CLOSE,
    (_X, CONNECTED, DISCONNECTED): None,
    (_X, DISCONNECTED, CONNECTING): None,
    (_X, DISCONNECTED, CONNECTED): None,
    (_X, DISCONNECTED, DISCONNECTED): None,
    (_X, RESPONSE, CONNECTING): AppAction.RESPONSE_END,
    (_X, RESPONSE, CONNECTED): AppAction.RESPONSE_END,
    (_X, RESPONSE, DISCONNECTED): AppAction.RESPONSE_END,
    # cancelled: nothing can be sent
    (_C, CONNECTING, CONNECTING): None,
    (_C, CONNECTING, CONNECTED): None,
    (_C, CONNECTING, DISCONNECTED): None,
    (_C, CONNECTED, CONNECTING): None,
    (_C, CONNECTED, CONNECTED): None,
    (_C, CONNECTED, DISCONNECTED): None,
    (_C, DISCONNECTED, CONNECTING): None,
    (_C, DISCONNECTED, CONNECTED): None,
    (_C, DISCONNECTED, DISCONNECTED): None,
    (_C, RESPONSE, CONNECTING): None,
    (_C, RESPONSE, CONNECTED): None,
    (_C, RESPONSE, DISCONNECTED): None,
}

#: outcome -> the ending finished records when nothing ended the connection before.
FINISHED_ENDINGS: Final[dict[Outcome, Ending]] = {
    Outcome.RETURNED: Ending(1000, "", APP),
    Outcome.DISCONNECTED: Ending(1000, "", APP),
    Outcome.RAISED: Ending(1011, "internal error", SERVER),
    Outcome.CANCELLED: Ending(1006, "", SERVER),
}

# --- close codes and reasons, judged independently of toolkit/_close.py ----------------------------

FORBIDDEN_BELOW_3000: Final = {1004, 1005, 1006, 1015}
VALID_CODES: Final = (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4000, 4999)
FORBIDDEN_CODES: Final = (1005, 1006, 1015, 1004, 999, 0, -1, 1016, 2000, 2999, 5000, 65535)
REASONS: Final = ("", "bye", "x" * 123, "é" * 61, "x" * 124, "é" * 62, "\ud800")


def sendable(code: object) -> bool:
    """Whether a close code may go out in a close frame (RFC 6455 7.4)."""
    if not isinstance(code, int) or isinstance(code, bool) or not 1000 <= code <= 4999:
        return False
    return code not in FORBIDDEN_BELOW_3000 and not 1016 <= code <= 2999


def reason_ok(reason: object) -> bool:
    if not isinstance(reason, str):
        return False
    try:
        return len(reason.encode("utf-8")) <= 123
    except UnicodeEncodeError:
        return False


# --- helpers -----------------------------------------------------------------------------------------

Snapshot = tuple[WebSocketState, WebSocketState, Ending | None, int, bool]


def snapshot(machine: Lifecycle) -> Snapshot:
    return (machine.client, machine.app, machine.ending, machine.denial_status, machine.relay)


def same(a: Snapshot, b: Snapshot) -> bool:
    """Equal states, and the very same ending object."""
    return a[:2] == b[:2] and a[2] is b[2] and a[3:] == b[3:]


def attempt(call: Callable[[], object]) -> object:
    """The call's result, or the exception it raised."""
    try:
        return call()
    except Exception as error:
        return error


def machine_in(app: WebSocketState, client: WebSocketState, *, relay: bool = False) -> Lifecycle:
    machine = Lifecycle(relay=relay)
    machine.app = app
    machine.client = client
    return machine


def check_ending(ending: Ending | None, code: int, reason: str, closed_by: ClosedBy) -> Ending:
    assert ending == Ending(code, reason, closed_by)
    assert ending is not None
    assert type(ending.code) is int
    return ending


# --- a fresh machine ---------------------------------------------------------------------------------


@pytest.mark.parametrize("relay", [False, True])
def test_fresh_machine(relay: bool) -> None:
    machine = Lifecycle(relay=relay)
    assert snapshot(machine) == (CONNECTING, CONNECTING, None, 403, relay)
    assert Lifecycle().relay is False


def test_state_values_are_starlettes() -> None:
    assert [(s.name, s.value) for s in WebSocketState] == [
        ("CONNECTING", 0),
        ("CONNECTED", 1),
        ("DISCONNECTED", 2),
        ("RESPONSE", 3),
    ]


def test_tables_are_exhaustive() -> None:
    assert set(APP_TABLE) == {(s, t) for s in APP_STATES for t in APP_TYPES}
    assert set(CLIENT_TABLE) == {(s, t) for s in CLIENT_STATES for t in CLIENT_TYPES}
    assert set(FINISH_TABLE) == {(o, a, c) for o in Outcome for a in APP_STATES for c in CLIENT_STATES}
    assert set(FINISHED_ENDINGS) == set(Outcome)


# --- 1. the tables -----------------------------------------------------------------------------------


@pytest.mark.parametrize("relay", [False, True])
@pytest.mark.parametrize("client", CLIENT_STATES)
@pytest.mark.parametrize(("app", "message_type"), list(APP_TABLE))
def test_app_sends(app: WebSocketState, message_type: str, client: WebSocketState, relay: bool) -> None:
    machine = machine_in(app, client, relay=relay)
    before = snapshot(machine)
    expected = APP_TABLE[app, message_type]
    result = attempt(lambda: machine.app_sends(message_type))
    if isinstance(expected, Refused):
        assert isinstance(result, Exception)
        expected.check(result, message_type)
    else:
        assert result is expected
    assert same(snapshot(machine), before)  # the shell's follow-up event changes state, never app_sends


@pytest.mark.parametrize("relay", [False, True])
@pytest.mark.parametrize("app", APP_STATES)
@pytest.mark.parametrize(("client", "message_type"), list(CLIENT_TABLE))
def test_received(client: WebSocketState, message_type: str, app: WebSocketState, relay: bool) -> None:
    machine = machine_in(app, client, relay=relay)
    before = snapshot(machine)
    expected, after = CLIENT_TABLE[client, message_type]
    result = attempt(lambda: machine.received(message_type))
    if isinstance(expected, Refused):
        assert isinstance(result, Exception)
        expected.check(result, message_type)
        assert same(snapshot(machine), before)
    else:
        assert result is expected
    assert snapshot(machine) == (after, app, None, 403, relay)


@pytest.mark.parametrize("app", APP_STATES)
@pytest.mark.parametrize("client", CLIENT_STATES)
def test_check_receive(client: WebSocketState, app: WebSocketState) -> None:
    machine = machine_in(app, client)
    before = snapshot(machine)
    expected = CHECK_RECEIVE_TABLE[client]
    result = attempt(machine.check_receive)
    if expected is None:
        assert result is None
    else:
        assert isinstance(result, Exception)
        expected.check(result)
    assert same(snapshot(machine), before)


def test_the_shells_own_transitions_change_nothing() -> None:
    """The shell skips the machine for data while connected: the machine must agree that nothing changes."""
    machine = machine_in(CONNECTED, CONNECTED)
    ending = machine.end(1000, "", APP)  # even after the end: the app may drain in-flight messages
    for _ in range(3):
        for current in (machine, machine_in(CONNECTED, CONNECTED)):
            before = snapshot(current)
            assert current.received("websocket.receive") is ClientAction.DATA
            assert same(snapshot(current), before)
            assert current.app_sends("websocket.send") is AppAction.SEND
            assert same(snapshot(current), before)
    assert machine.ending is ending


def test_disconnected_is_a_runtime_error() -> None:
    """Starlette's ``WebSocketDisconnected`` is a ``RuntimeError``: ``except RuntimeError`` catches every refusal."""
    assert issubclass(WebSocketDisconnected, RuntimeError)


# --- 2. the events, one by one -----------------------------------------------------------------------


@pytest.mark.parametrize("code", [*VALID_CODES, CloseCode.NORMAL, CloseCode.INTERNAL_ERROR, CloseCode.GOING_AWAY])
@pytest.mark.parametrize("reason", ["", "bye", "x" * 123, "é" * 61, "🙂" * 30])
@pytest.mark.parametrize("relay", [False, True])
def test_closing_accepts(code: int, reason: str, relay: bool) -> None:
    assert sendable(code)
    assert reason_ok(reason)
    machine = machine_in(CONNECTED, CONNECTED, relay=relay)
    machine.check_close(code, reason)
    assert snapshot(machine) == (CONNECTED, CONNECTED, None, 403, relay)
    machine.closing(code, reason)
    # closing only shuts the app side: the ending is the shell's to record once the close went out
    assert snapshot(machine) == (CONNECTED, DISCONNECTED, None, 403, relay)


BAD_CLOSES: Final[list[tuple[object, object, Refused]]] = [
    (1005, "", Refused(ValueError, "close code 1005 may not be sent (RFC 6455 7.4)")),
    (1006, "", Refused(ValueError, "close code 1006 may not be sent (RFC 6455 7.4)")),
    (
        CloseCode.NO_STATUS,
        "",
        Refused(ValueError, "close code <CloseCode.NO_STATUS: 1005> may not be sent (RFC 6455 7.4)"),
    ),
    (
        CloseCode.ABNORMAL,
        "",
        Refused(ValueError, "close code <CloseCode.ABNORMAL: 1006> may not be sent (RFC 6455 7.4)"),
    ),
    (999, "", Refused(ValueError, "close code 999 may not be sent (RFC 6455 7.4)")),
    (5000, "", Refused(ValueError, "close code 5000 may not be sent (RFC 6455 7.4)")),
    (1004, "", Refused(ValueError, "close code 1004 may not be sent (RFC 6455 7.4)")),
    (1015, "", Refused(ValueError, "close code 1015 may not be sent (RFC 6455 7.4)")),
    (1016, "", Refused(ValueError, "close code 1016 may not be sent (RFC 6455 7.4)")),
    (2999, "", Refused(ValueError, "close code 2999 may not be sent (RFC 6455 7.4)")),
    (0, "", Refused(ValueError, "close code 0 may not be sent (RFC 6455 7.4)")),
    (True, "", Refused(ValueError, "close code True may not be sent (RFC 6455 7.4)")),
    (1000.0, "", Refused(ValueError, "close code 1000.0 may not be sent (RFC 6455 7.4)")),
    ("1000", "", Refused(ValueError, "close code '1000' may not be sent (RFC 6455 7.4)")),
    (None, "", Refused(ValueError, "close code None may not be sent (RFC 6455 7.4)")),
    (1000, "x" * 124, Refused(ValueError, "close reason is longer than 123 UTF-8 bytes")),
    (1000, "é" * 62, Refused(ValueError, "close reason is longer than 123 UTF-8 bytes")),
    (4000, "🙂" * 31, Refused(ValueError, "close reason is longer than 123 UTF-8 bytes")),
    (1000, "\ud800", Refused(ValueError, "close reason is not valid Unicode text")),
    (1000, b"bye", Refused(TypeError, "close reason must be a str")),
    (1000, None, Refused(TypeError, "close reason must be a str")),
    (5000, b"bye", Refused(ValueError, "close code 5000 may not be sent (RFC 6455 7.4)")),  # the code is checked first
]


@pytest.mark.parametrize("app", APP_STATES)
@pytest.mark.parametrize(("code", "reason", "refused"), BAD_CLOSES)
def test_closing_refuses_unless_relayed(code: object, reason: object, refused: Refused, app: WebSocketState) -> None:
    assert not (sendable(code) and reason_ok(reason))
    machine = machine_in(app, CONNECTED)
    before = snapshot(machine)
    error = attempt(lambda: machine.check_close(code, reason))  # type: ignore[arg-type]  # deliberately ill-typed
    assert isinstance(error, Exception)
    refused.check(error)
    assert same(snapshot(machine), before)
    error = attempt(lambda: machine.closing(code, reason))  # type: ignore[arg-type]
    assert isinstance(error, Exception)
    if app is CONNECTED:
        refused.check(error)
    else:  # closing is only an event of an open app side: the shell's bug, whatever the code
        assert type(error) is RuntimeError
        assert str(error) == f"lifecycle: closing is not an event of the app state {app.name}"
    assert same(snapshot(machine), before)


@pytest.mark.parametrize("app", APP_STATES)
@pytest.mark.parametrize(("code", "reason", "refused"), BAD_CLOSES)
def test_relay_passes_any_close(code: object, reason: object, refused: Refused, app: WebSocketState) -> None:
    """Relayed, the server judges someone else's app: nothing is checked, the app side closes."""
    machine = machine_in(app, CONNECTED, relay=True)
    machine.check_close(code, reason)  # type: ignore[arg-type]
    assert snapshot(machine) == (CONNECTED, app, None, 403, True)
    if app is not CONNECTED:
        with pytest.raises(RuntimeError, match="closing is not an event"):
            machine.closing(code, reason)  # type: ignore[arg-type]
        return
    machine.closing(code, reason)  # type: ignore[arg-type]
    assert snapshot(machine) == (CONNECTED, DISCONNECTED, None, 403, True)


@pytest.mark.parametrize("client", CLIENT_STATES)
def test_denying(client: WebSocketState) -> None:
    machine = machine_in(CONNECTING, client)
    machine.denying()
    assert snapshot(machine) == (client, DISCONNECTED, None, 403, False)


@pytest.mark.parametrize("status", [403, 500, 401, 404, 302])
@pytest.mark.parametrize("closed_by", list(ClosedBy))
@pytest.mark.parametrize("app", [CONNECTING, DISCONNECTED, RESPONSE])
def test_denied(status: int, closed_by: ClosedBy, app: WebSocketState) -> None:
    machine = machine_in(app, CONNECTED)
    ending = check_ending(machine.denied(status, closed_by), 1006, "", closed_by)
    assert snapshot(machine) == (CONNECTED, DISCONNECTED, ending, status, False)
    # a second report changes no ending, but the status the client saw is the one given
    assert machine.denied(500, PLUGIN) is None
    assert snapshot(machine) == (CONNECTED, DISCONNECTED, ending, 500, False)


def test_denied_after_the_client_left_keeps_the_client_ending() -> None:
    machine = machine_in(CONNECTING, CONNECTED)
    left = check_ending(machine.client_left(1001, "gone"), 1001, "gone", CLIENT)
    machine.denying()
    assert machine.denied(401, APP) is None
    assert snapshot(machine) == (CONNECTED, DISCONNECTED, left, 401, False)


@pytest.mark.parametrize("app", APP_STATES)
@pytest.mark.parametrize("client", CLIENT_STATES)
def test_send_failed(app: WebSocketState, client: WebSocketState) -> None:
    machine = machine_in(app, client)
    ending = check_ending(machine.send_failed(), 1006, "", CLIENT)
    assert snapshot(machine) == (client, DISCONNECTED, ending, 403, False)
    assert machine.send_failed() is None
    assert snapshot(machine) == (client, DISCONNECTED, ending, 403, False)


def test_send_failed_after_the_end_keeps_the_ending() -> None:
    machine = machine_in(CONNECTED, CONNECTED)
    ending = machine.end(4000, "custom", PLUGIN)
    assert machine.send_failed() is None
    assert snapshot(machine) == (CONNECTED, DISCONNECTED, ending, 403, False)


#: (app state before) -> (plugin_closes' answer: a close must go out, app state after). The client is always gone.
PLUGIN_CLOSES_TABLE: Final[dict[WebSocketState, tuple[bool, WebSocketState]]] = {
    CONNECTING: (False, CONNECTING),
    CONNECTED: (True, DISCONNECTED),
    DISCONNECTED: (False, DISCONNECTED),
    RESPONSE: (False, RESPONSE),
}


@pytest.mark.parametrize("app", APP_STATES)
@pytest.mark.parametrize("client", CLIENT_STATES)
@pytest.mark.parametrize("ended", [False, True])
def test_plugin_closes(app: WebSocketState, client: WebSocketState, ended: bool) -> None:
    machine = machine_in(app, client)
    ending = machine.end(1000, "", APP) if ended else None
    must_close, app_after = PLUGIN_CLOSES_TABLE[app]
    assert machine.plugin_closes() is must_close
    assert snapshot(machine) == (DISCONNECTED, app_after, ending, 403, False)
    assert machine.ending is ending  # it records nothing: the shell ends once the close went out
    assert machine.plugin_closes() is False  # a second request sends nothing more
    assert snapshot(machine) == (DISCONNECTED, app_after, ending, 403, False)


@pytest.mark.parametrize("app", APP_STATES)
@pytest.mark.parametrize("client", CLIENT_STATES)
def test_told_closed_falls_back_to_1006_server(app: WebSocketState, client: WebSocketState) -> None:
    machine = machine_in(app, client)
    check_ending(machine.told_closed(), 1006, "", SERVER)
    assert snapshot(machine) == (DISCONNECTED, app, None, 403, False)  # the fallback is not recorded


@pytest.mark.parametrize("app", APP_STATES)
@pytest.mark.parametrize("client", CLIENT_STATES)
def test_told_closed_returns_the_ending(app: WebSocketState, client: WebSocketState) -> None:
    machine = machine_in(app, client)
    ending = machine.end(4321, "plugin says no", PLUGIN)
    assert machine.told_closed() is ending
    assert machine.told_closed() is ending
    assert snapshot(machine) == (DISCONNECTED, app, ending, 403, False)


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (None, "", (1005, "")),
        (None, "why", (1005, "why")),
        (1000, "", (1000, "")),
        (1001, "bye", (1001, "bye")),
        (4999, "x" * 123, (4999, "x" * 123)),
        (CloseCode.GOING_AWAY, "", (1001, "")),
    ],
)
@pytest.mark.parametrize("client", CLIENT_STATES)
def test_client_left(code: int | None, reason: str, expected: tuple[int, str], client: WebSocketState) -> None:
    machine = machine_in(CONNECTED, client)
    ending = check_ending(machine.client_left(code, reason), *expected, CLIENT)
    # the state moved with the disconnect message (received); client_left only records the ending
    assert snapshot(machine) == (client, CONNECTED, ending, 403, False)
    assert machine.client_left(1000, "again") is None
    assert machine.ending is ending


def test_response_sequence() -> None:
    machine = machine_in(CONNECTING, CONNECTED)
    assert machine.app_sends("websocket.http.response.start") is AppAction.RESPONSE_START
    machine.response_starts(404)
    assert snapshot(machine) == (CONNECTED, RESPONSE, None, 404, False)
    for _ in range(3):
        assert machine.app_sends("websocket.http.response.body") is AppAction.RESPONSE_BODY
        assert machine.response_body(True) is AppAction.RESPONSE_BODY
        assert snapshot(machine) == (CONNECTED, RESPONSE, None, 404, False)
    assert machine.app_sends("websocket.http.response.body") is AppAction.RESPONSE_BODY
    assert machine.response_body(False) is AppAction.RESPONSE_END
    # the app side is closed; the ending is the shell's to report (denied, or end with 1006)
    assert snapshot(machine) == (CONNECTED, DISCONNECTED, None, 404, False)
    error = attempt(lambda: machine.app_sends("websocket.http.response.body"))
    assert isinstance(error, Exception)
    SEND_AFTER_CLOSE.check(error)
    ending = check_ending(machine.denied(404, APP), 1006, "", APP)
    assert snapshot(machine) == (CONNECTED, DISCONNECTED, ending, 404, False)


@pytest.mark.parametrize("status", [200, 301, 403, 500, 599])
def test_response_single_body(status: int) -> None:
    machine = machine_in(CONNECTING, CONNECTED)
    machine.response_starts(status)
    assert snapshot(machine) == (CONNECTED, RESPONSE, None, status, False)
    assert machine.response_body(False) is AppAction.RESPONSE_END
    assert snapshot(machine) == (CONNECTED, DISCONNECTED, None, status, False)


@pytest.mark.parametrize("closed_by", list(ClosedBy))
def test_end_once(closed_by: ClosedBy) -> None:
    machine = machine_in(CONNECTED, CONNECTED)
    ending = check_ending(machine.end(4000, "first", closed_by), 4000, "first", closed_by)
    assert machine.ending is ending
    for code, reason, by in [(1000, "", APP), (1006, "", SERVER), (4000, "first", closed_by)]:
        assert machine.end(code, reason, by) is None
        assert machine.ending is ending
    assert snapshot(machine) == (CONNECTED, CONNECTED, ending, 403, False)


@pytest.mark.parametrize("code", list(CloseCode))
def test_end_coerces_intenum_codes(code: CloseCode) -> None:
    machine = Lifecycle()
    ending = machine.end(code, code.reason, SERVER)
    assert ending is not None
    assert type(ending.code) is int
    assert ending.code == code.value
    assert ending == Ending(code.value, code.reason, SERVER)


@pytest.mark.parametrize(("code", "error_type"), [("abc", ValueError), (None, TypeError), (b"", ValueError)])
def test_end_refuses_a_non_number_and_changes_nothing(code: object, error_type: type[Exception]) -> None:
    machine = machine_in(CONNECTED, CONNECTED)
    before = snapshot(machine)
    error = attempt(lambda: machine.end(code, "", APP))  # type: ignore[arg-type]
    assert type(error) is error_type
    assert same(snapshot(machine), before)


@pytest.mark.parametrize(("outcome", "app", "client"), list(FINISH_TABLE))
def test_finish_then_finished(outcome: Outcome, app: WebSocketState, client: WebSocketState) -> None:
    machine = machine_in(app, client)
    before = snapshot(machine)
    assert machine.finish(outcome) is FINISH_TABLE[outcome, app, client]
    assert same(snapshot(machine), before)  # finish only says what to do
    expected = FINISHED_ENDINGS[outcome]
    ending = check_ending(machine.finished(outcome), expected.code, expected.reason, expected.closed_by)
    assert snapshot(machine) == (client, app, ending, 403, False)
    for again in Outcome:
        assert machine.finished(again) is None
    assert machine.ending is ending


@pytest.mark.parametrize(("outcome", "app", "client"), list(FINISH_TABLE))
def test_finished_after_the_end_keeps_the_ending(outcome: Outcome, app: WebSocketState, client: WebSocketState) -> None:
    machine = machine_in(app, client)
    ending = machine.end(1001, "going away", CLIENT)
    assert machine.finish(outcome) is FINISH_TABLE[outcome, app, client]  # the ending does not change the answer
    assert machine.finished(outcome) is None
    assert snapshot(machine) == (client, app, ending, 403, False)


# --- whole lifecycles, as the shell drives them ------------------------------------------------------


def test_scenario_accept_exchange_client_leaves() -> None:
    machine = Lifecycle()
    machine.check_receive()
    assert machine.received("websocket.connect") is ClientAction.CONNECTED
    assert machine.app_sends("websocket.accept") is AppAction.ACCEPT
    machine.accepted()
    assert snapshot(machine) == (CONNECTED, CONNECTED, None, 403, False)
    assert machine.received("websocket.receive") is ClientAction.DATA
    assert machine.app_sends("websocket.send") is AppAction.SEND
    assert machine.received("websocket.disconnect") is ClientAction.LEFT
    ending = check_ending(machine.client_left(None, ""), 1005, "", CLIENT)
    error = attempt(machine.check_receive)
    assert isinstance(error, Exception)
    RECEIVE_AFTER_DISCONNECT.check(error)
    assert machine.app_sends("websocket.send") is AppAction.SEND  # the server decides what a late send does
    assert machine.finish(Outcome.RETURNED) is None
    assert machine.finished(Outcome.RETURNED) is None
    assert snapshot(machine) == (DISCONNECTED, CONNECTED, ending, 403, False)


def test_scenario_app_closes() -> None:
    machine = Lifecycle()
    machine.received("websocket.connect")
    machine.accepted()
    assert machine.app_sends("websocket.close") is AppAction.CLOSE
    machine.closing(4001, "done")
    ending = check_ending(machine.end(4001, "done", APP), 4001, "done", APP)
    assert machine.received("websocket.receive") is ClientAction.DATA  # draining in-flight messages
    assert machine.received("websocket.disconnect") is ClientAction.LEFT
    assert machine.client_left(1000, "") is None
    assert machine.finish(Outcome.RETURNED) is None
    assert machine.finished(Outcome.RETURNED) is None
    assert snapshot(machine) == (DISCONNECTED, DISCONNECTED, ending, 403, False)


def test_scenario_app_denies_with_a_close() -> None:
    machine = Lifecycle()
    machine.received("websocket.connect")
    assert machine.app_sends("websocket.close") is AppAction.DENY
    machine.check_close(1000, "")
    machine.denying()
    ending = check_ending(machine.denied(403, APP), 1006, "", APP)
    assert machine.finish(Outcome.RETURNED) is None
    assert machine.finished(Outcome.RETURNED) is None
    assert snapshot(machine) == (CONNECTED, DISCONNECTED, ending, 403, False)


def test_scenario_app_raises_before_accept() -> None:
    machine = Lifecycle()
    machine.received("websocket.connect")
    assert machine.finish(Outcome.RAISED) is AppAction.DENY
    machine.denying()
    ending = check_ending(machine.denied(500, SERVER), 1006, "", SERVER)
    assert machine.finished(Outcome.RAISED) is None
    assert snapshot(machine) == (CONNECTED, DISCONNECTED, ending, 500, False)


def test_scenario_app_raises_after_accept() -> None:
    machine = Lifecycle()
    machine.received("websocket.connect")
    machine.accepted()
    assert machine.finish(Outcome.RAISED) is AppAction.CLOSE
    machine.closing(CloseCode.INTERNAL_ERROR, "internal error")
    ending = check_ending(
        machine.end(CloseCode.INTERNAL_ERROR, "internal error", SERVER), 1011, "internal error", SERVER
    )
    assert machine.finished(Outcome.RAISED) is None
    assert snapshot(machine) == (CONNECTED, DISCONNECTED, ending, 403, False)


def test_scenario_plugin_closes_then_the_app_is_told() -> None:
    machine = Lifecycle()
    machine.received("websocket.connect")
    machine.accepted()
    assert machine.received("websocket.receive") is ClientAction.DATA
    assert machine.plugin_closes() is True
    ending = check_ending(machine.end(1008, "policy violation", PLUGIN), 1008, "policy violation", PLUGIN)
    assert machine.told_closed() is ending
    assert machine.finish(Outcome.DISCONNECTED) is None
    assert machine.finished(Outcome.DISCONNECTED) is None
    assert snapshot(machine) == (DISCONNECTED, DISCONNECTED, ending, 403, False)


def test_scenario_send_fails() -> None:
    machine = Lifecycle()
    machine.received("websocket.connect")
    machine.accepted()
    ending = check_ending(machine.send_failed(), 1006, "", CLIENT)
    assert machine.finish(Outcome.DISCONNECTED) is None
    assert machine.finished(Outcome.DISCONNECTED) is None
    assert snapshot(machine) == (CONNECTED, DISCONNECTED, ending, 403, False)


def test_scenario_cancelled() -> None:
    machine = Lifecycle()
    machine.received("websocket.connect")
    machine.accepted()
    assert machine.finish(Outcome.CANCELLED) is None
    check_ending(machine.finished(Outcome.CANCELLED), 1006, "", SERVER)
    assert snapshot(machine)[:2] == (CONNECTED, CONNECTED)


# --- 3. random events --------------------------------------------------------------------------------

ANY_CODES: Final = st.sampled_from([*VALID_CODES, *FORBIDDEN_CODES, True, CloseCode.NORMAL, CloseCode.ABNORMAL])
#: The codes an ASGI close message carries (an int, ASGI says): sendable or not.
ASGI_CODES: Final = st.sampled_from([*VALID_CODES, *FORBIDDEN_CODES, CloseCode.NORMAL, CloseCode.POLICY_VIOLATION])
#: The codes the shell records besides the app's own: the toolkit's, a client's (servers give 1000-4999).
ENDING_CODES: Final = st.one_of(st.sampled_from(list(CloseCode)), st.sampled_from(VALID_CODES), st.integers(1000, 4999))
ANY_REASONS: Final = st.sampled_from(REASONS)
CLIENT_REASONS: Final = st.sampled_from(["", "bye", "x" * 123])
STATUSES: Final = st.sampled_from([403, 500, 401, 404, 200, 302, 599])
CLOSED_BY: Final = st.sampled_from(list(ClosedBy))
OUTCOMES: Final = st.sampled_from(list(Outcome))
#: The events that may record the ending; each returns it when it does.
RECORDERS: Final = {"client_left", "denied", "send_failed", "end", "finished"}
#: Legal starts, so that every state is visited: connected or not, accepted / denial started or not.
PREFIXES: Final = st.sampled_from(
    [("connect", "accept"), ("accept",), ("connect",), (), ("connect", "respond"), ("respond",)]
)
#: Raw events in any state, for the examples that are not driven as the shell drives the machine.
wild_only = precondition(lambda self: self.wild)


class LifecycleMachine(RuleBasedStateMachine):
    """Random events on one Lifecycle; after each event, the invariants the shell relies on.

    In a *wild* example every public event method is a rule of its own, with generated arguments,
    in any state. Two follow-ups are called only where the shell calls them, since the machine does
    not guard them: ``accepted`` and ``response_starts``, right after ``app_sends`` answered ACCEPT /
    RESPONSE_START (the app side CONNECTING). The ``shell_*`` rules chain the events as
    toolkit/_websocket.py does for one message, a plugin's close or the endpoint's end; the other
    examples use only those and the queries, so they live long enough to visit every state. Each
    connection starts from a state reached legally, and once it is over the example goes on with a
    new one.
    """

    def __init__(self) -> None:
        super().__init__()
        self.machine = Lifecycle()
        self.previous = snapshot(self.machine)
        self.wild = True

    @initialize(wild=st.booleans(), relay=st.booleans(), prefix=PREFIXES)
    def start(self, *, wild: bool, relay: bool, prefix: tuple[str, ...]) -> None:
        self.wild = wild
        self.connect(relay, prefix)

    @precondition(lambda self: self.machine.app is DISCONNECTED and self.machine.ending is not None)
    @rule(relay=st.booleans(), prefix=PREFIXES)
    def next_connection(self, relay: bool, prefix: tuple[str, ...]) -> None:
        """The connection is over, and little can still happen to it: go on with a new one."""
        self.connect(relay, prefix)

    def connect(self, relay: bool, prefix: tuple[str, ...]) -> None:
        self.machine = Lifecycle(relay=relay)
        self.previous = snapshot(self.machine)
        for event in prefix:
            if event == "connect":
                assert (
                    self.step("received", lambda: self.machine.received("websocket.connect")) is ClientAction.CONNECTED
                )
            elif event == "accept":
                self.step("accepted", self.machine.accepted)
            else:
                self.step("response_starts", lambda: self.machine.response_starts(404))

    def step(self, name: str, call: Callable[[], object], expected: Refused | None = None) -> object:
        """Run one event: an exception must be the expected one (if any) and change nothing."""
        before = snapshot(self.machine)
        result = attempt(call)
        after = snapshot(self.machine)
        if isinstance(result, Exception):
            assert same(after, before), f"{name} raised {result!r} and changed {before} into {after}"
        elif expected is not None:
            raise AssertionError(f"{name} returned {result!r}, expected {expected}")
        if before[2] is None and after[2] is not None:
            assert name in RECORDERS, f"{name} recorded an ending"
            assert result is after[2], f"{name} recorded {after[2]} but returned {result!r}"
        elif name in RECORDERS and not isinstance(result, Exception):
            assert result is None, f"{name} returned {result!r} without recording it"
        self.check_transition()
        return result

    def check_transition(self) -> None:
        client, app, ending, _, relay = snapshot(self.machine)
        old_client, old_app, old_ending, _, old_relay = self.previous
        assert relay is old_relay
        if old_ending is not None:
            assert ending is old_ending, "the ending changed once recorded"
        if old_app is DISCONNECTED:
            assert app is DISCONNECTED, f"the app side left DISCONNECTED for {app}"
        if old_client is DISCONNECTED:
            assert client is DISCONNECTED, f"the client side left DISCONNECTED for {client}"
        if app is CONNECTING:
            assert old_app is CONNECTING, f"the app side went back to CONNECTING from {old_app}"
        if client is CONNECTING:
            assert old_client is CONNECTING, f"the client side went back to CONNECTING from {old_client}"
        if app is RESPONSE and old_app is not RESPONSE:
            assert old_app is CONNECTING, f"RESPONSE reached from {old_app}"
        assert client is not RESPONSE
        self.previous = snapshot(self.machine)

    # --- the client side

    @wild_only
    @rule(message_type=st.sampled_from(CLIENT_TYPES))
    def received(self, message_type: str) -> None:
        client = self.machine.client
        expected, after = CLIENT_TABLE[client, message_type]
        refused = expected if isinstance(expected, Refused) else None
        result = self.step("received", lambda: self.machine.received(message_type), refused)
        if refused is not None:
            assert isinstance(result, Exception)
            refused.check(result, message_type)
        else:
            assert result is expected
        assert self.machine.client is after

    @rule()
    def check_receive(self) -> None:
        expected = CHECK_RECEIVE_TABLE[self.machine.client]
        result = self.step("check_receive", self.machine.check_receive, expected)
        if expected is None:
            assert result is None
        else:
            assert isinstance(result, Exception)
            expected.check(result)

    @wild_only
    @rule(code=st.none() | ENDING_CODES, reason=CLIENT_REASONS)
    def client_left(self, code: int | None, reason: str) -> None:
        first = self.machine.ending is None
        sides = snapshot(self.machine)[:2]
        result = self.step("client_left", lambda: self.machine.client_left(code, reason))
        if first:
            assert result == Ending(1005 if code is None else int(code), reason, CLIENT)
        assert snapshot(self.machine)[:2] == sides

    @rule(message_type=st.sampled_from(CLIENT_TYPES), code=st.none() | ENDING_CODES, reason=CLIENT_REASONS)
    def shell_receives(self, message_type: str, code: int | None, reason: str) -> None:
        """``WebSocket.receive``: check, take the message (skipping the machine for data), report a disconnect."""
        if self.machine.client is not CONNECTED and isinstance(
            self.step("check_receive", self.machine.check_receive), Exception
        ):
            return
        if message_type == "websocket.receive" and self.machine.client is CONNECTED:
            return  # the shell's own transition, which changes nothing (test_the_shells_own_transitions_change_nothing)
        if self.step("received", lambda: self.machine.received(message_type)) is ClientAction.LEFT:
            self.step("client_left", lambda: self.machine.client_left(code, reason))

    # --- the app side

    @rule(message_type=st.sampled_from(APP_TYPES))
    def app_sends(self, message_type: str) -> None:
        expected = APP_TABLE[self.machine.app, message_type]
        refused = expected if isinstance(expected, Refused) else None
        before = snapshot(self.machine)
        result = self.step("app_sends", lambda: self.machine.app_sends(message_type), refused)
        if refused is not None:
            assert isinstance(result, Exception)
            refused.check(result, message_type)
        else:
            assert result is expected
        assert same(snapshot(self.machine), before)

    @rule(code=ANY_CODES, reason=ANY_REASONS)
    def check_close(self, code: int, reason: str) -> None:
        before = snapshot(self.machine)
        result = self.step("check_close", lambda: self.machine.check_close(code, reason))
        assert same(snapshot(self.machine), before)
        refused = not self.machine.relay and not (sendable(code) and reason_ok(reason))
        assert isinstance(result, ValueError | TypeError) if refused else result is None

    @precondition(lambda self: self.wild and self.machine.app is CONNECTED)
    @rule(code=ANY_CODES, reason=ANY_REASONS)
    def closing(self, code: int, reason: str) -> None:
        result = self.step("closing", lambda: self.machine.closing(code, reason))
        refused = not self.machine.relay and not (sendable(code) and reason_ok(reason))
        if refused:
            assert isinstance(result, ValueError | TypeError)
        else:
            assert result is None
            assert self.machine.app is DISCONNECTED

    @precondition(lambda self: self.wild and self.machine.app in (CONNECTING, RESPONSE))
    @rule()
    def denying(self) -> None:
        assert self.step("denying", self.machine.denying) is None
        assert self.machine.app is DISCONNECTED

    @precondition(lambda self: self.wild and self.machine.app is CONNECTING)
    @rule()
    def accepted(self) -> None:
        assert self.step("accepted", self.machine.accepted) is None
        assert self.machine.app is CONNECTED

    @precondition(lambda self: self.wild and self.machine.app is CONNECTING)
    @rule(status=STATUSES)
    def response_starts(self, status: int) -> None:
        assert self.step("response_starts", lambda: self.machine.response_starts(status)) is None
        assert (self.machine.app, self.machine.denial_status) == (RESPONSE, status)

    @wild_only
    @rule(
        event=st.sampled_from(["closing", "denying", "accepted", "response_starts", "response_body"]),
        code=ANY_CODES,
        reason=ANY_REASONS,
    )
    def out_of_state(self, event: str, code: int, reason: str) -> None:
        """A follow-up event in a state no message could have led to: refused as a bug of the shell, no change."""
        allowed = {
            "closing": (CONNECTED,),
            "denying": (CONNECTING, RESPONSE),
            "accepted": (CONNECTING,),
            "response_starts": (CONNECTING,),
            "response_body": (RESPONSE,),
        }[event]
        if self.machine.app in allowed:
            return
        calls = {
            "closing": lambda: self.machine.closing(code, reason),
            "denying": self.machine.denying,
            "accepted": self.machine.accepted,
            "response_starts": lambda: self.machine.response_starts(403),
            "response_body": lambda: self.machine.response_body(False),
        }
        before = snapshot(self.machine)
        result = self.step(event, calls[event])
        assert type(result) is RuntimeError
        assert str(result) == f"lifecycle: {event} is not an event of the app state {self.machine.app.name}"
        assert same(snapshot(self.machine), before)

    @precondition(lambda self: self.wild and self.machine.app is RESPONSE)
    @rule(more_body=st.booleans())
    def response_body(self, more_body: bool) -> None:
        app = self.machine.app
        result = self.step("response_body", lambda: self.machine.response_body(more_body))
        if more_body:
            assert result is AppAction.RESPONSE_BODY
            assert self.machine.app is app
        else:
            assert result is AppAction.RESPONSE_END
            assert self.machine.app is DISCONNECTED

    @wild_only
    @rule(status=STATUSES, closed_by=CLOSED_BY)
    def denied(self, status: int, closed_by: ClosedBy) -> None:
        first = self.machine.ending is None
        result = self.step("denied", lambda: self.machine.denied(status, closed_by))
        if first:
            assert result == Ending(1006, "", closed_by)
        assert (self.machine.app, self.machine.denial_status) == (DISCONNECTED, status)

    @wild_only
    @rule()
    def send_failed(self) -> None:
        first = self.machine.ending is None
        result = self.step("send_failed", self.machine.send_failed)
        if first:
            assert result == Ending(1006, "", CLIENT)
        assert self.machine.app is DISCONNECTED

    @wild_only
    @rule()
    def told_closed(self) -> None:
        ending = self.machine.ending
        result = self.step("told_closed", self.machine.told_closed)
        assert result is ending if ending is not None else result == Ending(1006, "", SERVER)
        assert self.machine.client is DISCONNECTED

    @wild_only
    @rule()
    def plugin_closes(self) -> None:
        app = self.machine.app
        result = self.step("plugin_closes", self.machine.plugin_closes)
        assert result is (app is CONNECTED)
        assert self.machine.client is DISCONNECTED
        assert self.machine.app is (DISCONNECTED if app is CONNECTED else app)

    @rule(
        message_type=st.sampled_from(APP_TYPES),
        code=ASGI_CODES,
        reason=st.sampled_from(["", "bye", "x" * 123, "x" * 124]),
        status=STATUSES,
        more_body=st.booleans(),
        send_fails=st.booleans(),
        hooked=st.booleans(),
    )
    def shell_sends(
        self, *, message_type: str, code: int, reason: str, status: int, more_body: bool, send_fails: bool, hooked: bool
    ) -> None:
        """``WebSocket.send``: ask the machine, then report what happened, as the shell does.

        ``hooked``: a ``ws_denial`` hook runs, so an app's denial response is buffered and reported by ``denied``.
        """
        action = self.step("app_sends", lambda: self.machine.app_sends(message_type))
        if action is AppAction.ACCEPT:
            self.step("accepted", self.machine.accepted)
            if send_fails:
                self.step("send_failed", self.machine.send_failed)
        elif action is AppAction.SEND:
            if send_fails:
                self.step("send_failed", self.machine.send_failed)
        elif action is AppAction.CLOSE:
            if isinstance(self.step("closing", lambda: self.machine.closing(code, reason)), Exception):
                return
            if send_fails:
                self.step("send_failed", self.machine.send_failed)
            else:
                self.step("end", lambda: self.machine.end(code, reason, APP))
            assert self.machine.ending is not None
        elif action is AppAction.DENY:
            if isinstance(self.step("check_close", lambda: self.machine.check_close(code, reason)), Exception):
                return
            self.step("denying", self.machine.denying)
            self.step("denied", lambda: self.machine.denied(403, APP))
            assert self.machine.ending is not None
        elif action is AppAction.RESPONSE_START:
            self.step("response_starts", lambda: self.machine.response_starts(status))
        elif action is AppAction.RESPONSE_BODY:
            last = self.step("response_body", lambda: self.machine.response_body(more_body))
            if last is AppAction.RESPONSE_END:
                if hooked:
                    self.step("denied", lambda: self.machine.denied(self.machine.denial_status, APP))
                else:
                    self.step("end", lambda: self.machine.end(CloseCode.ABNORMAL, "", APP))
                assert self.machine.ending is not None

    @precondition(
        lambda self: self.machine.app is CONNECTED or (self.machine.client is CONNECTED and self.machine.ending is None)
    )
    @rule(
        code=st.sampled_from(VALID_CODES),
        reason=st.sampled_from(["", "policy violation", "x" * 123]),
        send_fails=st.booleans(),
    )
    def shell_plugin_closes(self, code: int, reason: str, send_fails: bool) -> None:
        """``WebSocket._plugin_closed``: a hook returned ``Close`` (or failed) while sending or receiving."""
        if self.step("plugin_closes", self.machine.plugin_closes):
            if send_fails:
                self.step("end", lambda: self.machine.end(CloseCode.ABNORMAL, "", PLUGIN))
            else:
                self.step("end", lambda: self.machine.end(code, reason, PLUGIN))
            assert self.machine.ending is not None
        told = self.step("told_closed", self.machine.told_closed)
        assert self.machine.ending is None or told is self.machine.ending
        assert self.machine.client is DISCONNECTED

    @rule(outcome=OUTCOMES, send_fails=st.booleans(), hooked=st.booleans(), extension=st.booleans())
    def shell_finish(self, *, outcome: Outcome, send_fails: bool, hooked: bool, extension: bool) -> None:
        """``WebSocket.__aexit__``: finish, do what it says, finished; then finished(CANCELLED) in ``finally``.

        ``hooked``: a ``ws_denial`` hook runs (an app's denial response was buffered); ``extension``: the
        server has the denial-response extension (a denial for a raising app shows 500, else 403).
        """
        raised = outcome is Outcome.RAISED
        action = self.step("finish", lambda: self.machine.finish(outcome))
        if action is AppAction.CLOSE:
            code, reason = (CloseCode.INTERNAL_ERROR, "internal error") if raised else (CloseCode.NORMAL, "")
            self.step("closing", lambda: self.machine.closing(code, reason))
            if send_fails:
                self.step("end", lambda: self.machine.end(CloseCode.ABNORMAL, "", CLIENT))
            else:
                self.step("end", lambda: self.machine.end(code, reason, SERVER if raised else APP))
        elif action is AppAction.DENY:
            self.step("denying", self.machine.denying)
            self.step(
                "denied", lambda: self.machine.denied(500 if raised and extension else 403, SERVER if raised else APP)
            )
        elif action is AppAction.RESPONSE_END:  # sent through WebSocket.send, an OSError suppressed
            assert self.step("app_sends", lambda: self.machine.app_sends("websocket.http.response.body")) is (
                AppAction.RESPONSE_BODY
            )
            assert self.step("response_body", lambda: self.machine.response_body(False)) is AppAction.RESPONSE_END
            if hooked:
                self.step("denied", lambda: self.machine.denied(self.machine.denial_status, APP))
            elif not send_fails:
                self.step("end", lambda: self.machine.end(CloseCode.ABNORMAL, "", APP))
        else:
            assert action is None
        self.step("finished", lambda: self.machine.finished(outcome))
        assert self.machine.ending is not None  # ws_close fired, whatever happened
        assert self.step("finished", lambda: self.machine.finished(Outcome.CANCELLED)) is None
        if action is not None:
            assert self.machine.app is DISCONNECTED  # whatever had to go out went out: nothing may follow

    # --- the end

    @wild_only
    @rule(code=ENDING_CODES, reason=CLIENT_REASONS, closed_by=CLOSED_BY)
    def end(self, code: int, reason: str, closed_by: ClosedBy) -> None:
        first = self.machine.ending is None
        result = self.step("end", lambda: self.machine.end(code, reason, closed_by))
        if first:
            assert result == Ending(int(code), reason, closed_by)

    @wild_only
    @rule(code=st.sampled_from(["abc", None, b"x"]))
    def end_with_garbage(self, code: object) -> None:
        first = self.machine.ending is None
        result = self.step("end", lambda: self.machine.end(code, "", APP))  # type: ignore[arg-type]
        assert isinstance(result, ValueError | TypeError) if first else result is None  # once ended, not even read

    @rule(outcome=OUTCOMES)
    def finish(self, outcome: Outcome) -> None:
        expected = FINISH_TABLE[outcome, self.machine.app, self.machine.client]
        before = snapshot(self.machine)
        assert self.step("finish", lambda: self.machine.finish(outcome)) is expected
        assert same(snapshot(self.machine), before)

    @wild_only
    @rule(outcome=OUTCOMES)
    def finished(self, outcome: Outcome) -> None:
        first = self.machine.ending is None
        result = self.step("finished", lambda: self.machine.finished(outcome))
        if first:
            assert result == FINISHED_ENDINGS[outcome]
        assert self.machine.ending is not None

    @wild_only
    @rule(outcome=OUTCOMES)
    def finish_with_nothing_to_send(self, outcome: Outcome) -> None:
        """The shell's ``_finish`` when there is nothing to send: finish says None, finished ends it."""
        if self.step("finish", lambda: self.machine.finish(outcome)) is None:
            self.step("finished", lambda: self.machine.finished(outcome))
            assert self.machine.ending is not None

    # --- invariants

    @invariant()
    def transitions_are_allowed(self) -> None:
        self.check_transition()  # also after each event of a compound rule

    @invariant()
    def values_are_well_typed(self) -> None:
        machine = self.machine
        assert type(machine.denial_status) is int
        assert isinstance(machine.app, WebSocketState)
        assert isinstance(machine.client, WebSocketState)
        ending = machine.ending
        if ending is not None:
            assert type(ending.code) is int, f"ending code {ending.code!r} is a {type(ending.code).__name__}"
            if not machine.relay:  # relayed, the app's close is recorded as written: the server judges it
                assert 1000 <= ending.code <= 4999, f"ending code {ending.code}"
            assert type(ending.reason) is str
            assert isinstance(ending.closed_by, ClosedBy)


LifecycleMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLifecycleMachine = LifecycleMachine.TestCase
