"""Limits for ws-toolkit: message size, message rate, concurrent connections, and bounded sends.

Each limit is a plugin; register the ones you need (docs/limits.md)::

    plugins = toolkit.PluginManager(
        MessageSizeLimit(64 * 1024), RateLimit(20, burst=40), ConnectionLimit(max_per_key=10)
    )

Across workers, :class:`SharedRateLimit` and :class:`SharedConnectionLimit` keep their counts in a
:class:`RedisStore` (the ``redis`` extra).
"""

from ._limits import ConnectionLimit, MessageSizeLimit, OutboundSizeLimit, RateLimit, client_host
from ._redis import CircuitBreaker, OnUnavailable, RedisStore, StoreUnavailable
from ._shared import UNAVAILABLE_CLOSE, UNAVAILABLE_DENIAL, SharedConnectionLimit, SharedRateLimit
from ._timeouts import SendTimeout, SendTimeouts

__all__ = [
    "UNAVAILABLE_CLOSE",
    "UNAVAILABLE_DENIAL",
    "CircuitBreaker",
    "ConnectionLimit",
    "MessageSizeLimit",
    "OnUnavailable",
    "OutboundSizeLimit",
    "RateLimit",
    "RedisStore",
    "SendTimeout",
    "SendTimeouts",
    "SharedConnectionLimit",
    "SharedRateLimit",
    "StoreUnavailable",
    "client_host",
]
