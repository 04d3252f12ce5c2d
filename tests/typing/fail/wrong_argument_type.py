import toolkit


class Bad(toolkit.Plugin):
    def ws_receive(self, *, websocket: toolkit.WebSocket, data: str) -> None:  # E: override  P: reportIncompatibleMethodOverride
        return None
