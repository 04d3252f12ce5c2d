"""Shared fixtures: every ``@pytest.mark.anyio`` test runs on asyncio and on trio."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Iterator

import pytest

from tests.redis_server import COREDIS_CONNECT_LEAK, REDIS_SERVER, SKIP_VARIABLE, RedisServer, running_redis


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


# --- a real redis-server for the tests marked `redis` -----------------------------------------------


def _need_redis_server() -> None:
    """Fail (skip only on a developer machine that asked to) when redis-server is not installed."""
    if os.path.exists(REDIS_SERVER):
        return
    if os.environ.get(SKIP_VARIABLE) == "1" and not os.environ.get("CI"):
        pytest.skip(f"{REDIS_SERVER} is missing and {SKIP_VARIABLE}=1")
    pytest.fail(
        f"{REDIS_SERVER} is missing: `apt-get install redis-server` (.ci/run does it), "
        f"or {SKIP_VARIABLE}=1 to skip the Redis tests on a developer machine",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def redis_server_session() -> Iterator[RedisServer]:
    """One redis-server for the whole run, started on first use (tests get it through ``redis_server``)."""
    _need_redis_server()
    with running_redis() as server:
        yield server


@pytest.fixture
def redis_server(redis_server_session: RedisServer) -> RedisServer:
    """The shared redis-server, emptied for this test. Tests that restart or kill Redis use ``own_redis_server``."""
    redis_server_session.flush()
    return redis_server_session


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may kill, restart or pause."""
    _need_redis_server()
    with running_redis() as server:
        yield server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``redis_down`` ignore coredis' leaked streams (COREDIS_CONNECT_LEAK), and no other warning."""
    for item in items:
        if item.get_closest_marker("redis_down") is not None:
            item.add_marker(pytest.mark.filterwarnings(COREDIS_CONNECT_LEAK))


@pytest.fixture(autouse=True)
def _collect_coredis_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a ``redis_down`` test, collect its leaked streams now, under its filter, not in a later test."""
    yield
    if request.node.get_closest_marker("redis_down") is not None:
        gc.collect()


# --- no credential in any log of the whole run --------------------------------------------------

#: Credentials the tests hand to auth gates and plugins. None may reach a log record, formatted or
#: in its structured fields, at any level, from any logger (the uvicorn servers' included).
CREDENTIALS = ("alice-token", "bob-token", "wrong-token", "s3cret", "TOPSECRET")
OUR_LOGGERS = ("toolkit", "toolkit_auth", "toolkit_broadcast", "toolkit_limits", "toolkit_logging", "toolkit_messages")


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
