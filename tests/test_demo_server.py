"""toolkit_demo over a real uvicorn server on 127.0.0.1, with a real ``websockets`` client.

One server serves the module; each test mounts a fresh demo app (a fresh room) on it. After each
test the fixture waits (bounded) until the server is idle and fails on any error the server logged.
The tokens are the log audit's (tests/conftest.py), so none may reach a log. The last test runs
``python -m toolkit_demo`` itself, as the README tells people to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from toolkit_demo import CONNECTIONS_PER_PERSON, MAX_MESSAGE_BYTES, create_app, local_origins
from toolkit_limits import ConnectionLimit
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as sync_connect
from websockets.typing import Origin, Subprotocol

from tests.server import LiveServer, LogCapture, SwitchableApp, run_server, wait_until
from toolkit import WebSocketApp

pytestmark = [pytest.mark.server, pytest.mark.anyio]

ALICE: Final = "alice-token"
BOB: Final = "bob-token"
TOKENS: Final = {ALICE: "alice", BOB: "bob"}
STEP: Final = 5.0
TEST_TIMEOUT: Final = 20.0
#: uvicorn's websockets-sansio logs this after every denial sent through the denial extension.
SANSIO_DENIAL_NOISE: Final = "ASGI callable returned without completing handshake."
P = TypeVar("P")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the websockets client needs asyncio


@pytest.fixture(scope="module")
def module_server() -> Iterator[tuple[LiveServer, SwitchableApp]]:
    switch = SwitchableApp()
    with run_server(switch) as server:
        yield server, switch


@dataclass
class Demo:
    server: LiveServer
    switch: SwitchableApp

    @property
    def origin(self) -> str:
        return self.server.http_url

    def mount(self, tokens: dict[str, str] = TOKENS, **options: Any) -> None:
        self.switch.app = create_app(tokens, local_origins(self.server.port), **options)

    def plugin(self, kind: type[P]) -> P:
        """The mounted chat's plugin of type ``kind``."""
        wsapp = next(route.app for route in self.switch_app().routes if isinstance(route, WebSocketRoute))
        assert isinstance(wsapp, WebSocketApp)
        assert wsapp.plugins is not None
        (found,) = [plugin for _, plugin in wsapp.plugins.list_name_plugin() if isinstance(plugin, kind)]
        return found

    def switch_app(self) -> Starlette:
        app = self.switch.app
        assert isinstance(app, Starlette)
        return app

    def client(self, token: str | None = ALICE, *, origin: str | None = "") -> connect:
        """A browser-like client: the page's Origin, and the token as a subprotocol next to ``chat.v1``."""
        return browser_like(f"{self.server.url}/ws", self.origin if origin == "" else origin, token)


def browser_like(url: str, origin: str | None, token: str | None) -> connect:
    subprotocols = [Subprotocol("chat.v1")] + ([] if token is None else [Subprotocol(f"bearer.{token}")])
    return connect(
        url,
        origin=None if origin is None else Origin(origin),
        subprotocols=subprotocols,
        open_timeout=STEP,
        close_timeout=STEP,
        ping_interval=None,
    )


@pytest.fixture
async def demo(module_server: tuple[LiveServer, SwitchableApp]) -> AsyncIterator[Demo]:
    server, switch = module_server
    server.logs.take()
    demo = Demo(server, switch)
    demo.mount()
    yield demo
    await server.wait_idle(STEP)
    switch.app = None
    errors = [r.getMessage().strip() for r in server.logs.take(logging.ERROR)]
    unexpected = [e for e in errors if e != SANSIO_DENIAL_NOISE]
    assert not unexpected, f"the server logged errors: {unexpected}"


async def recv(conn: ClientConnection) -> Any:
    async with asyncio.timeout(STEP):
        return json.loads(await conn.recv())


async def join(conn: ClientConnection) -> Any:
    await conn.send('{"type":"join"}')
    return await recv(conn)


async def expect_close(conn: ClientConnection) -> tuple[int, str]:
    """Read until the server closes; return its close code and reason."""

    async def read_all() -> None:
        async with asyncio.timeout(STEP):
            while True:
                await conn.recv()

    with pytest.raises(ConnectionClosed) as info:
        await read_all()
    frame = info.value.rcvd
    assert frame is not None, "the server dropped the connection without a close frame"
    return frame.code, frame.reason


