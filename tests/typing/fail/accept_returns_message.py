import toolkit


class Bad(toolkit.Plugin):
    def ws_accept(self, *, websocket: toolkit.WebSocket, accept: toolkit.Accept) -> str:  # E: override  P: reportIncompatibleMethodOverride
        return "no"
