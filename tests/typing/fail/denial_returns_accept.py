import toolkit


class Bad(toolkit.Plugin):
    def ws_denial(self, *, websocket: toolkit.WebSocket, response: toolkit.DenialResponse) -> toolkit.Accept:  # E: override  P: reportIncompatibleMethodOverride
        return toolkit.Accept()
