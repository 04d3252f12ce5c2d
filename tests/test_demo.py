"""toolkit_demo in memory: the room never waits for a member, and a stuck client does not hold up the others.

The same app runs over a real server in tests/test_demo_server.py and in a browser in
tests/test_demo_browser.py.
"""

from __future__ import annotations

import json
import socket
import warnings
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream
from starlette.exceptions import StarletteDeprecationWarning
from toolkit_demo import (
    CHAT_PATH,
    Joined,
    Left,
    Member,
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


def drain(inbox: MemoryObjectReceiveStream[Joined | Said | Left | Missed]) -> list[Joined | Said | Left | Missed]:
    messages = []
    while True:
        try:
            messages.append(inbox.receive_nowait())
        except anyio.WouldBlock:
            return messages


async def test_join_tells_the_joiner_and_the_others_apart(make_room: Callable[[int], Room]) -> None:
    room = make_room(8)
    alice, bob, alice_again = room.member("alice"), room.member("bob"), room.member("alice")
    room.join(alice)
    room.join(bob)
    room.join(alice_again)  # a second tab: one name in the list
    assert drain(alice.inbox) == [
        Joined(name="alice", members=["alice"], you=True),
        Joined(name="bob", members=["alice", "bob"]),
        Joined(name="alice", members=["alice", "bob"]),
    ]
    assert drain(bob.inbox) == [
        Joined(name="bob", members=["alice", "bob"], you=True),
        Joined(name="alice", members=["alice", "bob"]),
    ]
    assert drain(alice_again.inbox) == [Joined(name="alice", members=["alice", "bob"], you=True)]


async def test_leave_tells_the_others_once_and_closes_the_outbox(make_room: Callable[[int], Room]) -> None:
    room = make_room(8)
    alice, bob, stranger = room.member("alice"), room.member("bob"), room.member("carol")
    room.join(alice)
    room.join(bob)
    drain(alice.inbox)
    room.leave(bob)
    room.leave(bob)
    room.leave(stranger)  # never joined: nobody is told
    assert drain(alice.inbox) == [Left(name="bob", members=["alice"])]
    assert bob not in room
    assert room.names() == ["alice"]
    with pytest.raises(anyio.ClosedResourceError):
        bob.outbox.send_nowait(Said(name="x", text="y"))


async def test_a_full_outbox_marks_only_that_member_too_slow_without_waiting(make_room: Callable[[int], Room]) -> None:
    room = make_room(2)
    fast, slow = room.member("alice"), room.member("bob")
    room.join(slow)  # 1 message in its outbox
    room.join(fast)  # 2: full
    drain(fast.inbox)
    for n in range(5):  # broadcast is sync: nothing a member does can make it wait
        room.broadcast(Said(name="alice", text=str(n)))
        assert drain(fast.inbox) == [Said(name="alice", text=str(n))]
    assert slow.too_slow
    assert slow.scope.cancel_called  # its writer is told to let go
    assert not fast.too_slow
    assert [m.type for m in drain(slow.inbox)] == ["joined", "joined"]  # nothing after it fell behind


def test_room_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="queue_size"):
        Room(queue_size=0)


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


def said(message: Message) -> Any:
    return json.loads(message["text"]) if message["type"] == "websocket.send" else message


async def test_a_stuck_client_is_closed_1013_and_the_others_carry_on() -> None:
    app = create_app(TOKENS, local_origins(8000), queue_size=2)
    alice_in_send, alice_in = anyio.create_memory_object_stream[Message](10)
    bob_in_send, bob_in = anyio.create_memory_object_stream[Message](10)
    alice_got: list[Any] = []
    bob_closed: list[Message] = []
    bob_stuck = anyio.Event()
    alice_left_seen = anyio.Event()

    async def alice_send(message: Message) -> None:
        alice_got.append(said(message))
        if alice_got[-1].get("type") == "left":
            alice_left_seen.set()

    async def bob_send(message: Message) -> None:
        if message["type"] == "websocket.send":  # a client whose socket never drains
            bob_stuck.set()
            await anyio.sleep_forever()
        if message["type"] == "websocket.close":
            bob_closed.append(message)

    with anyio.fail_after(STEP), alice_in_send, alice_in, bob_in_send, bob_in:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(serve, app, "bob-token", bob_in, bob_send)
            await bob_in_send.send({"type": "websocket.connect"})
            await bob_in_send.send({"type": "websocket.receive", "text": '{"type":"join"}'})
            await bob_stuck.wait()  # bob's writer hangs on its own "joined"

            tasks.start_soon(serve, app, "alice-token", alice_in, alice_send)
            await alice_in_send.send({"type": "websocket.connect"})
            await alice_in_send.send({"type": "websocket.receive", "text": '{"type":"join"}'})
            for n in range(4):
                await alice_in_send.send(
                    {"type": "websocket.receive", "text": json.dumps({"type": "say", "text": str(n)})}
                )
            await alice_left_seen.wait()
            await alice_in_send.send({"type": "websocket.disconnect", "code": 1000})

    assert alice_got[0]["type"] == "websocket.accept"
    assert alice_got[0]["subprotocol"] == "chat.v1"
    assert alice_got[1] == {"type": "joined", "name": "alice", "members": ["alice", "bob"], "you": True}
    assert [m for m in alice_got if m.get("type") == "said"] == [
        {"type": "said", "name": "alice", "text": str(n)} for n in range(4)
    ]
    # bob's outbox (2) held alice's "joined" and the first "said": the second dropped him.
    assert {"type": "left", "name": "bob", "members": ["alice"]} in alice_got
    assert bob_closed == [{"type": "websocket.close", "code": 1013, "reason": "too slow"}]


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
