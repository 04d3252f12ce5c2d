"""Hook arguments go by name: keyword-only implementations, subsets, ``**rest``, wrappers by generator.

The typed contract (tests/test_typing.py) makes a renamed argument a type error; these
tests make sure the run time agrees: ``register()`` refuses what the checkers refuse,
and every shape an implementation may take receives the right values, on the compiled
sync path, the async path and inside wrappers (each test on asyncio and trio).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import anyio.lowlevel
import pytest

import toolkit
from tests.support import Transport, connect, make_scope, text
from toolkit import ClosedBy, DenialResponse, MessageResult, ReceiveResult, WebSocket, Wrapper

pytestmark = pytest.mark.anyio


async def run(endpoint: Callable[[WebSocket], Any], *plugins: object, incoming: tuple[str, ...] = ()) -> Transport:
    transport = Transport([connect(), *(text(data) for data in incoming)])
    app = toolkit.WebSocketApp(endpoint, plugins=toolkit.PluginManager(*plugins))
    await app(make_scope(), transport.receive, transport.send)
    return transport


async def echo_once(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(await websocket.receive_text())
    await websocket.close(4000, "done")


def sent_texts(transport: Transport) -> list[str]:
    return [message["text"] for message in transport.sent if message["type"] == "websocket.send"]


# --- register() refuses what the type checkers refuse -------------------------------------------


class KeywordOnlyRenamed:
    def ws_send(self, *, websocket: WebSocket, message: str | bytes) -> None: ...


class PositionalRenamed:
    def ws_receive(self, websocket: WebSocket, date: str | bytes) -> None: ...


class RestRenamed:
    def ws_close(self, *, status: int, **rest: object) -> None: ...


class StarArgs:
    def ws_send(self, *args: object) -> None: ...


class PositionalOnly:
    def ws_send(self, websocket: WebSocket, data: str | bytes, /) -> None: ...


@pytest.mark.parametrize(
    ("plugin", "problem"),
    [
        # Before arguments went by name, pluggy did not see keyword-only arguments: this registered,
        # then failed every call with a TypeError (a 1011 per message).
        (KeywordOnlyRenamed(), re.escape("ws_send: no such argument 'message' (ws_send passes: websocket, data)")),
        (PositionalRenamed(), "ws_receive: no such argument 'date'; did you mean 'data'?"),
        (RestRenamed(), "ws_close: no such argument 'status'"),
        (StarArgs(), r"\*args: arguments are passed by name; take \*\*args instead"),
        (PositionalOnly(), "'websocket' is positional-only: arguments are passed by name"),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, str) else "",
)
def test_register_refuses_arguments_the_hook_does_not_pass(plugin: object, problem: str) -> None:
    manager = toolkit.PluginManager()
    with pytest.raises(toolkit.PluginValidationError, match=problem):
        manager.register(plugin)
    assert manager.list_name_plugin() == []
    assert manager.chains == {}


# --- every accepted shape gets the right values --------------------------------------------------


class Shapes:
    """One implementation per shape; each records what it received."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def ws_receive(self, *, data: str | bytes) -> str:  # keyword-only subset: the positional twin
        assert isinstance(data, str)
        self.seen.append(("receive", data))
        return data + "+r"

    def ws_send(self, *, data: str | bytes, websocket: WebSocket | None = None) -> str:  # a default: by name
        assert isinstance(data, str)
        self.seen.append(("send", (data, websocket is not None)))
        return data + "+s"

    def ws_close(self, *, closed_by: ClosedBy, code: int, **rest: object) -> None:  # reordered, and the rest
        self.seen.append(("close", (closed_by, code, sorted(rest))))


class AsyncShapes(Shapes):
    async def ws_receive(self, *, data: str | bytes) -> str:  # type: ignore[override]
        await anyio.lowlevel.checkpoint()
        return super().ws_receive(data=data)


