"""The hook contract, point by point, over the in-memory transport (each test runs on asyncio and trio).

Every test asserts the exact ASGI messages that reach the server, what each plugin saw,
and how ``ws_close`` reported the end of the connection.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import types
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Literal

import anyio
import anyio.lowlevel
import pytest
from starlette.responses import PlainTextResponse

import toolkit
from tests.support import DENIAL_EXTENSION, Recorder, Transport, binary, connect, disconnect, make_scope, text
from toolkit import DROP, Accept, Close, ClosedBy, DenialResponse, Message, WebSocket

pytestmark = pytest.mark.anyio

Endpoint = Callable[[WebSocket], Awaitable[None]]
Mode = Literal["sync", "async", "wrapped"]
#: How a message hook's chain runs: all sync (the hot path), with an async impl, or inside a wrapper.
MODES: list[Mode] = ["sync", "async", "wrapped"]

ACCEPTED: Message = {"type": "websocket.accept", "subprotocol": None, "headers": []}
NORMAL_CLOSE: Message = {"type": "websocket.close", "code": 1000, "reason": ""}
INTERNAL_ERROR: Message = {"type": "websocket.close", "code": 1011, "reason": "internal error"}
#: The close an app or plugin denial becomes without the denial extension (the client sees 403).
DENIAL_CLOSE: Message = NORMAL_CLOSE
SECRET = "s3cr3t-token-in-exception"


def denial_messages(status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> list[Message]:
    """The two messages a DenialResponse becomes through the "websocket.http.response" extension."""
    raw = list(headers or [])
    if body:
        raw.append((b"content-type", b"text/plain; charset=utf-8"))
    raw.append((b"content-length", str(len(body)).encode()))
    return [
        {"type": "websocket.http.response.start", "status": status, "headers": raw},
        {"type": "websocket.http.response.body", "body": body, "more_body": False},
    ]


async def serve(
    endpoint: Endpoint,
    *plugins: object,
    incoming: list[Message] | None = None,
    extensions: dict[str, Any] | None = None,
    transport: Transport | None = None,
    manager: toolkit.PluginManager | None = None,
) -> Transport:
    """Run ``endpoint`` as a WebSocketApp over an in-memory transport and return the transport."""
    transport = transport if transport is not None else Transport([connect(), *(incoming or [])])
    app = toolkit.WebSocketApp(endpoint, plugins=manager if manager is not None else toolkit.PluginManager(*plugins))
    await app(make_scope(extensions=extensions), transport.receive, transport.send)
    return transport


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "toolkit"]


@pytest.fixture(autouse=True)
def _capture_toolkit_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="toolkit")


# --- plugins used throughout ------------------------------------------------------------------


class Returns(toolkit.Plugin):
    """Returns ``result`` (or raises it) from ``hook``; every message/accept hook records what it saw."""

    def __init__(self, hook: str, result: Any) -> None:
        self.hook = hook
        self.result = result
        self.seen: list[Any] = []

    def _run(self, hook: str, value: Any) -> Any:
        if hook != self.hook:
            return None
        self.seen.append(value)
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result

    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Any:
        return self._run("ws_accept", accept)

    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Any:
        return self._run("ws_receive", data)

    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> Any:
        return self._run("ws_send", data)


class AsyncReturns(Returns):
    """:class:`Returns` with ``async def`` implementations that really suspend."""

    async def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Any:
        await anyio.lowlevel.checkpoint()
        return self._run("ws_accept", accept)

    async def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Any:
        await anyio.lowlevel.checkpoint()
        return self._run("ws_receive", data)

    async def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> Any:
        await anyio.lowlevel.checkpoint()
        return self._run("ws_send", data)


class Around:
    """A pass-through ``wrapper=True`` plugin that records each outcome (or exception) it sees."""

    def __init__(self) -> None:
        self.outcomes: list[Any] = []

    def _wrap(self) -> Generator[None, Any, Any]:
        try:
            outcome = yield
        except BaseException as exc:
            self.outcomes.append(exc)
            raise
        self.outcomes.append(outcome)
        return outcome

    @toolkit.hookimpl(wrapper=True)
    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Generator[None, Any, Any]:
        return (yield from self._wrap())

    @toolkit.hookimpl(wrapper=True)
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Generator[None, Any, Any]:
        return (yield from self._wrap())

    @toolkit.hookimpl(wrapper=True)
    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> Generator[None, Any, Any]:
        return (yield from self._wrap())


def plugins_for(mode: Mode, hook: str, result: Any) -> tuple[Returns, list[object]]:
    """A :class:`Returns` for ``hook`` run the way ``mode`` says, plus a Recorder, as a plugin list."""
    plugin = AsyncReturns(hook, result) if mode == "async" else Returns(hook, result)
    plugins: list[object] = [plugin]
    if mode == "wrapped":
        plugins.append(Around())
    return plugin, plugins


def closes(plugins: list[object]) -> list[tuple[int, str, ClosedBy]]:
    return [call for plugin in plugins if isinstance(plugin, Recorder) for call in plugin.closes()]


# --- registration -----------------------------------------------------------------------------


def test_plugin_subclass_registers_without_markers() -> None:
    manager = toolkit.PluginManager()
    recorder = Recorder()
    name = manager.register(recorder)
    assert name == "Recorder"
    assert manager.hooks_of(recorder) == ["ws_accept", "ws_close", "ws_denial", "ws_receive", "ws_send"]
    assert manager.is_registered(recorder)


def test_default_names_are_readable_and_unique() -> None:
    manager = toolkit.PluginManager()
    assert manager.register(Returns("ws_send", None)) == "Returns"
    assert manager.register(Returns("ws_send", None)) == "Returns-2"
    assert manager.register(Returns("ws_send", None), name="audit") == "audit"
    module = types.ModuleType("my_plugin_module")

    def ws_close(code: int) -> None: ...

    module.ws_close = ws_close  # type: ignore[attr-defined]
    assert manager.register(module) == "my_plugin_module"
    assert [name for name, _ in manager.list_name_plugin()] == ["Returns", "Returns-2", "audit", "my_plugin_module"]


class Misspelled(toolkit.Plugin):
    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> None:
        raise AssertionError("a rejected plugin must never run")

    def ws_recieve(self, websocket: WebSocket, data: str | bytes) -> None:
        raise AssertionError("a rejected plugin must never run")


class MarkedButUnknown:
    @toolkit.hookimpl
    def on_receive(self, websocket: WebSocket, data: str | bytes) -> None: ...


class UnknownSpecname:
    @toolkit.hookimpl(specname="ws_sent")
    def outgoing(self, websocket: WebSocket, data: str | bytes) -> None: ...


@pytest.mark.parametrize(
    ("plugin", "hook_name"),
    [(Misspelled(), "ws_recieve"), (MarkedButUnknown(), "on_receive"), (UnknownSpecname(), "ws_sent")],
)
def test_unknown_hook_names_are_rejected(plugin: object, hook_name: str) -> None:
    manager = toolkit.PluginManager()
    with pytest.raises(toolkit.PluginValidationError, match="no such hook") as info:
        manager.register(plugin)
    message = str(info.value)
    assert hook_name in message
    assert type(plugin).__qualname__ in message
    assert "ws_receive" in message  # the known hooks are listed, so the typo is easy to see
    # The manager is unchanged: nothing registered, no chain built.
    assert manager.list_name_plugin() == []
    assert not manager.is_registered(plugin)
    assert manager.chains == toolkit.PluginManager().chains


class AsyncClose:
    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> None:
        raise AssertionError("a rejected plugin must never run")

    async def ws_close(self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None: ...


class AsyncDenial:
    async def ws_denial(self, *, websocket: WebSocket, response: DenialResponse) -> None: ...


@pytest.mark.parametrize(("plugin", "hook_name"), [(AsyncClose(), "ws_close"), (AsyncDenial(), "ws_denial")])
def test_async_observer_hooks_are_rejected(plugin: object, hook_name: str) -> None:
    manager = toolkit.PluginManager()
    with pytest.raises(toolkit.PluginValidationError, match=f"{hook_name} cannot await; implement it with a plain def"):
        manager.register(plugin)
    assert not manager.is_registered(plugin)
    assert manager.list_name_plugin() == []


async def test_rejected_plugin_never_runs_even_after_later_registrations() -> None:
    manager = toolkit.PluginManager()
    with pytest.raises(toolkit.PluginValidationError):
        manager.register(AsyncClose())
    recorder = Recorder()
    manager.register(recorder)  # rebuilds the chains: the rejected plugin's valid ws_send must not be in them

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")

    transport = await serve(endpoint, manager=manager)
    assert transport.sent == [ACCEPTED, {"type": "websocket.send", "text": "hello"}, NORMAL_CLOSE]
    assert recorder.closes() == [(1000, "", ClosedBy.APP)]


class AllAsync(toolkit.Plugin):
    async def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> None: ...

    async def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> None: ...

    async def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> None: ...


def test_async_message_and_accept_hooks_are_allowed() -> None:
    manager = toolkit.PluginManager()
    plugin = AllAsync()
    manager.register(plugin)
    assert manager.hooks_of(plugin) == ["ws_accept", "ws_receive", "ws_send"]


class ExtraArgument:
    def ws_send(self, *, websocket: WebSocket, data: str | bytes, extra: int) -> None: ...


def test_unknown_argument_is_rejected() -> None:
    manager = toolkit.PluginManager()
    with pytest.raises(toolkit.PluginValidationError, match="extra") as info:
        manager.register(ExtraArgument())
    assert isinstance(info.value, TypeError)
    assert manager.list_name_plugin() == []


class NotAGenerator:
    @toolkit.hookimpl(wrapper=True)
    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> None: ...


class AsyncGeneratorWrapper:
    @toolkit.hookimpl(wrapper=True)
    async def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> Any:
        yield


class OldStyleWrapper:
    @toolkit.hookimpl(hookwrapper=True)
    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> Generator[None, Any, None]:
        yield


@pytest.mark.parametrize(
    ("plugin", "problem"),
    [
        (NotAGenerator(), "wrapper=True or hookwrapper=True but function is not a generator function"),
        (AsyncGeneratorWrapper(), "wrapper=True or hookwrapper=True but function is not a generator function"),
        (OldStyleWrapper(), "old-style hookwrapper is not supported, use wrapper=True"),
    ],
)
def test_bad_wrappers_are_rejected(plugin: object, problem: str) -> None:
    manager = toolkit.PluginManager()
    with pytest.raises(toolkit.PluginValidationError, match=problem):
        manager.register(plugin)
    assert manager.list_name_plugin() == []


class HookIsProperty:
    @property
    def ws_send(self) -> Callable[[WebSocket, str | bytes], None]:
        return lambda websocket, data: None


class CallableObject:
    def __call__(self, websocket: WebSocket, data: str | bytes) -> None: ...


class HookIsCallableObject:
    ws_send = CallableObject()


class HookIsPartial:
    ws_send = functools.partial(lambda websocket, data: None)


@pytest.mark.parametrize("plugin", [HookIsProperty(), HookIsCallableObject(), HookIsPartial()])
def test_hook_that_is_not_a_function_is_rejected_clearly(plugin: object) -> None:
    # pluggy cannot call these; the toolkit must say so instead of failing inside pluggy.
    manager = toolkit.PluginManager()
    with pytest.raises(toolkit.PluginValidationError, match="ws_send") as info:
        manager.register(plugin)
    assert "function or method" in str(info.value)
    assert manager.list_name_plugin() == []


class SubsetOfArguments:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def ws_send(self, data: str | bytes) -> str | bytes:
        self.calls.append(("ws_send", data))
        return data.upper()

    def ws_close(self, closed_by: ClosedBy, code: int) -> None:
        self.calls.append(("ws_close", (closed_by, code)))


async def test_implementations_may_take_a_subset_of_arguments_in_any_order() -> None:
    plugin = SubsetOfArguments()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close(4000)

    transport = await serve(endpoint, plugin)
    assert transport.sent == [ACCEPTED, {"type": "websocket.send", "text": "HI"}, {**NORMAL_CLOSE, "code": 4000}]
    assert plugin.calls == [("ws_send", "hi"), ("ws_close", (ClosedBy.APP, 4000))]


async def test_unregister_affects_new_connections_only() -> None:
    manager = toolkit.PluginManager()
    upper = Returns("ws_send", "CHANGED")
    manager.register(upper)

    async def first(websocket: WebSocket) -> None:
        await websocket.accept()
        manager.unregister(upper)  # while this connection is open
        await websocket.send_text("a")

    transport = await serve(first, manager=manager)
    assert transport.sent[1] == {"type": "websocket.send", "text": "CHANGED"}

    async def second(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("b")

    transport = await serve(second, manager=manager)
    assert transport.sent[1] == {"type": "websocket.send", "text": "b"}
    assert upper.seen == ["a"]


# --- ws_accept --------------------------------------------------------------------------------


async def test_accept_kept_sends_the_apps_accept_unchanged() -> None:
    recorder = Recorder()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol="chat", headers=[(b"x-app", b"1")])

    transport = await serve(endpoint, recorder)
    assert transport.sent == [
        {"type": "websocket.accept", "subprotocol": "chat", "headers": [(b"x-app", b"1")]},
        NORMAL_CLOSE,
    ]
    assert recorder.calls[0] == ("ws_accept", Accept("chat", ((b"x-app", b"1"),)))


@pytest.mark.parametrize("mode", MODES)
async def test_accept_changed_subprotocol_and_headers(mode: Mode) -> None:
    class Change(toolkit.Plugin):
        def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Accept:
            return accept.replace(subprotocol="v2", headers=(*accept.headers, (b"x-plugin", b"yes")))

    _, plugins = plugins_for(mode, "ws_accept", None)
    accepted: list[str] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol="v1", headers=[(b"x-app", b"1")])
        accepted.append(websocket.application_state.name)

    transport = await serve(endpoint, Change(), *plugins)
    assert transport.sent == [
        {"type": "websocket.accept", "subprotocol": "v2", "headers": [(b"x-app", b"1"), (b"x-plugin", b"yes")]},
        NORMAL_CLOSE,
    ]
    assert accepted == ["CONNECTED"]


class AddHeader(toolkit.Plugin):
    def __init__(self, name: bytes, log: list[tuple[bytes, Accept]]) -> None:
        self.name = name
        self.log = log

    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Accept:
        self.log.append((self.name, accept))
        return accept.replace(headers=(*accept.headers, (self.name, b"1")))


async def test_accept_chain_each_sees_the_previous_change() -> None:
    log: list[tuple[bytes, Accept]] = []
    # Registered a then b: pluggy calls the most recently registered first.
    plugins = [AddHeader(b"x-a", log), AddHeader(b"x-b", log)]

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()

    transport = await serve(endpoint, *plugins)
    assert log == [(b"x-b", Accept()), (b"x-a", Accept(None, ((b"x-b", b"1"),)))]
    assert transport.sent[0] == {
        "type": "websocket.accept",
        "subprotocol": None,
        "headers": [(b"x-b", b"1"), (b"x-a", b"1")],
    }


async def test_accept_subprotocol_can_be_removed() -> None:
    class NoSubprotocol(toolkit.Plugin):
        def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Accept:
            return accept.replace(subprotocol=None)

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol="chat", headers=[(b"x-app", b"1")])

    transport = await serve(endpoint, NoSubprotocol())
    assert transport.sent[0] == {"type": "websocket.accept", "subprotocol": None, "headers": [(b"x-app", b"1")]}


async def test_accept_header_names_are_sent_lowercased() -> None:
    # ASGI: header names in "websocket.accept" and "websocket.http.response.start" must be lowercased.
    class Mixed(toolkit.Plugin):
        def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Accept:
            return accept.replace(headers=((b"X-Plugin", b"Yes"),))

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()

    transport = await serve(endpoint, Mixed())
    assert transport.sent[0]["headers"] == [(b"x-plugin", b"Yes")]
    assert DenialResponse(401, headers=((b"WWW-Authenticate", b"Bearer"),)).raw_headers() == [
        (b"www-authenticate", b"Bearer"),
        (b"content-length", b"0"),
    ]


@pytest.mark.parametrize("mode", MODES)
async def test_accept_denied_through_the_extension(mode: Mode) -> None:
    denial = DenialResponse(401, "go away", ((b"www-authenticate", b"Bearer"),))
    plugin, plugins = plugins_for(mode, "ws_accept", denial)
    never = Returns("ws_accept", None)  # registered first, so called after the denier: must not run
    recorder = Recorder()
    raised: list[toolkit.WebSocketDenied] = []

    async def endpoint(websocket: WebSocket) -> None:
        try:
            await websocket.accept()
        except toolkit.WebSocketDenied as exc:
            raised.append(exc)
            raise
        raise AssertionError("accept() must raise when denied")

    transport = await serve(endpoint, never, recorder, *plugins, extensions=DENIAL_EXTENSION)
    assert transport.sent == denial_messages(401, b"go away", [(b"www-authenticate", b"Bearer")])
    assert len(raised) == 1
    assert (raised[0].status, raised[0].code, raised[0].reason) == (401, 1006, "")
    assert isinstance(raised[0], toolkit.WebSocketDisconnect)
    assert plugin.seen == [Accept()]
    assert never.seen == []
    assert recorder.closes() == [(1006, "", ClosedBy.PLUGIN)]
    # The recorder runs after the denier, so a denial stopped the chain before it.
    assert recorder.names() == ["ws_denial", "ws_close"]
    if mode == "wrapped":
        assert isinstance(plugins[1], Around)
        assert plugins[1].outcomes == [denial]


async def test_accept_denied_without_the_extension_closes_before_accept() -> None:
    recorder = Recorder()
    raised: list[toolkit.WebSocketDenied] = []

    async def endpoint(websocket: WebSocket) -> None:
        try:
            await websocket.accept()
        except toolkit.WebSocketDenied as exc:
            raised.append(exc)

    transport = await serve(endpoint, recorder, Returns("ws_accept", DenialResponse(401, "no")))
    assert transport.sent == [DENIAL_CLOSE]
    assert raised[0].status == 403  # what the client is shown for a close before accept
    assert recorder.closes() == [(1006, "", ClosedBy.PLUGIN)]


async def test_app_that_ignores_a_denial_ends_cleanly() -> None:
    after: list[str] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()  # raises WebSocketDenied, a WebSocketDisconnect: WebSocketApp swallows it
        after.append("unreachable")

    transport = await serve(endpoint, Returns("ws_accept", DenialResponse(403)), extensions=DENIAL_EXTENSION)
    assert transport.sent == denial_messages(403, b"")
    assert after == []


# --- ws_receive -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("incoming", "result", "delivered"),
    [
        (text("hi"), None, {"type": "websocket.receive", "text": "hi"}),
        (binary(b"hi"), None, {"type": "websocket.receive", "bytes": b"hi"}),
        (text("hi"), "HI", {"type": "websocket.receive", "text": "HI"}),
        (text("hi"), b"raw", {"type": "websocket.receive", "bytes": b"raw"}),
        (binary(b"\x00"), "as text", {"type": "websocket.receive", "text": "as text"}),
        (text("hi"), "", {"type": "websocket.receive", "text": ""}),
    ],
)
async def test_receive_keep_or_replace(mode: Mode, incoming: Message, result: Any, delivered: Message) -> None:
    plugin, plugins = plugins_for(mode, "ws_receive", result)
    got: list[Message] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        got.append(await websocket.receive())

    await serve(endpoint, *plugins, incoming=[incoming])
    assert got == [delivered]
    assert plugin.seen == [incoming.get("text", incoming.get("bytes"))]


@pytest.mark.parametrize("mode", MODES)
async def test_receive_drop_discards_and_delivers_the_next(mode: Mode) -> None:
    class DropOdd(toolkit.Plugin):
        def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> toolkit.Drop | None:
            return DROP if data in ("1", "3") else None

    _, plugins = plugins_for(mode, "ws_receive", None)
    got: list[str] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        got.extend([message async for message in websocket.iter_text()])

    recorder = Recorder()
    transport = await serve(
        endpoint, recorder, DropOdd(), *plugins, incoming=[text("1"), text("2"), text("3"), text("4"), disconnect()]
    )
    assert got == ["2", "4"]
    # A later implementation never sees a dropped message.
    assert [data for name, data in recorder.calls if name == "ws_receive"] == ["2", "4"]
    assert transport.sent == [ACCEPTED]
    assert recorder.closes() == [(1000, "", ClosedBy.CLIENT)]


@pytest.mark.parametrize("mode", MODES)
async def test_receive_close(mode: Mode) -> None:
    _, plugins = plugins_for(mode, "ws_receive", Close(4001, "bye"))
    recorder = Recorder()
    got: list[Message] = []
    later: list[BaseException] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        got.append(await websocket.receive())
        try:
            await websocket.receive()
        except RuntimeError as exc:
            later.append(exc)

    transport = await serve(endpoint, recorder, *plugins, incoming=[text("hi"), text("never read")])
    assert got == [{"type": "websocket.disconnect", "code": 4001, "reason": "bye"}]
    assert transport.sent == [ACCEPTED, {"type": "websocket.close", "code": 4001, "reason": "bye"}]
    assert isinstance(later[0], toolkit.WebSocketDisconnected)
    assert recorder.closes() == [(4001, "bye", ClosedBy.PLUGIN)]
    # The Recorder was registered first, so it runs last: it never saw the message that closed.
    assert [name for name in recorder.names() if name == "ws_receive"] == []


class AnswerOdd(toolkit.Plugin):
    """Answers "1" and "3" itself (``Reply``) so the app never sees them."""

    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> toolkit.ReceiveResult:
        return toolkit.Reply(f"no {data!s}") if data in ("1", "3") else None


@pytest.mark.parametrize("mode", MODES)
async def test_receive_reply_answers_drops_and_delivers_the_next(mode: Mode) -> None:
    _, plugins = plugins_for(mode, "ws_receive", None)
    log: list[tuple[str, str, Any]] = []
    got: list[str] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        got.extend([message async for message in websocket.iter_text()])

    recorder = Recorder()
    transport = await serve(
        endpoint,
        recorder,
        Tag("!", log),
        AnswerOdd(),
        *plugins,
        incoming=[text("1"), text("2"), text("3"), disconnect()],
    )
    assert got == ["2!"]
    # The replies went out as the app's own sends would, through ws_send (Tag appends "!").
    assert transport.sent == [
        ACCEPTED,
        {"type": "websocket.send", "text": "no 1!"},
        {"type": "websocket.send", "text": "no 3!"},
    ]
    # The chain stopped at the Reply: later implementations never saw "1" or "3".
    assert [data for name, data in recorder.calls if name == "ws_receive"] == ["2!"]
    assert [data for name, data in recorder.calls if name == "ws_send"] == ["no 1!", "no 3!"]
    assert recorder.closes() == [(1000, "", ClosedBy.CLIENT)]


def receive_once(got: list[Message]) -> Endpoint:
    """An endpoint that accepts, then records what one ``receive()`` returns."""

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        got.append(await websocket.receive())

    return endpoint


async def test_receive_reply_with_bytes_goes_out_as_a_binary_frame() -> None:
    got: list[Message] = []
    endpoint = receive_once(got)
    replying = Returns("ws_receive", toolkit.Reply(b"\x00no"))
    transport = await serve(endpoint, replying, incoming=[binary(b"x"), disconnect(1001)])
    assert transport.sent == [ACCEPTED, {"type": "websocket.send", "bytes": b"\x00no"}]
    assert got == [{"type": "websocket.disconnect", "code": 1001, "reason": ""}]


async def test_receive_reply_to_a_vanished_client_reports_1006_to_the_app() -> None:
    got: list[Message] = []
    transport = Transport([connect(), text("1"), text("never read")])

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        transport.send_error = OSError("connection reset")
        got.append(await websocket.receive())

    recorder = Recorder()
    await serve(endpoint, recorder, AnswerOdd(), transport=transport)
    assert got == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]
    assert transport.incoming == [text("never read")]  # no further receive after the failed answer
    assert recorder.closes() == [(1006, "", ClosedBy.CLIENT)]


async def test_receive_reply_closed_by_a_ws_send_hook_reports_that_close() -> None:
    got: list[Message] = []
    endpoint = receive_once(got)
    recorder = Recorder()
    closing = Returns("ws_send", Close(4003, "no answers"))
    transport = await serve(endpoint, recorder, closing, AnswerOdd(), incoming=[text("1"), text("never read")])
    assert got == [{"type": "websocket.disconnect", "code": 4003, "reason": "no answers"}]
    assert transport.sent == [ACCEPTED, {"type": "websocket.close", "code": 4003, "reason": "no answers"}]
    assert recorder.closes() == [(4003, "no answers", ClosedBy.PLUGIN)]


@pytest.mark.parametrize("mode", MODES)
async def test_send_reply_is_refused_and_fails_closed(mode: Mode, caplog: pytest.LogCaptureFixture) -> None:
    _, plugins = plugins_for(mode, "ws_send", toolkit.Reply("sneaky"))
    raised: list[toolkit.WebSocketDisconnect] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            await websocket.send_text("hi")
        except toolkit.WebSocketDisconnect as exc:
            raised.append(exc)

    transport = await serve(endpoint, *plugins)
    assert transport.sent == [ACCEPTED, INTERNAL_ERROR]
    assert [exc.code for exc in raised] == [1011]
    assert any(
        "only ws_receive" in record.getMessage() or "unsupported" in record.getMessage() for record in errors(caplog)
    )


@pytest.mark.parametrize("data", [None, 1, ["x"]])
def test_reply_takes_only_text_or_bytes(data: Any) -> None:
    with pytest.raises(TypeError, match="str or bytes"):
        toolkit.Reply(data)


async def test_receive_close_raises_disconnect_from_the_high_level_api() -> None:
    raised: list[toolkit.WebSocketDisconnect] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            await websocket.receive_text()
        except toolkit.WebSocketDisconnect as exc:
            raised.append(exc)
            raise

    transport = await serve(endpoint, Returns("ws_receive", Close(1008, "policy")), incoming=[text("x")])
    assert [(exc.code, exc.reason) for exc in raised] == [(1008, "policy")]
    assert transport.sent == [ACCEPTED, {"type": "websocket.close", "code": 1008, "reason": "policy"}]


class Tagger(toolkit.Plugin):
    def __init__(self, tag: str, log: list[tuple[str, str, Any]]) -> None:
        self.tag = tag
        self.log = log

    def _tag(self, hook: str, data: str | bytes) -> str:
        self.log.append((self.tag, hook, data))
        assert isinstance(data, str)
        return data + self.tag


class Tag(Tagger):
    """Appends its tag to every message in both directions, logging what it saw."""

    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> str:
        return self._tag("ws_receive", data)

    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> str:
        return self._tag("ws_send", data)


class AsyncTag(Tagger):
    async def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> str:
        await anyio.lowlevel.checkpoint()
        return self._tag("ws_receive", data)

    async def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> str:
        await anyio.lowlevel.checkpoint()
        return self._tag("ws_send", data)


@pytest.mark.parametrize("middle", [Tag, AsyncTag])
async def test_message_chains_pass_each_replacement_on(middle: type[Tagger]) -> None:
    log: list[tuple[str, str, Any]] = []
    plugins = [Tag("a", log), middle("b", log), Tag("c", log)]
    got: list[str] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        got.append(await websocket.receive_text())
        await websocket.send_text("out")

    transport = await serve(endpoint, *plugins, incoming=[text("in")])
    assert got == ["incba"]
    assert transport.sent[1] == {"type": "websocket.send", "text": "outcba"}
    assert log == [
        ("c", "ws_receive", "in"),
        ("b", "ws_receive", "inc"),
        ("a", "ws_receive", "incb"),
        ("c", "ws_send", "out"),
        ("b", "ws_send", "outc"),
        ("a", "ws_send", "outcb"),
    ]


# --- ws_send ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("outgoing", "result", "sent"),
    [
        ({"type": "websocket.send", "text": "hi"}, None, {"type": "websocket.send", "text": "hi"}),
        ({"type": "websocket.send", "bytes": b"hi"}, None, {"type": "websocket.send", "bytes": b"hi"}),
        ({"type": "websocket.send", "text": "hi"}, "HI", {"type": "websocket.send", "text": "HI"}),
        ({"type": "websocket.send", "text": "hi"}, b"raw", {"type": "websocket.send", "bytes": b"raw"}),
        ({"type": "websocket.send", "bytes": b"\x00"}, "txt", {"type": "websocket.send", "text": "txt"}),
    ],
)
async def test_send_keep_or_replace(mode: Mode, outgoing: Message, result: Any, sent: Message) -> None:
    plugin, plugins = plugins_for(mode, "ws_send", result)

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send(outgoing)

    transport = await serve(endpoint, *plugins)
    assert transport.sent == [ACCEPTED, sent, NORMAL_CLOSE]
    assert plugin.seen == [outgoing.get("text", outgoing.get("bytes"))]


@pytest.mark.parametrize("mode", MODES)
async def test_send_drop(mode: Mode) -> None:
    class DropSecret(toolkit.Plugin):
        def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> toolkit.Drop | None:
            return DROP if data == "secret" else None

    _, plugins = plugins_for(mode, "ws_send", None)
    recorder = Recorder()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("secret")
        await websocket.send_text("public")

    transport = await serve(endpoint, recorder, DropSecret(), *plugins)
    assert transport.sent == [ACCEPTED, {"type": "websocket.send", "text": "public"}, NORMAL_CLOSE]
    assert [data for name, data in recorder.calls if name == "ws_send"] == ["public"]


@pytest.mark.parametrize("mode", MODES)
async def test_send_close(mode: Mode) -> None:
    _, plugins = plugins_for(mode, "ws_send", Close(4002, "too chatty"))
    recorder = Recorder()
    raised: list[toolkit.WebSocketDisconnect] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            await websocket.send_text("x")
        except toolkit.WebSocketDisconnect as exc:
            raised.append(exc)
        with pytest.raises(toolkit.WebSocketDisconnected):
            await websocket.send_text("after close")

    transport = await serve(endpoint, recorder, *plugins)
    assert transport.sent == [ACCEPTED, {"type": "websocket.close", "code": 4002, "reason": "too chatty"}]
    assert [(exc.code, exc.reason) for exc in raised] == [(4002, "too chatty")]
    assert recorder.closes() == [(4002, "too chatty", ClosedBy.PLUGIN)]


async def test_every_send_method_goes_through_ws_send() -> None:
    recorder = Recorder()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("t")
        await websocket.send_bytes(b"b")
        await websocket.send_json({"k": 1})
        await websocket.send_json([1], mode="binary")

    await serve(endpoint, recorder)
    assert [data for name, data in recorder.calls if name == "ws_send"] == ["t", b"b", '{"k":1}', b"[1]"]


async def test_every_receive_method_goes_through_ws_receive() -> None:
    got: list[Any] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        got.append(await websocket.receive_text())
        got.append(await websocket.receive_bytes())
        got.append(await websocket.receive_json())
        got.extend([item async for item in websocket.iter_json()])

    class Rewrite(toolkit.Plugin):
        def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> str | bytes:
            return data[::-1]

    await serve(endpoint, Rewrite(), incoming=[text("ab"), binary(b"cd"), text("]1["), text("}{"), disconnect()])
    assert got == ["ba", b"dc", [1], {}]


# --- ws_close: exactly once, whatever ends the connection ---------------------------------------


def assert_closed_once(recorder: Recorder, expected: tuple[int, str, ClosedBy]) -> None:
    assert recorder.closes() == [expected]


async def test_close_by_app() -> None:
    recorder = Recorder()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close(4000, "bye")
        await websocket.close()  # a no-op: nothing sent, ws_close not fired again
        with pytest.raises(toolkit.WebSocketDisconnected):
            await websocket.send({"type": "websocket.close", "code": 1000})

    transport = await serve(endpoint, recorder)
    assert transport.sent == [ACCEPTED, {"type": "websocket.close", "code": 4000, "reason": "bye"}]
    assert_closed_once(recorder, (4000, "bye", ClosedBy.APP))


async def test_close_refuses_forbidden_codes_and_changes_nothing() -> None:
    recorder = Recorder()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        for code in (999, 1004, 1005, 1006, 1015, 1016, 2999, 5000):
            with pytest.raises(ValueError, match="may not be sent"):
                await websocket.close(code)
        with pytest.raises(ValueError, match="123"):
            await websocket.close(1000, "é" * 62)
        assert recorder.closes() == []
        await websocket.close(1000, "é" * 61)

    transport = await serve(endpoint, recorder)
    assert transport.sent == [ACCEPTED, {"type": "websocket.close", "code": 1000, "reason": "é" * 61}]
    assert_closed_once(recorder, (1000, "é" * 61, ClosedBy.APP))


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (disconnect(1001, "going away"), (1001, "going away", ClosedBy.CLIENT)),
        (disconnect(None), (1005, "", ClosedBy.CLIENT)),
        (disconnect(1006), (1006, "", ClosedBy.CLIENT)),
    ],
)
async def test_close_by_client(message: Message, expected: tuple[int, str, ClosedBy]) -> None:
    recorder = Recorder()
    raised: list[toolkit.WebSocketDisconnect] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            await websocket.receive_text()
        except toolkit.WebSocketDisconnect as exc:
            raised.append(exc)
            raise

    transport = await serve(endpoint, recorder, incoming=[message])
    assert transport.sent == [ACCEPTED]  # nothing is sent to a client that has gone
    assert [(exc.code, exc.reason) for exc in raised] == [expected[:2]]
    assert_closed_once(recorder, expected)


async def test_close_by_failed_send() -> None:
    recorder = Recorder()
    raised: list[toolkit.WebSocketDisconnect] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        transport.send_error = ConnectionResetError("peer reset")
        try:
            await websocket.send_text("lost")
        except toolkit.WebSocketDisconnect as exc:
            raised.append(exc)
        with pytest.raises(toolkit.WebSocketDisconnected):
            await websocket.send_text("again")

    transport = Transport([connect()])
    await serve(endpoint, recorder, transport=transport)
    assert transport.sent == [ACCEPTED]
    assert [exc.code for exc in raised] == [1006]
    assert_closed_once(recorder, (1006, "", ClosedBy.CLIENT))


async def test_close_by_failed_accept_send() -> None:
    recorder = Recorder()
    transport = Transport([connect()], send_error=BrokenPipeError())

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()

    await serve(endpoint, recorder, transport=transport)
    assert transport.sent == []
    assert_closed_once(recorder, (1006, "", ClosedBy.CLIENT))


@pytest.mark.parametrize("extensions", [None, DENIAL_EXTENSION])
async def test_close_by_exception_in_app(extensions: dict[str, Any] | None) -> None:
    recorder = Recorder()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        raise RuntimeError(SECRET)

    transport = Transport([connect()])
    with pytest.raises(RuntimeError, match=SECRET):
        await serve(endpoint, recorder, transport=transport, extensions=extensions)
    assert transport.sent == [ACCEPTED, INTERNAL_ERROR]
    assert_closed_once(recorder, (1011, "internal error", ClosedBy.SERVER))


@pytest.mark.parametrize("extensions", [None, DENIAL_EXTENSION])
async def test_exception_in_app_before_accept_denies(extensions: dict[str, Any] | None) -> None:
    recorder = Recorder()

    async def endpoint(websocket: WebSocket) -> None:
        raise RuntimeError(SECRET)

    transport = Transport([connect()])
    with pytest.raises(RuntimeError, match=SECRET):
        await serve(endpoint, recorder, transport=transport, extensions=extensions)
    expected = [DENIAL_CLOSE] if extensions is None else denial_messages(500, b"Internal Server Error")
    assert transport.sent == expected
    assert SECRET not in repr(transport.sent)
    assert recorder.names() == ["ws_denial", "ws_close"]
    assert recorder.calls[0] == ("ws_denial", DenialResponse.for_status(500))
    assert_closed_once(recorder, (1006, "", ClosedBy.SERVER))


async def test_close_by_cancellation() -> None:
    recorder = Recorder()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        scope.cancel()
        await anyio.lowlevel.checkpoint()

    with anyio.CancelScope() as scope:
        transport = Transport([connect()])
        await serve(endpoint, recorder, transport=transport)
    assert scope.cancelled_caught
    assert transport.sent == [ACCEPTED]  # nothing can be sent once cancelled
    assert_closed_once(recorder, (1006, "", ClosedBy.SERVER))


class CancelOnClose(Transport):
    """A server whose ``send`` of the final message is where the app's cancellation lands."""

    async def send(self, message: Message) -> None:
        if message["type"] in ("websocket.close", "websocket.http.response.start"):
            await anyio.lowlevel.checkpoint()
        await super().send(message)


