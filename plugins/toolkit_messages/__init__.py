"""Typed, pydantic-validated WebSocket messages for ws-toolkit.

Declare what an endpoint receives and sends; the app gets validated models with
precise types, and bad input gets the answer the close-code policy gives it.
:func:`asyncapi` describes the endpoints in an AsyncAPI 3.0 document.
See docs/messages.md.
"""

from ._asyncapi import ASYNCAPI_VERSION, asyncapi
from ._codecs import Codec, JsonCodec, MsgpackCodec
from ._messages import (
    Channel,
    ErrorDetail,
    ErrorMessage,
    ErrorPolicy,
    Messages,
    MessageSchemas,
    OutboundError,
)

__all__ = [
    "ASYNCAPI_VERSION",
    "Channel",
    "Codec",
    "ErrorDetail",
    "ErrorMessage",
    "ErrorPolicy",
    "JsonCodec",
    "MessageSchemas",
    "Messages",
    "MsgpackCodec",
    "OutboundError",
    "asyncapi",
]
