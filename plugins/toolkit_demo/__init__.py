"""A small chat built with ws-toolkit and every first-party plugin: run ``python -m toolkit_demo``.

The page (plain HTML, JS and CSS in ``static/``) joins a room over a WebSocket that
authenticates with a token offered as a subprotocol, checks the Origin, validates
typed messages, limits message size and rate, and logs each connection.
See docs/demo.md. Needs the ``demo`` extra: ``pip install 'ws-toolkit[demo]'``.
"""

from ._app import (
    CHAT_PATH,
    CONFIG_VARIABLE,
    MAX_MESSAGE_BYTES,
    NAMES,
    STATIC,
    TOKEN_PREFIX,
    app_from_environment,
    asyncapi_document,
    create_app,
    demo_tokens,
    local_origins,
)
from ._chat import (
    MAX_TEXT,
    SUBPROTOCOL,
    Chat,
    Inbound,
    Join,
    Joined,
    Left,
    Member,
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
    "MAX_MESSAGE_BYTES",
    "MAX_TEXT",
    "NAMES",
    "STATIC",
    "SUBPROTOCOL",
    "TOKEN_PREFIX",
    "Chat",
    "Inbound",
    "Join",
    "Joined",
    "Left",
    "Member",
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
]
