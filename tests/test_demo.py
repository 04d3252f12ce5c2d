"""toolkit_demo in memory: the room never waits for a member, and a stuck client does not hold up the others.

The same app runs over a real server in tests/test_demo_server.py and in a browser in
tests/test_demo_browser.py.
"""

from __future__ import annotations

import json
import logging
import socket
import warnings
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

import anyio
import pytest
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.exceptions import StarletteDeprecationWarning
from toolkit_demo import (
    CHAT_PATH,
    MAX_MESSAGE_BYTES,
    OUTBOX_BYTES,
    Joined,
    Member,
    Members,
    Missed,
    Room,
    Said,
    asyncapi_document,
    chat_messages,
    create_app,
    local_origins,
)
from toolkit_demo.__main__ import main

from tests.support import make_scope
from toolkit import ASGIApp, Message, Scope

pytestmark = pytest.mark.anyio

TOKENS: Final = {"alice-token": "alice", "bob-token": "bob"}
STEP: Final = 5.0


@pytest.fixture
def make_room() -> Iterator[Callable[[int], Room]]:
    """Makes rooms whose members' outboxes are all closed after the test."""
    made: list[Member] = []

    class Tracked(Room):
        def member(self, name: str) -> Member:
            made.append(super().member(name))
            return made[-1]

    yield Tracked
    for member in made:
        member.close()


async def drain(room: Room, member: Member) -> list[Joined | Said | Members | Missed]:
    """What the member's writer would send now, as it would send it (a presence mark becomes a snapshot)."""
    sent: list[Joined | Said | Members | Missed] = []
    for _ in range(len(member.pending())):
        message = await member.next()
        sent.append(room.snapshot() if message is None else message)
    assert member.queued_bytes == 0
    return sent


def wire_size(message: Joined | Said) -> int:
    return len(message.model_dump_json().encode())


async def test_join_welcomes_the_joiner_and_marks_the_others_once_per_new_name(
    make_room: Callable[[int], Room],
) -> None:
    room = make_room(OUTBOX_BYTES)
    alice, bob, alice_again = room.member("alice"), room.member("bob"), room.member("alice")
    room.join(alice)
    room.join(bob)
    assert await drain(room, alice) == [
        Joined(name="alice", members=["alice"]),
        Members(members=["alice", "bob"]),  # rendered when sent: the room as it is then
    ]
    room.join(alice_again)  # a second tab: no new name, nobody else is told
    assert await drain(room, alice) == []
    assert await drain(room, bob) == [Joined(name="bob", members=["alice", "bob"])]
    assert await drain(room, alice_again) == [Joined(name="alice", members=["alice", "bob"])]
    room.leave(alice)  # alice is still there in another tab
    assert await drain(room, bob) == []
    room.leave(alice_again)
    assert await drain(room, bob) == [Members(members=["bob"])]


async def test_a_crowd_arriving_and_leaving_is_one_mark_in_each_outbox(make_room: Callable[[int], Room]) -> None:
    room = make_room(OUTBOX_BYTES)
    watcher = room.member("watcher")
    room.join(watcher)
    await drain(room, watcher)
    crowd = [room.member(f"person{n:03}") for n in range(100)]
    for member in crowd:
        room.join(member)
    assert watcher.pending() == [None]  # one mark for 100 arrivals, and no byte of the budget
    assert watcher.queued_bytes == 0
    room.broadcast(Said(name="person000", text="hi"))
    for member in crowd:
        room.leave(member)
    # Still one mark, ahead of the "said": when sent, it shows the room as it is then, the crowd gone.
    assert watcher.pending() == [None, Said(name="person000", text="hi")]
    assert await drain(room, watcher) == [Members(members=["watcher"]), Said(name="person000", text="hi")]
    room.join(room.member("late"))  # once sent, the next change gets a mark of its own
    assert await drain(room, watcher) == [Members(members=["late", "watcher"])]
    assert not watcher.too_slow


async def test_leave_tells_the_others_once_and_empties_the_outbox(make_room: Callable[[int], Room]) -> None:
    room = make_room(OUTBOX_BYTES)
    alice, bob, stranger = room.member("alice"), room.member("bob"), room.member("carol")
    room.join(alice)
    room.join(bob)
    await drain(room, alice)
    room.broadcast(Said(name="alice", text="bye bob"))
    room.leave(bob)
    room.leave(bob)
    room.leave(stranger)  # never joined: nobody is told
    assert await drain(room, alice) == [Said(name="alice", text="bye bob"), Members(members=["alice"])]
    assert bob not in room
    assert room.names() == ["alice"]
    assert (bob.closed, bob.pending(), bob.queued_bytes) == (True, [], 0)  # nothing it held stays
    bob.push(Said(name="x", text="y"), 10)
    bob.presence_changed()
    assert bob.pending() == []
    with pytest.raises(anyio.EndOfStream):
        await bob.next()


