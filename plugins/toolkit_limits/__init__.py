"""Limits for ws-toolkit: message size, message rate, concurrent connections, and bounded sends.

Each limit is a plugin; register the ones you need (docs/limits.md)::

    plugins = toolkit.PluginManager(
        MessageSizeLimit(64 * 1024), RateLimit(20, burst=40), ConnectionLimit(max_per_key=10)
    )
"""

from ._limits import ConnectionLimit, MessageSizeLimit, OutboundSizeLimit, RateLimit, client_host
from ._timeouts import SendTimeout, SendTimeouts

__all__ = [
    "ConnectionLimit",
    "MessageSizeLimit",
    "OutboundSizeLimit",
    "RateLimit",
    "SendTimeout",
    "SendTimeouts",
    "client_host",
]
