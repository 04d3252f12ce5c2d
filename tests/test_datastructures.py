"""The read-only views over the scope: URL, Headers, QueryParams, cookies, client, state, and the scope itself."""

from __future__ import annotations

import pickle
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette import datastructures as sd
from starlette.requests import cookie_parser
from starlette.routing import Router, WebSocketRoute

from tests.support import make_scope
from toolkit import URL, Address, Headers, QueryParams, Scope, State, WebSocket
from toolkit._datastructures import parse_cookies


def websocket_for(**scope_changes: Any) -> WebSocket:
    scope = make_scope()
    scope.update(scope_changes)
    return WebSocket(scope)


# --- URL ------------------------------------------------------------------------------------------


def test_url_is_a_str_equal_to_the_plain_string() -> None:
    url = websocket_for(query_string=b"a=1").url
    assert isinstance(url, str)
    assert type(url) is URL
    assert url == "ws://testserver/ws?a=1"
    assert str.__eq__("ws://testserver/ws?a=1", url)  # the reflected comparison, from the str side
    assert url != "ws://testserver/ws"
    assert hash(url) == hash("ws://testserver/ws?a=1")
    assert {"ws://testserver/ws?a=1": 1}[url] == 1
    assert url.startswith("ws://")
    assert f"{url}" == "ws://testserver/ws?a=1"
    assert str(url) == "ws://testserver/ws?a=1"
    assert type(str(url)) is str
    assert repr(url) == "URL('ws://testserver/ws?a=1')"


def test_url_is_cached_per_connection() -> None:
    websocket = websocket_for()
    assert websocket.url is websocket.url


def test_url_parts() -> None:
    url = URL("wss://user:pw@Example.com:8443/chat/room?x=1&y=2#frag")
    assert url.scheme == "wss"
    assert url.netloc == "user:pw@Example.com:8443"
    assert url.hostname == "example.com"
    assert url.port == 8443
    assert url.path == "/chat/room"
    assert url.query == "x=1&y=2"
    assert url.fragment == "frag"
    assert url.username == "user"
    assert url.password == "pw"
    assert url.is_secure
    assert url.components.geturl() == str(url)


@pytest.mark.parametrize(
    ("scheme", "secure"), [("ws", False), ("wss", True), ("http", False), ("https", True), ("", False)]
)
def test_url_is_secure(scheme: str, secure: bool) -> None:
    assert URL(f"{scheme}://h/" if scheme else "/p").is_secure is secure


def test_url_port_is_none_by_default_and_when_malformed() -> None:
    assert URL("ws://h/").port is None
    assert URL("ws://h:abc/").port is None
    assert URL("ws://h:99999/").port is None


def test_url_prefers_host_header_over_server() -> None:
    websocket = websocket_for(headers=[(b"host", b"example.org:8080")], server=("10.0.0.1", 9000))
    assert websocket.url == "ws://example.org:8080/ws"
    assert websocket.url.hostname == "example.org"
    assert websocket.url.port == 8080


@pytest.mark.parametrize(
    ("scheme", "server", "expected"),
    [
        ("ws", ("10.0.0.1", 80), "ws://10.0.0.1/ws"),
        ("ws", ("10.0.0.1", 8000), "ws://10.0.0.1:8000/ws"),
        ("wss", ("10.0.0.1", 443), "wss://10.0.0.1/ws"),
        ("wss", ("10.0.0.1", 80), "wss://10.0.0.1:80/ws"),
        ("ws", ("::1", 8000), "ws://[::1]:8000/ws"),
        ("ws", ("[::1]", 80), "ws://[::1]/ws"),
    ],
)
def test_url_falls_back_to_server(scheme: str, server: tuple[str, int], expected: str) -> None:
    websocket = websocket_for(headers=[], scheme=scheme, server=server)
    assert websocket.url == expected


def test_url_ipv6_host_header() -> None:
    url = websocket_for(headers=[(b"host", b"[2001:db8::1]:8443")]).url
    assert url == "ws://[2001:db8::1]:8443/ws"
    assert url.hostname == "2001:db8::1"
    assert url.port == 8443


def test_url_without_host_or_server_is_relative() -> None:
    websocket = websocket_for(headers=[], server=None, query_string=b"q=1")
    assert websocket.url == "/ws?q=1"
    assert websocket.url.netloc == ""
    assert websocket.url.path == "/ws"