@pytest.mark.parametrize("accept", [True, False])
@pytest.mark.parametrize("app_raises", [False, True])
async def test_ws_close_fires_when_cancelled_while_finishing(accept: bool, app_raises: bool) -> None:
    recorder = Recorder()
    transport = CancelOnClose([connect()])

    async def endpoint(websocket: WebSocket) -> None:
        if accept:
            await websocket.accept()
        scope.cancel()  # takes effect at the next checkpoint: the close WebSocketApp sends for the app
        if app_raises:
            raise ValueError("boom")

    with anyio.CancelScope() as scope:
        await serve(endpoint, recorder, transport=transport, extensions=DENIAL_EXTENSION)
    assert scope.cancelled_caught
    assert transport.sent == ([ACCEPTED] if accept else [])
    assert_closed_once(recorder, (1006, "", ClosedBy.SERVER))


async def test_close_when_endpoint_returns_without_closing() -> None:
    recorder = Recorder()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()

    transport = await serve(endpoint, recorder)
    assert transport.sent == [ACCEPTED, NORMAL_CLOSE]
    assert_closed_once(recorder, (1000, "", ClosedBy.APP))


@pytest.mark.parametrize("extensions", [None, DENIAL_EXTENSION])
async def test_close_when_endpoint_returns_without_accepting(extensions: dict[str, Any] | None) -> None:
    recorder = Recorder()

    async def endpoint(websocket: WebSocket) -> None:
        pass

    transport = await serve(endpoint, recorder, extensions=extensions)
    assert transport.sent == [DENIAL_CLOSE]  # a plain close: the client sees 403
    assert recorder.calls == [("ws_denial", DenialResponse.for_status(403)), ("ws_close", (1006, "", ClosedBy.APP))]


