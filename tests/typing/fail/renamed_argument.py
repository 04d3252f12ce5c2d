import toolkit


class Bad(toolkit.Plugin):
    def ws_send(self, *, websocket: toolkit.WebSocket, message: str | bytes) -> None:  # E: override  P: reportIncompatibleMethodOverride
        return None
