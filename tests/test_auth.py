"""toolkit_auth: the Origin allow-list, credential sources, the verifier's failure modes, per-message checks.

Every test runs over the in-memory transport on asyncio and trio. Every token contains
:data:`MARK`; an autouse fixture captures every log record at DEBUG and fails the test if the
mark appears in one, and :func:`run` fails it if the mark appears in anything sent to the
client (denial bodies, close reasons, the accepted subprotocol).
"""

from __future__ import annotations

import hmac
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.lowlevel
import pytest
from starlette.authentication import has_required_scope
from starlette.websockets import WebSocket as StarletteWebSocket
from toolkit_auth import (
    FORBIDDEN_ERROR,
    AuthCallbackError,
    AuthGate,
    AuthInfo,
    Bearer,
    Cookie,
    Credential,
    MalformedCredential,
    OriginGate,
    Query,
    Source,
    StaticTokens,
    Subprotocol,
)

import toolkit
from tests.support import DENIAL_EXTENSION, Transport, connect, disconnect, make_scope, text
from toolkit import Accept, DenialResponse, Message, PluginManager, WebSocket, WebSocketApp, WebSocketDenied

pytestmark = pytest.mark.anyio

#: Every secret in this file contains it; it must never reach a log record or the client.
MARK: Final = "TOPSECRET"
ALICE_TOKEN: Final = f"alice-{MARK}-a1"
BOB_TOKEN: Final = f"bob-{MARK}-b2"
#: Bound on any one test that waits on a timeout.
BOUND: Final = 5.0


@dataclass(eq=False)
class User:
    name: str
    scopes: tuple[str, ...] = ()
    expires: float | None = None


ALICE: Final = User("alice", ("read", "write"))
BOB: Final = User("bob", ("read",))


def tokens() -> StaticTokens[User]:
    return StaticTokens({ALICE_TOKEN: ALICE, BOB_TOKEN: BOB})


@pytest.fixture(autouse=True)
def no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Capture every record at DEBUG for the whole test; none may contain a token, tracebacks included."""
    caplog.set_level(logging.DEBUG)
    yield caplog
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in caplog.records:
        assert MARK not in formatter.format(record), f"a token was logged: {record.name} {record.msg!r}"


# --- running a connection ------------------------------------------------------------------------


@dataclass
class Outcome:
    transport: Transport
    #: What the endpoint saw after accepting: "user", "auth", "received"; empty if accept() was refused.
    seen: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return bool(self.transport.sent) and self.transport.sent[0]["type"] == "websocket.accept"

    @property
    def status(self) -> int:
        """101 when accepted, the denial's status, or 403 for a close before accept (what a client sees)."""
        first = self.transport.sent[0]
        if first["type"] == "websocket.accept":
            return 101
        if first["type"] == "websocket.close":
            return 403
        assert first["type"] == "websocket.http.response.start"
        status: int = first["status"]
        return status

    @property
    def body(self) -> bytes:
        body: bytes = self.transport.sent[1]["body"]
        return body

    @property
    def denial_headers(self) -> dict[bytes, bytes]:
        return dict(self.transport.sent[0]["headers"])

    def after_accept(self) -> list[Message]:
        assert self.accepted
        return self.transport.sent[1:]


async def run(
    *plugins: object,
    headers: Iterable[tuple[bytes, bytes]] = (),
    query: bytes = b"",
    subprotocols: list[str] | None = None,
    extensions: dict[str, Any] | None = DENIAL_EXTENSION,
    messages: Sequence[str] = (),
    choose: Callable[[WebSocket], str | None] | None = None,
    endpoint: Callable[[WebSocket], Awaitable[None]] | None = None,
) -> Outcome:
    """One connection through ``WebSocketApp``: accept, echo text until the client leaves."""
    transport = Transport([connect(), *(text(m) for m in messages), disconnect(1000)])
    outcome = Outcome(transport)

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol=choose(websocket) if choose else None)
        outcome.seen.update(user=websocket.scope.get("user"), auth=websocket.scope.get("auth"))
        received = outcome.seen.setdefault("received", [])
        async for data in websocket.iter_text():
            received.append(data)
            await websocket.send_text(data)

    app = WebSocketApp(endpoint or echo, plugins=PluginManager(*plugins))
    scope = make_scope(
        query_string=query,
        headers=[(b"host", b"testserver"), *headers],
        subprotocols=subprotocols,
        extensions=dict(extensions) if extensions is not None else {},
    )
    # A denial must never escape to the server: the app returns normally.
    await app(scope, transport.receive, transport.send)
    assert MARK not in repr(transport.sent), "a token was sent back to the client"
    return outcome


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode())]


def origin(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"origin", value.encode("latin-1"))]


def failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def only_failure(caplog: pytest.LogCaptureFixture) -> AuthCallbackError:
    """The one plugin failure the toolkit logged; its exception (the cause) is the gate's AuthCallbackError."""
    [record] = failures(caplog)
    assert record.name == "toolkit"
    assert "AuthGate" in record.getMessage()
    assert record.exc_info is not None
    error = record.exc_info[1]
    assert isinstance(error, AuthCallbackError)
    return error


# --- OriginGate -------------------------------------------------------------------------------------

