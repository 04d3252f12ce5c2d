import toolkit


class Bad(toolkit.Plugin):
    def ws_send(self, *, data: str | bytes) -> None:  # E: override  P: reportIncompatibleMethodOverride
        return None
