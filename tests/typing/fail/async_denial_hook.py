import toolkit


class Bad(toolkit.Plugin):
    async def ws_denial(self, *, websocket: toolkit.WebSocket, response: toolkit.DenialResponse) -> None:  # E: override  P: reportIncompatibleMethodOverride
        return None