ALLOWED: Final = ["https://example.com", "https://*.example.org", "http://localhost:8000", "http://[::1]:8080"]


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        # exact origins: scheme, host and port must all match; the default port is implied
        ("https://example.com", True),
        ("https://example.com:443", True),
        ("https://EXAMPLE.com", True),
        ("HTTPS://Example.COM", True),
        ("http://example.com", False),
        ("https://example.com:8443", False),
        ("https://other.com", False),
        ("https://evilexample.com", False),
        ("https://example.com.evil.com", False),
        ("https://sub.example.com", False),
        ("http://localhost:8000", True),
        ("http://localhost", False),
        ("http://127.0.0.1:8000", False),
        ("http://[::1]:8080", True),
        ("http://[0:0:0:0:0:0:0:1]:8080", True),
        ("http://[::2]:8080", False),
        # subdomain pattern: any depth, not the bare domain, not a lookalike
        ("https://a.example.org", True),
        ("https://A.B.c.example.org", True),
        ("https://a.example.org:443", True),
        ("https://example.org", False),
        ("https://evilexample.org", False),
        ("https://a.evilexample.org", False),
        ("https://example.org.evil.com", False),
        ("http://a.example.org", False),
        ("https://a.example.org:444", False),
        ("https://*.example.org", False),
        # "null" only when listed
        ("null", False),
        ("NULL", False),
        # empty, malformed, garbage
        ("", False),
        (" ", False),
        (" https://example.com", False),
        ("example.com", False),
        ("https://", False),
        ("://example.com", False),
        ("https:/example.com", False),
        ("https://example.com/", False),
        ("https://example.com/path", False),
        ("https://example.com?q=1", False),
        ("https://example.com#f", False),
        ("https://user@example.com", False),
        ("https://user:pw@example.com", False),
        ("https://example.com@evil.com", False),
        ("https://example.com:", False),
        ("https://example.com:0", False),
        ("https://example.com:0443", False),
        ("https://example.com:65536", False),
        ("https://example.com:-1", False),
        ("https://example.com.", False),
        ("https://example..com", False),
        ("https://-example.com", False),
        ("https://exa_mple.com", False),
        ("https://example.com, https://evil.com", False),
        ("https://example.com https://evil.com", False),
        ("https://ex\xe4mple.com", False),
        ("https://example.com\x00", False),
        ("https://example.com\x1b[31m", False),
        ("ws://example.com", False),
        ("wss://example.com", False),
        ("file://", False),
        ("javascript:alert(1)", False),
        ("chrome-extension://abcdef", False),
        ("https://[::1", False),
        ("https://[zz::1]", False),
        ("https://" + "a" * 300 + ".com", False),
    ],
)
async def test_origin_matrix(value: str, allowed: bool) -> None:
    outcome = await run(OriginGate(ALLOWED), headers=origin(value))
    if allowed:
        assert outcome.accepted
    else:
        assert (outcome.status, outcome.body) == (403, b"forbidden origin")
        assert outcome.seen == {}  # the endpoint never got past accept()


async def test_origin_null_only_when_listed() -> None:
    assert (await run(OriginGate(["null"]), headers=origin("null"))).accepted
    assert (await run(OriginGate(["https://example.com", "null"]), headers=origin("null"))).accepted
    assert (await run(OriginGate(["null"]), headers=origin("https://example.com"))).status == 403


async def test_origin_missing_is_denied_unless_allowed() -> None:
    assert (await run(OriginGate(ALLOWED))).status == 403
    assert (await run(OriginGate(ALLOWED, allow_missing=True))).accepted
    # allow_missing is about a missing header only: an empty or bad one is still denied.
    assert (await run(OriginGate(ALLOWED, allow_missing=True), headers=origin(""))).status == 403
    assert (await run(OriginGate(ALLOWED, allow_missing=True), headers=origin("https://evil.com"))).status == 403


@pytest.mark.parametrize(
    "values",
    [
        ["https://example.com", "https://example.com"],
        ["https://example.com", "https://evil.com"],
        ["https://evil.com", "https://example.com"],
    ],
)
async def test_origin_repeated_header_is_denied(values: list[str]) -> None:
    headers = [(b"origin", v.encode()) for v in values]
    outcome = await run(OriginGate(ALLOWED, allow_missing=True), headers=headers)
    assert (outcome.status, outcome.body) == (403, b"forbidden origin")


async def test_origin_header_name_is_case_insensitive() -> None:
    assert (await run(OriginGate(ALLOWED), headers=[(b"Origin", b"https://example.com")])).accepted


async def test_origin_denied_without_the_denial_extension_is_a_close() -> None:
    outcome = await run(OriginGate(ALLOWED), headers=origin("https://evil.com"), extensions=None)
    assert outcome.transport.sent == [{"type": "websocket.close", "code": 1000, "reason": ""}]


async def test_origin_refused_value_is_logged_escaped(no_secret_in_logs: pytest.LogCaptureFixture) -> None:
    await run(OriginGate(ALLOWED), headers=origin("https://evil.com\x1b[2J"))
    [record] = [r for r in no_secret_in_logs.records if r.name == "toolkit_auth"]
    assert record.levelno == logging.DEBUG
    message = record.getMessage()
    assert "\x1b" not in message  # escaped by %r: no terminal control sequence reaches the log
    assert "evil.com" in message


@pytest.mark.parametrize(
    "entry",
    [
        "",
        "*",
        "example.com",
        "https://",
        "ftp://example.com",
        "ws://example.com",
        "https://example.com/",
        "https://example.com/app",
        "https://user@example.com",
        "https://example.com:99999",
        "https://example.com:0",
        "https://*",
        "https://*.com",
        "https://*.*.example.com",
        "https://a.*.example.com",
        "https://*example.com",
        "https://*.1.2.3.4",
        "https://*.[::1]",
        "https://ex\xe4mple.com",
        "https://example.com ",
        "Null",
    ],
)
def test_origin_gate_refuses_bad_entries(entry: str) -> None:
    with pytest.raises(ValueError, match="invalid allowed origin"):
        OriginGate(["https://ok.example", entry])


def test_origin_gate_refuses_a_string_an_empty_list_and_non_strings() -> None:
    with pytest.raises(TypeError, match="not a single string"):
        OriginGate("https://example.com")
    with pytest.raises(ValueError, match="empty"):
        OriginGate([])
    with pytest.raises(TypeError, match="must be strings"):
        OriginGate([b"https://example.com"])  # type: ignore[list-item]


def test_origin_gate_normalises_entries() -> None:
    gate = OriginGate(["HTTPS://Example.com:443", "http://*.LOCALHOST", "http://[0::1]"])
    assert gate.exact == {("https", "example.com", 443), ("http", "[::1]", 80)}
    assert gate.patterns == {("http", "localhost", 80)}
    assert gate.is_allowed(["https://example.com"])
    assert gate.is_allowed(["http://app.localhost"])
    assert not gate.is_allowed(["http://localhost"])


