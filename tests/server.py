"""Run an ASGI app on a real uvicorn server on 127.0.0.1, in a background thread, for tests.

``run_server(app)`` is a context manager: it binds a free port on 127.0.0.1,
starts ``uvicorn.Server`` in a daemon thread (signal handlers are only
installed from the main thread, so a thread leaves them alone), waits until the
server accepts connections, yields a :class:`LiveServer` with the ``ws://`` base
URL, and on exit stops the server and joins the thread. Every wait is bounded;
a server that does not start or stop in time fails the test instead of hanging.

uvicorn is configured so that it changes nothing global: ``log_config=None``
(no ``dictConfig``), no ``log_level``, the asyncio loop and the h11 HTTP
protocol. Its log records (and the toolkit's) are captured on the
:class:`LiveServer`, so tests can assert on what the server logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final, Literal

import uvicorn

from toolkit import ASGIApp, Receive, Scope, Send

__all__ = ["WS_IMPLEMENTATIONS", "LiveServer", "LogCapture", "SwitchableApp", "run_server"]

HOST: Final = "127.0.0.1"

#: uvicorn's WebSocket implementations that the tests run against, where installed.
#: uvicorn's "auto" picks "websockets-sansio". Its legacy "websockets" implementation is
#: refused: it warns on import (UvicornDeprecationWarning, and websockets' DeprecationWarning
#: for ``websockets.legacy``) and again on every handshake ("remove second argument of
#: ws_handler"), from the server thread, where pytest's ``-W error`` turns that into a
#: failed handshake.
WS_IMPLEMENTATIONS: Final = tuple(
    name
    for name, module in (("websockets-sansio", "websockets"), ("wsproto", "wsproto"))
    if importlib.util.find_spec(module) is not None
)

#: The loggers whose records a :class:`LiveServer` captures.
CAPTURED_LOGGERS: Final = ("uvicorn", "toolkit")


class LogCapture(logging.Handler):
    """Collects log records from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._records: list[logging.LogRecord] = []
        self._records_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._records_lock:
            self._records.append(record)

    def records(self, level: int = logging.NOTSET) -> list[logging.LogRecord]:
        with self._records_lock:
            return [r for r in self._records if r.levelno >= level]

    def take(self, level: int = logging.NOTSET) -> list[logging.LogRecord]:
        """Return and forget the records at ``level`` or above (the others are forgotten too)."""
        with self._records_lock:
            taken = [r for r in self._records if r.levelno >= level]
            self._records.clear()
        return taken


class SwitchableApp:
    """An ASGI app that forwards to ``self.app``, so one running server can serve each test's app."""

    def __init__(self, app: ASGIApp | None = None) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self.app
        if app is None:
            raise RuntimeError("no app is mounted on this test server")
        await app(scope, receive, send)


class LiveServer:
    """A uvicorn server running in a background thread. Made by :func:`run_server`."""

    def __init__(self, server: uvicorn.Server, sock: socket.socket, ws: str, logs: LogCapture) -> None:
        self.server = server
        self.ws = ws
        self.logs = logs
        self.port: int = sock.getsockname()[1]
        #: The base URL, without a trailing slash: ``ws://127.0.0.1:PORT``.
        self.url = f"ws://{HOST}:{self.port}"
        self.http_url = f"http://{HOST}:{self.port}"
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name=f"uvicorn-{ws}-{self.port}", daemon=True)
        self._error: BaseException | None = None
        self._stopped = False

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self._sock])
        except BaseException as exc:  # SystemExit on a failed startup included; reported by start/stop
            self._error = exc

    def start(self, timeout: float) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"uvicorn exited during startup: {self._error!r}") from self._error
            if time.monotonic() > deadline:
                raise TimeoutError(f"uvicorn did not start within {timeout} s")
            time.sleep(0.005)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server and join its thread; idempotent. Raises if it cannot be stopped in time."""
        if self._stopped:
            return
        self._stopped = True
        self.server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            # Skip the graceful waits (open connections, lifespan shutdown), then give up.
            self.server.force_exit = True
            self._thread.join(timeout)
        self._sock.close()  # uvicorn closes it on a clean shutdown; this covers the others
        if self._thread.is_alive():
            raise TimeoutError(f"uvicorn did not stop within {2 * timeout} s")
        if self._error is not None:
            raise RuntimeError(f"uvicorn failed: {self._error!r}") from self._error

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def open_connections(self) -> int:
        """Connections the server still holds, plus ASGI tasks still running (read from another thread)."""
        state = self.server.server_state
        return len(state.connections) + len(state.tasks)

    async def wait_idle(self, within: float = 5.0) -> None:
        """Wait until every connection is gone and every app task has finished.

        After this, every ``ws_close`` hook has run: the app task fires it before it ends.
        """
        await wait_until(lambda: self.open_connections() == 0, within, "the server to become idle")


_POLL_INTERVAL: Final = 0.005


async def wait_until(predicate: Callable[[], bool], within: float, what: str) -> None:
    """Poll ``predicate`` (state that the server thread changes) until it holds; bounded.

    Polling, not an ``asyncio.Event``: the state lives on another thread and another loop.
    """
    for _ in range(max(1, round(within / _POLL_INTERVAL))):
        if predicate():
            return
        await asyncio.sleep(_POLL_INTERVAL)
    if not predicate():
        raise AssertionError(f"timed out after {within} s waiting for {what}")


@contextlib.contextmanager
def run_server(
    app: ASGIApp,
    *,
    ws: str = "websockets-sansio",
    lifespan: Literal["auto", "on", "off"] = "off",
    startup_timeout: float = 5.0,
    shutdown_timeout: float = 5.0,
    server: Callable[[uvicorn.Config], uvicorn.Server] = uvicorn.Server,
    **config: Any,
) -> Iterator[LiveServer]:
    """Serve ``app`` with uvicorn on 127.0.0.1 and a free port until the block exits.

    ``ws`` picks uvicorn's WebSocket implementation ("websockets-sansio" or
    "wsproto", see :data:`WS_IMPLEMENTATIONS`); ``server`` makes the server from its
    configuration (a ``uvicorn.Server`` subclass); other keyword arguments go to
    ``uvicorn.Config``. Log records of the ``uvicorn`` and ``toolkit`` loggers at INFO
    and above are captured in ``LiveServer.logs`` while it runs.
    """
    if ws not in WS_IMPLEMENTATIONS:
        raise ValueError(f"ws must be one of {WS_IMPLEMENTATIONS}, got {ws!r}")
    config.setdefault("timeout_graceful_shutdown", shutdown_timeout / 2)
    config.setdefault("http", "h11")
    uvicorn_config = uvicorn.Config(app, host=HOST, ws=ws, lifespan=lifespan, log_config=None, loop="asyncio", **config)
    uvicorn_config.load()
    logs = LogCapture()
    loggers = [logging.getLogger(name) for name in CAPTURED_LOGGERS]
    levels = [logger.level for logger in loggers]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, 0))
        sock.listen(uvicorn_config.backlog)  # uvicorn's own default (2048) unless a test sets it
    except BaseException:
        sock.close()
        raise
    live = LiveServer(server(uvicorn_config), sock, ws, logs)
    for logger in loggers:
        logger.addHandler(logs)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
    try:
        live.start(startup_timeout)
        yield live
    finally:
        try:
            live.stop(shutdown_timeout)
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.removeHandler(logs)
                logger.setLevel(level)
