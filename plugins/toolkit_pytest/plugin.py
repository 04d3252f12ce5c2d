"""The pytest plugin itself: the ``ws_toolkit_timeout`` ini option and the two fixtures.

pytest loads this module through the ``pytest11`` entry point named ``ws_toolkit``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import pytest

from ._recorder import HookRecorder

if TYPE_CHECKING:
    from ._client import ClientFactory

__all__ = ["hook_recorder", "ws_client"]

_TIMEOUT_INI: Final = "ws_toolkit_timeout"
_timeout_key: Final = pytest.StashKey[float]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        _TIMEOUT_INI,
        "ws_client: seconds to wait for each message from the app, and for the app to finish (default 5)",
        default="5",
    )


def pytest_configure(config: pytest.Config) -> None:
    value = config.getini(_TIMEOUT_INI)
    try:
        timeout = float(value)
    except ValueError:
        timeout = float("nan")
    if not timeout > 0:
        raise pytest.UsageError(f"{_TIMEOUT_INI} must be a positive number of seconds, not {value!r}")
    config.stash[_timeout_key] = timeout


@pytest.fixture
def ws_client(pytestconfig: pytest.Config) -> ClientFactory:
    """Open in-memory connections to an ASGI app: ``async with ws_client(app) as client: ...``."""
    from ._client import ClientFactory  # noqa: PLC0415 - needs anyio: imported when a test asks for it

    return ClientFactory(pytestconfig.stash[_timeout_key])


@pytest.fixture
def hook_recorder() -> HookRecorder:
    """A plugin that records every hook call: register it, ``toolkit.PluginManager(..., hook_recorder)``."""
    return HookRecorder()
