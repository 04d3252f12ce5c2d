"""The plugin manager and the typed layer through which the core calls hooks.

pluggy finds, validates and orders the implementations; this module calls them
itself, because pluggy's callers neither await coroutines nor isolate a failing
plugin. Each hook's implementations are flattened into a :class:`Chain` when a
plugin is (un)registered, so a message costs one ``is None`` test per hook when
no plugin implements it.
"""

from __future__ import annotations

import inspect
import logging
import types
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast, final

import pluggy

from ._close import Close
from ._exceptions import PluginValidationError
from ._hookspecs import ASYNC_HOOKS, DROP, HOOK_NAMES, PROJECT, Accept, ClosedBy, Drop, HookSpecs, Reply
from ._responses import DenialResponse

if TYPE_CHECKING:
    from ._websocket import WebSocket

__all__ = ["Chain", "Chains", "HookFailure", "PluginManager", "log_failure", "log_hook_failure", "logger"]

#: The toolkit's logger; plugin failures are reported here, once each, with the plugin's name.
logger: Final = logging.getLogger("toolkit")


class HookFailure(Exception):
    """A hook implementation raised or returned something it may not. Internal: mapped to 1011 or a denial."""

    def __init__(self, plugin_name: str, hook_name: str, problem: str) -> None:
        super().__init__(f"plugin {plugin_name!r} failed in {hook_name}: {problem}")
        self.plugin_name = plugin_name
        self.hook_name = hook_name
        self.problem = problem


@final
@dataclass(frozen=True, slots=True)
class Impl:
    """One hook implementation, ready to call with the hook's arguments in spec order."""

    plugin_name: str
    call: Callable[..., Any]
    is_async: bool


@final
@dataclass(frozen=True, slots=True)
class Chain:
    """The implementations of one hook, in call order, split into wrappers and plain ones."""

    name: str
    impls: tuple[Impl, ...]
    #: ``wrapper=True`` generators, outermost first.
    wrappers: tuple[Impl, ...]
    #: True when no implementation is async and there is no wrapper: the chain runs without awaiting.
    sync: bool


@final
@dataclass(frozen=True, slots=True)
class Chains:
    """One :class:`Chain` per hook, ``None`` where nothing implements the hook."""

    accept: Chain | None = None
    receive: Chain | None = None
    send: Chain | None = None
    close: Chain | None = None
    denial: Chain | None = None


NO_CHAINS: Final = Chains()


def _adapt(
    function: Callable[..., Any], argnames: tuple[str, ...], spec_argnames: tuple[str, ...]
) -> Callable[..., Any]:
    """Return a callable taking the spec's arguments positionally.

    pluggy lets an implementation accept any subset of the spec's arguments;
    the common case (all of them, in order) is called directly.
    """
    if argnames == spec_argnames:
        return function
    positions = tuple(spec_argnames.index(name) for name in argnames)

    def adapted(*args: object) -> object:
        return function(**{name: args[i] for name, i in zip(argnames, positions, strict=True)})

    return adapted


def _is_async(function: object) -> bool:
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        inspect.getattr_static(type(function), "__call__", None)
    )


class _Pluggy(pluggy.PluginManager):
    """pluggy, taught that undecorated ``ws_*`` methods are implementations too.

    This lets :class:`toolkit.Plugin` subclasses skip ``@hookimpl``, and makes
    any ``ws_*`` name that is not a hook an error (a misspelling) instead of a
    silent no-op.
    """

    def parse_hookimpl_opts(self, plugin: object, name: str) -> pluggy.HookimplOpts | None:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("ws_") and callable(getattr(plugin, name, None)):
            static = inspect.getattr_static(plugin, name)
            if isinstance(static, types.MemberDescriptorType):  # a __slots__ slot: pluggy reads its value
                static = getattr(plugin, name)
            if not isinstance(static, (types.FunctionType, types.MethodType, staticmethod, classmethod)):
                # pluggy cannot call properties or callable objects; say so instead of failing inside pluggy.
                plugin_name = getattr(plugin, "__name__", None) or type(plugin).__qualname__
                problem = f"a hook must be a function or method, not a {type(static).__name__}"
                raise pluggy.PluginValidationError(plugin, f"plugin {plugin_name!r}, {name}: {problem}")
            opts = cast(pluggy.HookimplOpts, {})  # pluggy fills in the defaults
        return opts


