import toolkit

COUNT = toolkit.StateKey[int]("count")
NAMES = toolkit.StateKey[list[str]]("names")


class Counts(toolkit.Plugin):
    def ws_receive(self, websocket: toolkit.WebSocket, data: str | bytes) -> None:
        websocket.plugin_state[COUNT] = "one"  # E: misc
        total: str = websocket.plugin_state[COUNT]  # E: assignment
        count: int = websocket.plugin_state.get(COUNT, 0)  # fine: int | int
        maybe: int = websocket.plugin_state.get(COUNT)  # E: assignment
        websocket.plugin_state.setdefault(NAMES, [1])  # E: misc
        names: list[str] = websocket.plugin_state.pop(NAMES, [])
        del total, count, maybe, names
