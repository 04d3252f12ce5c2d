"""toolkit_limits: a first-party ws-toolkit plugin (work in progress)."""

__all__: list[str] = []