async def expect_rejected(demo: Demo, token: str | None = ALICE, **kwargs: Any) -> tuple[int, bytes]:
    with pytest.raises(InvalidStatus) as info:
        async with demo.client(token, **kwargs):
            pass
    return info.value.response.status_code, bytes(info.value.response.body or b"")


async def test_two_people_join_and_see_each_others_messages(demo: Demo) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        async with demo.client(ALICE) as alice, demo.client(BOB) as bob:
            assert alice.subprotocol == "chat.v1"  # never the token entry
            assert await join(alice) == {"type": "joined", "name": "alice", "members": ["alice"]}
            assert await join(bob) == {"type": "joined", "name": "bob", "members": ["alice", "bob"]}
            assert await recv(alice) == {"type": "members", "members": ["alice", "bob"]}

            await alice.send(json.dumps({"type": "say", "text": "  hi bob <b>  "}))
            said = {"type": "said", "name": "alice", "text": "hi bob <b>"}  # stripped, never rewritten otherwise
            assert await recv(alice) == said
            assert await recv(bob) == said
            await bob.send(json.dumps({"type": "say", "text": "héllo ✓"}))
            assert await recv(alice) == {"type": "said", "name": "bob", "text": "héllo ✓"}
            assert await recv(bob) == {"type": "said", "name": "bob", "text": "héllo ✓"}

            await bob.close()
            assert await recv(alice) == {"type": "members", "members": ["alice"]}


@pytest.mark.parametrize(
    ("sent", "answer"),
    [
        ('{"type":"say","text":""}', {"loc": ["say", "text"], "type": "string_too_short"}),
        ('{"type":"say","text":"   "}', {"loc": ["say", "text"], "type": "string_too_short"}),
        (json.dumps({"type": "say", "text": "x" * 501}), {"loc": ["say", "text"], "type": "string_too_long"}),
        ('{"type":"say"}', {"loc": ["say", "text"], "type": "missing"}),
        ('{"type":"say","text":"hi","name":"bob"}', {"loc": ["say", "*"], "type": "extra_forbidden"}),
        ('{"type":"shout","text":"hi"}', {"loc": [], "type": "union_tag_invalid"}),
        ('{"type":"say"', None),
    ],
)
async def test_invalid_messages_get_an_error_and_the_connection_stays(
    demo: Demo, sent: str, answer: dict[str, Any] | None
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT), demo.client() as alice:
        await join(alice)
        await alice.send(sent)
        if answer is None:
            assert await recv(alice) == {"type": "error", "error": "invalid_json"}
        else:
            assert await recv(alice) == {"type": "error", "error": "invalid_message", "errors": [answer]}
        longest = "é" * 500  # 500 characters is allowed, however many bytes
        await alice.send(json.dumps({"type": "say", "text": longest}, ensure_ascii=False))
        assert await recv(alice) == {"type": "said", "name": "alice", "text": longest}


@pytest.mark.parametrize("token", ["wrong-token", None, ""])
async def test_a_bad_or_missing_token_is_refused_with_401(demo: Demo, token: str | None) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        assert await expect_rejected(demo, token) == (401, b"unauthorized")


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:1", "https://127.0.0.1", "null", None])
async def test_a_page_from_another_origin_is_refused_with_403(demo: Demo, origin: str | None) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        assert await expect_rejected(demo, origin=origin) == (403, b"forbidden origin")
        # ... even with a valid token: the Origin gate runs before the token gate.
        async with demo.client(origin=f"http://localhost:{demo.server.port}") as alice:
            assert (await join(alice))["name"] == "alice"


async def test_a_flood_is_closed_1008_after_the_burst(demo: Demo) -> None:
    demo.mount(rate=0.001, burst=4)  # no refill worth counting during the test
    async with asyncio.timeout(TEST_TIMEOUT), demo.client() as alice:
        await join(alice)
        for n in range(3):  # join + 3 says: the burst of 4
            await alice.send(json.dumps({"type": "say", "text": f"spam {n}"}))
            assert (await recv(alice))["text"] == f"spam {n}"
        await alice.send('{"type":"say","text":"one too many"}')
        assert await expect_close(alice) == (1008, "rate limit")


