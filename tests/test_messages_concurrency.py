"""toolkit_messages under concurrency: many connections (and many tasks per connection) at once.

Issue 9: one ``Messages`` object serves every connection. Its hand-over between the hooks and
the channel used to live on that object, so with any async ``tryfirst`` ``ws_send`` plugin in
the chain (a metrics or audit plugin that awaits), connection B's send overwrote connection A's
hand-over while A's error reply was in flight, and A was closed with 1011. The hand-over now
lives in each connection's ``websocket.plugin_state``.

Every connection here sends valid, schema-invalid and malformed messages whose answers name the
connection, so a reply that went to the wrong connection, or a connection closed instead of
answered, shows. Runs on asyncio and trio, bounded by a deadline.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Final, Literal, TypeAlias

import anyio
import anyio.lowlevel
import pytest
from pydantic import BaseModel, ConfigDict, Field, computed_field
from toolkit_messages import Channel, Messages

import toolkit
from tests.support import Transport, connect, disconnect, make_scope, text
from toolkit import CloseCode, ClosedBy, Message, MessageResult, PluginManager, WebSocket, WebSocketApp

pytestmark = pytest.mark.anyio

CONNECTIONS: Final = 50
#: Whole-test deadline: the tests take well under a second; a hang fails instead of blocking the run.
DEADLINE: Final = 30.0


class Say(BaseModel):
    type: Literal["say"]
    conn: int
    n: int


class Numbers(BaseModel):
    type: Literal["numbers"]
    items: list[int]


Inbound = Annotated[Say | Numbers, Field(discriminator="type")]


class Said(BaseModel):
    type: Literal["said"]
    conn: int
    n: int


class Labelled(BaseModel):
    """Said, with ``extra="forbid"`` and a computed field.

    The JSON the channel sends for it ("label" included) does not validate back against the model,
    so a channel send goes out only because the plugin trusts the very object its channel built:
    lose that trust and the send closes the connection with 1011.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["said"]
    conn: int
    n: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def label(self) -> str:
        return f"{self.conn}/{self.n}"


Outbound: TypeAlias = Said | Labelled
ChatChannel: TypeAlias = Channel[Say | Numbers, Outbound]


@pytest.fixture(params=[Said, Labelled], ids=["plain", "labelled"])
def outbound(request: pytest.FixtureRequest) -> type[Outbound]:
    """The outbound model: replies round-trip (plain), or only the channel's trust lets them out (labelled)."""
    model: type[Outbound] = request.param
    return model


def make_messages(outbound: type[Outbound]) -> Messages[Say | Numbers, Outbound]:
    return Messages(Inbound, outbound)


class AsyncAudit(toolkit.Plugin):
    """A metrics/audit plugin whose ``ws_send`` awaits: the event loop runs other connections meanwhile.

    ``tryfirst`` and registered after ``Messages`` (whose ``ws_send`` is ``tryfirst`` too), so it
    runs before it: between a message being handed to the core and ``Messages`` checking it.
    """

    def __init__(self) -> None:
        self.sends = 0

    @toolkit.hookimpl(tryfirst=True)
    async def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> MessageResult:
        await anyio.lowlevel.checkpoint()
        self.sends += 1
        return None


