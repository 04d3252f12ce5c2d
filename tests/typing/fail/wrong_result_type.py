import toolkit


class Bad(toolkit.Plugin):
    def ws_send(self, *, websocket: toolkit.WebSocket, data: str | bytes) -> int:  # E: override  P: reportIncompatibleMethodOverride
        return 1