@pytest.mark.parametrize(
    ("code", "sent_code"),
    [(4000, 4000), (1001, 1001), (1005, 1000), (1006, 1000), (1015, 1000), (1004, 1000), (999, 1000), (2000, 1000)],
)
async def test_app_raising_disconnect_closes_with_a_sendable_code(code: int, sent_code: int) -> None:
    recorder = Recorder()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        raise toolkit.WebSocketDisconnect(code)

    transport = await serve(endpoint, recorder)
    assert transport.sent == [ACCEPTED, {"type": "websocket.close", "code": sent_code, "reason": ""}]
    assert_closed_once(recorder, (sent_code, "", ClosedBy.APP))


@pytest.mark.parametrize("response", [DenialResponse(401, "nope"), PlainTextResponse("nope", status_code=401)])
async def test_close_by_app_denial_response(response: Any) -> None:
    recorder = Recorder()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.send_denial_response(response)

    transport = await serve(endpoint, recorder, extensions=DENIAL_EXTENSION)
    assert transport.sent_types() == ["websocket.http.response.start", "websocket.http.response.body"]
    assert transport.sent[0]["status"] == 401
    assert_closed_once(recorder, (1006, "", ClosedBy.APP))


async def test_denial_response_needs_the_extension() -> None:
    recorder = Recorder()

    async def endpoint(websocket: WebSocket) -> None:
        with pytest.raises(RuntimeError, match="Denial Response extension"):
            await websocket.send_denial_response(DenialResponse(401))

    transport = await serve(endpoint, recorder)
    assert transport.sent == [DENIAL_CLOSE]
    assert_closed_once(recorder, (1006, "", ClosedBy.APP))


