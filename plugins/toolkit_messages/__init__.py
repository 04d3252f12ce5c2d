"""Typed, pydantic-validated WebSocket messages for ws-toolkit.

Declare what an endpoint receives and sends; the app gets validated models with
precise types, and bad input gets the answer the close-code policy gives it.
See docs/messages.md.
"""

from ._messages import (
    Channel,
    ErrorDetail,
    ErrorMessage,
    ErrorPolicy,
    Messages,
    MessageSchemas,
    OutboundError,
)

__all__ = ["Channel", "ErrorDetail", "ErrorMessage", "ErrorPolicy", "MessageSchemas", "Messages", "OutboundError"]
