"""Once ``ws_close`` has fired, no other hook runs for that connection (plugins free their state there)."""

from __future__ import annotations

import pytest

import toolkit
from tests.support import Recorder, Transport, connect, disconnect, make_scope, text

pytestmark = pytest.mark.anyio


async def test_draining_after_the_app_closed_runs_no_receive_hook() -> None:
    recorder = Recorder()
    transport = Transport([connect(), text("before"), text("in flight"), disconnect(1000)])
    websocket = toolkit.WebSocket(
        make_scope(), transport.receive, transport.send, plugins=toolkit.PluginManager(recorder)
    )
    await websocket.accept()
    assert await websocket.receive_text() == "before"
    await websocket.close(4000, "done")
    # The client's message was already on its way; the app may still drain it with the raw
    # receive (the high-level ones refuse after close, as Starlette's do), unchanged and unhooked.
    assert await websocket.receive() == text("in flight")
    assert recorder.names() == ["ws_accept", "ws_receive", "ws_close"]
    assert recorder.closes() == [(4000, "done", toolkit.ClosedBy.APP)]
