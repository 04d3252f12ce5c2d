"""Authentication for ws-toolkit: an Origin allow-list and a credential gate.

``OriginGate`` refuses handshakes from pages on other sites (cross-site WebSocket
hijacking). ``AuthGate`` verifies a credential from the handshake, puts the
principal in ``websocket.user``, and can authorize each message and close when the
credential expires. See docs/auth.md.
"""

try:  # first, so that a missing extra says what to install rather than "No module named 'anyio'"
    import anyio  # noqa: F401
except ModuleNotFoundError as _missing:
    raise ModuleNotFoundError(
        f"toolkit_auth needs {_missing.name}, from the auth extra: pip install 'ws-toolkit[auth]'", name=_missing.name
    ) from _missing

from ._credentials import AuthInfo, Credential, StaticTokens
from ._gate import FORBIDDEN_ERROR, AuthCallbackError, AuthGate, OnRefused
from ._origin import OriginGate
from ._sources import Bearer, Cookie, CredentialLocations, MalformedCredential, Query, Source, Subprotocol

__all__ = [
    "FORBIDDEN_ERROR",
    "AuthCallbackError",
    "AuthGate",
    "AuthInfo",
    "Bearer",
    "Cookie",
    "Credential",
    "CredentialLocations",
    "MalformedCredential",
    "OnRefused",
    "OriginGate",
    "Query",
    "Source",
    "StaticTokens",
    "Subprotocol",
]
