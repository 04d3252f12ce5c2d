"""Typed, pydantic-validated WebSocket messages for ws-toolkit.

Declare what an endpoint receives and sends; the app gets validated models with
precise types, and bad input gets the answer the close-code policy gives it.
"""

from ._messages import Channel, ErrorPolicy, Messages, OutboundError

__all__ = ["Channel", "ErrorPolicy", "Messages", "OutboundError"]
