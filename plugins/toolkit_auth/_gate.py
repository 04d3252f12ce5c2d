"""``AuthGate``: authenticate the handshake, authorize messages, close when the credential expires."""

from __future__ import annotations

import inspect
import logging
import math
import time
import types
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final, Generic, Literal, TypeAlias, TypeVar, cast, final, overload

import anyio

import toolkit
from toolkit import (
    Accept,
    AcceptResult,
    Close,
    CloseCode,
    ClosedBy,
    DenialResponse,
    MessageResult,
    ReceiveResult,
    Reply,
    StateKey,
    WebSocket,
)

from ._credentials import AuthInfo, Credential
from ._sources import Bearer, CredentialLocations, MalformedCredential, Source, Subprotocol

__all__ = ["FORBIDDEN_ERROR", "AuthCallbackError", "AuthGate", "OnRefused"]

P = TypeVar("P")

#: ``"close"``: close with 1008 ``"unauthorized"``; ``"error"``: answer with an error message and drop the message.
OnRefused: TypeAlias = Literal["close", "error"]

logger: Final = logging.getLogger("toolkit_auth")

_UNAUTHORIZED_CLOSE: Final = Close.of(CloseCode.POLICY_VIOLATION, "unauthorized")
_FORBIDDEN: Final = DenialResponse(403, "forbidden")
#: The error message sent for a refused message with ``on_refused="error"``.
FORBIDDEN_ERROR: Final = '{"type":"error","error":"forbidden"}'
_FORBIDDEN_REPLY: Final = Reply(FORBIDDEN_ERROR)
_ABSENT: Final = object()


class AuthCallbackError(RuntimeError):
    """A verifier, ``allow``, ``authorize``, ``expires_at`` or ``scopes`` callable raised, hung or returned garbage.

    The gate never treats that as a yes: it raises this from the hook, so the
    toolkit's failure policy applies (logged once; denied with 500 before accept,
    closed with 1011 after).
    """