class Closes(toolkit.Plugin):
    """Records how each connection ended."""

    def __init__(self) -> None:
        self.closes: list[tuple[int, str, ClosedBy]] = []

    def ws_close(self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None:
        self.closes.append((code, reason, closed_by))


@dataclass
class YieldingTransport(Transport):
    """The scripted transport, yielding to the event loop on every receive and send, as a server does."""

    #: Set once every connection is running: they all start at once.
    start: anyio.Event = field(default_factory=anyio.Event)
    #: The client leaves (the last scripted message) only once this is set.
    finish: anyio.Event | None = None

    async def receive(self) -> Message:
        await self.start.wait()
        await anyio.lowlevel.checkpoint()
        if len(self.incoming) == 1 and self.finish is not None:
            await self.finish.wait()
        return await super().receive()

    async def send(self, message: Message) -> None:
        await anyio.lowlevel.checkpoint()
        await super().send(message)


# --- what connection i sends, and what it must get back ------------------------------------------


def said(conn: int, n: int, outbound: type[Outbound]) -> dict[str, object]:
    reply: dict[str, object] = {"type": "said", "conn": conn, "n": n}
    if outbound is Labelled:
        reply["label"] = f"{conn}/{n}"
    return reply


def say(conn: int, n: int, outbound: type[Outbound]) -> tuple[str, dict[str, object]]:
    return json.dumps({"type": "say", "conn": conn, "n": n}), said(conn, n, outbound)


def invalid(conn: int, n: int, outbound: type[Outbound]) -> tuple[str, dict[str, object]]:
    # The bad item sits at an index unique to this connection and message: so is the error's loc.
    index = conn * 10 + n
    return (
        json.dumps({"type": "numbers", "items": [0] * index + ["x"]}),
        {
            "type": "error",
            "error": "invalid_message",
            "errors": [{"loc": ["numbers", "items", index], "type": "int_parsing"}],
        },
    )


def malformed(conn: int, n: int, outbound: type[Outbound]) -> tuple[str, dict[str, object]]:
    return '{"type":"say","conn":' + str(conn), {"type": "error", "error": "invalid_json"}


def script(conn: int, outbound: type[Outbound]) -> list[tuple[str, dict[str, object]]]:
    """Nine messages and their answers, in an order that differs between connections, so they interleave differently."""
    makers: list[Callable[[int, int, type[Outbound]], tuple[str, dict[str, object]]]] = [say, invalid, malformed] * 3
    shift = conn % len(makers)
    makers = makers[shift:] + makers[:shift]
    return [make(conn, n, outbound) for n, make in enumerate(makers)]


def decoded_sends(transport: Transport) -> list[object]:
    assert transport.sent[0]["type"] == "websocket.accept"
    seen: list[object] = []
    for message in transport.sent[1:]:
        if message["type"] == "websocket.send":
            seen.append(json.loads(message["text"]))
        else:
            seen.append(("close", message.get("code"), message.get("reason")))
    return seen


async def run_connections(
    endpoint: Callable[[int, WebSocket, ChatChannel], Awaitable[None]],
    plugins: PluginManager,
    scripts: list[list[tuple[str, dict[str, object]]]],
    finish: list[anyio.Event] | None = None,
) -> list[YieldingTransport]:
    """Run connection i on ``/ws/i`` with ``scripts[i]``, all at once, each to its end (the client leaves, 1000)."""
    messages = messages_of(plugins)

    async def app(websocket: WebSocket) -> None:
        await websocket.accept()
        await endpoint(int(websocket.url.path.rsplit("/", 1)[1]), websocket, messages.channel(websocket))

    asgi = WebSocketApp(app, plugins=plugins)
    start = anyio.Event()
    transports = [
        YieldingTransport(
            [connect(), *(text(data) for data, _ in lines), disconnect(1000)],
            start=start,
            finish=None if finish is None else finish[conn],
        )
        for conn, lines in enumerate(scripts)
    ]
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tasks:
            for conn, transport in enumerate(transports):
                tasks.start_soon(asgi, make_scope(path=f"/ws/{conn}"), transport.receive, transport.send)
            await anyio.lowlevel.checkpoint()
            start.set()
    return transports


def messages_of(plugins: PluginManager) -> Messages[Say | Numbers, Outbound]:
    (found,) = [plugin for _, plugin in plugins.list_name_plugin() if isinstance(plugin, Messages)]
    return found


async def echo(conn: int, websocket: WebSocket, channel: ChatChannel) -> None:
    async for message in channel:
        assert isinstance(message, Say)  # bad messages are answered by the plugin, never delivered
        assert message.conn == conn
        await channel.send({"type": "said", "conn": conn, "n": message.n})  # a dict: validated, then sent


async def test_fifty_interleaved_connections_each_get_exactly_their_own_replies(outbound: type[Outbound]) -> None:
    messages, audit, closes = make_messages(outbound), AsyncAudit(), Closes()
    plugins = PluginManager(messages, audit, closes)  # audit registered after: its ws_send runs first
    scripts = [script(conn, outbound) for conn in range(CONNECTIONS)]

    transports = await run_connections(echo, plugins, scripts)

    for conn, (transport, lines) in enumerate(zip(transports, scripts, strict=True)):
        assert decoded_sends(transport) == [expected for _, expected in lines], f"connection {conn}"
    assert closes.closes == [(CloseCode.NORMAL, "", ClosedBy.CLIENT)] * CONNECTIONS  # none was closed by a plugin
    assert audit.sends == CONNECTIONS * 9  # every reply went through the awaiting plugin


async def test_fifty_connections_with_a_reader_and_two_writers_each(outbound: type[Outbound]) -> None:
    # Several tasks of one connection send at once (the demo's reader and writer do): the plugin's
    # error answers to the reader's bad messages, and two writers' channel sends, all in flight together.
    messages, audit, closes = make_messages(outbound), AsyncAudit(), Closes()
    plugins = PluginManager(messages, audit, closes)
    scripts = [[line for line in script(conn, outbound) if line[1]["type"] == "error"] for conn in range(CONNECTIONS)]
    finish = [anyio.Event() for _ in range(CONNECTIONS)]
    firsts, per_writer = (100, 200), 5

    async def reader_and_writers(conn: int, websocket: WebSocket, channel: ChatChannel) -> None:
        async def write(first: int) -> None:
            for n in range(first, first + per_writer):
                await channel.send(outbound(type="said", conn=conn, n=n))

        async with anyio.create_task_group() as tasks:
            async with anyio.create_task_group() as writers:
                for first in firsts:
                    writers.start_soon(write, first)
                tasks.start_soon(read_all, channel)
            finish[conn].set()  # the writers are done: now the client may leave

    async def read_all(channel: ChatChannel) -> None:
        async for _ in channel:
            raise AssertionError("only bad messages are sent: nothing reaches the app")

    transports = await run_connections(reader_and_writers, plugins, scripts, finish)

    for conn, (transport, lines) in enumerate(zip(transports, scripts, strict=True)):
        seen = decoded_sends(transport)
        errors = [item for item in seen if isinstance(item, dict) and item["type"] == "error"]
        replies = [item for item in seen if isinstance(item, dict) and item["type"] == "said"]
        assert len(seen) == len(errors) + len(replies), f"connection {conn} got something else: {seen}"
        assert errors == [expected for _, expected in lines], f"connection {conn}"
        assert sorted(replies, key=lambda item: int(item["n"])) == [
            said(conn, n, outbound) for first in firsts for n in range(first, first + per_writer)
        ], f"connection {conn}"
    assert closes.closes == [(CloseCode.NORMAL, "", ClosedBy.CLIENT)] * CONNECTIONS