# --- credential sources -------------------------------------------------------------------------


async def test_bearer_header_authenticates() -> None:
    outcome = await run(AuthGate(tokens()), headers=bearer(ALICE_TOKEN), messages=["hi"])
    assert outcome.seen["user"] is ALICE
    assert outcome.seen["auth"] == AuthInfo("bearer", ())
    assert outcome.seen["received"] == ["hi"]


@pytest.mark.parametrize(
    "value",
    [f"bearer {ALICE_TOKEN}", f"BEARER {ALICE_TOKEN}", f"Bearer   {ALICE_TOKEN}", f"Bearer {ALICE_TOKEN} "],
)
async def test_bearer_scheme_is_case_insensitive_and_spaces_tolerated(value: str) -> None:
    outcome = await run(AuthGate(tokens()), headers=[(b"authorization", value.encode())])
    assert outcome.seen["user"] is ALICE


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"authorization", b"Basic YWxhZGRpbjpvcGVuc2VzYW1l")],
        [(b"authorization", b"Bearer")],
        [(b"authorization", b"Bearer ")],
        [(b"authorization", f"Bearer {ALICE_TOKEN} extra".encode())],
        [(b"authorization", b"Bearer \xff\xfe")],
        [(b"authorization", f"Bearer {ALICE_TOKEN}".encode()), (b"authorization", f"Bearer {BOB_TOKEN}".encode())],
        [(b"authorization", f"Bearer {ALICE_TOKEN}".encode()), (b"authorization", b"Basic YWxh")],
        [(b"authorization", f"Bearer {ALICE_TOKEN}x".encode())],
        [(b"x-authorization", f"Bearer {ALICE_TOKEN}".encode())],
    ],
)
async def test_bearer_missing_malformed_repeated_or_wrong_is_401(headers: list[tuple[bytes, bytes]]) -> None:
    outcome = await run(AuthGate(tokens()), headers=headers)
    assert (outcome.status, outcome.body) == (401, b"unauthorized")
    assert outcome.denial_headers[b"www-authenticate"] == b"Bearer"
    assert outcome.seen == {}


async def test_cookie_authenticates() -> None:
    cookie = f"theme=dark; session={BOB_TOKEN}; other=1".encode()
    outcome = await run(AuthGate(tokens(), sources=[Cookie("session")]), headers=[(b"cookie", cookie)])
    assert outcome.seen["user"] is BOB
    assert outcome.seen["auth"] == AuthInfo("cookie", ())


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"cookie", b"theme=dark")],
        [(b"cookie", b"session=")],
        [(b"cookie", f"session={ALICE_TOKEN}; session={BOB_TOKEN}".encode())],
        # A sibling subdomain can toss a second cookie of the same name: never pick one of two.
        [(b"cookie", f"session={ALICE_TOKEN}".encode()), (b"cookie", f"session={ALICE_TOKEN}".encode())],
        [(b"cookie", f"Session={ALICE_TOKEN}".encode())],
    ],
)
async def test_cookie_missing_empty_or_repeated_is_401(headers: list[tuple[bytes, bytes]]) -> None:
    outcome = await run(AuthGate(tokens(), sources=[Cookie("session")]), headers=headers)
    assert (outcome.status, outcome.body) == (401, b"unauthorized")
    assert b"www-authenticate" not in outcome.denial_headers  # no Bearer source, no Bearer challenge


async def test_query_parameter_authenticates() -> None:
    outcome = await run(AuthGate(tokens(), sources=[Query("token")]), query=f"a=1&token={ALICE_TOKEN}".encode())
    assert outcome.seen["user"] is ALICE
    assert outcome.seen["auth"] == AuthInfo("query", ())


@pytest.mark.parametrize(
    "query", [b"", b"tok=x", b"token=", f"token={ALICE_TOKEN}&token={BOB_TOKEN}".encode(), b"token=nope"]
)
async def test_query_missing_empty_repeated_or_wrong_is_401(query: bytes) -> None:
    outcome = await run(AuthGate(tokens(), sources=[Query("token")]), query=query)
    assert (outcome.status, outcome.body) == (401, b"unauthorized")


async def test_subprotocol_authenticates_and_the_app_picks_a_real_one() -> None:
    gate = AuthGate(tokens(), sources=[Subprotocol("bearer.")])
    offered = ["chat.v1", f"bearer.{ALICE_TOKEN}", "chat.v2"]
    outcome = await run(gate, subprotocols=offered, choose=lambda ws: gate.offered_subprotocols(ws)[0])
    assert outcome.seen["user"] is ALICE
    assert outcome.seen["auth"] == AuthInfo("subprotocol", ())
    assert outcome.transport.sent[0] == {"type": "websocket.accept", "subprotocol": "chat.v1", "headers": []}


@pytest.mark.parametrize("pick", [1, -1])
async def test_subprotocol_token_is_never_echoed_even_when_the_app_picks_it(pick: int) -> None:
    gate = AuthGate(tokens(), sources=[Subprotocol("bearer.")])
    # The app naively picks an offered entry: the token one. Also one with the prefix that is not the credential.
    offered = ["chat.v1", f"bearer.{ALICE_TOKEN}", f"bearer.{MARK}-decoy"] if pick == -1 else None
    outcome = await run(
        gate,
        subprotocols=offered or ["chat.v1", f"bearer.{ALICE_TOKEN}"],
        choose=lambda ws: ws.scope["subprotocols"][pick],
    )
    if pick == -1:
        # Two entries carry the prefix: ambiguous, denied before anything is echoed.
        assert (outcome.status, outcome.body) == (401, b"unauthorized")
        return
    assert outcome.seen["user"] is ALICE
    assert outcome.transport.sent[0] == {"type": "websocket.accept", "subprotocol": None, "headers": []}


