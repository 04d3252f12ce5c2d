import toolkit

COUNT = toolkit.StateKey[int]("count")
NAMES = toolkit.StateKey[list[str]]("names")


class Counts(toolkit.Plugin):
    def ws_receive(self, *, websocket: toolkit.WebSocket, data: str | bytes) -> None:
        websocket.plugin_state[COUNT] = "one"  # E: misc  P: reportArgumentType
        total: str = websocket.plugin_state[COUNT]  # E: assignment  P: reportAssignmentType
        count: int = websocket.plugin_state.get(COUNT, 0)  # fine: int | int
        maybe: int = websocket.plugin_state.get(COUNT)  # E: assignment  P: reportAssignmentType
        websocket.plugin_state.setdefault(NAMES, [1])  # E: misc  P: reportArgumentType
        names: list[str] = websocket.plugin_state.pop(NAMES, list[str]())
        del total, count, maybe, names
