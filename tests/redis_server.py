"""A real ``redis-server`` for the tests: started on a free 127.0.0.1 port, no persistence, stopped after.

Nothing is mocked: tests that need Redis talk to this process (fakeredis is no substitute: the Lua
scripts, ``TIME``, Streams, ``CLIENT PAUSE`` and what a restart loses are the point). The helpers here
speak RESP over a plain socket, so the fixture does not depend on the client library under test.

Every wait is bounded. ``restart()`` keeps the port (a restart loses everything: no persistence),
``pause(ms)`` runs ``CLIENT PAUSE ms ALL``, and ``kill()`` is a ``kill -9``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Final

__all__ = ["COREDIS_CONNECT_LEAK", "REDIS_SERVER", "SKIP_VARIABLE", "RedisServer", "free_port", "running_redis"]

#: Debian's package puts it here; .ci/run installs it when missing.
REDIS_SERVER: Final = shutil.which("redis-server") or "/usr/bin/redis-server"
#: On a developer machine (never under CI), ``TOOLKIT_SKIP_REDIS_TESTS=1`` skips the Redis tests when
#: redis-server is missing; otherwise they fail, saying how to install it.
SKIP_VARIABLE: Final = "TOOLKIT_SKIP_REDIS_TESTS"
HOST: Final = "127.0.0.1"

#: coredis 6.9 leaves the anyio memory streams of a connection that failed to connect unclosed (the garbage
#: collector takes them, with a ResourceWarning). Tests marked ``redis_down`` (they connect to a Redis that
#: is down) ignore that warning, and only that one; tests/conftest.py applies it and collects after them.
COREDIS_CONNECT_LEAK: Final = (
    r"ignore:Exception ignored in. <function MemoryObject(Send|Receive)Stream.__del__"
    ":pytest.PytestUnraisableExceptionWarning"
)


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _encode(*args: str) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1:port``, which stays the same across restarts."""

    def __init__(self, port: int | None = None) -> None:
        self.port = free_port() if port is None else port
        #: ``redis://127.0.0.1:PORT/0``.
        self.url = f"redis://{HOST}:{self.port}/0"
        self._dir = tempfile.mkdtemp(prefix="toolkit-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait (bounded) until it answers PING."""
        if not os.path.exists(REDIS_SERVER):
            raise FileNotFoundError(
                f"{REDIS_SERVER} is missing: install Debian's package (apt-get install redis-server), "
                f"as .ci/run does; on a developer machine {SKIP_VARIABLE}=1 skips these tests"
            )
        os.makedirs(self._dir, exist_ok=True)
        args = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir,
            "--daemonize", "no",
            "--loglevel", "warning",
            "--protected-mode", "no",
        ]  # fmt: skip
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                error = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise RuntimeError(f"redis-server exited at startup ({self._process.returncode}): {error[:500]}")
            try:
                if self.command("PING", timeout=0.5) == b"+PONG\r\n":
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"redis-server did not answer within {timeout} s")
            time.sleep(0.02)

    def command(self, *args: str, timeout: float = 2.0) -> bytes:
        """Send one command and return the raw first reply chunk (enough for simple replies)."""
        with socket.create_connection((HOST, self.port), timeout=timeout) as sock:
            sock.sendall(_encode(*args))
            return sock.recv(65536)

    def flush(self) -> None:
        """Empty every database (between tests)."""
        self.command("FLUSHALL")

    def pause(self, milliseconds: int) -> None:
        """``CLIENT PAUSE milliseconds ALL``: every client's commands wait that long (ours included)."""
        self.command("CLIENT", "PAUSE", str(milliseconds), "ALL")

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def kill(self) -> None:
        """``kill -9`` the server (if running) and reap it."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=5)
        if process.stderr:
            process.stderr.close()
        self._process = None

    def restart(self, down_for: float = 0.0) -> None:
        """Kill the server, stay down ``down_for`` seconds, start it again on the same port (empty)."""
        self.kill()
        if down_for:
            time.sleep(down_for)
        self.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server: SIGTERM, then SIGKILL if it is not gone within ``timeout``."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout)
        if process.stderr:
            process.stderr.close()
        self._process = None
        shutil.rmtree(self._dir, ignore_errors=True)


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A started :class:`RedisServer`, stopped when the block exits."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