# --- ws_denial --------------------------------------------------------------------------------


class ReplaceDenial(toolkit.Plugin):
    def __init__(self, replacement: DenialResponse | None) -> None:
        self.replacement = replacement
        self.seen: list[DenialResponse] = []

    def ws_denial(self, *, websocket: WebSocket, response: DenialResponse) -> DenialResponse | None:
        self.seen.append(response)
        return self.replacement


async def test_denial_sees_and_replaces_a_plugin_denial() -> None:
    observer = ReplaceDenial(None)
    replacer = ReplaceDenial(DenialResponse(429, "slow down", ((b"retry-after", b"5"),)))
    raised: list[toolkit.WebSocketDenied] = []

    async def endpoint(websocket: WebSocket) -> None:
        try:
            await websocket.accept()
        except toolkit.WebSocketDenied as exc:
            raised.append(exc)

    # observer registered first: it runs after the replacer and sees the replacement.
    transport = await serve(
        endpoint, observer, replacer, Returns("ws_accept", DenialResponse(401)), extensions=DENIAL_EXTENSION
    )
    assert replacer.seen == [DenialResponse(401)]
    assert observer.seen == [DenialResponse(429, "slow down", ((b"retry-after", b"5"),))]
    assert transport.sent == denial_messages(429, b"slow down", [(b"retry-after", b"5")])
    assert raised[0].status == 429