async def test_subprotocol_token_not_echoed_when_another_source_authenticated() -> None:
    gate = AuthGate(tokens(), sources=[Bearer(), Subprotocol("bearer.")])
    outcome = await run(
        gate,
        headers=bearer(BOB_TOKEN),
        subprotocols=[f"bearer.{ALICE_TOKEN}"],
        choose=lambda ws: ws.scope["subprotocols"][0],
    )
    assert outcome.seen["user"] is BOB
    assert outcome.transport.sent[0]["subprotocol"] is None


async def test_a_later_plugin_sees_the_scrubbed_accept() -> None:
    seen: list[Accept] = []

    class Observer(toolkit.Plugin):
        def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> None:
            seen.append(accept)

    gate = AuthGate(tokens(), sources=[Subprotocol("bearer.")])
    await run(Observer(), gate, subprotocols=[f"bearer.{ALICE_TOKEN}"], choose=lambda ws: ws.scope["subprotocols"][0])
    assert [a.subprotocol for a in seen] == [None]


@pytest.mark.parametrize(
    "offered",
    [
        [],
        ["chat.v1"],
        ["bearer."],
        ["bearer.nope"],
        [f"bearer.{ALICE_TOKEN}", f"bearer.{ALICE_TOKEN}"],
        [f"bearer.{ALICE_TOKEN}/x="],
        [f"Bearer.{ALICE_TOKEN}"],
    ],
)
async def test_subprotocol_missing_empty_repeated_or_wrong_is_401(offered: list[str]) -> None:
    outcome = await run(AuthGate(tokens(), sources=[Subprotocol("bearer.")]), subprotocols=offered)
    assert (outcome.status, outcome.body) == (401, b"unauthorized")


async def test_offered_subprotocols_leaves_out_token_entries_and_garbage() -> None:
    gate = AuthGate(tokens(), sources=[Subprotocol("bearer."), Subprotocol("key.")])
    websocket = WebSocket(make_scope(subprotocols=["a", f"bearer.{ALICE_TOKEN}", "b", "key.x"]))
    assert gate.offered_subprotocols(websocket) == ["a", "b"]
    websocket.scope["subprotocols"] = ["a", 7, None]
    assert gate.offered_subprotocols(websocket) == ["a"]


async def test_first_present_source_wins() -> None:
    sources = [Bearer(), Cookie("session"), Query("token")]
    both = await run(
        AuthGate(tokens(), sources=sources),
        headers=[*bearer(ALICE_TOKEN), (b"cookie", f"session={BOB_TOKEN}".encode())],
    )
    assert (both.seen["user"], both.seen["auth"].source) == (ALICE, "bearer")
    cookie_only = await run(
        AuthGate(tokens(), sources=sources),
        headers=[(b"cookie", f"session={BOB_TOKEN}".encode())],
        query=f"token={ALICE_TOKEN}".encode(),
    )
    assert (cookie_only.seen["user"], cookie_only.seen["auth"].source) == (BOB, "cookie")


async def test_a_present_but_wrong_credential_does_not_fall_back_to_the_next_source() -> None:
    sources = [Bearer(), Cookie("session")]
    cookie = (b"cookie", f"session={BOB_TOKEN}".encode())
    refused = await run(AuthGate(tokens(), sources=sources), headers=[*bearer("wrong-token"), cookie])
    assert refused.status == 401
    malformed = await run(AuthGate(tokens(), sources=sources), headers=[(b"authorization", b"Bearer "), cookie])
    assert malformed.status == 401


async def test_custom_source() -> None:
    class ApiKey(Source):
        kind = "api-key"

        def extract(self, websocket: WebSocket) -> str | None:
            value = websocket.headers.get("x-api-key")
            if value == "":
                raise MalformedCredential("empty")
            return value

    gate = AuthGate(tokens(), sources=[ApiKey()])
    outcome = await run(gate, headers=[(b"x-api-key", ALICE_TOKEN.encode())])
    assert outcome.seen["auth"] == AuthInfo("api-key", ())
    assert (await run(gate, headers=[(b"x-api-key", b"")])).status == 401


def test_source_constructors_refuse_bad_names() -> None:
    for name in ("", "a b", "a;b", "a=b", "é"):
        with pytest.raises(ValueError, match="cookie name"):
            Cookie(name)
    with pytest.raises(ValueError, match="query parameter"):
        Query("")
    for prefix in ("", "bearer ", "a,b", "bé."):
        with pytest.raises(ValueError, match="subprotocol prefix"):
            Subprotocol(prefix)


# --- the verifier -------------------------------------------------------------------------------


async def test_async_verifier_receives_the_credential() -> None:
    got: list[Credential] = []

    async def verify(credential: Credential) -> User | None:
        got.append(credential)
        await anyio.lowlevel.checkpoint()
        return ALICE if credential.token == ALICE_TOKEN else None

    outcome = await run(AuthGate(verify), headers=bearer(ALICE_TOKEN))
    assert outcome.seen["user"] is ALICE
    assert got == [Credential(ALICE_TOKEN, "bearer")]
    assert (await run(AuthGate(verify), headers=bearer(BOB_TOKEN))).status == 401


async def test_async_callable_object_is_awaited() -> None:
    class Verifier:
        async def __call__(self, credential: Credential) -> User | None:
            return BOB

    outcome = await run(AuthGate(Verifier()), headers=bearer(BOB_TOKEN))
    assert outcome.seen["user"] is BOB


@pytest.mark.parametrize("refusal", [None, False])
async def test_verifier_refusing_is_401_and_nothing_is_logged_as_an_error(
    refusal: bool | None, no_secret_in_logs: pytest.LogCaptureFixture
) -> None:
    def verify(credential: Credential) -> Any:
        return refusal

    outcome = await run(AuthGate(verify), headers=bearer(ALICE_TOKEN))
    assert (outcome.status, outcome.body) == (401, b"unauthorized")
    assert failures(no_secret_in_logs) == []


