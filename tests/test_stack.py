"""``compose``/``Middleware`` and ``RoutePlugins`` over the in-memory transport (asyncio and trio)."""

from __future__ import annotations

import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

import toolkit
from tests.support import Recorder, Transport, connect, disconnect, make_scope, text
from toolkit import (
    Close,
    Message,
    Middleware,
    PluginManager,
    Receive,
    RoutePlugins,
    Scope,
    Send,
    ToolkitMiddleware,
    compose,
)

pytestmark = pytest.mark.anyio

ACCEPTED: Final[Message] = {"type": "websocket.accept"}  # echo's own accept, forwarded as it is


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Raw ASGI: accepts, echoes each text frame; answers HTTP with 200."""
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    await receive()
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] == "websocket.receive":
        await send({"type": "websocket.send", "text": message["text"]})


class Recording:
    """A middleware that logs ``(name, "call" | "in" | "out", message type)`` for everything passing it."""

    def __init__(self, app: toolkit.ASGIApp, name: str, *, log: list[tuple[str, str, str]]) -> None:
        self.app = app
        self.name = name
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.log.append((self.name, "call", scope["type"]))

        async def logged_receive() -> Message:
            message = await receive()
            self.log.append((self.name, "in", message["type"]))
            return message

        async def logged_send(message: Message) -> None:
            self.log.append((self.name, "out", message["type"]))
            await send(message)

        await self.app(scope, logged_receive, logged_send)


def recording_app(log: list[tuple[str, str, str]]) -> toolkit.ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        log.append(("app", "call", scope["type"]))
        message = await receive()
        log.append(("app", "in", message["type"]))
        log.append(("app", "out", "websocket.accept"))
        await send({"type": "websocket.accept"})

    return app


# --- compose / Middleware ---------------------------------------------------------------------------------


async def test_compose_order_outermost_first_inbound_in_outbound_out() -> None:
    log: list[tuple[str, str, str]] = []
    app = compose(
        recording_app(log),
        Middleware(Recording, "outer", log=log),
        Middleware(Recording, "middle", log=log),
        Middleware(Recording, "inner", log=log),
    )
    transport = Transport([connect()])
    await app(make_scope(), transport.receive, transport.send)
    assert log == [
        ("outer", "call", "websocket"),
        ("middle", "call", "websocket"),
        ("inner", "call", "websocket"),
        ("app", "call", "websocket"),
        # inbound: outermost -> innermost -> app
        ("outer", "in", "websocket.connect"),
        ("middle", "in", "websocket.connect"),
        ("inner", "in", "websocket.connect"),
        ("app", "in", "websocket.connect"),
        # outbound: app -> innermost -> outermost
        ("app", "out", "websocket.accept"),
        ("inner", "out", "websocket.accept"),
        ("middle", "out", "websocket.accept"),
        ("outer", "out", "websocket.accept"),
    ]
    assert transport.sent == [{"type": "websocket.accept"}]


def test_compose_builds_each_middleware_once_with_its_options() -> None:
    log: list[tuple[str, str, str]] = []
    app = compose(echo, Middleware(Recording, "a", log=log), Middleware(Recording, "b", log=log))
    assert isinstance(app, Recording)
    assert (app.name, app.log) == ("a", log)
    inner = app.app
    assert isinstance(inner, Recording)
    assert (inner.name, inner.log) == ("b", log)
    assert inner.app is echo


def test_compose_without_middleware_is_the_app() -> None:
    assert compose(echo) is echo


def test_middleware_repr_shows_class_and_options() -> None:
    plugins = PluginManager()
    layer = Middleware(Recording, "a", log=[])
    assert repr(layer) == "Middleware(Recording, 'a', log=[])"
    wrapped = Middleware(ToolkitMiddleware, plugins=plugins).wrap(echo)
    assert isinstance(wrapped, ToolkitMiddleware)
    assert wrapped.plugins is plugins


async def test_plugins_of_two_stacked_toolkit_middlewares_see_in_and_out_in_stack_order() -> None:
    seen: list[str] = []

    @dataclass
    class Tag(toolkit.Plugin):
        name: str

        def ws_receive(self, *, websocket: toolkit.WebSocket, data: str | bytes) -> str | bytes:
            seen.append(f"{self.name} in")
            assert isinstance(data, str)
            return f"{data}+{self.name}"

        def ws_send(self, *, websocket: toolkit.WebSocket, data: str | bytes) -> str | bytes:
            seen.append(f"{self.name} out")
            assert isinstance(data, str)
            return f"{data}+{self.name}"

    app = compose(
        echo,
        Middleware(ToolkitMiddleware, plugins=PluginManager(Tag("outer"))),
        Middleware(ToolkitMiddleware, plugins=PluginManager(Tag("inner"))),
    )
    transport = Transport([connect(), text("x"), disconnect()])
    await app(make_scope(), transport.receive, transport.send)
    assert seen == ["outer in", "inner in", "inner out", "outer out"]
    assert transport.sent[1] == {"type": "websocket.send", "text": "x+outer+inner+inner+outer"}


# --- RoutePlugins -----------------------------------------------------------------------------------------


async def serve(app: Any, path: str, *incoming: Message) -> Transport:
    transport = Transport(list(incoming))
    await app(make_scope(path=path), transport.receive, transport.send)
    return transport


class Shout(toolkit.Plugin):
    def ws_send(self, *, websocket: toolkit.WebSocket, data: str | bytes) -> str | bytes:
        return data.upper() if isinstance(data, str) else data


class Refuse(toolkit.Plugin):
    def ws_receive(self, *, websocket: toolkit.WebSocket, data: str | bytes) -> Close:
        return Close(1008, "not here")


async def test_two_endpoints_of_one_app_get_different_plugins() -> None:
    chat, admin = Recorder(), Recorder()
    app = RoutePlugins(echo, {"/chat/*": PluginManager(chat, Shout()), "/admin": PluginManager(admin, Refuse())})

    chatted = await serve(app, "/chat/lobby", connect(), text("hi"), disconnect())
    assert chatted.sent == [ACCEPTED, {"type": "websocket.send", "text": "HI"}]
    assert chat.names() == ["ws_accept", "ws_receive", "ws_send", "ws_close"]
    assert admin.calls == []

    refused = await serve(app, "/admin", connect(), text("hi"))
    assert refused.sent == [ACCEPTED, {"type": "websocket.close", "code": 1008, "reason": "not here"}]
    assert admin.names() == ["ws_accept", "ws_close"]  # Refuse, registered last, runs first and vetoes
    assert admin.closes() == [(1008, "not here", "plugin")]
    assert chat.names() == ["ws_accept", "ws_receive", "ws_send", "ws_close"]  # untouched by /admin


async def test_unmatched_path_gets_the_default() -> None:
    chat, fallback = Recorder(), Recorder()
    app = RoutePlugins(echo, [("/chat/*", PluginManager(chat))], default=PluginManager(fallback, Shout()))
    transport = await serve(app, "/chat", connect(), text("hi"), disconnect())  # "/chat/*" needs the slash
    assert transport.sent == [ACCEPTED, {"type": "websocket.send", "text": "HI"}]
    assert fallback.names() == ["ws_accept", "ws_receive", "ws_send", "ws_close"]
    assert chat.calls == []


async def test_unmatched_path_without_default_goes_to_the_app_untouched() -> None:
    chat = Recorder()
    app = RoutePlugins(echo, {"/chat/*": PluginManager(chat, Shout())})
    transport = await serve(app, "/other", connect(), text("hi"), disconnect())
    # Exactly what echo sends itself, no upper-casing: no plugin ran.
    assert transport.sent == [ACCEPTED, {"type": "websocket.send", "text": "hi"}]
    assert chat.calls == []


async def test_http_and_lifespan_pass_through_even_on_a_matching_path() -> None:
    seen: list[tuple[str, Any, Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope["type"], receive, send))

    recorder = Recorder()
    routed = RoutePlugins(app, {"*": PluginManager(recorder)}, default=PluginManager(recorder))
    transport = Transport()
    await routed({"type": "http", "path": "/chat/x"}, transport.receive, transport.send)
    await routed({"type": "lifespan"}, transport.receive, transport.send)
    assert seen == [("http", transport.receive, transport.send), ("lifespan", transport.receive, transport.send)]
    assert recorder.calls == []


async def test_first_matching_pattern_wins() -> None:
    specific, general = Recorder(), Recorder()
    app = RoutePlugins(
        echo,
        [("/chat/admin", PluginManager(specific)), ("/chat/*", PluginManager(general, Shout()))],
    )
    await serve(app, "/chat/admin", connect(), text("hi"), disconnect())
    assert specific.names() == ["ws_accept", "ws_receive", "ws_send", "ws_close"]
    assert general.calls == []

    reversed_order = RoutePlugins(echo, {"/chat/*": PluginManager(general), "/chat/admin": PluginManager(specific)})
    await serve(reversed_order, "/chat/admin", connect(), disconnect())
    assert general.names() == ["ws_accept", "ws_close"]
    assert specific.names() == ["ws_accept", "ws_receive", "ws_send", "ws_close"]  # not run again


def test_patterns_are_fnmatch_on_the_whole_path_case_sensitive() -> None:
    a, b, c, d = PluginManager(), PluginManager(), PluginManager(), PluginManager()
    app = RoutePlugins(echo, [("/ws", a), ("/chat/*", b), ("/room-?", c), ("/v[12]/*", d)])
    assert app.plugins_for("/ws") is a
    assert app.plugins_for("/ws/more") is None  # a pattern without wildcard is that exact path
    assert app.plugins_for("/api/ws") is None  # anchored at the start too
    assert app.plugins_for("/chat/x") is b
    assert app.plugins_for("/chat/x/y") is b  # `*` crosses "/"
    assert app.plugins_for("/chat") is None
    assert app.plugins_for("/CHAT/x") is None
    assert app.plugins_for("/room-1") is c
    assert app.plugins_for("/room-12") is None
    assert app.plugins_for("/v2/x") is d
    assert app.plugins_for("/v3/x") is None


def test_middlewares_are_built_once_at_construction() -> None:
    shared, other, default = PluginManager(Recorder()), PluginManager(Recorder()), PluginManager(Recorder())
    app = RoutePlugins(echo, [("/a", shared), ("/b", other), ("/c", shared)], default=default)
    built = {id(middleware) for _, middleware in app._routes}
    assert len(built) == 2  # one per manager, shared by its routes
    assert app._default is not None
    assert app._default.plugins is default
    assert all(middleware.app is echo for _, middleware in app._routes)
    before = [middleware for _, middleware in app._routes]
    assert app._match("/a") is before[0]
    assert app._match("/a") is app._match("/c")
    assert app._match("/zzz") is app._default


async def test_no_new_middleware_per_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    app = RoutePlugins(echo, {"/chat/*": PluginManager(Recorder())}, default=PluginManager(Recorder()))
    built: list[object] = []
    monkeypatch.setattr(toolkit._stack, "ToolkitMiddleware", lambda *a, **k: built.append(a))
    await serve(app, "/chat/a", connect(), disconnect())
    await serve(app, "/else", connect(), disconnect())
    assert built == []


def test_routes_and_default_are_kept_in_order() -> None:
    a, b = PluginManager(), PluginManager()
    app = RoutePlugins(echo, {"/b": b, "/a": a}, default=a)
    assert app.routes == (("/b", b), ("/a", a))
    assert app.default is a


@pytest.mark.parametrize(
    ("routes", "default"),
    [
        ("/chat/*", None),
        ([("/chat/*",)], None),
        ([("/chat/*", "plugins")], None),
        ({1: PluginManager()}, None),
        ({"/chat/*": PluginManager()}, "plugins"),
        (None, None),
    ],
)
def test_bad_routes_are_refused(routes: Any, default: Any) -> None:
    with pytest.raises(TypeError):
        RoutePlugins(echo, routes, default=default)


async def test_route_plugins_compose_as_a_middleware() -> None:
    recorder = Recorder()
    app = compose(echo, Middleware(RoutePlugins, {"/chat/*": PluginManager(recorder, Shout())}))
    transport = await serve(app, "/chat/1", connect(), text("hey"), disconnect())
    assert transport.sent == [ACCEPTED, {"type": "websocket.send", "text": "HEY"}]
    assert recorder.names() == ["ws_accept", "ws_receive", "ws_send", "ws_close"]


# --- docs/middleware.md, "Composing stacks" ---------------------------------------------------------------

DOCS: Final = Path(__file__).parent.parent / "docs" / "middleware.md"


def docs_section() -> dict[str, Any]:
    section = DOCS.read_text().split("## Composing stacks", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert blocks
    module = types.ModuleType("docs_stack")
    sys.modules[module.__name__] = module
    try:
        for block in blocks:
            exec(compile(block, str(DOCS), "exec", dont_inherit=True), vars(module))  # noqa: S102 - our own docs
    finally:
        del sys.modules[module.__name__]
    return vars(module)


async def test_the_docs_example_routes_plugins() -> None:
    namespace = docs_section()
    app, log = namespace["app"], namespace["log"]
    chat = await serve(app, "/chat/lobby", connect(), text("hi"), disconnect())
    assert chat.sent == [ACCEPTED, {"type": "websocket.send", "text": "HI"}]
    assert log == ["outer in", "inner in", "inner out", "outer out"]
    log.clear()
    admin = await serve(app, "/admin", connect(), text("hi"))
    assert admin.sent == [ACCEPTED, {"type": "websocket.close", "code": 1008, "reason": "read-only"}]
    assert log == ["outer in"]
    log.clear()
    other = await serve(app, "/health", connect(), text("hi"), disconnect())
    assert other.sent == [ACCEPTED, {"type": "websocket.send", "text": "hi"}]
    assert log == ["outer in", "outer out"]