@final
class PluginManager:
    """The set of plugins attached to an app, passed as ``WebSocket(..., plugins=manager)``.

    There is no global manager: each app builds its own, so two apps in one
    process never share plugins by accident.
    """

    __slots__ = ("_chains", "_pluggy")

    def __init__(self, *plugins: object) -> None:
        self._pluggy = _Pluggy(PROJECT)
        self._pluggy.add_hookspecs(HookSpecs)
        self._chains = NO_CHAINS
        for plugin in plugins:
            self.register(plugin)

    @property
    def pluggy(self) -> pluggy.PluginManager:
        """The underlying pluggy manager, for introspection (tracing, listing). Register through this class."""
        return self._pluggy

    @property
    def chains(self) -> Chains:
        """The current call chains; a connection takes them once, when it starts."""
        return self._chains

    def register(self, plugin: object, name: str | None = None) -> str:
        """Register a plugin (a module, class instance or namespace) and return its name.

        Raises :class:`toolkit.PluginValidationError` when a ``ws_*`` name is not
        a hook, an implementation takes arguments the hook does not have, an
        ``async def`` implements a sync-only hook, or an old-style
        ``hookwrapper`` is used. The manager is unchanged in that case.
        """
        try:
            registered = self._pluggy.register(plugin, name or self._default_name(plugin))
        except pluggy.PluginValidationError as exc:
            raise PluginValidationError(str(exc)) from None
        if registered is None:
            raise PluginValidationError(f"plugin name {name!r} is blocked")
        try:
            self._check(registered)
        except PluginValidationError:
            self._pluggy.unregister(name=registered)
            raise
        self._chains = self._build()
        return registered

    def _default_name(self, plugin: object) -> str:
        # pluggy names instances by id(); a readable name makes failure logs useful.
        base = getattr(plugin, "__name__", None) or type(plugin).__qualname__
        name, n = base, 1
        while self._pluggy.has_plugin(name):
            n += 1
            name = f"{base}-{n}"
        return name

    def unregister(self, plugin: object) -> None:
        """Remove a plugin. Connections already open keep the plugins they started with."""
        self._pluggy.unregister(plugin)
        self._chains = self._build()

    def is_registered(self, plugin: object) -> bool:
        return self._pluggy.is_registered(plugin)

    def list_name_plugin(self) -> list[tuple[str, object]]:
        """``(name, plugin)`` pairs for every registered plugin."""
        return self._pluggy.list_name_plugin()

    def hooks_of(self, plugin: object) -> list[str]:
        """The names of the hooks the plugin implements."""
        return sorted(caller.name for caller in self._pluggy.get_hookcallers(plugin) or ())

    def _check(self, plugin_name: str) -> None:
        plugin = self._pluggy.get_plugin(plugin_name)
        for caller in self._pluggy.get_hookcallers(plugin) or ():
            for impl in caller.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                where = f"plugin {plugin_name!r}, {caller.name}"
                if not caller.has_spec():
                    known = ", ".join(HOOK_NAMES)
                    raise PluginValidationError(f"{where}: there is no such hook (known hooks: {known})")
                if impl.hookwrapper:
                    raise PluginValidationError(f"{where}: old-style hookwrapper is not supported, use wrapper=True")
                if impl.wrapper and not inspect.isgeneratorfunction(impl.function):
                    raise PluginValidationError(f"{where}: a wrapper must be a plain generator function (yield once)")
                if not impl.wrapper and caller.name not in ASYNC_HOOKS and _is_async(impl.function):
                    raise PluginValidationError(f"{where}: {caller.name} cannot await; implement it with a plain def")

    def _build(self) -> Chains:
        chains: dict[str, Chain | None] = {}
        for hook_name in HOOK_NAMES:
            caller: pluggy.HookCaller = getattr(self._pluggy.hook, hook_name)
            assert caller.spec is not None  # noqa: S101 - registered in __init__
            spec_args = caller.spec.argnames
            impls: list[Impl] = []
            wrappers: list[Impl] = []
            # pluggy keeps implementations in reverse call order, wrappers last.
            for hookimpl in reversed(caller.get_hookimpls()):
                impl = Impl(
                    hookimpl.plugin_name,
                    _adapt(hookimpl.function, hookimpl.argnames, spec_args),
                    _is_async(hookimpl.function),
                )
                (wrappers if hookimpl.wrapper else impls).append(impl)
            if impls or wrappers:
                sync = not wrappers and not any(i.is_async for i in impls)
                chains[hook_name] = Chain(hook_name, tuple(impls), tuple(wrappers), sync)
            else:
                chains[hook_name] = None
        return Chains(
            accept=chains["ws_accept"],
            receive=chains["ws_receive"],
            send=chains["ws_send"],
            close=chains["ws_close"],
            denial=chains["ws_denial"],
        )


