"""The code in the README and docs runs, and does what the text around it says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import toolkit
from tests.support import Transport, connect, disconnect, make_scope, text

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.anyio


def run_blocks(path: Path) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": f"docs_{path.stem}"}
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)
    assert blocks, f"no python block in {path}"
    for block in blocks:
        exec(compile(block, str(path), "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace


async def test_readme_example_shouts_back() -> None:
    app = run_blocks(ROOT / "README.md")["app"]
    transport = Transport([connect(), text("hello"), disconnect(1000)])
    await app(make_scope(), transport.receive, transport.send)
    assert transport.sent == [
        {"type": "websocket.accept", "subprotocol": None, "headers": []},
        {"type": "websocket.send", "text": "HELLO"},
    ]


async def test_readme_middleware_example_shouts_through_a_starlette_endpoint() -> None:
    app = run_blocks(ROOT / "README.md")["starlette_app"]
    transport = Transport([connect(), text("hello"), disconnect(1000)])
    await app(make_scope(path="/ws"), transport.receive, transport.send)
    assert transport.sent[1:] == [{"type": "websocket.send", "text": "HELLO"}]
    assert transport.sent[0]["type"] == "websocket.accept"


async def test_plugins_page_example_gates_and_times() -> None:
    plugins: toolkit.PluginManager = run_blocks(ROOT / "docs" / "plugins.md")["plugins"]

    async def endpoint(websocket: toolkit.WebSocket) -> None:
        await websocket.accept()
        async for data in websocket.iter_text():
            await websocket.send_text(data)

    app = toolkit.WebSocketApp(endpoint, plugins=plugins)
    extensions: dict[str, Any] = {"websocket.http.response": {}}

    denied = Transport([connect()])
    await app(make_scope(extensions=extensions), denied.receive, denied.send)
    assert denied.sent[0]["status"] == 401
    assert denied.sent[1]["body"] == b"unauthorized"

    headers = [(b"host", b"testserver"), (b"authorization", b"Bearer s3cret")]
    allowed = Transport([connect(), text("hi"), text("x" * 64_001)])
    await app(make_scope(headers=headers, extensions=extensions), allowed.receive, allowed.send)
    assert allowed.sent[1:] == [
        {"type": "websocket.send", "text": "hi"},
        {"type": "websocket.close", "code": 1009, "reason": "message too big"},
    ]


def test_plugins_page_denial_response_example() -> None:
    namespace = run_blocks(ROOT / "docs" / "plugins.md")  # the block's own asserts run here
    denial: toolkit.DenialResponse = namespace["json_denial"]
    assert (denial.status, denial.media_type) == (401, "application/json")
    assert namespace["refused"] == "header name or value contains a forbidden character"