def test_url_relative_double_slash_path_is_not_an_authority() -> None:
    url = websocket_for(headers=[], server=None, path="//evil.example/x").url
    assert url.netloc == ""
    assert url.path == "/%2Fevil.example/x"


def test_url_escapes_query_and_fragment_characters_in_the_path() -> None:
    url = websocket_for(path="/a?b#c\\d", query_string=b"real=1").url
    assert url == "ws://testserver/a%3Fb%23c%5Cd?real=1"
    assert url.path == "/a%3Fb%23c%5Cd"
    assert url.query == "real=1"
    assert url.fragment == ""


@pytest.mark.parametrize(
    "host",
    [
        b"evil.example/admin?x=",  # would move the path into the query
        b"evil.example#",
        b"user@evil.example",
        b"evil example",
        b"evil.example\\x",
        b"[::1",  # used to crash urlsplit with "Invalid IPv6 URL"
        b"[::1::2]",
        b"[zz::1]",
        b"example.org:99999",
        b"example.org:80:80",
    ],
)
def test_url_ignores_a_host_header_that_would_change_the_url(host: bytes) -> None:
    websocket = websocket_for(headers=[(b"host", host)], query_string=b"a=1")
    assert websocket.url == "ws://testserver/ws?a=1"
    assert websocket.url.path == "/ws"
    assert websocket.url.query == "a=1"


def test_url_first_host_header_wins() -> None:
    websocket = websocket_for(headers=[(b"host", b"first.example"), (b"host", b"second.example")])
    assert websocket.url.netloc == "first.example"


def test_url_replace_keywords_returns_a_url() -> None:
    url = websocket_for(query_string=b"a=1").url
    secure = url.replace(scheme="wss")
    assert type(secure) is URL
    assert secure == "wss://testserver/ws?a=1"
    assert secure.is_secure
    assert url.replace(path="/other", query="") == "ws://testserver/other"
    assert url.replace(netloc="example.org:81").port == 81
    assert url.replace(fragment="top").fragment == "top"
    assert url == "ws://testserver/ws?a=1"  # unchanged


def test_url_replace_positional_is_str_replace() -> None:
    url = URL("ws://testserver/ws")
    replaced = url.replace("ws", "http", 1)
    assert replaced == "http://testserver/ws"
    assert type(replaced) is str
    assert url.replace("ws", "x") == "x://testserver/x"


def test_url_survives_pickle() -> None:
    url = URL("wss://h:1/p?q")
    copy = pickle.loads(pickle.dumps(url))  # noqa: S301 - our own data
    assert copy == url
    assert type(copy) is URL
    assert copy.port == 1


def test_base_url() -> None:
    websocket = websocket_for(root_path="/api", path="/api/ws", query_string=b"a=1")
    assert websocket.base_url == "ws://testserver/api/"
    assert websocket_for().base_url == "ws://testserver/"
    assert websocket_for(app_root_path="/root/", root_path="/ignored").base_url == "ws://testserver/root/"


def starlette_url(scope: Scope) -> sd.URL:
    return sd.URL(scope=scope)


HOSTS = st.one_of(
    st.none(),
    st.sampled_from(["example.org", "example.org:8080", "[::1]:80", "EXAMPLE.org", "a.b.c:0080", "h:65536", "[v1.x]"]),
    st.text(alphabet="abz09.:-[]@/?#% \\", max_size=12),
)


@given(
    scheme=st.sampled_from(["ws", "wss"]),
    host=HOSTS,
    server=st.sampled_from([("testserver", 80), ("10.1.2.3", 8000), ("::1", 443), ("h", 443)]),
    path=st.text(alphabet="/abc?#%\\é", min_size=1, max_size=10).map(lambda p: "/" + p),
    query=st.text(alphabet="a=&%20+b", max_size=8),
)
def test_url_from_scope_matches_starlette(
    scheme: str, host: str | None, server: tuple[str, int], path: str, query: str
) -> None:
    headers = [] if host is None else [(b"host", host.encode())]
    scope = make_scope(path=path, query_string=query.encode(), headers=headers)
    scope.update(scheme=scheme, server=server)
    ours = URL.from_scope(scope)
    theirs = starlette_url(scope)
    assert ours == str(theirs)
    assert theirs == ours  # Starlette's URL compares equal to ours, a str
    for part in ("scheme", "netloc", "path", "query", "fragment", "hostname", "port", "is_secure"):
        assert getattr(ours, part) == getattr(theirs, part), part