async def test_falsy_principal_is_still_a_principal() -> None:
    outcome = await run(AuthGate(lambda credential: 0), headers=bearer(ALICE_TOKEN))
    assert outcome.seen["user"] == 0


def _raises(credential: Credential) -> User | None:
    # The credential's repr leaves the token out, so this message is safe to log.
    raise LookupError(f"auth service unreachable for {credential!r}")


async def _raises_async(credential: Credential) -> User | None:
    await anyio.lowlevel.checkpoint()
    raise ConnectionError("auth service unreachable")


async def _hangs(credential: Credential) -> User | None:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


async def _raises_its_own_timeout(credential: Credential) -> User | None:
    raise TimeoutError("the auth service's HTTP client timed out")


def _returns_true(credential: Credential) -> Any:
    return True


def _returns_coroutine(credential: Credential) -> Any:
    return _hangs(credential)  # a plain def returning an awaitable: closed, never awaited


@pytest.mark.parametrize(
    ("verifier", "problem"),
    [
        (_raises, "verifier raised"),
        (_raises_async, "verifier raised"),
        (_hangs, "verifier did not finish within 0.05 s"),
        (_raises_its_own_timeout, "verifier raised"),
        (_returns_true, "the verifier returned True"),
        (_returns_coroutine, "verifier returned an awaitable from a plain def"),
    ],
)
async def test_verifier_failures_fail_closed_with_500_logged_once(
    verifier: Callable[[Credential], Any], problem: str, no_secret_in_logs: pytest.LogCaptureFixture
) -> None:
    with anyio.fail_after(BOUND):
        outcome = await run(AuthGate(verifier, timeout=0.05), headers=bearer(ALICE_TOKEN))
    assert (outcome.status, outcome.body) == (500, b"Internal Server Error")
    assert outcome.seen == {}
    assert str(only_failure(no_secret_in_logs)).startswith(problem)


async def test_verifier_failure_without_the_extension_is_a_close() -> None:
    outcome = await run(AuthGate(_raises), headers=bearer(ALICE_TOKEN), extensions=None)
    assert outcome.transport.sent == [{"type": "websocket.close", "code": 1000, "reason": ""}]


async def test_denial_raises_websocket_denied_for_a_bare_websocket() -> None:
    transport = Transport([connect()])
    websocket = WebSocket(make_scope(extensions=dict(DENIAL_EXTENSION)), transport.receive, transport.send,
                          plugins=PluginManager(AuthGate(tokens())))  # fmt: skip
    with pytest.raises(WebSocketDenied) as info:
        await websocket.accept()
    assert info.value.status == 401
    transport = Transport([connect()])
    websocket = WebSocket(make_scope(), transport.receive, transport.send, plugins=PluginManager(AuthGate(tokens())))
    with pytest.raises(WebSocketDenied) as info:
        await websocket.accept()
    assert info.value.status == 403  # no extension: the client saw a close before accept


async def test_verifier_cancelled_from_outside_is_not_swallowed(no_secret_in_logs: pytest.LogCaptureFixture) -> None:
    started = anyio.Event()
    cancelled: list[bool] = []

    async def verify(credential: Credential) -> User | None:
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append(True)
            raise
        return None

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()

    gate = AuthGate(verify, timeout=60)
    transport = Transport([connect()])
    app = WebSocketApp(endpoint, plugins=PluginManager(gate))
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as group:
            group.start_soon(app, make_scope(headers=bearer(ALICE_TOKEN)), transport.receive, transport.send)
            await started.wait()
            group.cancel_scope.cancel()
    assert cancelled == [True]
    assert transport.sent == []  # neither accepted nor denied: nothing can be sent while cancelled
    assert failures(no_secret_in_logs) == []  # cancellation is not a plugin failure
    assert gate.open_connections == 0


# --- constant-time static tokens -------------------------------------------------------------------


def test_static_tokens_compare_every_entry_with_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    verifier = StaticTokens({ALICE_TOKEN: ALICE, BOB_TOKEN: BOB, f"carol-{MARK}": User("carol")})
    for token, expected in [(ALICE_TOKEN, ALICE), (BOB_TOKEN, BOB), ("nobody", None), ("", None)]:
        calls.clear()
        assert verifier(Credential(token, "bearer")) is expected
        # Every entry compared, whichever matched (the first one included): no early exit.
        assert len(calls) == 3
        # Fixed-length digests, not the tokens: neither a token nor its length is compared directly.
        assert {len(a) for a, _ in calls} == {len(b) for _, b in calls} == {32}
        assert len({b for _, b in calls}) == 3


def test_static_tokens_hides_tokens_and_refuses_bad_entries() -> None:
    verifier = tokens()
    assert MARK not in repr(verifier)
    assert len(verifier) == 2
    assert verifier(Credential("bob-" + MARK, "bearer")) is None  # a prefix is not a match
    assert verifier(Credential("é☃", "bearer")) is None  # non-ASCII input does not raise
    with pytest.raises(ValueError, match="non-empty"):
        StaticTokens({"": ALICE})
    with pytest.raises(ValueError, match="None or a bool"):
        StaticTokens({"t": None})
    with pytest.raises(ValueError, match="None or a bool"):
        StaticTokens({"t": True})


def test_credential_repr_and_str_leave_the_token_out() -> None:
    credential = Credential(ALICE_TOKEN, "bearer")
    assert MARK not in repr(credential)
    assert MARK not in str(credential)
    assert "bearer" in repr(credential)
    assert credential.token == ALICE_TOKEN


# --- the principal in the scope ------------------------------------------------------------------


