"""Where a credential comes from: the ``Authorization`` header, a cookie, the query string, a subprotocol.

A source is *present* when its carrier is there (a ``Bearer`` authorization, the
named cookie or query parameter, an offered subprotocol with the prefix). A
present credential that is empty, repeated or malformed raises
:class:`MalformedCredential`: the gate denies at once instead of trying the next
source, so an attacker cannot make the gate fall back to a weaker one by spoiling
a stronger one, and two values never race for which is used.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Final, final

from toolkit import WebSocket

__all__ = ["Bearer", "Cookie", "CredentialLocations", "MalformedCredential", "Query", "Source", "Subprotocol"]

# RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN_RE: Final = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# RFC 6265 cookie-name / RFC 7230 token: what a name in a Cookie header or a subprotocol can be.
_TOKEN_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class MalformedCredential(ValueError):
    """A credential is present but empty, repeated or malformed. The handshake is denied with 401."""


@final
@dataclass(frozen=True, slots=True)
class CredentialLocations:
    """Where credentials travel in a handshake: what a log filter must redact (``AuthGate.credential_locations()``).

    The fields match ``toolkit_logging.RedactingFilter``'s arguments; this package does not import it.
    """

    #: Request header names whose values are credentials (``authorization`` for :class:`Bearer`).
    headers: tuple[str, ...] = ()
    #: Cookie names (:class:`Cookie`).
    cookies: tuple[str, ...] = ()
    #: Query parameter names (:class:`Query`).
    query: tuple[str, ...] = ()
    #: Prefixes of offered subprotocols that carry a token (:class:`Subprotocol`).
    subprotocol_prefixes: tuple[str, ...] = ()

    @classmethod
    def of(cls, sources: Iterable[Source]) -> CredentialLocations:
        """Where ``sources`` read credentials, each name once, in order."""
        locations = cls()
        for source in sources:
            locations |= source.locations()
        return locations

    def __or__(self, other: CredentialLocations) -> CredentialLocations:
        """Both sets of locations, each name once, in order."""
        return CredentialLocations(
            *(tuple(dict.fromkeys(mine + theirs)) for mine, theirs in zip(_fields(self), _fields(other), strict=True))
        )


def _fields(locations: CredentialLocations) -> tuple[tuple[str, ...], ...]:
    return (locations.headers, locations.cookies, locations.query, locations.subprotocol_prefixes)


class Source(abc.ABC):
    """Where :class:`AuthGate` looks for a credential. Subclass it for a source of your own."""

    __slots__ = ()

    #: A short name for the source, reported as ``Credential.source`` and ``AuthInfo.source``.
    kind: ClassVar[str]

    @abc.abstractmethod
    def extract(self, websocket: WebSocket) -> str | None:
        """The token, or ``None`` when this source is absent.

        Raises :class:`MalformedCredential` when it is present but unusable; the
        gate then denies with 401 without trying the next source. Any other
        exception is a plugin failure (denied with 500).
        """

    def locations(self) -> CredentialLocations:
        """Where this source reads its credential, for log redaction. Override it in a source of your own."""
        return CredentialLocations()


def _single(values: list[str], what: str) -> str | None:
    if not values:
        return None
    if len(values) > 1:
        raise MalformedCredential(f"{what} is repeated")
    if not values[0]:
        raise MalformedCredential(f"{what} is empty")
    return values[0]


@final
@dataclass(frozen=True, slots=True)
class Bearer(Source):
    """``Authorization: Bearer <token>`` (RFC 6750). For non-browser clients: browsers cannot set it."""

    kind: ClassVar[str] = "bearer"

    def locations(self) -> CredentialLocations:
        """The ``Authorization`` header."""
        return CredentialLocations(headers=("authorization",))

    def extract(self, websocket: WebSocket) -> str | None:
        values = websocket.headers.getlist("authorization")
        if not values:
            return None
        schemes = [value.partition(" ")[0].lower() for value in values]
        if "bearer" not in schemes:
            return None  # another scheme (Basic, ...): not ours
        if len(values) > 1:
            raise MalformedCredential("more than one Authorization header")
        token = values[0].partition(" ")[2].strip(" ")
        if not _B64TOKEN_RE.fullmatch(token):
            raise MalformedCredential("the bearer token is empty or not a b64token")
        return token


@final
@dataclass(frozen=True, slots=True)
class Cookie(Source):
    """The cookie ``name``. Browsers send cookies cross-site too: pair it with :class:`OriginGate`."""

    name: str
    kind: ClassVar[str] = "cookie"

    def locations(self) -> CredentialLocations:
        """The cookie ``name``."""
        return CredentialLocations(cookies=(self.name,))

    def __post_init__(self) -> None:
        name: object = self.name  # run-time check of untyped input
        if not isinstance(name, str) or not _TOKEN_RE.fullmatch(name):
            raise ValueError("a cookie name must be a non-empty RFC 6265 token")

    def extract(self, websocket: WebSocket) -> str | None:
        # Counted here because websocket.cookies, a dict, keeps only one of two same-named cookies
        # (a sibling subdomain can set a second one: "cookie tossing").
        count = 0
        for header in websocket.headers.getlist("cookie"):
            for chunk in header.split(";"):
                if chunk.partition("=")[0].strip() == self.name:
                    count += 1
        if count == 0:
            return None
        if count > 1:
            raise MalformedCredential("the cookie is repeated")
        return _single([websocket.cookies.get(self.name, "")], "the cookie")


@final
@dataclass(frozen=True, slots=True)
class Query(Source):
    """The query parameter ``name``, e.g. ``/ws?token=...``.

    Prefer another source: the URL, token included, is written to the server's
    access log (uvicorn logs it on every handshake), to proxies' logs and to browser history.
    """

    name: str
    kind: ClassVar[str] = "query"

    def locations(self) -> CredentialLocations:
        """The query parameter ``name``."""
        return CredentialLocations(query=(self.name,))

    def __post_init__(self) -> None:
        name: object = self.name  # run-time check of untyped input
        if not isinstance(name, str) or not name:
            raise ValueError("a query parameter name must be a non-empty string")

    def extract(self, websocket: WebSocket) -> str | None:
        return _single(websocket.query_params.getlist(self.name), "the query parameter")


@final
@dataclass(frozen=True, slots=True)
class Subprotocol(Source):
    """An offered subprotocol ``<prefix><token>``, e.g. ``"bearer.<token>"``: the browser recipe.

    Browsers cannot set headers on a WebSocket, but ``new WebSocket(url, ["chat.v1",
    "bearer." + token])`` sends the token in ``Sec-WebSocket-Protocol``. :class:`AuthGate`
    never lets an entry with the prefix be echoed as the accepted subprotocol. The token
    must be an RFC 7230 token (base64url and JWTs are; plain base64 with ``/`` or ``=`` is not).
    """

    prefix: str
    kind: ClassVar[str] = "subprotocol"

    def locations(self) -> CredentialLocations:
        """Offered subprotocols starting with ``prefix``."""
        return CredentialLocations(subprotocol_prefixes=(self.prefix,))

    def __post_init__(self) -> None:
        prefix: object = self.prefix  # run-time check of untyped input
        if not isinstance(prefix, str) or not _TOKEN_RE.fullmatch(prefix):
            raise ValueError("a subprotocol prefix must be a non-empty RFC 7230 token, e.g. 'bearer.'")

    def carries(self, subprotocol: str) -> bool:
        """Whether ``subprotocol`` is one this source reads a token from (and must never be echoed)."""
        return subprotocol.startswith(self.prefix)

    def extract(self, websocket: WebSocket) -> str | None:
        entries = [entry[len(self.prefix) :] for entry in websocket.subprotocols if self.carries(entry)]
        token = _single(entries, "the subprotocol credential")
        if token is not None and not _TOKEN_RE.fullmatch(token):
            raise MalformedCredential("the subprotocol credential is not a token")
        return token