async def test_defaults_allow_a_burst_of_ten(demo: Demo) -> None:
    async with asyncio.timeout(TEST_TIMEOUT), demo.client() as alice:
        await join(alice)
        for n in range(9):
            await alice.send(json.dumps({"type": "say", "text": f"quick {n}"}))
        assert [(await recv(alice))["text"] for _ in range(9)] == [f"quick {n}" for n in range(9)]


async def test_one_person_may_hold_ten_connections_and_the_rest_are_denied_429(demo: Demo) -> None:
    """150 connections with one token at once: 10 are accepted, the others get 429; bob is not counted against
    alice, and a connection that ends gives its place back."""
    async with asyncio.timeout(TEST_TIMEOUT), contextlib.AsyncExitStack() as stack:

        async def attempt(token: str) -> ClientConnection | tuple[int, bytes]:
            try:
                return await stack.enter_async_context(demo.client(token))
            except InvalidStatus as refused:
                return refused.response.status_code, bytes(refused.response.body or b"")

        outcomes = await asyncio.gather(*(attempt(ALICE) for _ in range(150)))
        held = [conn for conn in outcomes if isinstance(conn, ClientConnection)]
        assert len(held) == CONNECTIONS_PER_PERSON
        assert {denial for denial in outcomes if isinstance(denial, tuple)} == {(429, b"too many connections")}
        assert (await join(held[0]))["members"] == ["alice"]  # the accepted ones work
        async with demo.client(BOB) as bob:
            assert (await join(bob))["members"] == ["alice", "bob"]
        limit = demo.plugin(ConnectionLimit)
        assert limit.count("alice") == CONNECTIONS_PER_PERSON
        await held[-1].close()
        await wait_until(lambda: limit.count("alice") == CONNECTIONS_PER_PERSON - 1, STEP, "alice's place back")
        async with demo.client(ALICE) as again:
            assert (await join(again))["name"] == "alice"


async def test_an_oversized_message_is_closed_1009_before_parsing(demo: Demo) -> None:
    async with asyncio.timeout(TEST_TIMEOUT), demo.client() as alice:
        await join(alice)
        await alice.send(json.dumps({"type": "say", "text": "x" * MAX_MESSAGE_BYTES}))
        assert await expect_close(alice) == (1009, "message too big")


async def test_nothing_looks_at_an_oversized_json_message_before_the_size_limit(demo: Demo) -> None:
    """The size limit runs first on ws_receive: the connection log (which parses JSON payloads at DEBUG, as
    the tests run it) never sees the 0.9 MiB array that used to cost 130-150 ms of CPU to refuse."""
    wsapp = next(route.app for route in demo.switch_app().routes if isinstance(route, WebSocketRoute))
    assert isinstance(wsapp, WebSocketApp)
    assert wsapp.plugins is not None
    assert wsapp.plugins.hook_order()["ws_receive"][0].plugin_name == "MessageSizeLimit"

    seen = LogCapture()
    connection_log = logging.getLogger("toolkit_logging")
    assert connection_log.isEnabledFor(logging.DEBUG)  # tests/conftest.py: per-message records are on
    connection_log.addHandler(seen)
    try:
        async with asyncio.timeout(TEST_TIMEOUT), demo.client() as alice:
            await join(alice)
            many = json.dumps({"type": "say", "text": "x", "extra": list(range(150_000))})
            assert len(many) > 900_000
            await alice.send(many)
            assert await expect_close(alice) == (1009, "message too big")
        await demo.server.wait_idle(STEP)
    finally:
        connection_log.removeHandler(seen)
    sizes = [getattr(r, "ws_size", None) for r in seen.records() if getattr(r, "ws_event", None) == "message"]
    assert sizes, "the connection log recorded no message at all: the test would prove nothing"
    assert max(s for s in sizes if s is not None) < MAX_MESSAGE_BYTES  # the join and its answer, never the array


async def test_saying_before_joining_is_closed_1008(demo: Demo) -> None:
    async with asyncio.timeout(TEST_TIMEOUT), demo.client(BOB) as bob, demo.client() as alice:
        await join(alice)
        await bob.send('{"type":"say","text":"psst"}')
        assert await expect_close(bob) == (1008, "join first")
        await alice.send('{"type":"say","text":"anyone?"}')
        assert await recv(alice) == {"type": "said", "name": "alice", "text": "anyone?"}  # bob's never arrived


