"""Plugins that installed packages register under the ``ws_toolkit.plugins`` entry-point group.

Loading is opt-in: nothing here runs unless the app calls :func:`load_plugins`. An entry point's
value names a module, a class, a function or an object:

- a **module** or any other **object** is registered as it is;
- a **class** or a **function** (any routine, e.g. a classmethod) is called with no arguments,
  and what it returns is registered.

The plugin is registered under the entry point's name. A plugin that cannot be imported, whose
factory raises or returns ``None``, that implements no hook, or that fails validation (a misspelt
hook, a wrong signature) is reported with a :class:`PluginLoadWarning` and left out; the other
plugins still load. With ``strict=True`` the first such failure raises :class:`PluginLoadError`
instead, and the manager is left as it was.
"""

from __future__ import annotations

import enum
import inspect
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Final, final

from ._plugins import PluginManager

__all__ = [
    "DISABLE_AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "SKIP_PLUGINS_ENV",
    "PluginEntryPoint",
    "PluginLoadError",
    "PluginLoadWarning",
    "PluginStatus",
    "find_plugins",
    "load_one",
    "load_plugins",
]

#: The entry-point group third-party plugins register in.
ENTRY_POINT_GROUP: Final = "ws_toolkit.plugins"
#: Set to ``1`` (any value but ``""``, ``0``, ``false``, ``no``, ``off``) to make :func:`load_plugins` load nothing.
DISABLE_AUTOLOAD_ENV: Final = "WS_TOOLKIT_DISABLE_PLUGIN_AUTOLOAD"
#: Comma-separated entry-point names that :func:`load_plugins` leaves out, e.g. ``"metrics,audit"``.
SKIP_PLUGINS_ENV: Final = "WS_TOOLKIT_SKIP_PLUGINS"

_FALSE: Final = frozenset({"", "0", "false", "no", "off"})


class PluginStatus(enum.StrEnum):
    """What :func:`load_plugins` would do with an installed plugin."""

    #: It would be imported and registered.
    LOAD = "load"
    #: Named in ``skip=`` or in ``WS_TOOLKIT_SKIP_PLUGINS``.
    SKIPPED = "skipped"
    #: ``WS_TOOLKIT_DISABLE_PLUGIN_AUTOLOAD`` is set: nothing is loaded.
    DISABLED = "disabled"


@final
@dataclass(frozen=True, slots=True)
class PluginEntryPoint:
    """An installed plugin, as its package declares it. Finding one imports nothing."""

    #: The entry point's name; the plugin is registered under it.
    name: str
    #: What the entry point names, ``"module"`` or ``"module:attribute"``.
    value: str
    #: The distribution that declares it, and its version (``None`` when unknown).
    distribution: str | None
    version: str | None
    status: PluginStatus
    #: Why it is skipped or disabled; ``""`` when it would be loaded.
    reason: str = ""
    entry_point: metadata.EntryPoint | None = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        """``name = value (from distribution version)``, for messages."""
        source = "" if self.distribution is None else f" (from {self.distribution} {self.version or '?'})"
        return f"{self.name} = {self.value}{source}"


class PluginLoadError(Exception):
    """An entry-point plugin could not be loaded. ``__cause__`` holds the original error, if any."""

    def __init__(self, plugin: PluginEntryPoint, problem: str) -> None:
        super().__init__(f"plugin {plugin.describe()} was not loaded: {problem}")
        #: The plugin that failed.
        self.plugin = plugin
        #: What went wrong, e.g. ``"importing it raised ModuleNotFoundError: No module named 'x'"``.
        self.problem = problem


class PluginLoadWarning(UserWarning):
    """An entry-point plugin could not be loaded and was left out; the others were loaded."""

    def __init__(self, message: str, plugin: PluginEntryPoint, error: BaseException | None) -> None:
        super().__init__(message)
        #: The plugin that failed.
        self.plugin = plugin
        #: The original error (an ``ImportError``, what the factory raised, a ``PluginValidationError``...).
        self.error = error


def _disabled() -> bool:
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() not in _FALSE


