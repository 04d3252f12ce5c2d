"""Which plugin ended a connection (``WebSocket.ended_by_plugin``) and per-plugin hook timing
(``PluginManager.set_hook_timer``): the core's support for observability plugins such as toolkit_otel.

Each test runs on asyncio and trio, over the in-memory transport, through WebSocketApp or
ToolkitMiddleware.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import toolkit
from tests.support import DENIAL_EXTENSION, Transport, connect, disconnect, make_scope, text
from toolkit import DROP, Accept, Close, ClosedBy, DenialResponse, MessageResult, WebSocket

pytestmark = pytest.mark.anyio


class Seen(toolkit.Plugin):
    """Records ``ended_by_plugin`` as ws_denial and ws_close see it."""

    def __init__(self) -> None:
        self.denial: list[str | None] = []
        self.close: list[tuple[int, ClosedBy, str | None]] = []

    def ws_denial(self, *, websocket: WebSocket, response: DenialResponse) -> None:
        self.denial.append(websocket.ended_by_plugin)

    def ws_close(self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None:
        self.close.append((code, closed_by, websocket.ended_by_plugin))


class Ends(toolkit.Plugin):
    """Returns ``result`` from ``hook`` (raises it if it is an exception); keeps everything else."""

    def __init__(self, hook: str, result: object) -> None:
        self.hook = hook
        self.result = result

    def _run(self, hook: str) -> Any:
        if hook != self.hook:
            return None
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result

    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Any:
        return self._run("ws_accept")

    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Any:
        return self._run("ws_receive")

    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> Any:
        return self._run("ws_send")


class AsyncEnds(Ends):
    async def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Any:
        await anyio.lowlevel.checkpoint()
        return self._run("ws_accept")

    async def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Any:
        await anyio.lowlevel.checkpoint()
        return self._run("ws_receive")

    async def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> Any:
        await anyio.lowlevel.checkpoint()
        return self._run("ws_send")


class Keep(toolkit.Plugin):
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> None:
        return None

    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> None:
        return None


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:  # not iter_text: an async generator left by an exception is finalized late on trio
        await websocket.send_text(await websocket.receive_text())


async def run(
    manager: toolkit.PluginManager, *incoming: toolkit.Message, middleware: bool = False, extensions: Any = None
) -> Transport:
    transport = Transport([connect(), *incoming])
    scope = make_scope(extensions=extensions)
    if middleware:
        await toolkit.ToolkitMiddleware(toolkit.WebSocketApp(echo), plugins=manager)(
            scope, transport.receive, transport.send
        )
    else:
        await toolkit.WebSocketApp(echo, plugins=manager)(scope, transport.receive, transport.send)
    return transport


# --- ended_by_plugin -------------------------------------------------------------------------------


@pytest.mark.parametrize("middleware", [False, True], ids=["app", "middleware"])
@pytest.mark.parametrize("kind", [Ends, AsyncEnds], ids=["sync", "async"])
@pytest.mark.parametrize("hook", ["ws_receive", "ws_send"])
async def test_the_plugin_whose_close_ended_the_connection_is_named(
    hook: str, kind: type[Ends], middleware: bool
) -> None:
    seen = Seen()
    manager = toolkit.PluginManager(seen, Keep(), kind(hook, Close(4001, "bye")), Keep())
    manager.register(Keep(), name="later")
    transport = await run(manager, text("hi"), disconnect(), middleware=middleware)
    assert transport.sent[-1] == {"type": "websocket.close", "code": 4001, "reason": "bye"}
    assert seen.close == [(4001, ClosedBy.PLUGIN, kind.__qualname__)]


@pytest.mark.parametrize("middleware", [False, True], ids=["app", "middleware"])
@pytest.mark.parametrize("hook", ["ws_accept", "ws_receive", "ws_send"])
async def test_the_plugin_that_raised_is_named(hook: str, middleware: bool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="toolkit")
    seen = Seen()
    manager = toolkit.PluginManager(seen, Keep())
    manager.register(Ends(hook, RuntimeError("boom")), name="faulty")
    await run(manager, text("hi"), disconnect(), middleware=middleware)
    code = 1006 if hook == "ws_accept" else 1011
    assert seen.close == [(code, ClosedBy.PLUGIN, "faulty")]
    assert seen.denial == (["faulty"] if hook == "ws_accept" else [])


@pytest.mark.parametrize("kind", [Ends, AsyncEnds], ids=["sync", "async"])
async def test_the_denying_plugin_is_named_in_ws_denial_and_ws_close(kind: type[Ends]) -> None:
    seen = Seen()
    manager = toolkit.PluginManager(seen)
    manager.register(kind("ws_accept", DenialResponse(401)), name="gate")
    transport = await run(manager, extensions=DENIAL_EXTENSION)
    assert transport.sent[0]["status"] == 401
    assert seen.denial == ["gate"]
    assert seen.close == [(1006, ClosedBy.PLUGIN, "gate")]


class ClosingWrapper:
    """A wrapper that turns whatever the chain returned into a close."""

    @toolkit.hookimpl(wrapper=True)
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Generator[None, MessageResult, MessageResult]:
        yield
        return Close(4002)


class PassingWrapper:
    @toolkit.hookimpl(wrapper=True)
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Generator[None, MessageResult, MessageResult]:
        return (yield)


async def test_a_wrapper_that_replaced_the_outcome_answers_for_it() -> None:
    seen = Seen()
    manager = toolkit.PluginManager(seen, Keep())
    manager.register(ClosingWrapper(), name="closer")
    await run(manager, text("hi"), disconnect())
    assert seen.close == [(4002, ClosedBy.PLUGIN, "closer")]


async def test_a_close_passed_through_a_wrapper_stays_the_inner_plugins() -> None:
    seen = Seen()
    manager = toolkit.PluginManager(seen)
    manager.register(Ends("ws_receive", Close(4003)), name="inner")
    manager.register(PassingWrapper(), name="outer")
    await run(manager, text("hi"), disconnect())
    assert seen.close == [(4003, ClosedBy.PLUGIN, "inner")]


@pytest.mark.parametrize("middleware", [False, True], ids=["app", "middleware"])
async def test_no_plugin_is_named_when_the_app_or_client_ended_it_even_after_a_drop(middleware: bool) -> None:
    seen = Seen()
    manager = toolkit.PluginManager(seen, Ends("ws_receive", DROP))  # ends every receive chain, closes nothing
    await run(manager, text("dropped"), disconnect(1001), middleware=middleware)
    assert seen.close == [(1001, ClosedBy.CLIENT, None)]


async def test_ended_by_plugin_is_read_only_and_none_without_plugins() -> None:
    websocket = WebSocket(make_scope())
    assert websocket.ended_by_plugin is None
    with pytest.raises(AttributeError):
        websocket.ended_by_plugin = "x"  # type: ignore[misc]


# --- set_hook_timer --------------------------------------------------------------------------------


class Slow(toolkit.Plugin):
    async def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> None:
        await anyio.sleep(0.02)


def test_without_a_timer_the_chains_call_the_plugin_directly() -> None:
    plugin = Keep()
    manager = toolkit.PluginManager(plugin)
    assert manager.hook_timer is None

    def calls_the_plugin_directly() -> bool:
        # The plugin's own method (through its positional twin: bound to the plugin, same name), no shim.
        call = manager.chains["ws_receive"].impls[0].call
        return getattr(call, "__self__", None) is plugin and getattr(call, "__name__", None) == "ws_receive"

    assert calls_the_plugin_directly()
    manager.set_hook_timer(lambda hook, plugin_name, seconds: None)
    assert not calls_the_plugin_directly()
    manager.set_hook_timer(None)
    assert calls_the_plugin_directly()
    assert manager.chains["ws_receive"].run_sync is not None  # still the compiled fast path


@pytest.mark.parametrize("middleware", [False, True], ids=["app", "middleware"])
async def test_the_timer_hears_every_call_of_every_plugin_with_its_duration(middleware: bool) -> None:
    timings: list[tuple[str, str, float]] = []
    manager = toolkit.PluginManager()
    manager.register(Keep(), name="keep")
    manager.set_hook_timer(lambda hook, plugin_name, seconds: timings.append((hook, plugin_name, seconds)))
    manager.register(Slow(), name="slow")  # registered after the timer was set: timed too
    manager.register(Seen(), name="seen")
    transport = await run(manager, text("a"), text("b"), disconnect(), middleware=middleware)
    assert [m.get("text") for m in transport.sent if m["type"] == "websocket.send"] == ["a", "b"]
    calls = [(hook, name) for hook, name, _ in timings]
    per_message = [("ws_receive", "slow"), ("ws_receive", "keep"), ("ws_send", "keep")]
    assert calls == [*per_message, *per_message, ("ws_close", "seen")]
    slow = [seconds for hook, name, seconds in timings if name == "slow"]
    assert all(seconds >= 0.015 for seconds in slow)  # awaiting included
    assert all(seconds >= 0 for _, _, seconds in timings)


async def test_a_failing_plugin_is_timed_and_still_fails_as_itself(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="toolkit")
    timings: list[tuple[str, str]] = []
    seen = Seen()
    manager = toolkit.PluginManager(seen)
    manager.register(Ends("ws_receive", RuntimeError("boom")), name="faulty")
    manager.set_hook_timer(lambda hook, plugin_name, seconds: timings.append((hook, plugin_name)))
    transport = await run(manager, text("hi"))
    assert transport.sent[-1]["code"] == 1011
    assert ("ws_receive", "faulty") in timings
    assert seen.close == [(1011, ClosedBy.PLUGIN, "faulty")]


async def test_a_timer_that_raises_is_logged_and_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    def broken(hook: str, plugin_name: str, seconds: float) -> None:
        raise ValueError("timer bug")

    seen = Seen()
    manager = toolkit.PluginManager(Keep(), seen)
    manager.set_hook_timer(broken)
    with caplog.at_level(logging.ERROR, logger="toolkit"):
        transport = await run(manager, text("hi"), disconnect())
    assert [m["type"] for m in transport.sent] == ["websocket.accept", "websocket.send"]
    assert seen.close == [(1000, ClosedBy.CLIENT, None)]
    failures = [r for r in caplog.records if r.name == "toolkit"]
    assert failures
    assert all("hook timer failed" in r.getMessage() for r in failures)
