import toolkit


class AnswersOnSend(toolkit.Plugin):
    def ws_send(self, *, websocket: toolkit.WebSocket, data: str | bytes) -> toolkit.ReceiveResult:  # E: override  P: reportIncompatibleMethodOverride
        return toolkit.Reply("only ws_receive may answer")


class AnswersOnReceive(toolkit.Plugin):
    def ws_receive(self, *, websocket: toolkit.WebSocket, data: str | bytes) -> toolkit.ReceiveResult:
        return toolkit.Reply("fine")
