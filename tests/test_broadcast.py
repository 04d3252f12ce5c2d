"""toolkit_broadcast in one process (the in-memory backend), on asyncio and trio: no server needed.

Envelopes and the rules for malformed input, typed channels, sequence gaps, and each outbox policy.
The Redis backend is tested against a real redis-server in tests/test_broadcast_redis.py.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import ClassVar, Literal

import anyio
import pytest
from pydantic import BaseModel, ConfigDict
from toolkit_broadcast import (
    Broadcast,
    Envelope,
    Gap,
    JsonCodec,
    MemoryBackend,
    Message,
    ModelCodec,
    Overflowed,
    Subscription,
)
from toolkit_broadcast._envelope import MAGIC, Malformed, decode_envelope, encode_envelope

pytestmark = pytest.mark.anyio


class Said(BaseModel):
    model_config: ClassVar[ConfigDict] = ConfigDict(extra="forbid")
    type: Literal["said"] = "said"
    name: str
    text: str


async def take(subscription: Subscription[object] | Subscription[Said], count: int) -> list[object]:
    """The next ``count`` events, each within a bounded wait; messages as their payloads."""
    events: list[object] = []
    with anyio.fail_after(2):
        for _ in range(count):
            event = await anext(subscription)
            events.append(event.payload if isinstance(event, Message) else event)
    return events


# --- the envelope --------------------------------------------------------------------------------


def test_an_envelope_round_trips() -> None:
    data = encode_envelope(Envelope("ab12", 7, "00-trace-01"), b'{"x":1}')
    assert data.startswith(MAGIC)
    assert decode_envelope(data, 1024) == (Envelope("ab12", 7, "00-trace-01"), b'{"x":1}')


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"hello", "foreign"),
        (b"", "foreign"),
        (b"tkb2 {}\n", "version"),
        (b"tkb1 no newline", "header"),
        (b"tkb1 {nope\n", "header"),
        (b"tkb1 [1]\n", "header"),
        (b'tkb1 {"o":"ab","s":0,"t":null}\n', "header"),
        (b'tkb1 {"o":"ab","s":true,"t":null}\n', "header"),
        (b'tkb1 {"o":"A B","s":1,"t":null}\n', "header"),
        (b'tkb1 {"o":"ab","s":1,"t":5}\n', "header"),
        (b"tkb1 " + b"x" * 2000, "too big"),
    ],
)
def test_what_is_not_our_envelope_is_refused_with_its_kind(data: bytes, kind: str) -> None:
    with pytest.raises(Malformed) as refused:
        decode_envelope(data, 1024)
    assert refused.value.kind == kind


# --- publish and subscribe -----------------------------------------------------------------------


async def test_typed_channels_deliver_models_to_every_subscriber_in_order() -> None:
    async with Broadcast() as broadcast:
        room = broadcast.channel("room", ModelCodec(Said))
        async with room.subscribe() as first, room.subscribe() as second:
            for n in range(3):
                await room.publish(Said(name="alice", text=f"m{n}"), trace="00-abc-01")
            for subscription in (first, second):
                events = await take(subscription, 3)
                assert events == [Said(name="alice", text=f"m{n}") for n in range(3)]
        async with room.subscribe() as third:
            await room.publish(Said(name="bob", text="x"))
            with anyio.fail_after(2):
                event = await anext(third)
            assert isinstance(event, Message)
            assert (event.channel, event.envelope.origin, event.envelope.seq) == ("room", broadcast.origin, 4)
            assert event.envelope.trace is None
            assert event.id is None


async def test_channels_are_separate_and_a_publish_with_no_subscriber_goes_nowhere() -> None:
    async with Broadcast() as broadcast:
        a, b = broadcast.channel("a"), broadcast.channel("b")
        await a.publish({"lost": True})  # nobody listens: nothing queued anywhere
        async with a.subscribe() as on_a, b.subscribe() as on_b:
            await b.publish([1, 2])
            await a.publish("x")
            assert await take(on_a, 1) == ["x"]
            assert await take(on_b, 1) == [[1, 2]]
            assert on_a.pending == on_b.pending == 0


async def test_outside_async_with_publish_and_subscribe_refuse() -> None:
    broadcast = Broadcast()
    room = broadcast.channel("room")
    with pytest.raises(RuntimeError, match="async with broadcast"):
        await room.publish(1)
    with pytest.raises(RuntimeError, match="async with broadcast"):
        async with room.subscribe():
            pass


async def test_a_message_over_max_bytes_is_refused_and_takes_no_sequence_number() -> None:
    async with Broadcast(max_bytes=100) as broadcast:
        room = broadcast.channel("room")
        async with room.subscribe() as events:
            with pytest.raises(ValueError, match="over max_bytes"):
                await room.publish("x" * 200)
            await room.publish("ok")
            with anyio.fail_after(2):
                event = await anext(events)
            assert isinstance(event, Message)
            assert (event.payload, event.envelope.seq) == ("ok", 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"outbox": 0}, "outbox"), ({"max_bytes": 10}, "max_bytes"), ({"overflow": "block"}, "overflow")],
)
def test_broadcast_validates_its_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Broadcast(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "a b", "x\n", "x" * 201])
def test_channel_names_are_checked(name: str) -> None:
    with pytest.raises(ValueError, match="channel name"):
        Broadcast().channel(name)


# --- never a silent loss --------------------------------------------------------------------------


async def test_a_jump_in_a_publishers_sequence_is_a_gap_with_the_count() -> None:
    async with Broadcast() as broadcast:
        room = broadcast.channel("room")
        async with room.subscribe() as events:
            for seq in (1, 2, 5, 5, 4, 6):  # 3 and 4 lost; the second 5 and the late 4 are duplicates
                broadcast.deliver("room", encode_envelope(Envelope("feed", seq, None), b'"m"'), None)
            received = await take(events, 5)
    assert received == ["m", "m", Gap("room", 2, "feed", "sequence"), "m", "m"]


async def test_malformed_and_foreign_messages_are_skipped_and_logged_once_per_kind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Broadcast(max_bytes=200) as broadcast:
        room = broadcast.channel("room", ModelCodec(Said))
        async with room.subscribe() as events:
            for data in (
                b"garbage",
                b"garbage",
                b"tkb9 {}\n",
                b"x" * 500,
                encode_envelope(Envelope("ab", 1, None), b"{}"),
            ):
                broadcast.deliver("room", data, None)
            broadcast.deliver("nobody-listens", b"garbage", None)
            await room.publish(Said(name="carol", text="still here"))
            assert await take(events, 1) == [Said(name="carol", text="still here")]
    assert broadcast.skipped == 5
    kinds = [r.getMessage().split(": ")[-1].split(" (")[0] for r in caplog.records if r.name == "toolkit_broadcast"]
    assert kinds == ["foreign", "version", "too big", "payload"]
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name == "toolkit_broadcast")


async def test_each_codec_decodes_once_and_a_payload_one_codec_refuses_skips_only_its_subscribers() -> None:
    async with Broadcast() as broadcast:
        typed, raw = broadcast.channel("room", ModelCodec(Said)), broadcast.channel("room", JsonCodec())
        async with typed.subscribe() as strict, raw.subscribe() as loose:
            await raw.publish({"type": "said", "name": "a", "text": "ok"})
            await raw.publish({"not": "a said"})
            assert await take(loose, 2) == [{"type": "said", "name": "a", "text": "ok"}, {"not": "a said"}]
            assert await take(strict, 1) == [Said(name="a", text="ok")]
            assert strict.pending == 0
    assert broadcast.skipped == 1


async def test_resume_on_a_backend_without_history_starts_with_a_gap() -> None:
    async with Broadcast(MemoryBackend()) as broadcast:
        room = broadcast.channel("room")
        async with room.subscribe(last_id="1-0") as events:
            await room.publish("live")
            assert await take(events, 2) == [Gap("room", None, None, "window"), "live"]
    with pytest.raises(ValueError, match="invalid literal"):
        room.subscribe(last_id="not-an-id")


# --- the outbox ------------------------------------------------------------------------------------


async def test_drop_oldest_keeps_the_newest_with_a_gap_first() -> None:
    async with Broadcast(outbox=3, overflow="drop_oldest") as broadcast:
        room = broadcast.channel("room")
        async with room.subscribe() as events:
            for n in range(7):
                await room.publish(n)
            assert await take(events, 4) == [Gap("room", 4, None, "overflow"), 4, 5, 6]
            await room.publish(7)
            assert await take(events, 1) == [7]


async def test_drop_newest_keeps_the_oldest_then_a_gap() -> None:
    async with Broadcast(outbox=3) as broadcast:
        room = broadcast.channel("room")
        async with room.subscribe(overflow="drop_newest") as events:
            for n in range(7):
                await room.publish(n)
            assert await take(events, 4) == [0, 1, 2, Gap("room", 4, None, "overflow")]
            for n in range(7, 10):
                await room.publish(n)
            assert await take(events, 3) == [7, 8, 9]


async def test_drop_newest_puts_the_gap_before_what_comes_after_it() -> None:
    async with Broadcast(outbox=3, overflow="drop_newest") as broadcast:
        room = broadcast.channel("room")
        async with room.subscribe() as events:
            for n in range(5):
                await room.publish(n)  # 3 and 4 dropped
            assert await take(events, 2) == [0, 1]
            await room.publish(5)  # room for the Gap and 5
            assert await take(events, 3) == [2, Gap("room", 2, None, "overflow"), 5]


async def test_disconnect_policy_raises_overflowed_and_keeps_nothing() -> None:
    async with Broadcast() as broadcast:
        room = broadcast.channel("room")
        async with room.subscribe(outbox=2, overflow="disconnect") as events:
            for n in range(3):
                await room.publish(n)
            assert events.pending == 0
            with pytest.raises(Overflowed):
                await anext(events)
            await room.publish(4)  # nothing more is queued for it
            assert events.pending == 0


async def test_a_waiting_subscriber_wakes_for_a_message_published_later() -> None:
    received: list[object] = []
    async with Broadcast() as broadcast:
        room = broadcast.channel("room")
        async with room.subscribe() as events, anyio.create_task_group() as tasks:

            async def listen() -> None:
                received.extend(await take(events, 1))

            tasks.start_soon(listen)
            await anyio.wait_all_tasks_blocked()
            await room.publish("late")
    assert received == ["late"]


async def test_the_docs_example_chats() -> None:
    namespace: dict[str, object] = {"__name__": "docs_broadcast"}
    source = (Path(__file__).parent.parent / "docs" / "broadcast.md").read_text()
    for block in re.findall(r"```python\n(.*?)```", source, flags=re.DOTALL):
        exec(compile(block, "docs/broadcast.md", "exec"), namespace)  # noqa: S102 - our own documentation
    chat = namespace["chat"]
    assert callable(chat)
    assert await chat() == ["alice: hi", "bob: hello"]
