import toolkit


class Bad(toolkit.Plugin):
    def ws_receive(self, websocket: toolkit.WebSocket, text: str | bytes) -> None:  # E: override  P: reportIncompatibleMethodOverride
        return None
