"""Read-only views over the ASGI scope: URL, headers, query parameters, client address, state."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping, Sequence
from http.cookies import _unquote
from typing import Any, NamedTuple, SupportsIndex, final, overload
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit

from ._types import Scope

__all__ = ["URL", "Address", "Headers", "QueryParams", "State", "parse_cookies"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# Starlette's Host check: a header that could change the URL's path or authority is ignored.
_HOST_RE = re.compile(
    r"(?:[a-z0-9._~%!$&'()*+,;=-]+|\[(?:(?P<ipv6>[a-f0-9]*:[a-f0-9.:]+)|"
    r"(?-i:v)[a-f0-9]+\.[a-z0-9._~!$&'()*+,;=:-]+)\])(?::(?P<port>[0-9]+))?",
    re.IGNORECASE,
)


def _valid_host(host: str) -> bool:
    match = _HOST_RE.fullmatch(host)
    if match is None:
        return False
    if match["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(match["ipv6"])
        except ValueError:
            return False
    port = match["port"]
    return port is None or (len(port.lstrip("0")) <= 5 and int(port) <= 65535)


@final
class URL(str):
    """The connection's URL: a real ``str`` that also exposes its parsed parts.

    ``websocket.url == "ws://host/path?q=1"`` and ``websocket.url.path`` both work.
    """

    __slots__ = ("_parts",)

    _parts: SplitResult

    def __new__(cls, url: str) -> URL:
        self = super().__new__(cls, url)
        self._parts = urlsplit(url)
        return self

    @classmethod
    def from_scope(cls, scope: Scope) -> URL:
        """Build the URL the client asked for from an ASGI scope (Host header first, then ``server``)."""
        scheme: str = scope.get("scheme", "ws")
        # Characters that would change the meaning of the URL are escaped, as Starlette does.
        path: str = scope["path"]
        path = path.replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
        query: str = scope.get("query_string", b"").decode("latin-1")
        netloc = ""
        for name, value in scope.get("headers", ()):
            if name == b"host":
                netloc = value.decode("latin-1")
                break
        if netloc and not _valid_host(netloc):
            netloc = ""
        if not netloc and scope.get("server"):
            host, port = scope["server"]
            if ":" in host and not host.startswith("["):
                host = f"[{host}]"
            netloc = host if port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
        if netloc:
            return cls(SplitResult(scheme, netloc, path, query, "").geturl())
        if path.startswith("//"):
            path = "/%2F" + path[2:]
        return cls(f"{path}?{query}" if query else path)

    @property
    def components(self) -> SplitResult:
        return self._parts

    @property
    def scheme(self) -> str:
        return self._parts.scheme

    @property
    def netloc(self) -> str:
        return self._parts.netloc

    @property
    def path(self) -> str:
        return self._parts.path

    @property
    def query(self) -> str:
        return self._parts.query

    @property
    def fragment(self) -> str:
        return self._parts.fragment

    @property
    def username(self) -> str | None:
        return self._parts.username

    @property
    def password(self) -> str | None:
        return self._parts.password

    @property
    def hostname(self) -> str | None:
        return self._parts.hostname

    @property
    def port(self) -> int | None:
        """The explicit port, or ``None``; a malformed port reads as ``None`` rather than raising."""
        try:
            return self._parts.port
        except ValueError:
            return None

    @property
    def is_secure(self) -> bool:
        return self._parts.scheme in ("https", "wss")

    @overload
    def replace(self, old: str, new: str, count: SupportsIndex = -1, /) -> str: ...
    @overload
    def replace(self, **components: str) -> URL: ...
    def replace(self, *args: Any, **components: str) -> str:
        """With keywords, Starlette's ``URL.replace``: a copy with some of ``scheme``, ``netloc``,
        ``path``, ``query``, ``fragment`` replaced. With positional arguments, ``str.replace``.
        """
        if args:
            return str.replace(self, *args)
        return URL(self._parts._replace(**components).geturl())

    def __repr__(self) -> str:
        return f"URL({str.__repr__(self)})"


@final
class Headers(Mapping[str, str]):
    """Immutable, case-insensitive multi-dict over the raw ASGI headers.

    ``headers["x"]`` gives the first value; :meth:`getlist` gives all of them.
    """

    __slots__ = ("_list",)

    def __init__(
        self,
        headers: Mapping[str, str] | None = None,
        raw: Sequence[tuple[bytes, bytes]] | None = None,
        scope: Scope | None = None,
    ) -> None:
        if scope is not None:
            raw = scope.get("headers", ())
        if headers is not None:
            raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self._list: list[tuple[bytes, bytes]] = list(raw or ())

    @property
    def raw(self) -> list[tuple[bytes, bytes]]:
        """The headers as the server gave them: a list of ``(name, value)`` byte pairs."""
        return list(self._list)

    def keys(self) -> list[str]:  # type: ignore[override]
        return [k.decode("latin-1") for k, _ in self._list]

    def values(self) -> list[str]:  # type: ignore[override]
        return [v.decode("latin-1") for _, v in self._list]

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self._list]

    def getlist(self, key: str) -> list[str]:
        """All values of a header, in order; ``[]`` when it is absent."""
        name = key.lower().encode("latin-1")
        return [v.decode("latin-1") for k, v in self._list if k.lower() == name]

    def __getitem__(self, key: str) -> str:
        name = key.lower().encode("latin-1")
        for k, v in self._list:
            if k.lower() == name:
                return v.decode("latin-1")
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        name = key.lower().encode("latin-1")
        return any(k.lower() == name for k, _ in self._list)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._list)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return False
        return sorted((k.lower(), v) for k, v in self._list) == sorted((k.lower(), v) for k, v in other._list)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers(raw={self._list!r})"


@final
class QueryParams(Mapping[str, str]):
    """Immutable multi-dict of the query string. ``params["k"]`` is the last value, as in Starlette."""

    __slots__ = ("_dict", "_list")

    def __init__(self, query: str | bytes | Sequence[tuple[str, str]] | Mapping[str, str] = "") -> None:
        if isinstance(query, bytes):
            query = query.decode("latin-1")
        if isinstance(query, str):
            pairs = parse_qsl(query, keep_blank_values=True)
        elif isinstance(query, Mapping):
            pairs = list(query.items())
        else:
            pairs = list(query)
        self._list: list[tuple[str, str]] = pairs
        self._dict: dict[str, str] = dict(pairs)

    def getlist(self, key: str) -> list[str]:
        """All values of a parameter, in order; ``[]`` when it is absent."""
        return [v for k, v in self._list if k == key]

    def multi_items(self) -> list[tuple[str, str]]:
        return list(self._list)

    def __getitem__(self, key: str) -> str:
        return self._dict[key]

    def __contains__(self, key: object) -> bool:
        return key in self._dict

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QueryParams):
            return False
        return sorted(self._list) == sorted(other._list)

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        return urlencode(self._list)

    def __repr__(self) -> str:
        return f"QueryParams({str(self)!r})"


class Address(NamedTuple):
    """The client's ``(host, port)``."""

    host: str
    port: int


class State:
    """Attribute access over a dict (``scope["state"]``), for per-connection app data."""

    _state: dict[str, Any]

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        super().__setattr__("_state", {} if state is None else state)

    def __setattr__(self, key: str, value: Any) -> None:
        self._state[key] = value

    def __getattr__(self, key: str) -> Any:
        try:
            return self._state[key]
        except KeyError:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{key}'") from None

    def __delattr__(self, key: str) -> None:
        del self._state[key]

    # Item access and iteration, as Starlette 1.x's State has them.
    def __getitem__(self, key: str) -> Any:
        return self._state[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._state[key] = value

    def __delitem__(self, key: str) -> None:
        del self._state[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._state)

    def __len__(self) -> int:
        return len(self._state)


def parse_cookies(header: str) -> dict[str, str]:
    """Parse a ``Cookie`` header the way browsers send it, leniently (not the strict RFC 6265 grammar)."""
    cookies: dict[str, str] = {}
    for chunk in header.split(";"):
        key, sep, value = chunk.partition("=")
        if not sep:
            key, value = "", key
        key, value = key.strip(), value.strip()
        if key or value:
            cookies[key] = _unquote(value)
    return cookies
