"""The order table of docs/plugins.md, a test per row, and the registration errors it lists."""

from __future__ import annotations

from collections.abc import Generator

import pytest

import toolkit
from tests.support import Transport, connect, disconnect, make_scope, text
from toolkit import DROP, MessageResult, PluginManager, WebSocket

pytestmark = pytest.mark.anyio


class Tagged(toolkit.Plugin):
    """Records its tag in ``log`` when its ws_receive runs; returns ``result``."""

    def __init__(self, tag: str, log: list[str], result: MessageResult = None) -> None:
        self.tag, self.log, self.result = tag, log, result

    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> MessageResult:
        self.log.append(self.tag)
        return self.result


class First(Tagged):
    @toolkit.hookimpl(tryfirst=True)
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> MessageResult:
        return super().ws_receive(websocket=websocket, data=data)


class Last(Tagged):
    @toolkit.hookimpl(trylast=True)
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> MessageResult:
        return super().ws_receive(websocket=websocket, data=data)


class Wrapping:
    def __init__(self, tag: str, log: list[str]) -> None:
        self.tag, self.log = tag, log

    @toolkit.hookimpl(wrapper=True)
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Generator[None, MessageResult, MessageResult]:
        self.log.append(f"{self.tag} enters")
        outcome = yield
        self.log.append(f"{self.tag} exits")
        return outcome


async def run_order(*plugins: object) -> None:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        async for _ in websocket.iter_text():
            pass

    transport = Transport([connect(), text("one"), disconnect()])
    await toolkit.WebSocketApp(endpoint, plugins=PluginManager(*plugins))(
        make_scope(), transport.receive, transport.send
    )


async def test_later_registered_runs_first() -> None:
    log: list[str] = []
    await run_order(Tagged("A", log), Tagged("B", log))
    assert log == ["B", "A"]


async def test_tryfirst_runs_before_the_others_whenever_registered() -> None:
    log: list[str] = []
    await run_order(First("A", log), Tagged("B", log))
    assert log == ["A", "B"]


async def test_trylast_runs_after_the_others_whenever_registered() -> None:
    log: list[str] = []
    await run_order(Tagged("A", log), Last("B", log))
    assert log == ["A", "B"]


async def test_within_a_group_later_registered_runs_first() -> None:
    log: list[str] = []
    await run_order(First("A", log), First("B", log), Tagged("C", log))
    assert log == ["B", "A", "C"]


async def test_wrappers_wrap_every_plain_one_outermost_later_registered() -> None:
    log: list[str] = []
    await run_order(Wrapping("W1", log), Wrapping("W2", log), Tagged("A", log))
    assert log == ["W2 enters", "W1 enters", "A", "W1 exits", "W2 exits"]


async def test_a_chain_stops_at_drop() -> None:
    log: list[str] = []
    await run_order(Tagged("B", log), Tagged("A", log, DROP), Wrapping("W", log))
    assert log == ["W enters", "A", "W exits"]


def test_hook_order_lists_the_effective_order() -> None:
    log: list[str] = []
    first, plain, last, wrapper = First("A", log), Tagged("B", log), Last("C", log), Wrapping("W", log)
    manager = PluginManager(last, plain, wrapper, first)
    order = manager.hook_order()
    assert list(order) == ["ws_accept", "ws_receive", "ws_send", "ws_close", "ws_denial"]
    assert [(impl.plugin_name, impl.wrapper, impl.tryfirst, impl.trylast) for impl in order["ws_receive"]] == [
        ("Wrapping", True, False, False),
        ("First", False, True, False),
        ("Tagged", False, False, False),
        ("Last", False, False, True),
    ]
    assert order["ws_send"] == []


class Misspelt:
    def ws_recieve(self, websocket: WebSocket, data: str | bytes) -> None: ...


class NoHooks:
    def on_message(self, data: str) -> None: ...


def test_registering_a_class_says_to_register_an_instance() -> None:
    manager = PluginManager()
    with pytest.raises(TypeError, match=r"'Tagged' is a class: register an instance, Tagged\(\)"):
        manager.register(Tagged)
    assert manager.list_name_plugin() == []


def test_registering_an_object_without_hooks_is_refused() -> None:
    manager = PluginManager()
    with pytest.raises(toolkit.PluginValidationError, match="'NoHooks' implements no hook"):
        manager.register(NoHooks())
    assert manager.list_name_plugin() == []


def test_a_misspelt_hook_names_the_closest_hook() -> None:
    with pytest.raises(TypeError, match=r"ws_recieve: there is no such hook; did you mean ws_receive\?"):
        PluginManager(Misspelt())