# --- Headers --------------------------------------------------------------------------------------

RAW: list[tuple[bytes, bytes]] = [
    (b"host", b"testserver"),
    (b"x-multi", b"one"),
    (b"cookie", b"a=1"),
    (b"x-multi", b"two"),
    (b"x-latin", "café".encode("latin-1")),
]


def test_headers_case_insensitive_first_value() -> None:
    headers = Headers(raw=RAW)
    assert headers["X-Multi"] == "one"
    assert headers["x-multi"] == "one"
    assert headers.get("HOST") == "testserver"
    assert headers.get("missing") is None
    assert "X-MULTI" in headers
    assert "missing" not in headers
    not_a_name: Any = 1
    assert not_a_name not in headers
    with pytest.raises(KeyError):
        headers["missing"]


def test_headers_multi_values() -> None:
    headers = Headers(raw=RAW)
    assert headers.getlist("X-Multi") == ["one", "two"]
    assert headers.getlist("missing") == []
    assert len(headers) == 5
    assert headers.keys() == ["host", "x-multi", "cookie", "x-multi", "x-latin"]
    assert headers.values() == ["testserver", "one", "a=1", "two", "café"]
    assert headers.items()[1:4:2] == [("x-multi", "one"), ("x-multi", "two")]
    assert list(headers) == headers.keys()


def test_headers_decode_latin1() -> None:
    assert Headers(raw=RAW)["x-latin"] == "café"


def test_headers_raw_is_a_copy() -> None:
    headers = Headers(raw=RAW)
    raw = headers.raw
    assert raw == RAW
    raw.append((b"x-new", b"1"))
    assert "x-new" not in headers
    assert len(headers) == 5


def test_headers_are_immutable() -> None:
    headers: Any = Headers(raw=RAW)
    with pytest.raises(TypeError):
        headers["x-new"] = "1"
    with pytest.raises(TypeError):
        del headers["host"]
    with pytest.raises(AttributeError):
        headers.extra = 1
    assert not hasattr(headers, "append")


def test_headers_from_mapping_lowercases_names() -> None:
    headers = Headers(headers={"X-Token": "abc"})
    assert headers.raw == [(b"x-token", b"abc")]
    assert headers["x-token"] == "abc"


def test_headers_lookup_tolerates_mixed_case_raw_names() -> None:
    headers = Headers(raw=[(b"X-Odd", b"1")])
    assert headers["x-odd"] == "1"
    assert headers.getlist("x-odd") == ["1"]


def test_headers_equality_and_hash() -> None:
    assert Headers(raw=[(b"a", b"1"), (b"b", b"2")]) == Headers(raw=[(b"b", b"2"), (b"a", b"1")])
    assert Headers(raw=[(b"a", b"1")]) != Headers(raw=[(b"a", b"2")])
    assert Headers(raw=[(b"a", b"1")]) != {"a": "1"}
    with pytest.raises(TypeError):
        hash(Headers(raw=[]))


def test_websocket_headers_come_from_the_scope() -> None:
    websocket = websocket_for(headers=RAW)
    assert websocket.headers is websocket.headers
    assert websocket.headers.getlist("x-multi") == ["one", "two"]
    assert websocket.headers.raw == RAW


def test_headers_match_starlette() -> None:
    ours, theirs = Headers(raw=RAW), sd.Headers(raw=list(RAW))
    assert ours.items() == theirs.items()
    assert ours.keys() == theirs.keys()
    assert ours.raw == theirs.raw
    for name in ("host", "X-MULTI", "cookie", "x-latin", "nope"):
        assert ours.getlist(name) == theirs.getlist(name)
        assert ours.get(name) == theirs.get(name)
        assert (name in ours) == (name in theirs)


# --- QueryParams ----------------------------------------------------------------------------------


def test_query_params_last_value_wins_like_starlette() -> None:
    params = QueryParams(b"a=1&b=2&a=3")
    assert params["a"] == "3"
    assert params.getlist("a") == ["1", "3"]
    assert params.getlist("missing") == []
    assert list(params) == ["a", "b"]
    assert len(params) == 2
    assert dict(params) == {"a": "3", "b": "2"}
    assert params.multi_items() == [("a", "1"), ("b", "2"), ("a", "3")]
    assert str(params) == "a=1&b=2&a=3"
    assert repr(params) == "QueryParams('a=1&b=2&a=3')"