def _skipped_by_env() -> frozenset[str]:
    return frozenset(name.strip() for name in os.environ.get(SKIP_PLUGINS_ENV, "").split(",") if name.strip())


def find_plugins(*, skip: Iterable[str] = (), group: str = ENTRY_POINT_GROUP) -> list[PluginEntryPoint]:
    """The installed plugins of ``group``, in name order, each with what :func:`load_plugins` would do.

    Imports nothing: this reads the installed packages' metadata only.
    """
    if isinstance(skip, str):
        raise TypeError("skip= takes a collection of names, not a single string")
    skip_argument = frozenset(skip)
    skip_env = _skipped_by_env()
    disabled = _disabled()
    found: list[PluginEntryPoint] = []
    for entry_point in metadata.entry_points(group=group):
        dist = entry_point.dist
        if disabled:
            status, reason = PluginStatus.DISABLED, f"{DISABLE_AUTOLOAD_ENV} is set"
        elif entry_point.name in skip_argument:
            status, reason = PluginStatus.SKIPPED, "skip= argument"
        elif entry_point.name in skip_env:
            status, reason = PluginStatus.SKIPPED, SKIP_PLUGINS_ENV
        else:
            status, reason = PluginStatus.LOAD, ""
        found.append(
            PluginEntryPoint(
                name=entry_point.name,
                value=entry_point.value,
                distribution=None if dist is None else dist.name,
                version=None if dist is None else dist.version,
                status=status,
                reason=reason,
                entry_point=entry_point,
            )
        )
    # Registration order decides hook order (the last registered runs first): make it stable.
    found.sort(key=lambda plugin: (plugin.name, plugin.value))
    return found


def load_plugins(
    manager: PluginManager, *, skip: Iterable[str] = (), strict: bool = False, group: str = ENTRY_POINT_GROUP
) -> list[str]:
    """Register the installed plugins of ``group`` with ``manager``; return the names registered.

    Plugins are registered in name order, each under its entry point's name. Those named in
    ``skip`` or in ``WS_TOOLKIT_SKIP_PLUGINS`` are not imported; with
    ``WS_TOOLKIT_DISABLE_PLUGIN_AUTOLOAD=1`` nothing is. A plugin that fails to load is left out
    with a :class:`PluginLoadWarning`; with ``strict=True`` it raises :class:`PluginLoadError` and
    the plugins this call registered are unregistered again.
    """
    loaded: list[str] = []
    for plugin in find_plugins(skip=skip, group=group):
        if plugin.status is not PluginStatus.LOAD:
            continue
        try:
            loaded.append(load_one(manager, plugin))
        except PluginLoadError as failure:
            if strict:
                for name in reversed(loaded):
                    manager.unregister(manager.get_plugin(name))
                raise
            warnings.warn(PluginLoadWarning(str(failure), plugin, failure.__cause__), stacklevel=2)
    return loaded


def load_one(manager: PluginManager, plugin: PluginEntryPoint) -> str:
    """Import, build and register one plugin; raise :class:`PluginLoadError` naming what went wrong."""
    assert plugin.entry_point is not None  # noqa: S101 - always set by find_plugins
    if manager.has_plugin(plugin.name):
        raise PluginLoadError(plugin, f"a plugin named {plugin.name!r} is already registered")
    try:
        target = plugin.entry_point.load()
    except Exception as exc:
        raise PluginLoadError(plugin, f"importing it raised {_summary(exc)}") from exc
    if isinstance(target, type) or inspect.isroutine(target):
        try:
            instance: object = target()
        except Exception as exc:
            raise PluginLoadError(plugin, f"calling {plugin.value} raised {_summary(exc)}") from exc
        if instance is None:
            raise PluginLoadError(plugin, f"{plugin.value} returned None instead of a plugin")
    else:
        instance = target
    try:
        name = manager.register(instance, name=plugin.name)
    except Exception as exc:  # PluginValidationError; pluggy's ValueError for an object registered twice
        raise PluginLoadError(plugin, _summary(exc)) from exc
    return name


def _summary(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