# --- calling the chains -------------------------------------------------------------------------
#
# Each runner returns the final value or raises HookFailure naming the plugin. Exceptions
# that are not `Exception` (cancellation, KeyboardInterrupt) pass through untouched.


def _bad_result(impl: Impl, hook_name: str, result: object) -> HookFailure:
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        return HookFailure(impl.plugin_name, hook_name, "returned an awaitable from a plain def; declare it async def")
    return HookFailure(impl.plugin_name, hook_name, f"returned an unsupported {type(result).__name__}")


def _final(impl: Impl, chain: Chain, result: object) -> Drop | Close | Reply:
    """A result that ends the chain (``DROP``, ``Close``, a ``ws_receive``'s ``Reply``), or the plugin's failure."""
    if result is DROP:
        return DROP
    if isinstance(result, (Close, Reply)):
        if isinstance(result, Close) or chain.name == "ws_receive":
            return result
        raise HookFailure(impl.plugin_name, chain.name, "returned Reply, which only ws_receive may return")
    raise _bad_result(impl, chain.name, result)


def run_message_sync(chain: Chain, websocket: WebSocket, data: str | bytes) -> str | bytes | Drop | Close | Reply:
    """Run a sync-only ``ws_receive``/``ws_send`` chain; the per-message hot path."""
    for impl in chain.impls:
        try:
            result = impl.call(websocket, data)
        except Exception as exc:
            raise HookFailure(impl.plugin_name, chain.name, "raised") from exc
        if result is None:
            continue
        if isinstance(result, (str, bytes)):
            data = result
        else:
            return _final(impl, chain, result)
    return data


async def run_message(chain: Chain, websocket: WebSocket, data: str | bytes) -> str | bytes | Drop | Close | Reply:
    """Run a ``ws_receive``/``ws_send`` chain that has async implementations or wrappers."""
    if not chain.wrappers:  # the common async case: no closure, no wrapper machinery
        return await _message_impls(chain, websocket, data)
    outcome = await _wrapped(chain, (websocket, data), lambda: _message_impls(chain, websocket, data))
    if not (
        isinstance(outcome, (str, bytes, Close))
        or outcome is DROP
        or (isinstance(outcome, Reply) and chain.name == "ws_receive")
    ):
        raise HookFailure(chain.wrappers[0].plugin_name, chain.name, "a wrapper returned an unsupported result")
    return outcome


async def _message_impls(chain: Chain, websocket: WebSocket, data: str | bytes) -> str | bytes | Drop | Close | Reply:
    for impl in chain.impls:
        try:
            result = impl.call(websocket, data)
            if impl.is_async:
                result = await result
        except Exception as exc:
            raise HookFailure(impl.plugin_name, chain.name, "raised") from exc
        if result is None:
            continue
        if isinstance(result, (str, bytes)):
            data = result
        else:
            return _final(impl, chain, result)
    return data


async def run_accept(chain: Chain, websocket: WebSocket, accept: Accept) -> Accept | DenialResponse:
    """Run ``ws_accept``: each implementation sees the accept as left by the previous one."""

    async def inner() -> Accept | DenialResponse:
        current = accept
        for impl in chain.impls:
            try:
                result = impl.call(websocket, current)
                if impl.is_async:
                    result = await result
            except Exception as exc:
                raise HookFailure(impl.plugin_name, chain.name, "raised") from exc
            if result is None:
                continue
            if isinstance(result, Accept):
                current = result
            elif isinstance(result, DenialResponse):
                return result
            else:
                raise _bad_result(impl, chain.name, result)
        return current

    outcome = await _wrapped(chain, (websocket, accept), inner)
    if not isinstance(outcome, (Accept, DenialResponse)):
        raise HookFailure(chain.wrappers[0].plugin_name, chain.name, "a wrapper returned an unsupported result")
    return outcome