def test_query_params_decoding() -> None:
    params = QueryParams("name=caf%C3%A9&sp=a+b&blank=&flag")
    assert params["name"] == "café"
    assert params["sp"] == "a b"
    assert params["blank"] == ""
    assert params["flag"] == ""  # blank values are kept, as in Starlette
    assert str(params) == "name=caf%C3%A9&sp=a+b&blank=&flag="


def test_query_params_other_constructors() -> None:
    assert QueryParams([("a", "1"), ("a", "2")]).getlist("a") == ["1", "2"]
    assert QueryParams({"a": "1"})["a"] == "1"
    assert len(QueryParams()) == 0
    assert str(QueryParams()) == ""


def test_query_params_are_immutable_and_unhashable() -> None:
    params: Any = QueryParams("a=1")
    with pytest.raises(TypeError):
        params["a"] = "2"
    with pytest.raises(TypeError):
        del params["a"]
    with pytest.raises(TypeError):
        hash(params)
    multi = params.multi_items()
    multi.append(("b", "2"))
    assert "b" not in params


def test_query_params_equality() -> None:
    assert QueryParams("a=1&b=2") == QueryParams("b=2&a=1")
    assert QueryParams("a=1") != QueryParams("a=2")
    assert QueryParams("a=1") != {"a": "1"}


def test_websocket_query_params() -> None:
    websocket = websocket_for(query_string=b"room=lobby&tag=a&tag=b")
    assert websocket.query_params is websocket.query_params
    assert websocket.query_params["room"] == "lobby"
    assert websocket.query_params.getlist("tag") == ["a", "b"]
    assert websocket_for().query_params == QueryParams()
    scope = make_scope()
    del scope["query_string"]
    assert len(WebSocket(scope).query_params) == 0


@given(st.text(alphabet="ab=&%2C+;é", max_size=20))
def test_query_params_match_starlette(query: str) -> None:
    ours, theirs = QueryParams(query.encode()), sd.QueryParams(query.encode())
    assert ours.multi_items() == theirs.multi_items()
    assert dict(ours) == dict(theirs)
    assert str(ours) == str(theirs)
    for key in theirs:
        assert ours[key] == theirs[key]
        assert ours.getlist(key) == theirs.getlist(key)


# --- cookies, client, path params, state ----------------------------------------------------------


def test_cookies() -> None:
    websocket = websocket_for(
        headers=[
            (b"cookie", b'session=abc; theme="dark mode"; lonely'),
            (b"Cookie", b"ignored=1"),  # ASGI names are lower-case; ours still reads it
            (b"cookie", b"session=override; x=1"),
        ]
    )
    assert websocket.cookies == {"session": "override", "theme": "dark mode", "": "lonely", "ignored": "1", "x": "1"}
    assert websocket.cookies is websocket.cookies
    assert websocket_for().cookies == {}


@given(st.text(alphabet='ab=; "\\,', max_size=20))
def test_cookie_parsing_matches_starlette(header: str) -> None:
    assert parse_cookies(header) == cookie_parser(header)


def test_client_address() -> None:
    client = websocket_for(client=("10.0.0.2", 1234)).client
    assert client == Address("10.0.0.2", 1234)
    assert client is not None
    assert (client.host, client.port) == ("10.0.0.2", 1234)
    assert client == ("10.0.0.2", 1234)
    theirs: object = sd.Address("10.0.0.2", 1234)
    assert client == theirs
    assert websocket_for(client=None).client is None
    scope = make_scope()
    del scope["client"]
    assert WebSocket(scope).client is None


def test_path_params() -> None:
    assert websocket_for().path_params == {}
    assert websocket_for(path_params={"room": "lobby", "n": 3}).path_params == {"room": "lobby", "n": 3}


def test_state_is_stored_in_the_scope() -> None:
    websocket = websocket_for()
    assert "state" not in websocket.scope
    websocket.state.user = "ann"
    assert websocket.scope["state"] == {"user": "ann"}
    assert websocket.state is websocket.state
    assert websocket.state.user == "ann"
    del websocket.state.user
    assert websocket.scope["state"] == {}