@pytest.mark.parametrize("plugin_type", [Shapes, AsyncShapes])
async def test_each_shape_receives_its_own_arguments(plugin_type: type[Shapes]) -> None:
    plugin = plugin_type()
    transport = await run(echo_once, plugin, incoming=("hi",))
    assert sent_texts(transport) == ["hi+r+s"]
    assert plugin.seen == [
        ("receive", "hi"),
        ("send", ("hi+r", True)),
        ("close", (ClosedBy.APP, 4000, ["reason", "websocket"])),
    ]


def logged(function: Callable[..., Any]) -> Callable[..., Any]:
    """A decorator whose wrapper takes ``*args, **kwargs`` (the implementation's signature shows through)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)

    return wrapper


class Decorated:
    @logged
    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> MessageResult:
        return f"<{data!s}>"


async def test_a_decorated_keyword_only_implementation_is_called_by_name() -> None:
    transport = await run(echo_once, Decorated(), incoming=("hi",))
    assert sent_texts(transport) == ["<hi>"]


class RestOnly(toolkit.Plugin):
    def __init__(self) -> None:
        self.rest: dict[str, object] = {}

    def ws_close(self, **rest: object) -> None:
        self.rest = rest


async def test_rest_receives_every_argument_by_name() -> None:
    plugin = RestOnly()
    await run(echo_once, plugin, incoming=("hi",))
    assert plugin.rest.keys() == {"websocket", "code", "reason", "closed_by"}
    assert (plugin.rest["code"], plugin.rest["reason"], plugin.rest["closed_by"]) == (4000, "done", ClosedBy.APP)
    assert isinstance(plugin.rest["websocket"], WebSocket)


# --- wrappers: a generator method is one; returning None keeps the outcome -------------------


class Upper(toolkit.Plugin):
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> ReceiveResult:
        return data.upper() if isinstance(data, str) else None


class UndecoratedWrapper(toolkit.Plugin):
    def __init__(self) -> None:
        self.outcomes: list[object] = []

    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Wrapper[ReceiveResult]:
        outcome = yield
        self.outcomes.append(outcome)
        return None  # keeps the outcome

    def ws_close(self, *, code: int, **_: object) -> Wrapper[None]:
        outcome = yield
        self.outcomes.append((code, outcome))

    def ws_denial(self, *, response: DenialResponse, **_: object) -> Wrapper[DenialResponse | None]:
        outcome = yield
        self.outcomes.append(outcome)
        return None


async def test_a_generator_method_is_a_wrapper_and_none_keeps_the_outcome() -> None:
    wrapper = UndecoratedWrapper()
    manager = toolkit.PluginManager(Upper(), wrapper)
    assert [impl.wrapper for impl in manager.hook_order()["ws_receive"]] == [True, False]
    transport = Transport([connect(), text("hi")])
    await toolkit.WebSocketApp(echo_once, plugins=manager)(make_scope(), transport.receive, transport.send)
    assert sent_texts(transport) == ["HI"]  # not None: the wrapper's None kept the outcome
    # ws_close wrappers are sent None (Wrapper[None]), not the code.
    assert wrapper.outcomes == ["HI", (4000, None)]


class Denies(toolkit.Plugin):
    def ws_accept(self, **_: object) -> DenialResponse:
        return DenialResponse(401, "no")


async def test_a_denial_wrapper_returning_none_keeps_the_response() -> None:
    wrapper = UndecoratedWrapper()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()

    transport = Transport([connect()])
    app = toolkit.WebSocketApp(endpoint, plugins=toolkit.PluginManager(Denies(), wrapper))
    await app(make_scope(extensions={"websocket.http.response": {}}), transport.receive, transport.send)
    assert transport.sent[0]["status"] == 401
    assert transport.sent[1]["body"] == b"no"
    assert wrapper.outcomes[0] == DenialResponse(401, "no")


class SwallowsFailure(toolkit.Plugin):
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Wrapper[ReceiveResult]:
        try:
            yield
        except ValueError:
            return None
        return None


class Raises(toolkit.Plugin):
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> ReceiveResult:
        raise ValueError("bad")


async def test_a_wrapper_that_swallows_a_failure_and_returns_none_keeps_the_message() -> None:
    transport = await run(echo_once, Raises(), SwallowsFailure(), incoming=("hi",))
    assert sent_texts(transport) == ["hi"]
