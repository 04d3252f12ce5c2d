"""A small chat built with ws-toolkit and every first-party plugin: run ``python -m toolkit_demo``.

The page (plain HTML, JS and CSS in ``static/``) joins a room over a WebSocket that
authenticates with a token offered as a subprotocol, checks the Origin, validates
typed messages, limits message size and rate, and logs each connection. With ``--redis``,
several worker processes serve one room (docs/demo.md, "Several workers").
See docs/demo.md. Needs the ``demo`` extra: ``pip install 'ws-toolkit[demo]'``.
"""

try:  # first, so that a missing extra says what to install rather than "No module named ..."
    import anyio  # noqa: F401
    import pydantic  # noqa: F401
    import starlette  # noqa: F401
except ModuleNotFoundError as _missing:
    raise ModuleNotFoundError(
        f"toolkit_demo needs {_missing.name}, from the demo extra: pip install 'ws-toolkit[demo]'", name=_missing.name
    ) from _missing

from ._app import (
    CHAT_PATH,
    CONFIG_VARIABLE,
    CONNECTIONS_PER_PERSON,
    MAX_MESSAGE_BYTES,
    NAMES,
    REDIS_DEADLINE,
    STATIC,
    TOKEN_PREFIX,
    TOKEN_SOURCES,
    app_from_environment,
    asyncapi_document,
    create_app,
    demo_tokens,
    local_origins,
    log_filter,
)
from ._chat import (
    MAX_TEXT,
    OUTBOX_BYTES,
    SUBPROTOCOL,
    Chat,
    Inbound,
    Join,
    Joined,
    Member,
    Members,
    Missed,
    Outbound,
    Relayed,
    Room,
    RoomRelay,
    Said,
    Say,
    chat_messages,
)

__all__ = [
    "CHAT_PATH",
    "CONFIG_VARIABLE",
    "CONNECTIONS_PER_PERSON",
    "MAX_MESSAGE_BYTES",
    "MAX_TEXT",
    "NAMES",
    "OUTBOX_BYTES",
    "REDIS_DEADLINE",
    "STATIC",
    "SUBPROTOCOL",
    "TOKEN_PREFIX",
    "TOKEN_SOURCES",
    "Chat",
    "Inbound",
    "Join",
    "Joined",
    "Member",
    "Members",
    "Missed",
    "Outbound",
    "Relayed",
    "Room",
    "RoomRelay",
    "Said",
    "Say",
    "app_from_environment",
    "asyncapi_document",
    "chat_messages",
    "create_app",
    "demo_tokens",
    "local_origins",
    "log_filter",
]
