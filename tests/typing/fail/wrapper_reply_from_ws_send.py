import toolkit


class Bad(toolkit.Plugin):
    def ws_send(self, *, websocket: toolkit.WebSocket, data: str | bytes) -> toolkit.Wrapper[toolkit.ReceiveResult]:  # E: override  P: reportIncompatibleMethodOverride
        yield
        return toolkit.Reply("only ws_receive may answer")
