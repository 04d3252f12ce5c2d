"""Typed, pydantic-validated WebSocket messages for ws-toolkit.

Declare what an endpoint receives and sends; the app gets validated models with
precise types, and bad input gets the answer the close-code policy gives it.
:func:`asyncapi` describes the endpoints in an AsyncAPI 3.0 document.
See docs/messages.md.
"""

try:  # first, so that a missing extra says what to install rather than "No module named 'pydantic'"
    import pydantic  # noqa: F401
except ModuleNotFoundError as _missing:
    raise ModuleNotFoundError(
        f"toolkit_messages needs {_missing.name}, from the messages extra: pip install 'ws-toolkit[messages]'",
        name=_missing.name,
    ) from _missing

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
