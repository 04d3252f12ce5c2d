import toolkit


class Bad(toolkit.Plugin):
    def ws_send(self, *, websocket: toolkit.WebSocket, data: str | bytes, extra: int) -> None:  # E: override  P: reportIncompatibleMethodOverride
        return None
