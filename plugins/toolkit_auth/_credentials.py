"""The values the gate hands around: the credential it verifies, what it stores in the scope, a static verifier."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar, final

__all__ = ["AuthInfo", "Credential", "StaticTokens"]

P = TypeVar("P")


@final
@dataclass(frozen=True, slots=True)
class Credential:
    """A token as found in the handshake, given to the verifier.

    The token is left out of ``repr()`` and ``str()``, so logging a credential,
    or an exception that mentions one, does not leak it.
    """

    #: The secret itself. Never log it.
    token: str = field(repr=False)
    #: Where it came from: ``"bearer"``, ``"cookie"``, ``"query"``, ``"subprotocol"`` (a source's ``kind``).
    source: str


@final
@dataclass(frozen=True, slots=True)
class AuthInfo:
    """What ``websocket.auth`` (``scope["auth"]``) holds after a successful handshake; never the token.

    ``scopes`` follows Starlette's ``AuthCredentials``, so ``starlette.authentication.requires``
    and ``has_required_scope`` work on the connection.
    """

    #: The kind of source the credential came from, e.g. ``"bearer"``.
    source: str
    #: The permissions granted, from ``AuthGate(scopes=...)``; empty by default.
    scopes: tuple[str, ...] = ()


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@final
class StaticTokens(Generic[P]):
    """A verifier over a fixed ``{token: principal}`` mapping, e.g. for service accounts or tests.

    The comparison takes the same time whichever entry matches, or none: the
    presented token's SHA-256 digest is compared with ``hmac.compare_digest``
    against every entry's digest, with no early exit. Digests all have one
    length, so not even the tokens' lengths leak. The tokens are not kept.
    """

    __slots__ = ("_entries",)

    def __init__(self, tokens: Mapping[str, P]) -> None:
        entries: list[tuple[bytes, P]] = []
        for token, principal in tokens.items():
            key: object = token  # run-time check of untyped input
            if not isinstance(key, str) or not key:
                raise ValueError("every token must be a non-empty string")
            if principal is None or isinstance(principal, bool):
                raise ValueError("a principal may not be None or a bool (they mean 'refused' to the gate)")
            entries.append((_digest(token), principal))
        self._entries: tuple[tuple[bytes, P], ...] = tuple(entries)

    def __call__(self, credential: Credential) -> P | None:
        presented = _digest(credential.token)
        found: P | None = None
        for digest, principal in self._entries:
            if hmac.compare_digest(presented, digest):
                found = principal
        return found

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"StaticTokens(<{len(self._entries)} tokens>)"