async def test_principal_visible_as_user_and_auth_to_toolkit_and_starlette() -> None:
    gate = AuthGate(tokens(), scopes=lambda user: user.scopes)
    views: dict[str, Any] = {}

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        starlette_view = StarletteWebSocket(websocket.scope, websocket.receive, websocket.send)
        views.update(
            user=websocket.user,
            auth=websocket.auth,
            typed=gate.principal(websocket),
            starlette_user=starlette_view.user,
            starlette_auth=starlette_view.auth,
            can_write=has_required_scope(starlette_view, ["write"]),
            can_admin=has_required_scope(starlette_view, ["admin"]),
        )

    await run(gate, headers=bearer(ALICE_TOKEN), endpoint=endpoint)
    assert views == {
        "user": ALICE,
        "auth": AuthInfo("bearer", ("read", "write")),
        "typed": ALICE,
        "starlette_user": ALICE,
        "starlette_auth": AuthInfo("bearer", ("read", "write")),
        "can_write": True,
        "can_admin": False,
    }
    assert MARK not in repr(views["auth"])


async def test_scopes_returning_garbage_fails_closed(no_secret_in_logs: pytest.LogCaptureFixture) -> None:
    def scopes(user: User) -> Any:
        return [1, 2]

    gate = AuthGate(tokens(), scopes=scopes)
    outcome = await run(gate, headers=bearer(ALICE_TOKEN))
    assert outcome.status == 500
    assert str(only_failure(no_secret_in_logs)) == "scopes must return strings"


# --- connect-time authorization: 403 ---------------------------------------------------------------


async def test_allow_refusing_a_valid_principal_is_403() -> None:
    def writers_only(user: User, websocket: WebSocket) -> bool:
        return "write" in user.scopes

    allowed = await run(AuthGate(tokens(), allow=writers_only), headers=bearer(ALICE_TOKEN))
    assert allowed.seen["user"] is ALICE
    refused = await run(AuthGate(tokens(), allow=writers_only), headers=bearer(BOB_TOKEN))
    assert (refused.status, refused.body) == (403, b"forbidden")


async def test_allow_async_sees_the_websocket() -> None:
    async def only_path(user: User, websocket: WebSocket) -> bool:
        await anyio.lowlevel.checkpoint()
        return websocket.url.path == "/ws"

    assert (await run(AuthGate(tokens(), allow=only_path), headers=bearer(BOB_TOKEN))).accepted


async def _allow_hangs(user: User, websocket: WebSocket) -> bool:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("allow", "problem"),
    [
        (lambda user, websocket: 1, "allow returned a int, not a bool"),
        (lambda user, websocket: None, "allow returned a NoneType, not a bool"),
        (_allow_hangs, "allow did not finish"),
    ],
)
async def test_allow_failing_is_500(
    allow: Callable[[User, WebSocket], Any], problem: str, no_secret_in_logs: pytest.LogCaptureFixture
) -> None:
    with anyio.fail_after(BOUND):
        outcome = await run(AuthGate(tokens(), allow=allow, timeout=0.05), headers=bearer(ALICE_TOKEN))
    assert outcome.status == 500
    assert str(only_failure(no_secret_in_logs)).startswith(problem)


# --- per-message authorization ---------------------------------------------------------------------


def no_forbidden(user: User, data: str | bytes) -> bool:
    return data != "forbidden"


async def test_refused_message_closes_with_1008() -> None:
    gate = AuthGate(tokens(), authorize=no_forbidden)
    outcome = await run(gate, headers=bearer(ALICE_TOKEN), messages=["ok", "forbidden", "after"])
    assert outcome.seen["received"] == ["ok"]  # neither the refused message nor anything after it
    assert outcome.after_accept() == [
        {"type": "websocket.send", "text": "ok"},
        {"type": "websocket.close", "code": 1008, "reason": "unauthorized"},
    ]
    assert gate.open_connections == 0


async def test_refused_message_answered_with_an_error_and_dropped() -> None:
    seen: list[tuple[str, str | bytes]] = []

    async def authorize(user: User, data: str | bytes) -> bool:
        seen.append((user.name, data))
        await anyio.lowlevel.checkpoint()
        return data != "forbidden"

    gate = AuthGate(tokens(), authorize=authorize, on_refused="error")
    outcome = await run(gate, headers=bearer(BOB_TOKEN), messages=["ok", "forbidden", "after"])
    assert outcome.seen["received"] == ["ok", "after"]
    assert outcome.after_accept() == [
        {"type": "websocket.send", "text": "ok"},
        {"type": "websocket.send", "text": FORBIDDEN_ERROR},
        {"type": "websocket.send", "text": "after"},
    ]  # then the client left: nothing more is sent
    assert FORBIDDEN_ERROR == '{"type":"error","error":"forbidden"}'
    assert seen == [("bob", "ok"), ("bob", "forbidden"), ("bob", "after")]


async def test_refused_message_when_the_client_already_left(no_secret_in_logs: pytest.LogCaptureFixture) -> None:
    class Vanishing(Transport):
        async def send(self, message: Message) -> None:
            if message.get("text") == FORBIDDEN_ERROR:
                raise OSError("client gone")  # ASGI 2.4: a send on a closed connection
            await super().send(message)

    transport = Vanishing([connect(), text("forbidden"), text("never")])
    disconnects: list[int] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        message = await websocket.receive()
        disconnects.append(message["code"])

    gate = AuthGate(tokens(), authorize=no_forbidden, on_refused="error")
    app = WebSocketApp(endpoint, plugins=PluginManager(gate))
    await app(make_scope(headers=bearer(ALICE_TOKEN)), transport.receive, transport.send)
    assert disconnects == [1006]
    assert failures(no_secret_in_logs) == []  # a client leaving is not a plugin failure
    assert gate.open_connections == 0


async def _authorize_async(user: User, data: str | bytes) -> bool:
    return True


