"""Per-connection plugin state: ``toolkit.StateKey`` and ``websocket.plugin_state`` (asyncio and trio)."""

from __future__ import annotations

import pytest

import toolkit
from tests.support import Transport, connect, disconnect, make_scope, text
from toolkit import ClosedBy, StateKey, WebSocket

pytestmark = pytest.mark.anyio

COUNT = StateKey[int]("count")
SEEN_AT_CLOSE = StateKey[list[int]]("seen")


def test_keys_compare_by_identity_not_name() -> None:
    first, second = StateKey[int]("same"), StateKey[int]("same")
    state = toolkit.PluginState()
    state[first] = 1
    state[second] = 2
    assert (state[first], state[second]) == (1, 2)
    assert repr(first) == "StateKey('same')"


def test_mapping_operations() -> None:
    state = toolkit.PluginState()
    assert state.get(COUNT) is None
    assert state.get(COUNT, 7) == 7
    assert COUNT not in state
    assert state.setdefault(COUNT, 3) == 3
    assert state.setdefault(COUNT, 9) == 3
    assert COUNT in state
    assert len(state) == 1
    assert list(state) == [COUNT]
    assert state.pop(COUNT) == 3
    assert state.pop(COUNT, -1) == -1
    with pytest.raises(KeyError, match="StateKey\\('count'\\) is not set"):
        state[COUNT]
    with pytest.raises(KeyError, match="count"):
        del state[COUNT]


class Counter(toolkit.Plugin):
    """Counts each connection's messages in its own plugin state; reports the count at close."""

    def __init__(self) -> None:
        self.at_close: list[int] = []
        self.after_close: list[int] = []

    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> None:
        websocket.plugin_state[COUNT] = websocket.plugin_state.get(COUNT, 0) + 1

    def ws_close(self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None:
        self.at_close.append(websocket.plugin_state.get(COUNT, 0))


async def test_each_connection_has_its_own_state_and_it_is_emptied_after_ws_close() -> None:
    counter = toolkit.PluginManager(counter_plugin := Counter())
    sockets: list[WebSocket] = []

    async def endpoint(websocket: WebSocket) -> None:
        sockets.append(websocket)
        await websocket.accept()
        async for _ in websocket.iter_text():
            pass

    app = toolkit.WebSocketApp(endpoint, plugins=counter)
    for n in (1, 3):
        transport = Transport([connect(), *(text(str(i)) for i in range(n)), disconnect()])
        await app(make_scope(), transport.receive, transport.send)
    assert counter_plugin.at_close == [1, 3]
    assert [len(ws.plugin_state) for ws in sockets] == [0, 0]
