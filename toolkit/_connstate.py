"""Per-connection plugin state: a typed home, owned by the core, for what a plugin keeps per connection.

One plugin object serves every connection at once, so nothing per-connection
may live on it. A plugin creates a :class:`StateKey` once (at import, or in its
``__init__``) and keeps its values in ``websocket.plugin_state[key]``; the
value's type follows from the key under mypy and pyright alike. The state lives
exactly as long as the connection: it is emptied right after ``ws_close``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar, final, overload

__all__ = ["PluginState", "StateKey"]

T = TypeVar("T")
D = TypeVar("D")


@final
class StateKey(Generic[T]):
    """A typed key into :attr:`toolkit.WebSocket.plugin_state`: ``KEY = toolkit.StateKey[int]("hits")``.

    Keys compare by identity, so two plugins that pick the same ``name`` never
    collide; the name is for ``repr`` and error messages only.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        #: A readable name, shown in errors; need not be unique.
        self.name = name

    def __repr__(self) -> str:
        return f"StateKey({self.name!r})"


@final
class PluginState:
    """The plugin state of one connection: a mapping from :class:`StateKey` to that key's value type.

    Read with ``state[key]`` (``KeyError`` naming the key when unset),
    ``state.get(key)`` or ``state.get(key, default)``; write with
    ``state[key] = value`` or ``state.setdefault(key, value)``; remove with
    ``del state[key]`` or ``state.pop(key, default)``. Emptied by the core right
    after ``ws_close`` has run, so nothing a plugin stored outlives the connection.
    """

    __slots__ = ("_values",)

    def __init__(self) -> None:
        self._values: dict[StateKey[Any], object] = {}

    def __getitem__(self, key: StateKey[T]) -> T:
        try:
            return self._values[key]  # type: ignore[return-value]
        except KeyError:
            raise KeyError(f"{key!r} is not set on this connection") from None

    def __setitem__(self, key: StateKey[T], value: T) -> None:
        self._values[key] = value

    def __delitem__(self, key: StateKey[Any]) -> None:
        try:
            del self._values[key]
        except KeyError:
            raise KeyError(f"{key!r} is not set on this connection") from None

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[StateKey[Any]]:
        return iter(self._values)

    @overload
    def get(self, key: StateKey[T]) -> T | None: ...
    @overload
    def get(self, key: StateKey[T], default: D) -> T | D: ...
    def get(self, key: StateKey[T], default: object = None) -> object:
        """The key's value, or ``default`` (``None``) when it is not set."""
        return self._values.get(key, default)

    def setdefault(self, key: StateKey[T], default: T) -> T:
        """The key's value; when unset, set it to ``default`` first."""
        return self._values.setdefault(key, default)  # type: ignore[return-value]

    @overload
    def pop(self, key: StateKey[T]) -> T | None: ...
    @overload
    def pop(self, key: StateKey[T], default: D) -> T | D: ...
    def pop(self, key: StateKey[T], default: object = None) -> object:
        """Remove the key and return its value, or ``default`` (``None``) when it was not set."""
        return self._values.pop(key, default)

    def clear(self) -> None:
        """Forget every value (the core calls it after ``ws_close``)."""
        self._values.clear()

    def __repr__(self) -> str:
        return f"PluginState({', '.join(key.name for key in self._values)})"
