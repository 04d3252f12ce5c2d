"""The connection lifecycle as a state machine without I/O: events in, new state and an action out.

Nothing here awaits, calls a hook or touches a transport. :class:`toolkit.WebSocket`
is the async shell around it: it asks the machine what an ASGI message means in
the current state, does the I/O and runs the hooks the action calls for, and
reports back what happened (the send failed, a plugin closed). Every state change
of a connection is one method below, so the whole lifecycle can be tested on its
own, exhaustively (tests/test_lifecycle.py).

Two sides, as in Starlette: ``client`` (what the client did, moved by the messages
``receive`` returns) and ``app`` (what the app did, moved by the messages it sends).
The connection *ends* once, with a code, a reason and who ended it; that is when
``ws_close`` fires, and the machine never ends twice.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, final

from ._close import CloseCode, check_close
from ._exceptions import WebSocketDisconnected
from ._results import ClosedBy

__all__ = ["AppAction", "ClientAction", "Ending", "Lifecycle", "Outcome", "WebSocketState"]


class WebSocketState(enum.Enum):
    """The state of one side of the connection; the same members and values as Starlette's."""

    #: Before the handshake: the client's ``websocket.connect`` / the app's accept or denial.
    CONNECTING = 0
    #: Handshake done, messages flow (RFC 6455 section 4).
    CONNECTED = 1
    #: Closed or denied; nothing more may be sent (or received, for the client side).
    DISCONNECTED = 2
    #: The app is sending an HTTP denial response (ASGI "websocket.http.response" extension).
    RESPONSE = 3


CONNECTING: Final = WebSocketState.CONNECTING
CONNECTED: Final = WebSocketState.CONNECTED
DISCONNECTED: Final = WebSocketState.DISCONNECTED
RESPONSE: Final = WebSocketState.RESPONSE


class AppAction(enum.Enum):
    """What the shell does with a message the app sends."""

    #: Run ``ws_accept``, then send the (changed) accept and call :meth:`Lifecycle.accepted`.
    ACCEPT = "accept"
    #: Run ``ws_send``, then send the (changed) data message.
    SEND = "send"
    #: Send the close; the app side is already closed. Then :meth:`Lifecycle.end` with the app's code.
    CLOSE = "close"
    #: A close before accept is a denial (the client sees 403): ``ws_denial``, then the denial goes out.
    DENY = "deny"
    #: The first part of an HTTP denial response; the app side is now ``RESPONSE``.
    RESPONSE_START = "response start"
    #: More of the denial's body follows.
    RESPONSE_BODY = "response body"
    #: The last part of the denial's body; the app side is closed.
    RESPONSE_END = "response end"


class ClientAction(enum.Enum):
    """What the shell does with a message ``receive`` returned."""

    #: The handshake request: hand it to the app.
    CONNECTED = "connected"
    #: A data message: run ``ws_receive`` (unless the connection has ended), then deliver.
    DATA = "data"
    #: The client left: the connection has ended (``ws_close`` is due), hand the disconnect on.
    LEFT = "left"


class Outcome(enum.Enum):
    """How the endpoint finished, for :meth:`Lifecycle.finish`."""

    RETURNED = "returned"
    #: It raised ``WebSocketDisconnect``: the connection had ended, it just stopped.
    DISCONNECTED = "disconnected"
    RAISED = "raised"
    CANCELLED = "cancelled"


@final
@dataclass(frozen=True, slots=True)
class Ending:
    """How the connection ended, as ``ws_close`` reports it."""

    code: int
    reason: str
    closed_by: ClosedBy


