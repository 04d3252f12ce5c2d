"""A pytest plugin for testing ws-toolkit apps and plugins, registered through the ``pytest11`` entry point.

Installed with ws-toolkit, it is active in every pytest run (disable it with ``-p no:ws_toolkit``)
and offers two fixtures (docs/testing.md):

- ``ws_client``: ``async with ws_client(app) as client`` runs an ASGI app in process, beside the
  test, on asyncio or trio (anyio), and gives a :class:`WebSocketClient` whose every wait is
  bounded by a timeout, so a test fails instead of hanging;
- ``hook_recorder``: a :class:`HookRecorder` plugin that records which hooks fired, in what order,
  with what arguments and outcome, and asserts on it.

Both work without the fixtures too: :func:`connect` and ``HookRecorder()``. The client needs
anyio (``pip install 'ws-toolkit[testing]'``); it is imported on first use, so the plugin loads
without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._recorder import HookCall, HookRecorder

if TYPE_CHECKING:
    from ._client import (
        DEFAULT_TIMEOUT,
        AppDidNotFinish,
        ClientDisconnected,
        ClientFactory,
        Connection,
        ConnectionDenied,
        ReceiveTimeout,
        WebSocketClient,
        connect,
    )

__all__ = [
    "DEFAULT_TIMEOUT",
    "AppDidNotFinish",
    "ClientDisconnected",
    "ClientFactory",
    "Connection",
    "ConnectionDenied",
    "HookCall",
    "HookRecorder",
    "ReceiveTimeout",
    "WebSocketClient",
    "connect",
]

_CLIENT_NAMES = frozenset(__all__) - {"HookCall", "HookRecorder"}


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from . import _client  # noqa: PLC0415 - needs anyio: imported on first use

        return getattr(_client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
