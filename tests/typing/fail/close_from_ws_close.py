import toolkit


class Bad(toolkit.Plugin):
    def ws_close(self, *, websocket: toolkit.WebSocket, code: int, reason: str, closed_by: toolkit.ClosedBy) -> toolkit.Close:  # E: override  P: reportIncompatibleMethodOverride
        return toolkit.Close(1000)
