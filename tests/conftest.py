"""Shared fixtures: every ``@pytest.mark.anyio`` test runs on asyncio and on trio."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


# --- no credential in any log of the whole run --------------------------------------------------

#: Credentials the tests hand to auth gates and plugins. None may reach a log record, formatted or
#: in its structured fields, at any level, from any logger (the uvicorn servers' included).
CREDENTIALS = ("alice-token", "bob-token", "wrong-token", "s3cret", "TOPSECRET")
OUR_LOGGERS = ("toolkit", "toolkit_auth", "toolkit_limits", "toolkit_logging", "toolkit_messages")


class _LogAudit(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.leaks: list[str] = []
        #: Set during tests marked ``logs_credentials``, which show a documented trade-off.
        self.paused = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.paused:
            return
        text = self.format(record) + repr(sorted(vars(record).items(), key=lambda kv: kv[0]))
        for credential in CREDENTIALS:
            if credential in text:
                self.leaks.append(f"{credential!r} in a record of {record.name!r}: {record.getMessage()[:200]!r}")


_AUDIT = _LogAudit()


@pytest.fixture(autouse=True)
def _pause_audit_where_expected(request: pytest.FixtureRequest) -> Iterator[None]:
    _AUDIT.paused = request.node.get_closest_marker("logs_credentials") is not None
    try:
        yield
    finally:
        _AUDIT.paused = False


@pytest.fixture(autouse=True, scope="session")
def no_credentials_in_logs() -> Iterator[None]:
    audit = _AUDIT
    root = logging.getLogger()
    root.addHandler(audit)
    # Our loggers at DEBUG, so per-message paths are audited too. (uvicorn's own DEBUG/TRACE output
    # prints raw request headers, Authorization included: its level stays as the server sets it.)
    ours = [logging.getLogger(name) for name in OUR_LOGGERS]
    previous = [logger.level for logger in ours]
    for logger in ours:
        logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(audit)
        for logger, level in zip(ours, previous, strict=True):
            logger.setLevel(level)
    assert not audit.leaks, "credentials reached the logs:\n" + "\n".join(audit.leaks[:20])