async def test_an_outbox_over_its_byte_budget_marks_only_that_member_too_slow(
    make_room: Callable[[int], Room],
) -> None:
    message = Said(name="alice", text="é" * 100)  # 200 bytes of text: bytes count, not characters
    size = wire_size(message)
    assert size == len(message.model_dump_json()) + 100
    room = make_room(3 * size)
    fast, slow = room.member("alice"), room.member("bob")
    room.join(slow)
    room.join(fast)
    await drain(room, slow)
    await drain(room, fast)
    for _ in range(3):  # broadcast is sync: nothing a member does can make it wait
        room.broadcast(message)
        assert await drain(room, fast) == [message]
    assert (slow.queued_bytes, slow.too_slow) == (3 * size, False)  # exactly the budget: still in
    for _ in range(50):
        room.leave(room.member("carol"))
        slow.presence_changed()  # presence never counts: merged into one mark
    assert slow.queued_bytes == 3 * size
    room.broadcast(message)
    assert slow.too_slow
    assert slow.scope.cancel_called  # its writer is told to let go
    assert (slow.pending(), slow.queued_bytes) == ([], 0)  # and nothing it held stays
    assert await drain(room, fast) == [message]
    assert not fast.too_slow


async def test_a_waiting_writer_is_woken_by_a_message_and_by_close(make_room: Callable[[int], Room]) -> None:
    room = make_room(OUTBOX_BYTES)
    member = room.member("alice")
    got: list[Joined | Said | Missed | None] = []
    ended = anyio.Event()

    async def writer() -> None:
        try:
            while True:
                got.append(await member.next())
        except anyio.EndOfStream:
            ended.set()

    with anyio.fail_after(STEP):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(writer)
            await anyio.wait_all_tasks_blocked()
            room.join(member)
            await anyio.wait_all_tasks_blocked()
            assert got == [Joined(name="alice", members=["alice"])]
            room.leave(member)
            await ended.wait()


def test_room_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="outbox_bytes"):
        Room(outbox_bytes=0)


# --- the endpoint, with one client that never reads ---------------------------------------------


def scope_for(token: str) -> Scope:
    return make_scope(
        path="/ws",
        headers=[(b"host", b"127.0.0.1:8000"), (b"origin", b"http://127.0.0.1:8000")],
        subprotocols=["chat.v1", f"bearer.{token}"],
    )


async def serve(
    app: ASGIApp, token: str, inbound: MemoryObjectReceiveStream[Message], send: Callable[[Message], Awaitable[None]]
) -> None:
    async def receive() -> Message:
        return await inbound.receive()

    await app(scope_for(token), receive, send)


