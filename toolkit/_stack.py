"""Composing stacks: ordered ASGI middleware around an app, and plugins chosen per route.

``compose(app, Middleware(A, ...), Middleware(B, ...))`` builds ``A(B(app, ...), ...)``:
the first listed is the outermost. ``RoutePlugins`` runs a different
:class:`toolkit.PluginManager` (through :class:`toolkit.ToolkitMiddleware`) for
each websocket path pattern. docs/middleware.md, "Composing stacks", has both.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from fnmatch import translate
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeAlias, final

from ._middleware import ToolkitMiddleware
from ._plugins import PluginManager
from ._types import ASGIApp

__all__ = ["Middleware", "RoutePlugins", "compose"]

#: Any ASGI app, whatever types its framework gives the three arguments (as in toolkit/_middleware.py).
_AnyApp: TypeAlias = Callable[[Any, Any, Any], Awaitable[None]]

_P = ParamSpec("_P")


@final
class Middleware(Generic[_P]):
    """One ASGI middleware of a stack, with its options: ``Middleware(cls, *args, **kwargs)``.

    ``cls`` is called as ``cls(app, *args, **kwargs)`` when the stack is built,
    with the app it wraps first. The options are typed by ``cls``: mypy checks
    them against its ``__init__`` after the app argument, so
    ``Middleware(ToolkitMiddleware, plugins=1)`` is an ``arg-type`` error.
    """

    __slots__ = ("args", "cls", "kwargs")

    def __init__(
        self, cls: Callable[Concatenate[_AnyApp, _P], _AnyApp], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> None:
        self.cls: Callable[Concatenate[_AnyApp, _P], _AnyApp] = cls
        # Checked against cls here, at construction; kept plain for calling and showing.
        self.args: tuple[Any, ...] = args
        self.kwargs: dict[str, Any] = kwargs

    def wrap(self, app: _AnyApp) -> _AnyApp:
        """``cls(app, *args, **kwargs)``: this middleware around ``app``."""
        cls: Callable[..., _AnyApp] = self.cls
        return cls(app, *self.args, **self.kwargs)

    def __repr__(self) -> str:
        options = [repr(arg) for arg in self.args] + [f"{name}={value!r}" for name, value in self.kwargs.items()]
        name = getattr(self.cls, "__qualname__", repr(self.cls))
        return f"Middleware({', '.join([name, *options])})"


class _Layer(Protocol):
    """What ``compose`` takes: a :class:`Middleware`, or anything else that wraps an app."""

    def wrap(self, app: _AnyApp, /) -> _AnyApp: ...


# Not ``Middleware[...]``: with that as the expected type, mypy stops checking the options of a
# ``Middleware(...)`` written inline in the call (tests/typing/fail/middleware_wrong_option.py).
def compose(app: _AnyApp, *middleware: _Layer) -> ASGIApp:
    """Wrap ``app`` in ``middleware``, listed **outermost first**, and return the stack.

    ``compose(app, Middleware(A), Middleware(B))`` is ``A(B(app))``: the server
    calls ``A``, which calls ``B``, which calls ``app``. So each message passes the
    middleware in this order:

    - inbound (what ``receive`` returns): outermost -> innermost -> app, here ``A``, ``B``, ``app``;
    - outbound (what the app gives ``send``): app -> innermost -> outermost, here ``app``, ``B``, ``A``.

    The instances are built once, here, innermost first. With no middleware, ``app`` itself is returned.
    """
    for layer in reversed(middleware):
        app = layer.wrap(app)
    return app


@final
class RoutePlugins:
    """Run a different :class:`toolkit.PluginManager` for each websocket path pattern.

    ``routes`` maps patterns to managers, as a mapping or a sequence of
    ``(pattern, manager)`` pairs, tried in order: the **first** pattern that
    matches the scope's ``path`` wins. Patterns are :func:`fnmatch.fnmatchcase`
    patterns matched against the whole path: ``"/ws"`` is that path only;
    ``"/chat/*"`` is every path under ``/chat/`` (``*`` crosses ``/``), but not
    ``/chat`` itself; ``?`` is one character and ``[...]`` a set; matching is
    case-sensitive. A connection no pattern matches gets ``default``'s plugins,
    or, with no default, goes to ``app`` untouched. HTTP and lifespan scopes
    always go to ``app`` untouched.

    The chosen manager runs as ``ToolkitMiddleware(app, plugins=manager)`` would;
    those middlewares are built here, once, not per connection.
    """

    __slots__ = ("_default", "_routes", "app", "default", "routes")

    def __init__(
        self,
        app: _AnyApp,
        routes: Mapping[str, PluginManager] | Sequence[tuple[str, PluginManager]],
        *,
        default: PluginManager | None = None,
    ) -> None:
        pairs = _pairs(routes)
        if not (default is None or isinstance(default, PluginManager)):  # untyped callers
            raise TypeError(f"default must be a PluginManager or None, got {default!r}")
        self.app: _AnyApp = app
        #: The ``(pattern, manager)`` pairs, in the order they are tried.
        self.routes: tuple[tuple[str, PluginManager], ...] = pairs
        self.default: PluginManager | None = default
        # One ToolkitMiddleware per manager (a manager listed twice shares one), built once.
        built: dict[int, ToolkitMiddleware] = {}
        for _, manager in pairs:
            built.setdefault(id(manager), ToolkitMiddleware(app, plugins=manager))
        self._routes = tuple((re.compile(translate(pattern)), built[id(manager)]) for pattern, manager in pairs)
        self._default = None if default is None else built.get(id(default)) or ToolkitMiddleware(app, plugins=default)

    def plugins_for(self, path: str) -> PluginManager | None:
        """The manager a websocket connection to ``path`` runs; ``None``: it goes to the app untouched."""
        middleware = self._match(path)
        return None if middleware is None else middleware.plugins

    def _match(self, path: str) -> ToolkitMiddleware | None:
        for pattern, middleware in self._routes:
            if pattern.match(path):
                return middleware
        return self._default

    # Typed Any, as ToolkitMiddleware: every framework's typed middleware slot takes this class.
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and (middleware := self._match(scope["path"])) is not None:
            await middleware(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _pairs(routes: object) -> tuple[tuple[str, PluginManager], ...]:
    """``routes`` as ``(pattern, manager)`` pairs, checked: a typo here would silently leave a route unguarded."""
    if isinstance(routes, str) or not isinstance(routes, Mapping | Sequence):
        raise TypeError(f"routes must be a mapping or a sequence of (pattern, PluginManager) pairs, got {routes!r}")
    pairs: list[tuple[str, PluginManager]] = []
    for pair in routes.items() if isinstance(routes, Mapping) else routes:
        match pair:
            case (str() as pattern, PluginManager() as manager):
                pairs.append((pattern, manager))
            case _:
                raise TypeError(f"each route must be a (str pattern, PluginManager) pair, got {pair!r}")
    return tuple(pairs)