@final
class AuthGate(toolkit.Plugin, Generic[P]):
    """Authenticate every handshake; optionally authorize each message and enforce expiry.

    At the handshake (``ws_accept``), the first present ``sources`` entry gives a
    :class:`Credential`, which ``verifier`` (sync or async) turns into a principal,
    or ``None``/``False`` to refuse. Outcomes:

    - no credential, a malformed or repeated one, refused, or already expired: denied, 401 ``"unauthorized"``;
    - a principal that ``allow(principal, websocket)`` refuses: denied, 403 ``"forbidden"``;
    - a callable that raises, times out (``timeout`` seconds, async callables) or returns
      garbage: :class:`AuthCallbackError`, so the toolkit denies with 500 and logs it once;
    - otherwise accepted, with ``scope["user"] = principal`` and ``scope["auth"] = AuthInfo(...)``,
      Starlette's convention, so ``websocket.user`` and ``websocket.auth`` work.

    Without the server's denial extension the client sees 403 for every denial.

    After the handshake, on every message: ``expires_at(principal)`` (epoch seconds or
    ``None``) is checked for inbound and outbound messages, and ``authorize(principal, data)``
    (sync or async) for inbound ones. An expired credential closes with 1008
    ``"unauthorized"``; a refused message does too, or with ``on_refused="error"`` is
    dropped and answered with ``{"type":"error","error":"forbidden"}``.

    An offered subprotocol carrying a token (:class:`Subprotocol` source) is never sent back as
    the accepted subprotocol: if the app picks it, the accept goes out without one.

    Hooks run ``tryfirst``. Sync callables run inline and cannot be timed out: keep them
    fast and free of I/O, or make them ``async``.
    """

    @overload
    def __init__(
        self,
        verifier: Callable[[Credential], Awaitable[P | None]],
        *,
        sources: Sequence[Source] = ...,
        timeout: float = ...,
        allow: Callable[[P, WebSocket], bool | Awaitable[bool]] | None = ...,
        authorize: Callable[[P, str | bytes], bool | Awaitable[bool]] | None = ...,
        on_refused: OnRefused = ...,
        expires_at: Callable[[P], float | None] | None = ...,
        scopes: Callable[[P], Iterable[str]] | None = ...,
    ) -> None: ...

    @overload
    def __init__(
        self,
        verifier: Callable[[Credential], P | None],
        *,
        sources: Sequence[Source] = ...,
        timeout: float = ...,
        allow: Callable[[P, WebSocket], bool | Awaitable[bool]] | None = ...,
        authorize: Callable[[P, str | bytes], bool | Awaitable[bool]] | None = ...,
        on_refused: OnRefused = ...,
        expires_at: Callable[[P], float | None] | None = ...,
        scopes: Callable[[P], Iterable[str]] | None = ...,
    ) -> None: ...

    def __init__(
        self,
        verifier: Callable[[Credential], Any],
        *,
        sources: Sequence[Source] = (Bearer(),),
        timeout: float = 5.0,
        allow: Callable[[P, WebSocket], bool | Awaitable[bool]] | None = None,
        authorize: Callable[[P, str | bytes], bool | Awaitable[bool]] | None = None,
        on_refused: OnRefused = "close",
        expires_at: Callable[[P], float | None] | None = None,
        scopes: Callable[[P], Iterable[str]] | None = None,
    ) -> None:
        if not callable(verifier):
            raise TypeError("verifier must be callable")
        sources = tuple(sources)
        if not sources:
            raise ValueError("sources is empty: no handshake could ever authenticate")
        for source in sources:
            candidate: object = source  # run-time check of untyped input
            if not isinstance(candidate, Source) or not isinstance(getattr(candidate, "kind", None), str):
                raise TypeError(f"{candidate!r} is not a credential source (Bearer, Cookie, Query, Subprotocol)")
        seconds: object = timeout  # run-time checks of untyped input from here on
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < math.inf:
            raise ValueError("timeout must be a positive, finite number of seconds")
        if on_refused not in ("close", "error"):
            raise ValueError("on_refused must be 'close' or 'error'")
        callables: tuple[tuple[str, object, bool], ...] = (
            ("allow", allow, True),
            ("authorize", authorize, True),
            ("expires_at", expires_at, False),
            ("scopes", scopes, False),
        )
        for name, function, may_be_async in callables:
            if function is not None and (not callable(function) or (not may_be_async and toolkit.is_async(function))):
                raise TypeError(f"{name} must be a {'' if may_be_async else 'plain (not async) '}callable")
        self.verifier = verifier
        #: The credential sources, in the order they are tried.
        self.sources: tuple[Source, ...] = sources
        self.timeout: float = float(timeout)
        self.allow = allow
        self.authorize = authorize
        self.on_refused: OnRefused = on_refused
        self.expires_at = expires_at
        self.scopes = scopes
        self._verifier_async = toolkit.is_async(verifier)
        self._allow_async = toolkit.is_async(allow)
        self._authorize_async = toolkit.is_async(authorize)
        if self._authorize_async:  # the hook must await it: this instance's ws_receive is async
            self.__dict__["ws_receive"] = types.MethodType(_receive_awaiting, self)
        self._token_subprotocols = tuple(source for source in sources if isinstance(source, Subprotocol))
        challenge = ((b"www-authenticate", b"Bearer"),) if any(isinstance(s, Bearer) for s in sources) else ()
        self._unauthorized = DenialResponse(401, "unauthorized", challenge)
        # On each authenticated connection, in its plugin state: its principal, removed by ws_close.
        # Per instance: two gates on one manager keep their principals apart.
        self._principal: Final = StateKey[P]("toolkit_auth.AuthGate")
        # An aggregate across connections: how many hold a principal of this gate.
        self._open = 0

    # --- for the app ---------------------------------------------------------------------------

    def credential_locations(self) -> CredentialLocations:
        """Where this gate's sources read credentials: the names a log filter must redact.

        ``toolkit_logging.RedactingFilter(subprotocol_prefixes=locations.subprotocol_prefixes, ...)``;
        docs/logging.md shows it whole.
        """
        return CredentialLocations.of(self.sources)

    def principal(self, websocket: WebSocket) -> P | None:
        """The principal of an open, authenticated connection (typed, unlike ``websocket.user``); else ``None``."""
        return websocket.plugin_state.get(self._principal)

    def offered_subprotocols(self, websocket: WebSocket) -> list[str]:
        """``websocket.subprotocols`` without those that carry a token: the ones to choose from; empty if none.

        Pick with ``offered[0] if offered else None``: a client may offer none.
        """
        return [entry for entry in websocket.subprotocols if not self._carries_token(entry)]

    @property
    def open_connections(self) -> int:
        """How many authenticated connections are open (their state is freed when they close)."""
        return self._open

    # --- hooks ---------------------------------------------------------------------------------

    @toolkit.hookimpl(tryfirst=True)
    async def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> AcceptResult:
        credential = self._find_credential(websocket)
        if credential is None:
            return self._unauthorized
        result = await self._call("verifier", self.verifier, self._verifier_async, credential)
        if result is None or result is False:
            logger.debug("denied: the verifier refused the %s credential", credential.source)
            return self._unauthorized
        if result is True:
            raise AuthCallbackError("the verifier returned True; return the principal, or None to refuse")
        principal = cast(P, result)
        if self._expired(principal):
            logger.debug("denied: the %s credential has expired", credential.source)
            return self._unauthorized
        if self.allow is not None and not await self._check(
            "allow", self.allow, self._allow_async, principal, websocket
        ):
            logger.debug("denied (403): allow refused the principal")
            return _FORBIDDEN
        granted = self._scopes(principal)
        websocket.scope["user"] = principal
        websocket.scope["auth"] = AuthInfo(credential.source, granted)
        state = websocket.plugin_state
        if self._principal not in state:
            self._open += 1
        state[self._principal] = principal
        if accept.subprotocol is not None and self._carries_token(accept.subprotocol):
            logger.debug("the app chose a subprotocol that carries a token; accepting without a subprotocol")
            return accept.replace(subprotocol=None)
        return None

    @toolkit.hookimpl(tryfirst=True)
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> ReceiveResult:
        # A plain def, so a chain of plain-def plugins stays on the toolkit's fast path. With an
        # async `authorize`, __init__ puts _receive_awaiting in its place, for this instance only.
        principal = websocket.plugin_state.get(self._principal)
        if principal is None or self._expired(principal):
            logger.debug("closing: the credential has expired (or the connection never authenticated)")
            return _UNAUTHORIZED_CLOSE
        if self.authorize is None or self._verdict(
            "authorize", _call_sync("authorize", self.authorize, principal, data)
        ):
            return None
        return self._refused()

    def _refused(self) -> Close | Reply:
        logger.debug("refused a message: authorize returned False")
        return _UNAUTHORIZED_CLOSE if self.on_refused == "close" else _FORBIDDEN_REPLY

    @toolkit.hookimpl(tryfirst=True)
    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> MessageResult:
        principal = websocket.plugin_state.get(self._principal)
        if principal is None or self._expired(principal):
            logger.debug("closing: the credential has expired (or the connection never authenticated)")
            return _UNAUTHORIZED_CLOSE
        return None

    def ws_close(self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None:
        if websocket.plugin_state.pop(self._principal, _ABSENT) is not _ABSENT:
            self._open -= 1

    # --- internals -----------------------------------------------------------------------------

    def _carries_token(self, subprotocol: str) -> bool:
        return any(source.carries(subprotocol) for source in self._token_subprotocols)

    def _find_credential(self, websocket: WebSocket) -> Credential | None:
        for source in self.sources:
            try:
                token = source.extract(websocket)
            except MalformedCredential:
                logger.debug("denied: malformed %s credential", source.kind)
                return None
            if token is not None:
                return Credential(token, source.kind)
        logger.debug("denied: no credential (looked in: %s)", ", ".join(source.kind for source in self.sources))
        return None

    async def _call(self, what: str, function: Callable[..., Any], is_async: bool, *args: object) -> object:
        """Call a user callable; any failure becomes :class:`AuthCallbackError`, never a yes."""
        if not is_async:
            return _call_sync(what, function, *args)
        deadline: anyio.CancelScope | None = None
        try:
            with anyio.fail_after(self.timeout) as deadline:
                result = await function(*args)
        except Exception as exc:
            if deadline is not None and deadline.cancelled_caught:
                raise AuthCallbackError(f"{what} did not finish within {self.timeout:g} s") from None
            raise AuthCallbackError(f"{what} raised") from exc
        return result

    async def _check(self, what: str, function: Callable[..., Any], is_async: bool, *args: object) -> bool:
        return self._verdict(what, await self._call(what, function, is_async, *args))

    @staticmethod
    def _verdict(what: str, result: object) -> bool:
        if isinstance(result, bool):
            return result
        raise AuthCallbackError(f"{what} returned a {type(result).__name__}, not a bool")

    def _expired(self, principal: P) -> bool:
        if self.expires_at is None:
            return False
        try:
            expiry = self.expires_at(principal)
        except Exception as exc:
            raise AuthCallbackError("expires_at raised") from exc
        value: object = expiry  # run-time check of a user callable's result
        if value is None:
            return False
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise AuthCallbackError(f"expires_at returned a {type(value).__name__}, not epoch seconds or None")
        return time.time() >= value

    def _scopes(self, principal: P) -> tuple[str, ...]:
        if self.scopes is None:
            return ()
        try:
            granted = tuple(self.scopes(principal))
        except Exception as exc:
            raise AuthCallbackError("scopes raised") from exc
        if not all(isinstance(scope, str) for scope in granted):
            raise AuthCallbackError("scopes must return strings")
        return granted

    def __repr__(self) -> str:
        return f"AuthGate(sources={list(self.sources)!r}, timeout={self.timeout:g})"


def _call_sync(what: str, function: Callable[..., Any], *args: object) -> object:
    """Call a plain-def user callable; any failure becomes :class:`AuthCallbackError`, never a yes."""
    try:
        result = function(*args)
    except Exception as exc:
        raise AuthCallbackError(f"{what} raised") from exc
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # never awaited, by design: close it so no warning fires
        raise AuthCallbackError(f"{what} returned an awaitable from a plain def; declare it async def")
    return result


# Not a method of AuthGate, so pluggy does not find it on the class: AuthGate.__init__ binds it
# as an instance's `ws_receive` when `authorize` is async. The marker gives it the same order.
@toolkit.hookimpl(tryfirst=True)
async def _receive_awaiting(self: AuthGate[Any], websocket: WebSocket, data: str | bytes) -> ReceiveResult:
    principal = websocket.plugin_state.get(self._principal)
    if principal is None or self._expired(principal):
        logger.debug("closing: the credential has expired (or the connection never authenticated)")
        return _UNAUTHORIZED_CLOSE
    assert self.authorize is not None  # noqa: S101 - only bound when there is one
    if await self._check("authorize", self.authorize, True, principal, data):
        return None
    return self._refused()