async def connect_and_join(
    tasks: TaskGroup,
    app: ASGIApp,
    token: str,
    inbound: tuple[MemoryObjectSendStream[Message], MemoryObjectReceiveStream[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """Serve one client of ``app`` in ``tasks``: it connects and sends ``join``."""
    tasks.start_soon(serve, app, token, inbound[1], send)
    await inbound[0].send({"type": "websocket.connect"})
    await inbound[0].send({"type": "websocket.receive", "text": '{"type":"join"}'})


def said(message: Message) -> Any:
    return json.loads(message["text"]) if message["type"] == "websocket.send" else message


async def test_a_stuck_client_is_closed_1013_and_the_others_carry_on() -> None:
    # Room for two of alice's "said" (41 bytes each) in bob's outbox, and not three.
    app = create_app(TOKENS, local_origins(8000), outbox_bytes=100)
    alice_in_send, alice_in = anyio.create_memory_object_stream[Message](10)
    bob_in_send, bob_in = anyio.create_memory_object_stream[Message](10)
    alice_got: list[Any] = []
    bob_closed: list[Message] = []
    bob_stuck = anyio.Event()
    alice_alone = anyio.Event()
    alice_said = [anyio.Event() for _ in range(4)]

    async def alice_send(message: Message) -> None:
        alice_got.append(said(message))
        if alice_got[-1] == {"type": "members", "members": ["alice"]}:
            alice_alone.set()
        if alice_got[-1].get("type") == "said":
            alice_said[int(alice_got[-1]["text"])].set()

    async def bob_send(message: Message) -> None:
        if message["type"] == "websocket.send":  # a client whose socket never drains
            bob_stuck.set()
            await anyio.sleep_forever()
        if message["type"] == "websocket.close":
            bob_closed.append(message)

    with anyio.fail_after(STEP), alice_in_send, alice_in, bob_in_send, bob_in:
        async with anyio.create_task_group() as tasks:
            await connect_and_join(tasks, app, "bob-token", (bob_in_send, bob_in), bob_send)
            await bob_stuck.wait()  # bob's writer hangs on its own "joined"

            await connect_and_join(tasks, app, "alice-token", (alice_in_send, alice_in), alice_send)
            for n in range(4):
                await alice_in_send.send(
                    {"type": "websocket.receive", "text": json.dumps({"type": "say", "text": str(n)})}
                )
                await alice_said[n].wait()  # alice reads promptly: her outbox never holds more than one
            await alice_alone.wait()
            await alice_in_send.send({"type": "websocket.disconnect", "code": 1000})

    assert alice_got[0]["type"] == "websocket.accept"
    assert alice_got[0]["subprotocol"] == "chat.v1"
    assert alice_got[1] == {"type": "joined", "name": "alice", "members": ["alice", "bob"]}
    assert [m for m in alice_got if m.get("type") == "said"] == [
        {"type": "said", "name": "alice", "text": str(n)} for n in range(4)
    ]
    # bob's outbox (100 bytes) held the mark for alice's arrival and two "said": the third dropped him.
    assert [m["members"] for m in alice_got if m.get("type") == "members"][-1] == ["alice"]
    assert bob_closed == [{"type": "websocket.close", "code": 1013, "reason": "too slow"}]


@pytest.mark.parametrize("ending", ["size limit", "client left"])
async def test_too_slow_landing_while_the_connection_ends_otherwise_sends_no_second_close(
    ending: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The race of issue 13's storms: bob's connection is already ending (his own message closed it 1009, or
    he left) when alice's messages overflow his outbox. Nothing raises, and no 1013 follows: one close
    (the plugin's), or none at all when the client closed first, and the log says who ended it."""
    app = create_app(TOKENS, local_origins(8000), outbox_bytes=100)
    alice_in_send, alice_in = anyio.create_memory_object_stream[Message](10)
    bob_in_send, bob_in = anyio.create_memory_object_stream[Message](10)
    bob_closed: list[Message] = []
    bob_stuck, bob_ending, alice_done = anyio.Event(), anyio.Event(), anyio.Event()
    alice_said = [anyio.Event() for _ in range(3)]

    async def alice_send(message: Message) -> None:
        got = said(message)
        if got.get("type") == "said":
            alice_said[int(got["text"])].set()

    async def bob_send(message: Message) -> None:
        if message["type"] == "websocket.close":
            bob_closed.append(message)
        elif message["type"] == "websocket.send":  # a client whose socket never drains
            bob_stuck.set()
            try:
                await anyio.sleep_forever()
            finally:  # ... and whose connection, once cancelled, takes a while to let go
                bob_ending.set()
                with anyio.move_on_after(STEP, shield=True):
                    await alice_done.wait()

    caplog.set_level(logging.INFO, "toolkit_logging")
    with anyio.fail_after(STEP), alice_in_send, alice_in, bob_in_send, bob_in:
        async with anyio.create_task_group() as tasks:
            await connect_and_join(tasks, app, "bob-token", (bob_in_send, bob_in), bob_send)
            await bob_stuck.wait()  # bob's writer hangs on its own "joined"
            await connect_and_join(tasks, app, "alice-token", (alice_in_send, alice_in), alice_send)

            if ending == "size limit":  # MessageSizeLimit closes 1009, a plugin's close
                await bob_in_send.send({"type": "websocket.receive", "text": " " * (MAX_MESSAGE_BYTES + 1)})
            else:
                await bob_in_send.send({"type": "websocket.disconnect", "code": 1001})
            await bob_ending.wait()  # bob's reader has ended; his writer is letting go
            for n in range(3):  # meanwhile alice's messages overflow bob's outbox (100 bytes: two fit)
                await alice_in_send.send(
                    {"type": "websocket.receive", "text": json.dumps({"type": "say", "text": str(n)})}
                )
                await alice_said[n].wait()
            alice_done.set()
            await alice_in_send.send({"type": "websocket.disconnect", "code": 1000})

    closes = [
        (vars(r)["ws_code"], vars(r)["ws_closed_by"]) for r in caplog.records if vars(r).get("ws_event") == "close"
    ]
    if ending == "size limit":
        assert bob_closed == [{"type": "websocket.close", "code": 1009, "reason": "message too big"}]
        assert (1009, "plugin") in closes
    else:
        assert bob_closed == []  # the client closed first: nothing more to send it
        assert (1001, "client") in closes
    assert (1000, "client") in closes  # alice
    assert len(closes) == 2  # ws_close once each


# --- python -m toolkit_demo: arguments and origins ------------------------------------------------


def test_a_port_in_use_is_reported_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["--port", str(port)]) == 1
    assert capsys.readouterr().err.startswith(f"cannot listen on 127.0.0.1:{port}: ")


@pytest.mark.parametrize("port", ["65536", "-1", "http"])
def test_a_bad_port_is_a_usage_error(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--port", port])
    assert info.value.code == 2
    assert "--port" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "extra"),
    [
        ("127.0.0.1", []),
        ("localhost", []),
        ("0.0.0.0", []),
        ("192.168.1.5", ["http://192.168.1.5:8000"]),
        ("::1", ["http://[::1]:8000"]),
    ],
)
def test_the_page_s_own_origins_are_allowed(host: str, extra: list[str]) -> None:
    assert local_origins(8000, host) == ["http://127.0.0.1:8000", "http://localhost:8000", *extra]


# --- GET /asyncapi.json ---------------------------------------------------------------------------


def test_the_demo_serves_its_generated_asyncapi_document() -> None:
    with warnings.catch_warnings():
        # Starlette prefers the httpx2 fork and warns on import when only httpx is installed; httpx still works.
        warnings.filterwarnings("ignore", "Using `httpx`", StarletteDeprecationWarning)
        from starlette.testclient import TestClient

    from tests.test_asyncapi import assert_valid, refs, resolve

    with TestClient(create_app(TOKENS, local_origins(8000, "192.168.1.5"))) as client:
        response = client.get("/asyncapi.json", headers={"host": "evil.example"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert_valid(document)
    for ref in refs(document):
        resolve(document, ref)
    # Generated from the real route and messages, not written by hand.
    assert document == asyncapi_document(["ws://127.0.0.1:8000", "ws://localhost:8000", "ws://192.168.1.5:8000"])
    assert document["channels"]["ws"]["address"] == CHAT_PATH
    assert {server["host"] for server in document["servers"].values()} == {
        "127.0.0.1:8000",
        "localhost:8000",
        "192.168.1.5:8000",
    }  # the allowed origins, never the request's Host header
    received = [ref["$ref"].rsplit("/", 1)[1] for ref in document["operations"]["ws.receive"]["messages"]]
    sent = [ref["$ref"].rsplit("/", 1)[1] for ref in document["operations"]["ws.send"]["messages"]]
    assert sorted(received) == sorted(chat_messages.json_schema()["inbound"]["discriminator"]["mapping"])
    assert sorted(sent) == sorted([*chat_messages.json_schema()["outbound"]["discriminator"]["mapping"], "error"])
    assert sorted(sent) == ["error", "joined", "members", "missed", "said"]  # presence is one snapshot message
    # 2.0.0: "joined"/"left" per arrival became "members"; 2.1.0: "missed" (lost across workers) added
    assert document["info"]["version"] == "2.1.0"
    said = document["components"]["messages"]["ws.said"]["payload"]
    assert said["properties"] == Said.model_json_schema(mode="serialization")["properties"]


def test_several_workers_without_redis_are_refused_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--port", "0", "--workers", "2"])
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert "--workers 2 needs --redis URL: without Redis each worker would be a separate room" in error


@pytest.mark.parametrize("argument", [["--workers", "0"], ["--workers", "x"], ["--redis", "http://x"]])
def test_bad_workers_or_redis_arguments_are_usage_errors(argument: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argument)
    assert info.value.code == 2


def test_an_unreachable_redis_is_reported_before_serving(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    assert main(["--port", "0", "--redis", f"redis://127.0.0.1:{port}/0"]) == 1
    assert capsys.readouterr().err.startswith(f"cannot reach Redis at redis://127.0.0.1:{port}/0: ")