async def _wrapped(chain: Chain, args: tuple[object, ...], inner: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``inner`` inside the chain's ``wrapper=True`` generators, pluggy style.

    Each wrapper runs to its ``yield`` outermost first, then receives the result
    (or has the exception thrown in) innermost first; what it returns becomes
    the result.
    """
    started: list[tuple[Impl, Generator[None, object, object]]] = []
    result: object = None
    error: BaseException | None = None
    try:
        for impl in chain.wrappers:
            started.append((impl, _enter(impl, chain.name, args)))
        result = await inner()
    except BaseException as exc:  # every wrapper must see the failure, cancellation included
        error = exc
    try:
        return _exit(chain.name, started, result, error)
    finally:
        if error is not None and not isinstance(error, Exception):
            raise error  # a wrapper may see a cancellation, never swallow or replace it


def _wrapped_sync(chain: Chain, args: tuple[object, ...], inner: Callable[[], Any]) -> Any:
    """:func:`_wrapped` for observer hooks; a wrapper that fails to start is logged and skipped."""
    started: list[tuple[Impl, Generator[None, object, object]]] = []
    for impl in chain.wrappers:
        try:
            started.append((impl, _enter(impl, chain.name, args)))
        except HookFailure:
            log_failure(impl.plugin_name, chain.name)
    result: object = None
    error: BaseException | None = None
    try:
        result = inner()
    except BaseException as exc:
        error = exc
    return _exit(chain.name, started, result, error)


def _enter(impl: Impl, hook_name: str, args: tuple[object, ...]) -> Generator[None, object, object]:
    try:
        gen: Generator[None, object, object] = impl.call(*args)
        next(gen)
    except Exception as exc:
        raise HookFailure(impl.plugin_name, hook_name, "raised") from exc
    return gen


def _exit(
    hook_name: str,
    started: list[tuple[Impl, Generator[None, object, object]]],
    result: object,
    error: BaseException | None,
) -> Any:
    for impl, gen in reversed(started):
        # Pluggy style: a wrapper sees the exception the plugin raised, not the HookFailure around it.
        thrown = error.__cause__ if isinstance(error, HookFailure) and error.__cause__ is not None else error
        try:
            if thrown is None:
                gen.send(result)
            else:
                gen.throw(thrown)
        except StopIteration as stop:
            result, error = stop.value, None
            continue
        except Exception as exc:
            if exc is thrown:
                continue  # re-raised as it came in: still the failure of the plugin that raised it
            if not isinstance(exc, HookFailure):
                error = HookFailure(impl.plugin_name, hook_name, "raised")
                error.__cause__ = exc
            else:
                error = exc
            continue
        except BaseException as exc:
            error = exc
            continue
        gen.close()
        error = HookFailure(impl.plugin_name, hook_name, "a wrapper yielded more than once")
    if error is not None:
        raise error
    return result


def run_denial(chain: Chain, websocket: WebSocket, response: DenialResponse) -> DenialResponse:
    """Run ``ws_denial``. A failing implementation is logged and skipped: the denial goes out regardless."""

    def inner() -> DenialResponse:
        current = response
        for impl in chain.impls:
            try:
                result = impl.call(websocket, current)
            except Exception:
                log_failure(impl.plugin_name, chain.name)
                continue
            if isinstance(result, DenialResponse):
                current = result
            elif result is not None:
                log_failure(impl.plugin_name, chain.name, f"returned an unsupported {type(result).__name__}")
        return current

    if not chain.wrappers:
        return inner()
    try:
        outcome = _wrapped_sync(chain, (websocket, response), inner)
    except Exception as exc:
        log_failure(exc.plugin_name if isinstance(exc, HookFailure) else "?", chain.name)
        return response
    return outcome if isinstance(outcome, DenialResponse) else response


def run_close(chain: Chain, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None:
    """Run ``ws_close``. Every implementation runs, even when an earlier one raised."""

    def inner() -> None:
        for impl in chain.impls:
            try:
                impl.call(websocket, code, reason, closed_by)
            except Exception:
                log_failure(impl.plugin_name, chain.name)

    if not chain.wrappers:
        inner()
        return
    try:
        _wrapped_sync(chain, (websocket, code, reason, closed_by), inner)
    except Exception as exc:
        log_failure(exc.plugin_name if isinstance(exc, HookFailure) else "?", chain.name)


def log_failure(plugin_name: str, hook_name: str, problem: str = "raised", cause: BaseException | None = None) -> None:
    """Log a plugin failure once, with the plugin's own traceback when there is one."""
    logger.error("plugin %r failed in %s: %s", plugin_name, hook_name, problem, exc_info=cause or problem == "raised")


def log_hook_failure(failure: HookFailure) -> None:
    log_failure(failure.plugin_name, failure.hook_name, failure.problem, failure.__cause__)
