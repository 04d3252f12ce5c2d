"""Publish/subscribe on named channels for ws-toolkit apps, in one process or across workers through Redis.

::

    broadcast = Broadcast()                        # in memory; Broadcast(RedisBackend(url)) across workers
    room = broadcast.channel("room", ModelCodec(Said))
    async with broadcast:                          # in the app's lifespan
        async with room.subscribe() as events:
            await room.publish(Said(name="alice", text="hi"))
            async for event in events:             # Message[Said] or Gap: a loss is never silent
                ...

See docs/broadcast.md. The in-memory backend needs the ``broadcast`` extra, the Redis one ``redis``.
"""

from ._broadcast import (
    OVERFLOW_CLOSE,
    Backend,
    Broadcast,
    BroadcastUnavailable,
    Channel,
    Codec,
    JsonCodec,
    MemoryBackend,
    ModelCodec,
    Overflow,
    Overflowed,
    Subscription,
)
from ._envelope import Envelope, Gap, Message
from ._redis import RedisBackend

__all__ = [
    "OVERFLOW_CLOSE",
    "Backend",
    "Broadcast",
    "BroadcastUnavailable",
    "Channel",
    "Codec",
    "Envelope",
    "Gap",
    "JsonCodec",
    "MemoryBackend",
    "Message",
    "ModelCodec",
    "Overflow",
    "Overflowed",
    "RedisBackend",
    "Subscription",
]