_ACCEPT_OR_DENY: Final = (
    'Expected ASGI message "websocket.accept", "websocket.close" or "websocket.http.response.start", but got {!r}'
)
#: (app state, message type) -> the action; the app state after it is the action's to decide.
_APP: Final[dict[tuple[WebSocketState, str], AppAction]] = {
    (CONNECTING, "websocket.accept"): AppAction.ACCEPT,
    (CONNECTING, "websocket.close"): AppAction.DENY,
    (CONNECTING, "websocket.http.response.start"): AppAction.RESPONSE_START,
    (CONNECTED, "websocket.send"): AppAction.SEND,
    (CONNECTED, "websocket.close"): AppAction.CLOSE,
    (RESPONSE, "websocket.http.response.body"): AppAction.RESPONSE_BODY,
}
_APP_EXPECTED: Final = {
    CONNECTING: _ACCEPT_OR_DENY,
    CONNECTED: 'Expected ASGI message "websocket.send" or "websocket.close", but got {!r}',
    RESPONSE: 'Expected ASGI message "websocket.http.response.body", but got {!r}',
}


@final
class Lifecycle:
    """One connection's state. Each public method is one event; it changes state or raises, nothing else.

    ``relay`` is the mode of :class:`toolkit.ToolkitMiddleware` around someone
    else's app: the app's close messages go to the server as the app wrote them
    (the server judges them), and the shell lets several tasks receive at once,
    as plain ASGI allows.
    """

    __slots__ = ("app", "client", "denial_status", "ending", "relay")

    def __init__(self, *, relay: bool = False) -> None:
        self.client = CONNECTING
        self.app = CONNECTING
        #: Set once, when the connection ends.
        self.ending: Ending | None = None
        #: The HTTP status a denial showed the client (403: a close before accept, or no extension).
        self.denial_status = 403
        self.relay = relay

    # --- the client side ----------------------------------------------------------------------------

    def check_receive(self) -> None:
        """The app is about to wait for the client's next message: only until the client has left."""
        if self.client is DISCONNECTED:
            raise WebSocketDisconnected('Cannot call "receive" once a disconnect message has been received.')

    def received(self, message_type: str) -> ClientAction:
        """The server handed over a message of ``message_type``."""
        client = self.client
        if client is CONNECTING:
            if message_type != "websocket.connect":
                raise RuntimeError(f'Expected ASGI message "websocket.connect", but got {message_type!r}')
            self.client = CONNECTED
            return ClientAction.CONNECTED
        # DISCONNECTED here: the receive began while the client was connected, and meanwhile a plugin closed
        # (or another task saw the end). What the server hands over is still delivered as it came.
        if message_type == "websocket.receive":
            return ClientAction.DATA
        if message_type == "websocket.disconnect":
            self.client = DISCONNECTED
            return ClientAction.LEFT
        raise RuntimeError(
            f'Expected ASGI message "websocket.receive" or "websocket.disconnect", but got {message_type!r}'
        )

    def client_left(self, code: int | None, reason: str) -> Ending | None:
        """The client's disconnect: 1005 when it gave no code (RFC 6455 7.1.5). The ending, if it is the first."""
        return self.end(CloseCode.NO_STATUS if code is None else code, reason, ClosedBy.CLIENT)

    # --- the app side -------------------------------------------------------------------------------

    def app_sends(self, message_type: str) -> AppAction:
        """What an app's message of ``message_type`` means now; raises if it may not be sent."""
        app = self.app
        action = _APP.get((app, message_type))
        if action is None:
            if app is DISCONNECTED:
                raise WebSocketDisconnected('Cannot call "send" once a close message has been sent.')
            raise RuntimeError(_APP_EXPECTED[app].format(message_type))
        return action

    def check_close(self, code: int, reason: str) -> None:
        """A close the app sends: checked, unless relayed (the server judges someone else's app)."""
        if not self.relay:
            check_close(code, reason)

    def closing(self, code: int, reason: str) -> None:
        """The app's close (or one sent for it) is checked and about to go out: nothing may follow it."""
        self._require("closing", CONNECTED)
        self.check_close(code, reason)
        self.app = DISCONNECTED

    def denying(self) -> None:
        """A denial is about to go out: nothing may follow it."""
        self._require("denying", CONNECTING, RESPONSE)
        self.app = DISCONNECTED

    def accepted(self) -> None:
        """``ws_accept`` let the accept through; it is going out."""
        self._require("accepted", CONNECTING)
        self.app = CONNECTED

    def response_starts(self, status: int) -> None:
        """The app began an HTTP denial response."""
        self._require("response_starts", CONNECTING)
        self.app = RESPONSE
        self.denial_status = status

    def response_body(self, more_body: bool) -> AppAction:
        """A part of the denial's body; the last one closes the app side (the ending is the shell's to report)."""
        self._require("response_body", RESPONSE)
        if more_body:
            return AppAction.RESPONSE_BODY
        self.app = DISCONNECTED
        return AppAction.RESPONSE_END

    def _require(self, event: str, *states: WebSocketState) -> None:
        # The shell calls these only after app_sends() allowed the message: a mismatch is a bug in the shell.
        if self.app not in states:
            raise RuntimeError(f"lifecycle: {event} is not an event of the app state {self.app.name}")

    def denied(self, status: int, closed_by: ClosedBy) -> Ending | None:
        """The handshake was refused with HTTP ``status``. A refused handshake never carried a close frame: 1006."""
        self.app = DISCONNECTED
        self.denial_status = status
        return self.end(CloseCode.ABNORMAL, "", closed_by)

    def send_failed(self) -> Ending | None:
        """The server's ``send`` raised ``OSError`` (ASGI 2.4): the client is gone; nothing more can be sent."""
        self.app = DISCONNECTED
        return self.client_vanished()

    def client_vanished(self) -> Ending | None:
        """The client is gone without a close frame (a send failed): 1006, by the client."""
        return self.end(CloseCode.ABNORMAL, "", ClosedBy.CLIENT)

    def told_closed(self) -> Ending:
        """The app is told, from ``receive``, that the connection ended under it (a plugin or a hook closed it)."""
        self.client = DISCONNECTED
        return self.ending or Ending(CloseCode.ABNORMAL.value, "", ClosedBy.SERVER)

    def plugin_closes(self) -> bool:
        """A plugin asked to close (or failed). True when a close must be sent (the app side was open)."""
        self.client = DISCONNECTED
        if self.app is CONNECTED:
            self.app = DISCONNECTED
            return True
        return False

    # --- the end --------------------------------------------------------------------------------------

    def end(self, code: int, reason: str, closed_by: ClosedBy) -> Ending | None:
        """Record how the connection ended. Returns the ending the first time only: ``ws_close`` fires once."""
        if self.ending is not None:
            return None
        ending = self.ending = Ending(int(code), reason, closed_by)
        return ending

    def finish(self, outcome: Outcome) -> AppAction | None:
        """The endpoint is done: what still has to go out for it (then :meth:`finished`).

        Returned (or stopped on a disconnect): close with 1000 if both sides are
        open, deny if never accepted, end an unfinished denial. Raised: close with
        1011, or deny with 500. Cancelled: nothing can be sent.
        """
        if outcome is Outcome.CANCELLED:
            return None
        app = self.app
        if app is CONNECTED and self.client is not DISCONNECTED:  # nobody to close for once the client left
            return AppAction.CLOSE
        if app is CONNECTING and self.client is not DISCONNECTED:  # a client that left needs no denial
            return AppAction.DENY
        if app is RESPONSE:
            return AppAction.RESPONSE_END
        return None

    def finished(self, outcome: Outcome) -> Ending | None:
        """After :meth:`finish`'s action: the ending, unless something already ended the connection."""
        if outcome is Outcome.RAISED:
            return self.end(CloseCode.INTERNAL_ERROR, CloseCode.INTERNAL_ERROR.reason, ClosedBy.SERVER)
        if outcome is Outcome.CANCELLED:
            return self.end(CloseCode.ABNORMAL, "", ClosedBy.SERVER)
        return self.end(CloseCode.NORMAL, "", ClosedBy.APP)