@pytest.mark.parametrize(
    ("authorize", "sync"), [(None, True), (no_forbidden, True), (_authorize_async, False)], ids=["none", "def", "async"]
)
def test_the_receive_hook_awaits_only_for_an_async_authorize(
    authorize: Callable[[User, str | bytes], Any] | None, sync: bool
) -> None:
    # A plain-def hook keeps the whole ws_receive chain on the toolkit's fast path.
    class Later(toolkit.Plugin):
        def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> None: ...

    gate = AuthGate(tokens(), authorize=authorize)
    manager = PluginManager()
    manager.register(gate, name="gate")
    manager.register(Later(), name="later")
    chain = manager.chains.get("ws_receive")
    assert chain is not None
    assert (chain.run_sync is not None) is sync
    assert [impl.plugin_name for impl in chain.impls] == ["gate", "later"]  # tryfirst, either way
    other = AuthGate(tokens())  # the async variant belongs to one instance only
    assert PluginManager(other).chains.get("ws_receive") is not None
    assert PluginManager(other).chains.get("ws_receive").run_sync is not None  # type: ignore[union-attr]


async def _authorize_hangs(user: User, data: str | bytes) -> bool:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


def _authorize_raises(user: User, data: str | bytes) -> bool:
    raise PermissionError("policy engine down")


@pytest.mark.parametrize(
    ("authorize", "problem"),
    [
        (_authorize_hangs, "authorize did not finish"),
        (_authorize_raises, "authorize raised"),
        (lambda user, data: "yes", "authorize returned a str, not a bool"),
    ],
)
async def test_authorize_failing_closes_with_1011(
    authorize: Callable[[User, str | bytes], Any], problem: str, no_secret_in_logs: pytest.LogCaptureFixture
) -> None:
    gate = AuthGate(tokens(), authorize=authorize, timeout=0.05)
    with anyio.fail_after(BOUND):
        outcome = await run(gate, headers=bearer(ALICE_TOKEN), messages=["hello", "more"])
    assert outcome.seen["received"] == []
    assert outcome.after_accept() == [{"type": "websocket.close", "code": 1011, "reason": "internal error"}]
    assert str(only_failure(no_secret_in_logs)).startswith(problem)
    assert gate.open_connections == 0


# --- expiry ---------------------------------------------------------------------------------------


def expiring_gate(user: User, **options: Any) -> AuthGate[User]:
    return AuthGate(StaticTokens({ALICE_TOKEN: user}), expires_at=lambda u: u.expires, **options)


async def test_expiry_checked_on_inbound_messages() -> None:
    user = User("carol", expires=time.time() + 3600)

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        assert await websocket.receive_text() == "one"
        user.expires = time.time() - 1  # the credential expires while the connection is open
        message = await websocket.receive()
        assert message == {"type": "websocket.disconnect", "code": 1008, "reason": "unauthorized"}

    gate = expiring_gate(user)
    outcome = await run(gate, headers=bearer(ALICE_TOKEN), messages=["one", "two"], endpoint=endpoint)
    assert outcome.after_accept() == [{"type": "websocket.close", "code": 1008, "reason": "unauthorized"}]
    assert gate.open_connections == 0


async def test_expiry_checked_on_outbound_messages() -> None:
    user = User("carol", expires=time.time() + 3600)
    raised: list[tuple[int, str]] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("before")
        user.expires = time.time() - 1
        try:
            await websocket.send_text("after")
        except toolkit.WebSocketDisconnect as exc:
            raised.append((exc.code, exc.reason))
            raise

    outcome = await run(expiring_gate(user), headers=bearer(ALICE_TOKEN), endpoint=endpoint)
    assert raised == [(1008, "unauthorized")]
    assert outcome.after_accept() == [
        {"type": "websocket.send", "text": "before"},
        {"type": "websocket.close", "code": 1008, "reason": "unauthorized"},
    ]


async def test_expired_at_the_handshake_is_401() -> None:
    outcome = await run(expiring_gate(User("carol", expires=time.time() - 1)), headers=bearer(ALICE_TOKEN))
    assert (outcome.status, outcome.body) == (401, b"unauthorized")


async def test_no_expiry_never_expires() -> None:
    outcome = await run(expiring_gate(User("carol", expires=None)), headers=bearer(ALICE_TOKEN), messages=["a", "b"])
    assert outcome.seen["received"] == ["a", "b"]


@pytest.mark.parametrize("garbage", ["soon", True, math.nan])
async def test_expires_at_returning_garbage_fails_closed(
    garbage: object, no_secret_in_logs: pytest.LogCaptureFixture
) -> None:
    gate: AuthGate[User] = AuthGate(tokens(), expires_at=lambda user: garbage)  # type: ignore[arg-type,return-value]
    outcome = await run(gate, headers=bearer(ALICE_TOKEN))
    assert outcome.status == 500
    assert "expires_at returned" in str(only_failure(no_secret_in_logs))


# --- per-connection state ---------------------------------------------------------------------------


async def test_state_is_per_connection_and_freed_on_close() -> None:
    gate = AuthGate(tokens())
    manager = PluginManager(gate)
    first, second = Transport([connect(), disconnect(1000)]), Transport([connect()])
    alice = WebSocket(make_scope(headers=bearer(ALICE_TOKEN)), first.receive, first.send, plugins=manager)
    bob = WebSocket(make_scope(headers=bearer(BOB_TOKEN)), second.receive, second.send, plugins=manager)
    await alice.accept()
    await bob.accept()
    assert (gate.principal(alice), gate.principal(bob), gate.open_connections) == (ALICE, BOB, 2)
    assert (await alice.receive())["type"] == "websocket.disconnect"  # alice's client leaves
    assert (gate.principal(alice), gate.principal(bob), gate.open_connections) == (None, BOB, 1)
    await bob.close()
    assert (gate.principal(bob), gate.open_connections) == (None, 0)


class DenyAfterAuth(toolkit.Plugin):
    """Runs after the gate (which is tryfirst) and denies: the gate's state must not outlive the denial."""

    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> DenialResponse:
        assert websocket.scope["user"] is ALICE
        return DenialResponse(429, "rate limit")


async def _endpoint_raises(websocket: WebSocket) -> None:
    await websocket.accept()
    raise RuntimeError("app bug")


