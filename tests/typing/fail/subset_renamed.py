import toolkit


class Bad(toolkit.Plugin):
    def ws_close(self, *, status: int, **_: object) -> None:  # E: override  P: reportIncompatibleMethodOverride
        return None
