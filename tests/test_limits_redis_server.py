"""docs/limits.md's shared limits end to end: two uvicorn servers (two "workers") on one real Redis.

Each server runs the page's ``shared_app(url)``, lifespan included (it enters the coredis client and the
store); a real ``websockets`` client connects to either. The caps and the rate hold across both. The
client is asyncio-only; every step is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.redis_server import RedisServer
from tests.server import run_server
from tests.test_server import TEST_TIMEOUT, anyio_backend, client, expect_rejected, recv

pytestmark = [pytest.mark.server, pytest.mark.redis, pytest.mark.anyio]
FIXTURES = (anyio_backend,)
ROOT = Path(__file__).parent.parent


def shared_app_factory() -> Callable[[str, float], Any]:
    namespace: dict[str, Any] = {"__name__": "docs_limits"}
    source = (ROOT / "docs" / "limits.md").read_text()
    for block in re.findall(r"```python\n(.*?)```", source, flags=re.DOTALL):
        exec(compile(block, "docs/limits.md", "exec"), namespace)  # noqa: S102 - our own documentation
    factory: Callable[[str, float], Any] = namespace["shared_app"]
    return factory


@contextlib.asynccontextmanager
async def connected(url: str, user: str) -> AsyncIterator[ClientConnection]:
    async with client(url, additional_headers={"authorization": f"Bearer {user}"}) as conn:
        yield conn


async def test_the_docs_shared_limits_hold_across_two_workers(redis_server: RedisServer) -> None:
    shared_app = shared_app_factory()
    # A 0.5 s deadline, not the default 50 ms: under coverage, with both servers and the client on one loaded
    # 2-core machine, a call can take longer, and the limit would then count in one process ("local").
    with (
        run_server(shared_app(redis_server.url, 0.5), lifespan="on") as one,
        run_server(shared_app(redis_server.url, 0.5), lifespan="on") as two,
    ):
        urls = [f"{one.url}/ws", f"{two.url}/ws"]
        async with asyncio.timeout(TEST_TIMEOUT), contextlib.AsyncExitStack() as stack:
            # Five connections for alice, spread over both workers: the sixth is refused on either.
            conns = [await stack.enter_async_context(connected(urls[n % 2], "alice")) for n in range(5)]
            for url in urls:
                response = await expect_rejected(url, additional_headers={"authorization": "Bearer alice"})
                assert response.status_code == 429
            # Alice's 40-message burst is shared by her connections on both workers.
            for n in range(40):
                await conns[n % 2].send(f"m{n}")
                assert await recv(conns[n % 2]) == f"m{n}"
            await conns[0].send("one too many")
            with pytest.raises(ConnectionClosed) as closed:
                await recv(conns[0])
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "rate limit")
            # Bob has his own cap and bucket.
            async with connected(urls[1], "bob") as bob:
                await bob.send("hi")
                assert await recv(bob) == "hi"
        await one.wait_idle()
        await two.wait_idle()
