"""``OriginGate``: refuse handshakes from pages on origins not in an allow-list.

Browsers send ``Origin`` on every WebSocket handshake and attach the site's
cookies whatever page opened the socket, so a server that authenticates by
cookie must check the origin itself (cross-site WebSocket hijacking).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable
from typing import Final, final

import toolkit
from toolkit import Accept, DenialResponse, WebSocket

__all__ = ["OriginGate"]

logger: Final = logging.getLogger("toolkit_auth")

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# scheme "://" host [":" port], nothing else: no userinfo, path, query, fragment or whitespace.
_ORIGIN_RE: Final = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/?#@\[\]\s]+)(?::(?P<port>[0-9]{1,5}))?"
)
_LABEL_RE: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_FORBIDDEN_ORIGIN: Final = DenialResponse(403, "forbidden origin")
#: How much of a refused Origin goes into the debug log.
_LOGGED_CHARS: Final = 100

#: An origin as compared: lowercase scheme, lowercase host, port with the default filled in.
_Origin = tuple[str, str, int]


class _Invalid(ValueError):
    pass


def _parse(value: str, *, pattern_allowed: bool) -> tuple[_Origin, bool]:
    """Parse ``scheme://host[:port]``; return the normalised origin and whether the host is ``*.``-prefixed.

    Raises :class:`_Invalid` naming what is wrong (never quoting ``value``: callers decide that).
    """
    if not value.isascii() or not value.isprintable():
        raise _Invalid("must be printable ASCII (write internationalised hosts in their xn-- form)")
    match = _ORIGIN_RE.fullmatch(value)
    if match is None:
        raise _Invalid("must be scheme://host or scheme://host:port, without userinfo, path, query or fragment")
    scheme = match["scheme"].lower()
    if scheme not in _DEFAULT_PORTS:
        raise _Invalid("the scheme must be http or https")
    host = match["host"].lower()
    wildcard = host.startswith("*.")
    if wildcard:
        if not pattern_allowed:
            raise _Invalid("a wildcard is not an origin")
        host = host[2:]
    if host.startswith("["):
        if wildcard:
            raise _Invalid("a wildcard needs a domain name, not an address")
        try:
            host = f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            raise _Invalid("the host is not a valid IPv6 address") from None
    else:
        labels = host.split(".")
        if not all(_LABEL_RE.fullmatch(label) for label in labels) or len(host) > 253:
            raise _Invalid("the host is not a valid domain name or IPv4 address")
        if labels[-1].isdigit():  # a name's last label is never numeric: it must be a dotted IPv4 address
            if wildcard:
                raise _Invalid("a wildcard needs a domain name, not an address")
            try:
                host = str(ipaddress.IPv4Address(host))
            except ValueError:
                raise _Invalid("the host is not a valid IPv4 address") from None
        elif wildcard and len(labels) < 2 and host != "localhost":
            raise _Invalid("a wildcard must cover a domain with at least two labels, e.g. *.example.com")
    port_text = match["port"]
    if port_text is None:
        port = _DEFAULT_PORTS[scheme]
    elif port_text.startswith("0") or not 1 <= int(port_text) <= 65535:
        raise _Invalid("the port must be 1-65535 without leading zeros")
    else:
        port = int(port_text)
    return (scheme, host, port), wildcard


@final
class OriginGate(toolkit.Plugin):
    """Deny the handshake (403 ``"forbidden origin"``) unless ``Origin`` is in ``allowed``.

    Entries of ``allowed``:

    - ``"https://example.com"``: that exact origin. Scheme, host and port must all match;
      the default port is implied (``"https://example.com:443"`` is the same entry).
    - ``"https://*.example.com"``: any subdomain of ``example.com``, at any depth, with that
      scheme and port; not ``example.com`` itself (list it too if it is wanted).
    - ``"null"``: the opaque origin sent by sandboxed iframes and ``file:`` pages. Rarely what you want.

    A handshake without ``Origin`` (not a browser) is denied unless ``allow_missing=True``.
    An empty, repeated or malformed ``Origin``, a scheme other than http/https, userinfo or a
    path, and non-ASCII hosts are always denied. Hosts compare case-insensitively.

    Bad entries raise ``ValueError`` here, at construction. The check runs ``tryfirst``;
    register the gate after other ``tryfirst`` plugins (e.g. ``AuthGate``) so it runs before them.
    """

    def __init__(self, allowed: Iterable[str], *, allow_missing: bool = False) -> None:
        if isinstance(allowed, str):
            raise TypeError("allowed must be an iterable of origins, not a single string")
        exact: set[_Origin] = set()
        patterns: set[_Origin] = set()
        allow_null = False
        for entry in allowed:
            if not isinstance(entry, str):
                raise TypeError(f"allowed origins must be strings, got {type(entry).__name__}")
            if entry == "null":
                allow_null = True
                continue
            try:
                origin, wildcard = _parse(entry, pattern_allowed=True)
            except _Invalid as exc:
                raise ValueError(f"invalid allowed origin {entry!r}: {exc}") from None
            (patterns if wildcard else exact).add(origin)
        if not (exact or patterns or allow_null):
            raise ValueError("allowed is empty: every browser handshake would be denied")
        #: Exact origins, as ``(scheme, host, port)``.
        self.exact: frozenset[_Origin] = frozenset(exact)
        #: Subdomain patterns, as ``(scheme, parent domain, port)``.
        self.patterns: frozenset[_Origin] = frozenset(patterns)
        #: Whether the literal ``null`` origin is allowed.
        self.allow_null = allow_null
        #: Whether a handshake without ``Origin`` is allowed.
        self.allow_missing = allow_missing

    def is_allowed(self, origins: list[str]) -> bool:
        """Whether a handshake carrying these ``Origin`` header values (all of them, in order) passes."""
        if not origins:
            return self.allow_missing
        if len(origins) != 1:
            return False
        value = origins[0]
        if value == "null":
            return self.allow_null
        try:
            origin, _ = _parse(value, pattern_allowed=False)
        except _Invalid:
            return False
        if origin in self.exact:
            return True
        scheme, host, port = origin
        if host.startswith("["):
            return False
        # Every proper parent domain of the host, e.g. "b.example.com" and "example.com" for "a.b.example.com".
        parts = host.split(".")
        return any((scheme, ".".join(parts[i:]), port) in self.patterns for i in range(1, len(parts)))

    @toolkit.hookimpl(tryfirst=True)
    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> DenialResponse | None:
        origins = websocket.headers.getlist("origin")
        if self.is_allowed(origins):
            return None
        logger.debug("denied: origin not allowed: %r", [o[:_LOGGED_CHARS] for o in origins[:2]])
        return _FORBIDDEN_ORIGIN

    def __repr__(self) -> str:
        return (
            f"OriginGate(exact={len(self.exact)}, patterns={len(self.patterns)}, "
            f"allow_null={self.allow_null}, allow_missing={self.allow_missing})"
        )
