import toolkit


class Bad(toolkit.Plugin):
    def ws_receive(self, *, websocket: toolkit.WebSocket, data: str | bytes) -> toolkit.Wrapper[int]:  # E: override  P: reportIncompatibleMethodOverride
        outcome = yield
        return outcome