async def test_denial_sees_a_starlette_response_and_keeping_it_sends_it_unchanged() -> None:
    response = PlainTextResponse("nope", status_code=401, headers={"WWW-Authenticate": "Bearer"})

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.send_denial_response(response)

    plain = await serve(endpoint, extensions=DENIAL_EXTENSION)
    observer = ReplaceDenial(None)
    observed = await serve(endpoint, observer, extensions=DENIAL_EXTENSION)
    assert observed.sent == plain.sent  # exactly what Starlette sent
    assert len(observer.seen) == 1
    seen = observer.seen[0]
    assert (seen.status, seen.body) == (401, b"nope")
    assert (b"www-authenticate", b"Bearer") in seen.headers


async def test_denial_replaces_an_app_denial() -> None:
    replacer = ReplaceDenial(DenialResponse(404, "gone"))

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.send_denial_response(PlainTextResponse("nope", status_code=401))

    transport = await serve(endpoint, replacer, extensions=DENIAL_EXTENSION)
    assert transport.sent == denial_messages(404, b"gone")


async def test_denial_sees_a_streamed_app_denial_whole() -> None:
    observer = ReplaceDenial(None)
    parts: list[Message] = [
        {"type": "websocket.http.response.start", "status": 403, "headers": [(b"x-a", b"1")]},
        {"type": "websocket.http.response.body", "body": b"par", "more_body": True},
        {"type": "websocket.http.response.body", "body": b"ts", "more_body": False},
    ]

    async def endpoint(websocket: WebSocket) -> None:
        for part in parts:
            await websocket.send(part)

    transport = await serve(endpoint, observer, extensions=DENIAL_EXTENSION)
    assert [(r.status, r.body, r.headers) for r in observer.seen] == [(403, b"parts", ((b"x-a", b"1"),))]
    assert transport.sent == parts


async def test_denial_unfinished_app_denial_is_finished_for_it() -> None:
    observer = ReplaceDenial(None)
    recorder = Recorder()
    start: Message = {"type": "websocket.http.response.start", "status": 400, "headers": []}

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.send(start)
        await websocket.send({"type": "websocket.http.response.body", "body": b"half", "more_body": True})

    transport = await serve(endpoint, recorder, observer, extensions=DENIAL_EXTENSION)
    assert [(r.status, r.body) for r in observer.seen] == [(400, b"half")]
    assert transport.sent[-1] == {"type": "websocket.http.response.body", "body": b"", "more_body": False}
    assert_closed_once(recorder, (1006, "", ClosedBy.APP))


async def test_denial_cannot_describe_a_redirect_so_it_is_sent_unchanged() -> None:
    observer = ReplaceDenial(DenialResponse(500))
    parts: list[Message] = [
        {"type": "websocket.http.response.start", "status": 307, "headers": [(b"location", b"/elsewhere")]},
        {"type": "websocket.http.response.body", "body": b"", "more_body": False},
    ]

    async def endpoint(websocket: WebSocket) -> None:
        for part in parts:
            await websocket.send(part)

    transport = await serve(endpoint, observer, extensions=DENIAL_EXTENSION)
    assert transport.sent == parts
    assert observer.seen == []


@pytest.mark.parametrize("extensions", [None, DENIAL_EXTENSION])
async def test_denial_sees_an_app_close_before_accept(extensions: dict[str, Any] | None) -> None:
    observer = ReplaceDenial(None)

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.close(4003, "not you")

    transport = await serve(endpoint, observer, extensions=extensions)
    assert observer.seen == [DenialResponse.for_status(403)]
    assert transport.sent == [{"type": "websocket.close", "code": 4003, "reason": "not you"}]


@pytest.mark.parametrize("extensions", [None, DENIAL_EXTENSION])
async def test_denial_replaces_an_app_close_before_accept(extensions: dict[str, Any] | None) -> None:
    replacer = ReplaceDenial(DenialResponse(401, "log in"))

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.close()

    transport = await serve(endpoint, replacer, extensions=extensions)
    # Without the extension there is no way to send an HTTP response: the close stands.
    assert transport.sent == ([DENIAL_CLOSE] if extensions is None else denial_messages(401, b"log in"))


async def test_denial_sees_the_failure_policy_denial() -> None:
    replacer = ReplaceDenial(DenialResponse(503, "later"))
    raised: list[toolkit.WebSocketDenied] = []

    async def endpoint(websocket: WebSocket) -> None:
        try:
            await websocket.accept()
        except toolkit.WebSocketDenied as exc:
            raised.append(exc)

    transport = await serve(endpoint, replacer, Returns("ws_accept", ValueError(SECRET)), extensions=DENIAL_EXTENSION)
    assert replacer.seen == [DenialResponse.for_status(500)]
    assert transport.sent == denial_messages(503, b"later")
    assert raised[0].status == 503


class RaisingDenial(toolkit.Plugin):
    def ws_denial(self, *, websocket: WebSocket, response: DenialResponse) -> DenialResponse:
        raise RuntimeError(SECRET)


class GarbageDenial(toolkit.Plugin):
    def ws_denial(self, *, websocket: WebSocket, response: DenialResponse) -> Any:
        return "not a response"


@pytest.mark.parametrize("bad", [RaisingDenial, GarbageDenial])
async def test_failing_denial_hook_is_logged_and_skipped(
    bad: type[toolkit.Plugin], caplog: pytest.LogCaptureFixture
) -> None:
    observer = ReplaceDenial(None)  # registered first, runs after the bad one

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.send_denial_response(DenialResponse(401, "nope"))

    transport = await serve(endpoint, observer, bad(), extensions=DENIAL_EXTENSION)
    assert transport.sent == denial_messages(401, b"nope")
    assert [(r.status, r.body) for r in observer.seen] == [(401, b"nope")]
    [record] = errors(caplog)
    assert bad.__name__ in record.getMessage()
    assert "ws_denial" in record.getMessage()
    assert SECRET not in repr(transport.sent)


class DenialWrapper:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    @toolkit.hookimpl(wrapper=True)
    def ws_denial(self, *, websocket: WebSocket, response: DenialResponse) -> Generator[None, Any, Any]:
        outcome = yield
        self.seen.append((response, outcome))
        return DenialResponse(outcome.status, b"wrapped " + outcome.body)


async def test_denial_wrapper_sees_the_outcome_and_can_replace_it() -> None:
    wrapper = DenialWrapper()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.send_denial_response(DenialResponse(401, "nope"))

    transport = await serve(endpoint, wrapper, ReplaceDenial(DenialResponse(402, "pay")), extensions=DENIAL_EXTENSION)
    [(seen, outcome)] = wrapper.seen
    assert (seen.status, seen.body, outcome) == (401, b"nope", DenialResponse(402, "pay"))
    assert transport.sent == denial_messages(402, b"wrapped pay")


# --- async implementations --------------------------------------------------------------------


class Ticker:
    """Counts scheduler turns, to prove that an async hook really suspended."""

    def __init__(self) -> None:
        self.ticks = 0

    async def run(self) -> None:
        while True:
            self.ticks += 1
            await anyio.lowlevel.checkpoint()