@pytest.mark.parametrize("ending", ["client", "app-error", "plugin-close", "later-denial", "refused"])
async def test_state_freed_however_the_connection_ends(ending: str) -> None:
    gate = AuthGate(tokens(), authorize=no_forbidden)
    plugins: list[object] = [gate]
    messages: list[str] = ["x"]
    endpoint = None
    headers = bearer(ALICE_TOKEN)
    if ending == "plugin-close":
        messages = ["forbidden"]
    elif ending == "later-denial":
        plugins = [DenyAfterAuth(), gate]
    elif ending == "app-error":
        endpoint = _endpoint_raises
    elif ending == "refused":
        headers = bearer("wrong")
    if ending == "app-error":
        with pytest.raises(RuntimeError, match="app bug"):  # re-raised for the server to log
            await run(*plugins, headers=headers, messages=messages, endpoint=endpoint)
    else:
        await run(*plugins, headers=headers, messages=messages, endpoint=endpoint)
    assert gate.open_connections == 0


async def test_state_freed_when_cancelled() -> None:
    gate = AuthGate(tokens())
    accepted = anyio.Event()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        accepted.set()
        await anyio.sleep_forever()

    transport = Transport([connect()])
    app = WebSocketApp(endpoint, plugins=PluginManager(gate))
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as group:
            group.start_soon(app, make_scope(headers=bearer(ALICE_TOKEN)), transport.receive, transport.send)
            await accepted.wait()
            assert gate.open_connections == 1
            group.cancel_scope.cancel()
    assert gate.open_connections == 0


# --- both gates together ---------------------------------------------------------------------------


async def test_origin_gate_registered_last_runs_before_the_verifier() -> None:
    calls: list[Credential] = []

    def verify(credential: Credential) -> User | None:
        calls.append(credential)
        return ALICE

    plugins = (AuthGate(verify, sources=[Cookie("session")]), OriginGate(["https://app.example.com"]))
    cookie = (b"cookie", f"session={ALICE_TOKEN}".encode())
    # Cross-site WebSocket hijacking: the browser attaches the cookie to a handshake from another site.
    hijack = await run(*plugins, headers=[cookie, *origin("https://evil.example")])
    assert (hijack.status, hijack.body) == (403, b"forbidden origin")
    assert calls == []  # the verifier never ran
    legit = await run(*plugins, headers=[cookie, *origin("https://app.example.com")])
    assert legit.seen["user"] is ALICE
    assert len(calls) == 1


# --- construction ---------------------------------------------------------------------------------


async def _async_expiry(user: User) -> float:
    return 0.0


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"sources": []}, ValueError, "sources is empty"),
        ({"sources": ["bearer"]}, TypeError, "not a credential source"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"timeout": -1}, ValueError, "timeout"),
        ({"timeout": math.nan}, ValueError, "timeout"),
        ({"timeout": math.inf}, ValueError, "timeout"),
        ({"timeout": True}, ValueError, "timeout"),
        ({"timeout": "5"}, ValueError, "timeout"),
        ({"on_refused": "ignore"}, ValueError, "on_refused"),
        ({"authorize": "yes"}, TypeError, "authorize must be a callable"),
        ({"expires_at": _async_expiry}, TypeError, "expires_at must be a plain"),
        ({"scopes": 3}, TypeError, "scopes must be a plain"),
    ],
)
def test_auth_gate_refuses_bad_options(options: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        AuthGate(tokens(), **options)


def test_auth_gate_refuses_a_non_callable_verifier() -> None:
    with pytest.raises(TypeError, match="verifier must be callable"):
        AuthGate({"token": ALICE})  # type: ignore[call-overload]


def test_auth_gate_repr_shows_no_secret() -> None:
    gate = AuthGate(tokens(), sources=[Bearer(), Cookie("session"), Subprotocol("bearer.")])
    assert MARK not in repr(gate)
    assert "Cookie(name='session')" in repr(gate)


# --- docs/auth.md -------------------------------------------------------------------------------------


def run_doc_blocks() -> dict[str, Any]:
    """Execute the ```python blocks of docs/auth.md in one namespace, as tests/test_docs.py does."""
    path = Path(__file__).parent.parent / "docs" / "auth.md"
    namespace: dict[str, Any] = {"__name__": "docs_auth"}
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 3
    for block in blocks:
        exec(compile(block, str(path), "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace


async def test_docs_example_does_what_the_page_says() -> None:
    docs = run_doc_blocks()
    app: WebSocketApp = docs["app"]

    async def connect_with(headers: list[tuple[bytes, bytes]], *messages: str) -> Transport:
        transport = Transport([connect(), *(text(m) for m in messages), disconnect(1000)])
        scope = make_scope(headers=[(b"host", b"testserver"), *headers], extensions=dict(DENIAL_EXTENSION))
        await app(scope, transport.receive, transport.send)
        return transport

    alice = await connect_with(bearer("alice-token"), "hi")
    assert alice.sent[1:] == [{"type": "websocket.send", "text": "alice: hi"}]
    bob = await connect_with([(b"cookie", b"session=bob-token")], "hi")
    assert bob.sent[1:] == [{"type": "websocket.send", "text": FORBIDDEN_ERROR}]
    nobody = await connect_with([])
    assert (nobody.sent[0]["status"], nobody.sent[1]["body"]) == (401, b"unauthorized")
    hijack = await connect_with([*bearer("alice-token"), *origin("https://evil.example")])
    assert (hijack.sent[0]["status"], hijack.sent[1]["body"]) == (403, b"forbidden origin")
    page = await connect_with([*bearer("alice-token"), *origin("https://eu.chat.example.com")], "hi")
    assert page.sent[1:] == [{"type": "websocket.send", "text": "alice: hi"}]

    browser = Transport([connect()])
    scope = make_scope(subprotocols=["chat.v1", "bearer.alice-token"])
    plugins = PluginManager(docs["auth_by_subprotocol"])
    await WebSocketApp(docs["endpoint"], plugins=plugins)(scope, browser.receive, browser.send)
    assert browser.sent[0] == {"type": "websocket.accept", "subprotocol": "chat.v1", "headers": []}

    assert await docs["verify_in_a_thread"](Credential("t", "bearer")) is None