async def test_joining_twice_only_repeats_the_welcome(demo: Demo) -> None:
    async with asyncio.timeout(TEST_TIMEOUT), demo.client() as alice, demo.client(BOB) as bob:
        await join(alice)
        await join(bob)
        await recv(alice)  # the members, bob among them
        assert await join(bob) == {"type": "joined", "name": "bob", "members": ["alice", "bob"]}
        await bob.send('{"type":"say","text":"once"}')
        assert await recv(alice) == {"type": "said", "name": "bob", "text": "once"}  # no second "joined"


# --- HTTP: the page and its files -----------------------------------------------------------------


def http_get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=STEP) as response:  # noqa: S310 - http://127.0.0.1 only
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


async def test_the_page_and_its_files_are_served_with_a_strict_policy(demo: Demo) -> None:
    base = demo.server.http_url
    status, headers, body = await asyncio.to_thread(http_get, f"{base}/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert "connect-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert b'<script src="/static/app.js" defer></script>' in body
    for path, kind in [("/static/app.js", "javascript"), ("/static/style.css", "text/css")]:
        status, headers, body = await asyncio.to_thread(http_get, base + path)
        assert (status, kind in headers["content-type"]) == (200, True), path
        assert body
    status, _, _ = await asyncio.to_thread(http_get, f"{base}/static/missing.js")
    assert status == 404


# --- python -m toolkit_demo -----------------------------------------------------------------------


def read_banner(process: subprocess.Popen[bytes], within: float) -> list[str]:
    """The lines printed up to the one that says how to stop; bounded (unbuffered reads on the pipe)."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    output = b""
    deadline = time.monotonic() + within
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"Ctrl+C" not in output or not output.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise AssertionError(f"no banner within {within} s; got {output!r}")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise AssertionError(f"the demo exited early ({process.poll()}); got {output!r}")
            output += chunk
    return output.decode().splitlines()


@contextlib.contextmanager
def demo_process(
    log: Path, *options: str, python: str = sys.executable, cwd: Path | None = None, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], list[str]]]:
    """``python -m toolkit_demo`` on a free 127.0.0.1 port, its stderr in ``log``: the process and its banner.

    Stop it with :func:`stop_with_ctrl_c`; on the way out it is killed if still running.
    """
    with log.open("w") as stderr:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [python, "-m", "toolkit_demo", "--host", "127.0.0.1", "--port", "0", *options],
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=cwd,
            env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"},
        )
    try:
        yield process, read_banner(process, 15.0)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(STEP)
        if process.stdout is not None:
            process.stdout.close()


def stop_with_ctrl_c(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)  # Ctrl+C: uvicorn shuts down, then re-raises the signal
    assert process.wait(STEP) in (0, -signal.SIGINT)


def test_python_m_toolkit_demo_prints_links_and_serves_them(tmp_path: Path) -> None:
    log = tmp_path / "demo.log"
    with demo_process(log) as (process, banner):
        first = banner[0]
        assert first.startswith("ws-toolkit demo chat: http://127.0.0.1:")
        base = first.split(": ", 1)[1].rstrip("/")
        links = {line.split()[0]: line.split()[1] for line in banner if "#token=" in line}
        assert sorted(links) == ["alice", "bob", "carol"]
        token = links["bob"].split("#token=", 1)[1]
        assert links["bob"] == f"{base}/#token={token}"
        assert len(set(links.values())) == 3  # a token each

        ws = base.replace("http://", "ws://") + "/ws"
        offer = [Subprotocol("chat.v1"), Subprotocol(f"bearer.{token}")]
        with sync_connect(ws, origin=Origin(base), subprotocols=offer, open_timeout=STEP, close_timeout=STEP) as bob:
            bob.send('{"type":"join"}')
            assert json.loads(bob.recv(timeout=STEP)) == {
                "type": "joined",
                "name": "bob",
                "members": ["bob"],
            }
        wrong = [Subprotocol("chat.v1"), Subprotocol("bearer.nope")]
        with (
            pytest.raises(InvalidStatus) as info,
            sync_connect(ws, origin=Origin(base), subprotocols=wrong, open_timeout=STEP),
        ):
            pass
        assert info.value.response.status_code == 401
        assert http_get(base + "/")[0] == 200

        stop_with_ctrl_c(process)
    output = log.read_text()
    assert "Finished server process" in output
    assert "websocket open" in output  # the connection log is on
    assert token not in output  # ... and never shows the token
