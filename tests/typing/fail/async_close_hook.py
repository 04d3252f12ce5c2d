import toolkit


class Bad(toolkit.Plugin):
    async def ws_close(self, *, websocket: toolkit.WebSocket, code: int, reason: str, closed_by: toolkit.ClosedBy) -> None:  # E: override  P: reportIncompatibleMethodOverride
        pass