def test_state_shares_an_existing_scope_dict() -> None:
    shared: dict[str, Any] = {"db": "conn"}
    websocket = websocket_for(state=shared)
    assert websocket.state.db == "conn"
    websocket.state.extra = 1
    assert shared == {"db": "conn", "extra": 1}


def test_state_missing_attribute() -> None:
    state = State()
    with pytest.raises(AttributeError) as excinfo:
        state.nope  # noqa: B018
    assert str(excinfo.value) == "'State' object has no attribute 'nope'"
    assert str(excinfo.value) == _starlette_missing_state_message()
    with pytest.raises(KeyError):
        del state.nope


def _starlette_missing_state_message() -> str:
    try:
        sd.State().nope  # noqa: B018
    except AttributeError as error:
        return str(error)
    raise AssertionError("Starlette's State did not raise")


def test_state_item_access_like_starlette() -> None:
    # Starlette 1.x's State is also a mutable mapping: code using state["key"] must keep working.
    backing: dict[str, Any] = {}
    state = State(backing)
    state["a"] = 1
    state.b = 2
    assert state["a"] == 1
    assert state["b"] == 2
    assert backing == {"a": 1, "b": 2}
    assert list(state) == ["a", "b"]
    assert len(state) == 2
    del state["a"]
    assert backing == {"b": 2}
    with pytest.raises(KeyError):
        state["missing"]


# --- the WebSocket as a Mapping over its scope ----------------------------------------------------


def test_websocket_reads_like_its_scope() -> None:
    scope = make_scope()
    websocket = WebSocket(scope)
    assert websocket["path"] == "/ws"
    assert websocket["type"] == "websocket"
    assert len(websocket) == len(scope)
    assert list(websocket) == list(scope)
    assert dict(websocket) == dict(scope)
    assert "path" in websocket
    assert websocket.get("missing") is None
    with pytest.raises(KeyError):
        websocket["missing"]


def test_websocket_is_read_only_mapping() -> None:
    websocket: Any = WebSocket(make_scope())
    with pytest.raises(TypeError):
        websocket["path"] = "/other"


def test_websocket_equality_is_identity_and_hashable() -> None:
    scope = make_scope()
    first, second = WebSocket(scope), WebSocket(scope)
    assert first == first  # noqa: PLR0124
    assert first != second
    assert first != dict(scope)
    assert len({first, second, first}) == 2
    assert hash(first) != hash(second)


def test_websocket_app_property() -> None:
    marker = object()
    assert websocket_for(app=marker).app is marker
    with pytest.raises(KeyError):
        websocket_for().app  # noqa: B018


# --- session, auth, user --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attribute", "middleware"),
    [("session", "SessionMiddleware"), ("auth", "AuthenticationMiddleware"), ("user", "AuthenticationMiddleware")],
)
def test_session_auth_user_need_their_middleware(attribute: str, middleware: str) -> None:
    websocket = websocket_for()
    with pytest.raises(AssertionError) as excinfo:
        getattr(websocket, attribute)
    assert str(excinfo.value) == f"{middleware} must be installed to access websocket.{attribute}"
    value = object()
    assert getattr(websocket_for(**{attribute: value}), attribute) is value


def test_session_error_survives_python_optimize_mode() -> None:
    # Starlette uses `assert`, which -O strips; ours raises explicitly.
    code = (
        "from toolkit import WebSocket\n"
        "try:\n"
        "    WebSocket({'type': 'websocket'}).session\n"
        "except AssertionError:\n"
        "    print('raised')\n"
    )
    result = subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, "-O", "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "raised"


# --- url_for --------------------------------------------------------------------------------------


async def _noop(websocket: Any) -> None:  # pragma: no cover - only routed to, never run
    return None


def test_url_for_with_a_starlette_router() -> None:
    router = Router(routes=[WebSocketRoute("/rooms/{room}", _noop, name="room")])
    websocket = websocket_for(router=router, scheme="wss", headers=[(b"host", b"chat.example")])
    assert str(websocket.url_for("room", room="lobby")) == "wss://chat.example/rooms/lobby"


def test_url_for_without_a_router() -> None:
    with pytest.raises(RuntimeError, match="inside a Starlette application"):
        websocket_for().url_for("anything")
