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


README = ROOT / "README.md"


def python_blocks(path: Path) -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)
    assert blocks, f"no python block in {path}"
    return blocks


def run_blocks(path: Path) -> dict[str, Any]:
    """A page's python blocks run in order in one namespace, as a docs page's blocks read (one builds on the last)."""
    namespace: dict[str, Any] = {"__name__": f"docs_{path.stem}"}
    for block in python_blocks(path):
        exec(compile(block, str(path), "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace


def run_alone(block: str, path: Path) -> dict[str, Any]:
    """One block in a namespace of its own: what a reader who pastes only that block gets."""
    namespace: dict[str, Any] = {"__name__": f"docs_{path.stem}"}
    exec(compile(block, str(path), "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace


def readme_defining(name: str) -> dict[str, Any]:
    """The namespace of the README block that defines ``name``, run on its own."""
    blocks = [block for block in python_blocks(README) if re.search(rf"^{name} = ", block, flags=re.MULTILINE)]
    assert len(blocks) == 1, f"{len(blocks)} README blocks define {name}"
    return run_alone(blocks[0], README)


@pytest.mark.parametrize("index", range(len(python_blocks(README))))
def test_every_readme_block_runs_as_pasted(index: int) -> None:
    # The README is where newcomers copy from: no block may lean on a name another block defined.
    namespace = run_alone(python_blocks(README)[index], README)
    assert set(namespace) - {"__name__", "__builtins__"}, "the block defined nothing"


async def test_readme_example_shouts_back() -> None:
    app = readme_defining("app")["app"]
    transport = Transport([connect(), text("hello"), disconnect(1000)])
    await app(make_scope(), transport.receive, transport.send)
    assert transport.sent == [
        {"type": "websocket.accept", "subprotocol": None, "headers": []},
        {"type": "websocket.send", "text": "HELLO"},
    ]


async def test_readme_middleware_example_shouts_through_a_starlette_endpoint() -> None:
    app = readme_defining("starlette_app")["starlette_app"]
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