class Suspends(toolkit.Plugin):
    def __init__(self, name: str, log: list[str], ticker: Ticker) -> None:
        self.name = name
        self.log = log
        self.ticker = ticker

    async def _suspend(self, hook: str) -> None:
        before = self.ticker.ticks
        self.log.append(f"{self.name}:{hook}:start")
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        assert self.ticker.ticks > before, "the hook did not yield to the event loop"
        self.log.append(f"{self.name}:{hook}:end")

    async def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Accept:
        await self._suspend("ws_accept")
        return accept.replace(subprotocol=(accept.subprotocol or "") + self.name)

    async def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> str:
        await self._suspend("ws_receive")
        assert isinstance(data, str)
        return data + self.name

    async def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> str:
        await self._suspend("ws_send")
        assert isinstance(data, str)
        return data + self.name


class Plain(toolkit.Plugin):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Accept:
        self.log.append(f"{self.name}:ws_accept")
        return accept.replace(subprotocol=(accept.subprotocol or "") + self.name)

    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> str:
        self.log.append(f"{self.name}:ws_receive")
        assert isinstance(data, str)
        return data + self.name

    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> str:
        self.log.append(f"{self.name}:ws_send")
        assert isinstance(data, str)
        return data + self.name


async def test_async_implementations_are_awaited_in_order() -> None:
    log: list[str] = []
    ticker = Ticker()
    got: list[str] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        got.append(await websocket.receive_text())
        await websocket.send_text("out")

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker.run)
        transport = await serve(
            endpoint, Plain("a", log), Suspends("b", log, ticker), Plain("c", log), incoming=[text("in")]
        )
        tg.cancel_scope.cancel()

    assert transport.sent[0] == {"type": "websocket.accept", "subprotocol": "cba", "headers": []}
    assert got == ["incba"]
    assert transport.sent[1] == {"type": "websocket.send", "text": "outcba"}
    assert log == [
        "c:ws_accept", "b:ws_accept:start", "b:ws_accept:end", "a:ws_accept",
        "c:ws_receive", "b:ws_receive:start", "b:ws_receive:end", "a:ws_receive",
        "c:ws_send", "b:ws_send:start", "b:ws_send:end", "a:ws_send",
    ]  # fmt: skip


class ReturnsCoroutine(toolkit.Plugin):
    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> Any:
        return anyio.lowlevel.checkpoint()  # a plain def handing back an awaitable: a mistake the toolkit reports


async def test_plain_def_returning_a_coroutine_is_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("x")

    transport = await serve(endpoint, ReturnsCoroutine())
    assert transport.sent == [ACCEPTED, INTERNAL_ERROR]
    [record] = errors(caplog)
    assert "'ReturnsCoroutine' failed in ws_send: returned an awaitable from a plain def" in record.getMessage()


# --- ordering and wrappers --------------------------------------------------------------------


