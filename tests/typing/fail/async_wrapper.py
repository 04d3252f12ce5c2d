from collections.abc import AsyncGenerator

import toolkit


class Bad(toolkit.Plugin):
    async def ws_send(self, *, websocket: toolkit.WebSocket, data: str | bytes) -> AsyncGenerator[None, toolkit.MessageResult]:  # E: override  P: reportIncompatibleMethodOverride
        yield
