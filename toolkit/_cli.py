"""The ``ws-toolkit`` command (also ``python -m toolkit``): ``plugins`` lists the installed plugins.

For each plugin an installed package registers under ``ws_toolkit.plugins`` it shows where it comes
from, whether :func:`toolkit.load_plugins` would load it (or why not), and, for those it would load,
the hooks each implements with their options (``tryfirst``, ``trylast``, ``wrapper``, ``async``),
then the order in which a connection would call them. The plugins are loaded into a fresh
:class:`toolkit.PluginManager` to find out, exactly as ``load_plugins`` would.

``asyncapi module:attr`` prints the AsyncAPI document ``attr`` produces: a callable that takes no
arguments and returns the document (e.g. one that calls ``toolkit_messages.asyncapi``), or the
document itself. The core never imports a plugin, so it only imports the target and calls it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ._discovery import (
    DISABLE_AUTOLOAD_ENV,
    ENTRY_POINT_GROUP,
    SKIP_PLUGINS_ENV,
    PluginLoadError,
    PluginStatus,
    find_plugins,
    load_one,
)
from ._plugins import PluginManager

__all__ = ["main"]


def _hooks(manager: PluginManager, name: str) -> list[dict[str, Any]]:
    return [
        {
            "name": impl.hook,
            "tryfirst": impl.tryfirst,
            "trylast": impl.trylast,
            "wrapper": impl.wrapper,
            "async": impl.is_async,
        }
        for impls in manager.hook_order().values()
        for impl in impls
        if impl.plugin_name == name
    ]


def _call_order(manager: PluginManager) -> dict[str, list[str]]:
    return {
        hook: [impl.plugin_name + (" (wrapper)" if impl.wrapper else "") for impl in impls]
        for hook, impls in manager.hook_order().items()
    }


def report(skip: Sequence[str] = ()) -> dict[str, Any]:
    """What ``ws-toolkit plugins --json`` prints."""
    manager = PluginManager()
    plugins: list[dict[str, Any]] = []
    for found in find_plugins(skip=skip):
        entry: dict[str, Any] = {
            "name": found.name,
            "value": found.value,
            "distribution": found.distribution,
            "version": found.version,
            "status": str(found.status),
            "reason": found.reason,
            "hooks": [],
        }
        if found.status is PluginStatus.LOAD:
            try:
                load_one(manager, found)
            except PluginLoadError as failure:
                entry["status"], entry["reason"] = "failed", failure.problem
            else:
                entry["status"] = "active"
                entry["hooks"] = _hooks(manager, found.name)
        plugins.append(entry)
    return {
        "group": ENTRY_POINT_GROUP,
        "autoload_disabled": any(found["status"] == "disabled" for found in plugins),
        "plugins": plugins,
        "call_order": _call_order(manager),
    }


def _options(hook: dict[str, Any]) -> str:
    options = [option for option in ("tryfirst", "trylast", "wrapper", "async") if hook[option]]
    return f" [{', '.join(options)}]" if options else ""


def _print_text(data: dict[str, Any]) -> None:
    plugins: list[dict[str, Any]] = data["plugins"]
    active = [plugin for plugin in plugins if plugin["status"] == "active"]
    print(f"{data['group']} entry points: {len(plugins)} installed, {len(active)} active")
    if data["autoload_disabled"]:
        print(f"{DISABLE_AUTOLOAD_ENV} is set: load_plugins() loads nothing.")
    for plugin in plugins:
        source = f"{plugin['distribution']} {plugin['version']}" if plugin["distribution"] else "unknown distribution"
        print(f"\n{plugin['name']}  ({source})  {plugin['value']}")
        status = plugin["status"]
        if status == "active":
            hooks = ", ".join(hook["name"] + _options(hook) for hook in plugin["hooks"])
            print(f"  status: {status}\n  hooks:  {hooks}")
        else:
            print(f"  status: {status} ({plugin['reason']})")
    if active:
        print("\ncall order (first to last, wrappers outermost first):")
        width = max(map(len, data["call_order"]))
        for hook_name, names in data["call_order"].items():
            print(f"  {hook_name:<{width}}  {', '.join(names) or '-'}")


class _TargetError(Exception):
    """The ``module:attr`` of ``ws-toolkit asyncapi`` is not a document or a callable that returns one."""


def _document(target: str) -> Mapping[str, Any]:
    """The document ``module:attr`` names: the attribute, called without arguments if it is callable."""
    module_name, sep, attr = target.partition(":")
    if not (module_name and sep and attr):
        raise _TargetError(f"expected module:attr, like myapp:asyncapi_document, not {target!r}")
    if os.getcwd() not in sys.path:  # as uvicorn does: the current directory's modules are importable
        sys.path.insert(0, os.getcwd())
    try:
        found: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise _TargetError(f"cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise _TargetError(f"{module_name!r} has no attribute {attr!r}") from None
    if callable(found):
        found = found()
    if not isinstance(found, Mapping):
        raise _TargetError(
            f"{target} is not an AsyncAPI document (a mapping) or a callable without arguments that returns one"
        )
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ws-toolkit", description="ws-toolkit utilities.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    plugins = commands.add_parser(
        "plugins",
        help="list installed plugins, whether they load, and the hooks each implements",
        description=f"List the plugins installed packages register under the {ENTRY_POINT_GROUP!r} entry-point "
        f"group, as toolkit.load_plugins() would see them (honouring {DISABLE_AUTOLOAD_ENV} and {SKIP_PLUGINS_ENV}).",
    )
    plugins.add_argument("--json", action="store_true", help="print JSON instead of text")
    plugins.add_argument("--skip", action="append", default=[], metavar="NAME", help="leave this plugin out")
    plugins.add_argument("--check", action="store_true", help="exit with status 1 if a plugin fails to load")
    document = commands.add_parser(
        "asyncapi",
        help="print the AsyncAPI document of module:attr as JSON",
        description="Print the AsyncAPI document module:attr names as JSON: attr is the document, or a callable "
        "without arguments that returns it (e.g. a function calling toolkit_messages.asyncapi).",
    )
    document.add_argument("target", metavar="module:attr")
    args = parser.parse_args(argv)
    if args.command == "asyncapi":
        try:
            print(json.dumps(_document(args.target), indent=2))
        except _TargetError as exc:
            parser.exit(2, f"ws-toolkit asyncapi: error: {exc}\n")
        return 0
    data = report(args.skip)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        _print_text(data)
    failed = any(plugin["status"] == "failed" for plugin in data["plugins"])
    return 1 if args.check and failed else 0
