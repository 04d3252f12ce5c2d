"""Per-connection plugin state: a typed home, owned by the core, for what a plugin keeps per connection.

One plugin object serves every connection at once, so nothing per-connection
may live on it. A plugin creates a :class:`StateKey` once (at import, or in its
``__init__``) and keeps its values in ``websocket.plugin_state[key]``; the
value's type follows from the key under mypy and pyright alike. The state lives
exactly as long as the connection: it is emptied right after ``ws_close``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar, final, overload

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
        self.name: str = name

    def __repr__(self) -> str:
        return f"StateKey({self.name!r})"


if TYPE_CHECKING:

    @final
    class PluginState:
        """The plugin state of one connection: a mapping from :class:`StateKey` to that key's value type.

        Read with ``state[key]`` (``KeyError`` naming the key when unset),
        ``state.get(key)`` or ``state.get(key, default)``; write with
        ``state[key] = value`` or ``state.setdefault(key, value)``; remove with
        ``del state[key]`` or ``state.pop(key, default)``. Emptied by the core right
        after ``ws_close`` has run, so nothing a plugin stored outlives the connection.
        """

        def __getitem__(self, key: StateKey[T], /) -> T: ...
        def __setitem__(self, key: StateKey[T], value: T, /) -> None: ...
        def __delitem__(self, key: StateKey[Any], /) -> None: ...
        def __contains__(self, key: object, /) -> bool: ...
        def __len__(self) -> int: ...
        def __iter__(self) -> Iterator[StateKey[Any]]: ...
        @overload
        def get(self, key: StateKey[T], /) -> T | None: ...
        @overload
        def get(self, key: StateKey[T], default: D, /) -> T | D: ...
        def get(self, key: StateKey[T], default: object = None, /) -> object:
            """The key's value, or ``default`` (``None``) when it is not set."""

        def setdefault(self, key: StateKey[T], default: T, /) -> T:
            """The key's value; when unset, set it to ``default`` first."""

        @overload
        def pop(self, key: StateKey[T], /) -> T | None: ...
        @overload
        def pop(self, key: StateKey[T], default: D, /) -> T | D: ...
        def pop(self, key: StateKey[T], default: object = None, /) -> object:
            """Remove the key and return its value, or ``default`` (``None``) when it was not set."""

        def clear(self) -> None:
            """Forget every value (the core calls it after ``ws_close``)."""

else:

    class PluginState(dict):
        # At run time a dict, so a lookup costs what a dict lookup costs (plugins read it per message);
        # the typed view above is what type checkers see.
        __doc__ = "The plugin state of one connection: a mapping from StateKey to that key's value type."
        __slots__ = ()

        def __missing__(self, key):
            raise KeyError(f"{key!r} is not set on this connection")

        def __delitem__(self, key):
            if key not in self:
                raise KeyError(f"{key!r} is not set on this connection")
            dict.__delitem__(self, key)

        def pop(self, key, default=None):
            return dict.pop(self, key, default)

        def __repr__(self):
            return f"PluginState({', '.join(key.name for key in self)})"