def make_ordered(label: str, log: list[tuple[str, str]], *, tryfirst: bool = False, trylast: bool = False) -> object:
    """A plugin implementing all five hooks with the given hookimpl options, logging each call."""

    def note(hook: str) -> None:
        log.append((label, hook))

    class Ordered:
        @toolkit.hookimpl(tryfirst=tryfirst, trylast=trylast)
        def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> None:
            note("ws_accept")

        @toolkit.hookimpl(tryfirst=tryfirst, trylast=trylast)
        def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> None:
            note("ws_receive")

        @toolkit.hookimpl(tryfirst=tryfirst, trylast=trylast)
        def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> None:
            note("ws_send")

        @toolkit.hookimpl(tryfirst=tryfirst, trylast=trylast)
        def ws_close(self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None:
            note("ws_close")

        @toolkit.hookimpl(tryfirst=tryfirst, trylast=trylast)
        def ws_denial(self, *, websocket: WebSocket, response: DenialResponse) -> None:
            note("ws_denial")

    return Ordered()


async def test_tryfirst_trylast_and_registration_order() -> None:
    log: list[tuple[str, str]] = []
    manager = toolkit.PluginManager()
    manager.register(make_ordered("first", log, tryfirst=True), name="first")
    manager.register(make_ordered("old", log), name="old")
    manager.register(make_ordered("last", log, trylast=True), name="last")
    manager.register(make_ordered("new", log), name="new")

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        await websocket.send_text("x")

    await serve(endpoint, manager=manager, incoming=[text("x")])

    async def denies(websocket: WebSocket) -> None:
        await websocket.close()

    await serve(denies, manager=manager)
    order = ["first", "new", "old", "last"]
    hooks = ["ws_accept", "ws_receive", "ws_send", "ws_close", "ws_denial", "ws_close"]
    assert log == [(label, hook) for hook in hooks for label in order]


def make_wrapper(label: str, log: list[str], replace: str | None = None, *, tryfirst: bool = False) -> object:
    class Wrapper:
        @toolkit.hookimpl(wrapper=True, tryfirst=tryfirst)
        def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> Generator[None, Any, Any]:
            log.append(f"{label} before {data!r}")
            outcome = yield
            log.append(f"{label} after {outcome!r}")
            return outcome if replace is None else replace

    return Wrapper()


async def test_wrappers_wrap_every_implementation_and_see_the_final_result() -> None:
    log: list[str] = []
    # Wrappers registered first still wrap plugins registered later; tryfirst makes a wrapper outermost.
    plugins = [
        make_wrapper("outer", log, tryfirst=True),
        make_wrapper("inner", log, replace="from inner wrapper"),
        Plain("a", []),
        Plain("b", []),
    ]

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("x")

    transport = await serve(endpoint, *plugins)
    assert log == [
        "outer before 'x'",
        "inner before 'x'",
        "inner after 'xba'",
        "outer after 'from inner wrapper'",
    ]
    assert transport.sent[1] == {"type": "websocket.send", "text": "from inner wrapper"}


@pytest.mark.parametrize("result", [DROP, Close(4000, "w")])
async def test_wrapper_sees_drop_and_close_results(result: Any) -> None:
    around = Around()
    recorder = Recorder()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        with pytest.raises(toolkit.WebSocketDisconnect) if result is not DROP else contextlib.nullcontext():
            await websocket.send_text("x")

    transport = await serve(endpoint, recorder, around, Returns("ws_send", result))
    assert around.outcomes == [Accept(), result]
    if result is DROP:
        assert transport.sent == [ACCEPTED, NORMAL_CLOSE]
    else:
        assert transport.sent == [ACCEPTED, {"type": "websocket.close", "code": 4000, "reason": "w"}]


class CatchValueError:
    def __init__(self) -> None:
        self.caught: list[BaseException] = []

    @toolkit.hookimpl(wrapper=True)
    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> Generator[None, Any, Any]:
        try:
            return (yield)
        except ValueError as exc:
            self.caught.append(exc)
            return "recovered"


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_wrapper_sees_the_plugins_own_exception_and_may_handle_it(
    mode: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    error = ValueError(SECRET)
    catcher = CatchValueError()
    _, plugins = plugins_for(mode, "ws_send", error)
    recorder = Recorder()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("x")

    transport = await serve(endpoint, recorder, catcher, *plugins)
    assert catcher.caught == [error]  # pluggy style: the exception the plugin raised, not a toolkit wrapper
    assert transport.sent == [ACCEPTED, {"type": "websocket.send", "text": "recovered"}, NORMAL_CLOSE]
    assert errors(caplog) == []
    assert recorder.closes() == [(1000, "", ClosedBy.APP)]


class Reraise:
    def __init__(self) -> None:
        self.seen: list[BaseException] = []

    @toolkit.hookimpl(wrapper=True)
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Generator[None, Any, Any]:
        try:
            return (yield)
        except BaseException as exc:
            self.seen.append(exc)
            raise


class RaiseOwn:
    @toolkit.hookimpl(wrapper=True)
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Generator[None, Any, Any]:
        yield
        raise KeyError(SECRET)


class YieldTwice:
    @toolkit.hookimpl(wrapper=True)
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Generator[None, Any, Any]:
        yield
        yield


class WrapperGarbage:
    @toolkit.hookimpl(wrapper=True)
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Generator[None, Any, Any]:
        yield
        return 42


class FailBeforeYield:
    @toolkit.hookimpl(wrapper=True)
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Generator[None, Any, Any]:
        if data == "x":
            raise KeyError(SECRET)
        return (yield)


async def test_wrapper_reraising_blames_the_plugin_that_raised(caplog: pytest.LogCaptureFixture) -> None:
    error = ValueError(SECRET)
    reraise = Reraise()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        with pytest.raises(toolkit.WebSocketDisconnect):
            await websocket.receive_text()

    transport = await serve(endpoint, reraise, Returns("ws_receive", error), incoming=[text("x")])
    assert reraise.seen == [error]
    assert transport.sent == [ACCEPTED, INTERNAL_ERROR]
    [record] = errors(caplog)
    assert record.getMessage() == "plugin 'Returns' failed in ws_receive: raised"
    assert record.exc_info is not None
    assert record.exc_info[1] is error


@pytest.mark.parametrize(
    ("wrapper", "problem"),
    [
        (RaiseOwn, "raised"),
        (YieldTwice, "a wrapper yielded more than once"),
        (WrapperGarbage, "a wrapper returned an unsupported result"),
        (FailBeforeYield, "raised"),
    ],
)
async def test_failing_wrapper_is_blamed(wrapper: type, problem: str, caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    plain = Returns("ws_receive", None)

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        with pytest.raises(toolkit.WebSocketDisconnect) as info:
            await websocket.receive_text()
        assert (info.value.code, info.value.reason) == (1011, "internal error")

    transport = await serve(endpoint, recorder, plain, wrapper(), incoming=[text("x")])
    assert transport.sent == [ACCEPTED, INTERNAL_ERROR]
    assert SECRET not in repr(transport.sent)
    [record] = errors(caplog)
    assert record.getMessage() == f"plugin {wrapper.__name__!r} failed in ws_receive: {problem}"
    assert plain.seen == ([] if wrapper is FailBeforeYield else ["x"])
    assert recorder.closes() == [(1011, "internal error", ClosedBy.PLUGIN)]


async def test_accept_wrapper_sees_the_accept_and_can_deny() -> None:
    class Gate:
        def __init__(self) -> None:
            self.seen: list[Any] = []

        @toolkit.hookimpl(wrapper=True)
        def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Generator[None, Any, Any]:
            outcome = yield
            self.seen.append((accept, outcome))
            return DenialResponse(451, "unavailable")

    gate = Gate()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol="x")

    transport = await serve(endpoint, gate, Returns("ws_accept", None), extensions=DENIAL_EXTENSION)
    assert gate.seen == [(Accept("x"), Accept("x"))]
    assert transport.sent == denial_messages(451, b"unavailable")


class CloseWrapper:
    def __init__(self, log: list[str], fail: bool = False) -> None:
        self.log = log
        self.fail = fail

    @toolkit.hookimpl(wrapper=True)
    def ws_close(
        self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy
    ) -> Generator[None, Any, Any]:
        self.log.append(f"before {code}")
        result = yield
        self.log.append("after")
        if self.fail:
            raise RuntimeError(SECRET)
        return result


class LogClose(toolkit.Plugin):
    def __init__(self, log: list[str], fail: bool = False) -> None:
        self.log = log
        self.fail = fail

    def ws_close(self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None:
        self.log.append(f"impl {closed_by}")
        if self.fail:
            raise RuntimeError(SECRET)


@pytest.mark.parametrize("fail", [False, True])
async def test_close_wrapper_wraps_the_observers(fail: bool, caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()

    transport = await serve(endpoint, CloseWrapper(log, fail), LogClose(log))
    assert log == ["before 1000", "impl app", "after"]
    assert transport.sent == [ACCEPTED, NORMAL_CLOSE]
    assert len(errors(caplog)) == int(fail)


# --- failure policy ---------------------------------------------------------------------------


GARBAGE: list[Any] = [42, ["list"], True, bytearray(b"x"), object()]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("extensions", [None, DENIAL_EXTENSION])
@pytest.mark.parametrize(
    "result", [ValueError(SECRET), *GARBAGE, "a str", Close(), DROP], ids=lambda v: type(v).__name__
)
async def test_failure_before_accept_denies_and_never_accepts(
    mode: Mode, extensions: dict[str, Any] | None, result: Any, caplog: pytest.LogCaptureFixture
) -> None:
    plugin, plugins = plugins_for(mode, "ws_accept", result)
    recorder = Recorder()
    raised: list[toolkit.WebSocketDenied] = []

    async def endpoint(websocket: WebSocket) -> None:
        try:
            await websocket.accept()
        except toolkit.WebSocketDenied as exc:
            raised.append(exc)
            raise
        raise AssertionError("must not be accepted")

    transport = await serve(endpoint, recorder, *plugins, extensions=extensions)
    if extensions is None:
        assert transport.sent == [DENIAL_CLOSE]
        assert raised[0].status == 403
    else:
        assert transport.sent == denial_messages(500, b"Internal Server Error")
        assert raised[0].status == 500
    assert SECRET not in repr(transport.sent)
    assert recorder.closes() == [(1006, "", ClosedBy.PLUGIN)]
    assert ("ws_denial", DenialResponse.for_status(500)) in recorder.calls
    [record] = errors(caplog)
    message = record.getMessage()
    assert message.startswith(f"plugin {type(plugin).__name__!r} failed in ws_accept: ")
    if isinstance(result, ValueError):
        assert message.endswith(": raised")
        assert record.exc_info is not None
        assert record.exc_info[1] is result
    else:
        assert message.endswith(f": returned an unsupported {type(result).__name__}")
        assert not record.exc_info


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("hook", ["ws_receive", "ws_send"])
@pytest.mark.parametrize(
    "result", [ValueError(SECRET), *GARBAGE, Accept(), DenialResponse()], ids=lambda v: type(v).__name__
)
async def test_failure_after_accept_closes_1011(
    mode: Mode, hook: str, result: Any, caplog: pytest.LogCaptureFixture
) -> None:
    plugin, plugins = plugins_for(mode, hook, result)
    recorder = Recorder()
    raised: list[toolkit.WebSocketDisconnect] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            if hook == "ws_receive":
                await websocket.receive_text()
            else:
                await websocket.send_text("x")
        except toolkit.WebSocketDisconnect as exc:
            raised.append(exc)
        # The connection is over for the app too.
        with pytest.raises(RuntimeError):
            await websocket.send_text("after")

    transport = await serve(endpoint, recorder, *plugins, incoming=[text("x")])
    assert transport.sent == [ACCEPTED, INTERNAL_ERROR]
    assert SECRET not in repr(transport.sent)
    assert [(exc.code, exc.reason) for exc in raised] == [(1011, "internal error")]
    assert recorder.closes() == [(1011, "internal error", ClosedBy.PLUGIN)]
    [record] = errors(caplog)
    assert f"plugin {type(plugin).__name__!r} failed in {hook}" in record.getMessage()
    assert SECRET not in record.getMessage()  # the text is in the traceback, for the operator only


async def test_invalid_values_built_by_a_plugin_are_failures(caplog: pytest.LogCaptureFixture) -> None:
    class Inject(toolkit.Plugin):
        def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Accept:
            return accept.replace(headers=((b"x-evil", b"a\r\nset-cookie: x"),))

    class ForbiddenCode(toolkit.Plugin):
        def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> Close:
            return Close(1006)

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()

    transport = await serve(endpoint, Inject(), extensions=DENIAL_EXTENSION)
    assert transport.sent == denial_messages(500, b"Internal Server Error")

    async def sends(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("x")

    transport = await serve(sends, ForbiddenCode())
    assert transport.sent == [ACCEPTED, INTERNAL_ERROR]
    assert [r.getMessage().split(": ")[0] for r in errors(caplog)] == [
        f"plugin {Inject.__qualname__!r} failed in ws_accept",
        f"plugin {ForbiddenCode.__qualname__!r} failed in ws_send",
    ]


class Boom(toolkit.Plugin):
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> None:
        if data == "boom":
            raise RuntimeError(SECRET)


async def test_failure_leaves_other_connections_alone(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    manager = toolkit.PluginManager(recorder, Boom())
    echoed: list[str] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        async for message in websocket.iter_text():
            echoed.append(message)
            await websocket.send_text(message)

    transports: list[Transport] = []

    async def run(incoming: list[Message]) -> None:
        transports.append(await serve(endpoint, manager=manager, incoming=incoming))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, [text("boom"), text("never")])
        tg.start_soon(run, [text("a"), text("b"), disconnect()])
    broken, healthy = sorted(transports, key=lambda t: len(t.sent))
    assert broken.sent == [ACCEPTED, INTERNAL_ERROR]
    assert healthy.sent == [ACCEPTED, {"type": "websocket.send", "text": "a"}, {"type": "websocket.send", "text": "b"}]
    assert echoed == ["a", "b"]
    assert sorted(recorder.closes()) == [(1000, "", ClosedBy.CLIENT), (1011, "internal error", ClosedBy.PLUGIN)]
    assert len(errors(caplog)) == 1
    # The manager still works for new connections after the failure.
    later = await serve(endpoint, manager=manager, incoming=[text("c"), disconnect()])
    assert later.sent[1] == {"type": "websocket.send", "text": "c"}


class CancelInside(toolkit.Plugin):
    """Cancels the app's scope from inside an async hook, then checkpoints."""

    def __init__(self, hook: str) -> None:
        self.hook = hook
        self.scope: anyio.CancelScope | None = None
        self.after: list[str] = []

    async def _cancel(self, hook: str) -> None:
        if hook == self.hook and self.scope is not None:
            self.scope.cancel()
            await anyio.lowlevel.checkpoint()
            self.after.append("not cancelled")

    async def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> None:
        await self._cancel("ws_accept")

    async def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> None:
        await self._cancel("ws_receive")

    async def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> None:
        await self._cancel("ws_send")


class SwallowCancel:
    """A wrapper that catches everything, cancellation included, and returns a result."""

    def __init__(self) -> None:
        self.seen: list[type[BaseException]] = []

    def _swallow(self, value: Any) -> Generator[None, Any, Any]:
        try:
            return (yield)
        except BaseException as exc:
            self.seen.append(type(exc))
            return value

    @toolkit.hookimpl(wrapper=True)
    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Generator[None, Any, Any]:
        return (yield from self._swallow(accept))

    @toolkit.hookimpl(wrapper=True)
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Generator[None, Any, Any]:
        return (yield from self._swallow(data))

    @toolkit.hookimpl(wrapper=True)
    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> Generator[None, Any, Any]:
        return (yield from self._swallow(data))


@pytest.mark.parametrize("swallowing_wrapper", [False, True])
@pytest.mark.parametrize("hook", ["ws_accept", "ws_receive", "ws_send"])
async def test_cancellation_inside_a_hook_propagates(
    hook: str, swallowing_wrapper: bool, caplog: pytest.LogCaptureFixture
) -> None:
    plugin = CancelInside(hook)
    swallow = SwallowCancel()
    recorder = Recorder()
    caught: list[bool] = []

    async def endpoint(websocket: WebSocket) -> None:
        if hook != "ws_accept":
            await websocket.accept()
        with anyio.CancelScope() as scope:
            plugin.scope = scope
            if hook == "ws_accept":
                await websocket.accept()
            elif hook == "ws_receive":
                await websocket.receive_text()
            else:
                await websocket.send_text("cancelled")
            raise AssertionError("the cancellation was swallowed")
        caught.append(scope.cancelled_caught)
        plugin.scope = None
        # Not a failure: the connection is still usable (or, before accept, can still be accepted).
        if hook == "ws_accept":
            await websocket.accept()
        await websocket.send_text("after")

    plugins: list[object] = [recorder, plugin]
    if swallowing_wrapper:
        plugins.append(swallow)
    transport = await serve(endpoint, *plugins, incoming=[text("lost")])
    assert caught == [True]
    assert plugin.after == []
    assert transport.sent == [ACCEPTED, {"type": "websocket.send", "text": "after"}, NORMAL_CLOSE]
    assert errors(caplog) == []
    assert recorder.closes() == [(1000, "", ClosedBy.APP)]
    if swallowing_wrapper:
        assert swallow.seen == [anyio.get_cancelled_exc_class()]


async def test_cancelled_accept_hook_fires_ws_close_once() -> None:
    plugin = CancelInside("ws_accept")
    recorder = Recorder()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()

    transport = Transport([connect()])
    with anyio.CancelScope() as scope:
        plugin.scope = scope
        await serve(endpoint, recorder, plugin, transport=transport, extensions=DENIAL_EXTENSION)
    assert scope.cancelled_caught
    assert transport.sent == []
    assert recorder.closes() == [(1006, "", ClosedBy.SERVER)]


class FailingClose(toolkit.Plugin):
    def ws_close(self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None:
        raise RuntimeError(SECRET)


async def test_failing_close_hook_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close(4000)

    # Call order: the second LogClose, FailingClose, the first LogClose.
    transport = await serve(endpoint, LogClose(log), FailingClose(), LogClose(log))
    assert log == ["impl app", "impl app"]
    assert transport.sent == [ACCEPTED, {"type": "websocket.close", "code": 4000, "reason": ""}]
    [record] = errors(caplog)
    assert record.getMessage() == "plugin 'FailingClose' failed in ws_close: raised"


# --- plugins that send or close from inside a hook --------------------------------------------


class Pong(toolkit.Plugin):
    async def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> toolkit.Drop | None:
        if data == "ping":
            await websocket.send_text("pong")
            return DROP
        return None


async def test_plugin_sending_from_a_receive_hook() -> None:
    recorder = Recorder()
    got: list[str] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        got.append(await websocket.receive_text())

    transport = await serve(endpoint, recorder, Pong(), incoming=[text("ping"), text("hello")])
    assert got == ["hello"]
    assert transport.sent == [ACCEPTED, {"type": "websocket.send", "text": "pong"}, NORMAL_CLOSE]
    assert [call for call in recorder.calls if call[0] == "ws_send"] == [("ws_send", "pong")]


class Kick(toolkit.Plugin):
    def __init__(self, hook: str) -> None:
        self.hook = hook

    async def _kick(self, hook: str, websocket: WebSocket) -> None:
        if hook == self.hook:
            await websocket.close(4000, "kicked")

    async def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> None:
        await self._kick("ws_accept", websocket)

    async def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> None:
        await self._kick("ws_receive", websocket)

    async def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> None:
        await self._kick("ws_send", websocket)


@pytest.mark.parametrize("hook", ["ws_receive", "ws_send"])
async def test_plugin_closing_from_a_message_hook(hook: str, caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    raised: list[toolkit.WebSocketDisconnect] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            if hook == "ws_receive":
                await websocket.receive_text()
            else:
                await websocket.send_text("x")
        except toolkit.WebSocketDisconnect as exc:
            raised.append(exc)

    transport = await serve(endpoint, recorder, Kick(hook), incoming=[text("x")])
    assert transport.sent == [ACCEPTED, {"type": "websocket.close", "code": 4000, "reason": "kicked"}]
    assert [(exc.code, exc.reason) for exc in raised] == [(4000, "kicked")]
    assert [close[:2] for close in recorder.closes()] == [(4000, "kicked")]
    assert errors(caplog) == []


async def test_plugin_closing_from_the_accept_hook_denies(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    raised: list[toolkit.WebSocketDenied] = []

    async def endpoint(websocket: WebSocket) -> None:
        try:
            await websocket.accept()
        except toolkit.WebSocketDenied as exc:
            raised.append(exc)
            raise
        raise AssertionError("accepted after a plugin closed the connection")

    transport = await serve(endpoint, recorder, Kick("ws_accept"))
    assert transport.sent == [{"type": "websocket.close", "code": 4000, "reason": "kicked"}]
    assert [exc.status for exc in raised] == [403]
    assert len(recorder.closes()) == 1
    assert errors(caplog) == []


async def test_plugin_sending_a_denial_from_the_accept_hook() -> None:
    class SendsDenial(toolkit.Plugin):
        async def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> None:
            await websocket.send_denial_response(DenialResponse(401, "who?"))

    recorder = Recorder()

    statuses: list[int] = []

    async def endpoint(websocket: WebSocket) -> None:
        with pytest.raises(toolkit.WebSocketDenied) as info:
            await websocket.accept()
        statuses.append(info.value.status)

    transport = await serve(endpoint, recorder, SendsDenial(), extensions=DENIAL_EXTENSION)
    assert transport.sent == denial_messages(401, b"who?")
    assert statuses == [401]
    assert recorder.closes() == [(1006, "", ClosedBy.APP)]


async def test_plugin_sending_data_before_accept_is_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    class TooEarly(toolkit.Plugin):
        async def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> None:
            await websocket.send_text("hello?")

    async def endpoint(websocket: WebSocket) -> None:
        with pytest.raises(toolkit.WebSocketDenied):
            await websocket.accept()

    transport = await serve(endpoint, TooEarly(), extensions=DENIAL_EXTENSION)
    assert transport.sent == denial_messages(500, b"Internal Server Error")
    [record] = errors(caplog)
    assert record.getMessage() == f"plugin {TooEarly.__qualname__!r} failed in ws_accept: raised"


@pytest.mark.parametrize("replacement", [None, DenialResponse(451, "blocked")])
async def test_denied_status_is_what_the_client_was_shown(replacement: DenialResponse | None) -> None:
    # A plugin that closes from inside ws_accept, with ws_denial turning the close into an HTTP response.
    statuses: list[int] = []

    async def endpoint(websocket: WebSocket) -> None:
        with pytest.raises(toolkit.WebSocketDenied) as info:
            await websocket.accept()
        statuses.append(info.value.status)

    transport = await serve(endpoint, ReplaceDenial(replacement), Kick("ws_accept"), extensions=DENIAL_EXTENSION)
    if replacement is None:
        assert transport.sent == [{"type": "websocket.close", "code": 4000, "reason": "kicked"}]
        assert statuses == [403]
    else:
        assert transport.sent == denial_messages(451, b"blocked")
        assert statuses == [451]


class Fails(toolkit.Plugin):
    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> None:
        raise RuntimeError(SECRET)


@pytest.mark.parametrize("plugin", [Returns("ws_send", Close(4002, "too chatty")), Fails()])
async def test_send_reports_the_close_that_happened_when_the_plugin_close_cannot_be_sent(
    plugin: toolkit.Plugin, caplog: pytest.LogCaptureFixture
) -> None:
    # The peer is gone: the plugin's close (or the 1011 for a failure) never reaches it. A failed send is the
    # client's vanishing, whoever was sending: ws_close says 1006 by the client, as for the app's own sends.
    recorder = Recorder()
    raised: list[toolkit.WebSocketDisconnect] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        transport.send_error = ConnectionResetError()
        try:
            await websocket.send_text("x")
        except toolkit.WebSocketDisconnect as exc:
            raised.append(exc)

    transport = Transport([connect()])
    await serve(endpoint, recorder, plugin, transport=transport)
    assert transport.sent == [ACCEPTED]
    assert recorder.closes() == [(1006, "", ClosedBy.CLIENT)]
    assert [(exc.code, exc.reason) for exc in raised] == [(1006, "")]  # what ws_close saw, not what was intended
    assert len(errors(caplog)) == int(isinstance(plugin, Fails))


async def test_send_reports_a_close_made_inside_the_hook_when_a_later_hook_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    raised: list[toolkit.WebSocketDisconnect] = []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            await websocket.send_text("x")
        except toolkit.WebSocketDisconnect as exc:
            raised.append(exc)

    # Call order: Kick (closes 4000 from inside ws_send), then Fails.
    transport = await serve(endpoint, recorder, Fails(), Kick("ws_send"))
    assert transport.sent == [ACCEPTED, {"type": "websocket.close", "code": 4000, "reason": "kicked"}]
    assert [(exc.code, exc.reason) for exc in raised] == [(4000, "kicked")]
    assert [close[:2] for close in recorder.closes()] == [(4000, "kicked")]
    [record] = errors(caplog)
    assert record.getMessage() == "plugin 'Fails' failed in ws_send: raised"


# --- the core's message counters (what toolkit_otel reads instead of hooking every message) -------


@pytest.mark.parametrize("mode", MODES)
async def test_message_counters_count_what_arrived_and_what_went_out(mode: Mode) -> None:
    """Received: every data message from the client, one a hook drops included. Sent: what the server took."""
    sockets: list[WebSocket] = []

    async def endpoint(websocket: WebSocket) -> None:
        sockets.append(websocket)
        await websocket.accept()
        assert (websocket.messages_received, websocket.messages_sent) == (0, 0)  # the accept is not data
        await websocket.send_text(await websocket.receive_text())  # "a"; the dropped "skip" is never delivered
        await websocket.send_bytes(await websocket.receive_bytes())
        await websocket.send_text("skip")  # dropped by the ws_send hook: not sent
        await websocket.close()

    _, plugins = plugins_for(mode, "ws_receive", None)  # a keeping hook, sync, async or wrapped

    class DropSkip(toolkit.Plugin):
        def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> toolkit.ReceiveResult:
            return DROP if data == "skip" else None

        def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> toolkit.MessageResult:
            return DROP if data == "skip" else None

    transport = await serve(endpoint, DropSkip(), *plugins, incoming=[text("a"), text("skip"), binary(b"b")])
    [websocket] = sockets
    assert (websocket.messages_received, websocket.messages_sent) == (3, 2)
    assert transport.sent_types().count("websocket.send") == 2
