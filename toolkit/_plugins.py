"""The plugin manager: registers plugins with pluggy and builds each hook's call chain from them.

pluggy finds, validates and orders the implementations; toolkit/_chains.py
calls them. The chains are rebuilt (and the sync ones compiled) whenever a
plugin is registered or unregistered, never per connection or per message;
a connection takes the manager's chains once, when it starts.
"""

from __future__ import annotations

import difflib
import inspect
import types
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, cast, final

import pluggy

from ._chains import Chain, Chains, HookTimer, Impl, build_chain, is_async, timed
from ._exceptions import PluginValidationError
from ._hookspecs import HOOKS, PLUGGY_SPECS, PROJECT, HookSpecs

__all__ = ["HookImplementation", "PluginManager"]


@final
@dataclass(frozen=True, slots=True)
class HookImplementation:
    """One plugin's implementation of one hook, as :meth:`PluginManager.hook_order` lists it."""

    #: The hook's name, e.g. ``"ws_receive"``.
    hook: str
    #: The name the plugin was registered under.
    plugin_name: str
    plugin: object
    #: A ``wrapper=True`` generator (runs around the others).
    wrapper: bool
    tryfirst: bool
    trylast: bool
    #: An ``async def`` implementation.
    is_async: bool


@dataclass(frozen=True, slots=True)
class _CallPlan:
    """How the toolkit calls one implementation: ``function`` with these spec arguments, in this order."""

    function: Callable[..., Any]
    argnames: tuple[str, ...]
    by_keyword: bool


def _plan(function: Callable[..., Any], spec_argnames: tuple[str, ...]) -> _CallPlan:
    """Call an implementation positionally whenever its arguments allow, by name otherwise.

    A keyword-only method (what :class:`toolkit.Plugin` subclasses write) is called
    through its positional twin, so the typed style costs no more per call than the
    untyped one. ``**kwargs`` receives every spec argument not named before it.
    """
    parameters = inspect.signature(function).parameters.values()
    names = tuple(parameter.name for parameter in parameters if parameter.kind is not parameter.VAR_KEYWORD)
    if len(names) < len(parameters):  # takes **kwargs
        return _CallPlan(function, (*names, *(name for name in spec_argnames if name not in names)), True)
    if all(parameter.kind is parameter.POSITIONAL_OR_KEYWORD for parameter in parameters):
        return _CallPlan(function, names, False)
    twin = _positional_twin(function)
    return _CallPlan(function, names, True) if twin is None else _CallPlan(twin, names, False)


def _positional_twin(function: Callable[..., Any]) -> Callable[..., Any] | None:
    """The same function with its keyword-only arguments made positional (same code, globals and closure).

    ``None`` when that would not be the same function: defaults, a decorator's
    wrapper (``__wrapped__``), anything but a plain Python function or method.
    """
    bound = function.__self__ if isinstance(function, types.MethodType) else None
    plain = function.__func__ if isinstance(function, types.MethodType) else function
    if type(plain) is not types.FunctionType or hasattr(plain, "__wrapped__"):
        return None
    if plain.__defaults__ or plain.__kwdefaults__:
        return None
    code = plain.__code__
    code = code.replace(co_argcount=code.co_argcount + code.co_kwonlyargcount, co_kwonlyargcount=0)
    twin = types.FunctionType(code, plain.__globals__, plain.__name__, None, plain.__closure__)
    twin.__qualname__ = plain.__qualname__
    return twin if bound is None else types.MethodType(twin, bound)


def _spec_order(plan: _CallPlan, spec_argnames: tuple[str, ...]) -> Callable[..., Any]:
    """The implementation as a callable taking the spec's arguments positionally (for the generic runners)."""
    function, argnames = plan.function, plan.argnames
    if argnames == spec_argnames and not plan.by_keyword:
        return function
    positions = tuple(spec_argnames.index(name) for name in argnames)
    if plan.by_keyword:

        def by_name(*args: object) -> object:
            return function(**{name: args[i] for name, i in zip(argnames, positions, strict=True)})

        return by_name

    def reordered(*args: object) -> object:
        return function(*[args[i] for i in positions])

    return reordered


def _check_signature(function: Callable[..., Any], hook: str) -> str | None:
    """What is wrong with an implementation's arguments, or ``None``: the toolkit passes them by name."""
    spec_argnames = HOOKS[hook].argnames
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - not a Python function: refused as such later
        return None
    for parameter in parameters:
        if parameter.kind is parameter.VAR_POSITIONAL:
            return f"*{parameter.name}: arguments are passed by name; take **{parameter.name} instead"
        if parameter.kind is parameter.POSITIONAL_ONLY:
            return f"{parameter.name!r} is positional-only: arguments are passed by name"
        if parameter.kind is not parameter.VAR_KEYWORD and parameter.name not in spec_argnames:
            closest = difflib.get_close_matches(parameter.name, spec_argnames, n=1)
            hint = f"; did you mean {closest[0]!r}?" if closest else ""
            return f"no such argument {parameter.name!r}{hint} ({hook} passes: {', '.join(spec_argnames)})"
    return None


class _Pluggy(pluggy.PluginManager):
    """pluggy, taught that undecorated ``ws_*`` methods are implementations too.

    This lets :class:`toolkit.Plugin` subclasses skip ``@hookimpl``, and makes
    any ``ws_*`` name that is not a hook an error (a misspelling) instead of a
    silent no-op.
    """

    def parse_hookimpl_opts(self, plugin: object, name: str) -> pluggy.HookimplOpts | None:
        opts = self._undecorated_opts(plugin, name)
        if opts is not None and name in HOOKS:
            function = getattr(plugin, name)
            problem = _check_signature(function, name)
            if problem is not None:
                plugin_name = getattr(plugin, "__name__", None) or type(plugin).__qualname__
                raise pluggy.PluginValidationError(plugin, f"plugin {plugin_name!r}, {name}: {problem}")
            if inspect.isgeneratorfunction(function) and not opts.get("hookwrapper"):
                opts = cast(pluggy.HookimplOpts, {**opts, "wrapper": True})  # a generator can only be a wrapper
        return opts

    def _undecorated_opts(self, plugin: object, name: str) -> pluggy.HookimplOpts | None:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("ws_") and callable(getattr(plugin, name, None)):
            static = inspect.getattr_static(plugin, name)
            if static is inspect.getattr_static(HookSpecs, name, None):
                return None  # a toolkit.Plugin subclass that leaves this hook out inherits its declaration
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

    __slots__ = ("_chains", "_hook_timer", "_pluggy")

    def __init__(self, *plugins: object) -> None:
        self._pluggy = _Pluggy(PROJECT)
        self._pluggy.add_hookspecs(PLUGGY_SPECS)
        self._chains: Chains = _NO_CHAINS
        self._hook_timer: HookTimer | None = None
        for plugin in plugins:
            self.register(plugin)

    @property
    def pluggy(self) -> pluggy.PluginManager:
        """The underlying pluggy manager, for introspection (tracing, listing). Register through this class."""
        return self._pluggy

    @property
    def chains(self) -> Chains:
        """The current call chains by hook name (implemented hooks only); a connection takes them once."""
        return self._chains

    def register(self, plugin: object, name: str | None = None) -> str:
        """Register a plugin (a module, class instance or namespace) and return its name.

        Raises :class:`toolkit.PluginValidationError` (a ``TypeError``) when the
        plugin is a class rather than an instance, implements no hook, has a
        ``ws_*`` name that is not a hook (the message names the closest one), an
        implementation takes arguments the hook does not have, an ``async def``
        implements a sync-only hook, or an old-style ``hookwrapper`` is used. The
        manager is unchanged in that case.
        """
        if isinstance(plugin, type):
            raise PluginValidationError(
                f"plugin {plugin.__qualname__!r} is a class: register an instance, {plugin.__qualname__}()"
            )
        try:
            registered = self._pluggy.register(plugin, name or self._default_name(plugin))
        except pluggy.PluginValidationError as exc:
            raise PluginValidationError(str(exc)) from None
        if registered is None:
            raise PluginValidationError(f"plugin name {name!r} is blocked")
        try:
            self._check(registered)
            if not self._pluggy.get_hookcallers(plugin):
                hooks = ", ".join(HOOKS)
                raise PluginValidationError(f"plugin {registered!r} implements no hook (the hooks: {hooks})")
        except PluginValidationError:
            self._pluggy.unregister(name=registered)
            raise
        self._chains = self._timed(self._build())
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
        self._chains = self._timed(self._build())

    @property
    def hook_timer(self) -> HookTimer | None:
        """The callback :meth:`set_hook_timer` installed, or ``None``."""
        return self._hook_timer

    def set_hook_timer(self, timer: HookTimer | None) -> None:
        """Time every hook implementation: ``timer(hook, plugin_name, seconds)`` after each call.

        Off (``None``) by default, and then it costs nothing: the chains are built without it.
        Set, every plain implementation (not ``wrapper=True`` ones) is called through a timing
        shim; ``seconds`` is wall time from the call to its return or exception, awaiting
        included for ``async def`` ones. The timer runs on the connection's task, after every
        call, so it must be quick; if it raises, that is logged and the hook's result stands.
        Connections already open keep the chains they started with.
        """
        self._hook_timer = timer
        self._chains = self._timed(self._build())

    def _timed(self, chains: Chains) -> Chains:
        timer = self._hook_timer
        if timer is None:
            return chains
        return MappingProxyType(
            {
                name: build_chain(
                    name,
                    chain.policy,
                    HOOKS[name].argnames,
                    tuple(timed(name, impl, timer) for impl in chain.impls),
                    chain.wrappers,
                )
                for name, chain in chains.items()
            }
        )

    def is_registered(self, plugin: object) -> bool:
        """Whether ``plugin`` (the object itself) is registered."""
        return self._pluggy.is_registered(plugin)

    def has_plugin(self, name: str) -> bool:
        """Whether a plugin is registered under ``name``."""
        return self._pluggy.has_plugin(name)

    def get_plugin(self, name: str) -> object | None:
        """The plugin registered under ``name``, or ``None``."""
        plugin: object | None = self._pluggy.get_plugin(name)
        return plugin

    def list_name_plugin(self) -> list[tuple[str, object]]:
        """``(name, plugin)`` pairs for every registered plugin."""
        return self._pluggy.list_name_plugin()

    def hooks_of(self, plugin: object) -> list[str]:
        """The names of the hooks the plugin implements, sorted."""
        return sorted(caller.name for caller in self._pluggy.get_hookcallers(plugin) or ())

    def hook_order(self) -> dict[str, list[HookImplementation]]:
        """Every hook's implementations in the order they run: wrappers (outermost first), then the others.

        pluggy's order, made visible: ``tryfirst`` first, ``trylast`` last, otherwise
        the most recently registered plugin first.
        """
        order: dict[str, list[HookImplementation]] = {}
        for name in HOOKS:
            caller: pluggy.HookCaller = getattr(self._pluggy.hook, name)
            # pluggy keeps implementations in reverse call order, wrappers last.
            impls = list(reversed(caller.get_hookimpls()))
            impls.sort(key=lambda impl: not impl.wrapper)  # stable: wrappers first, each group in order
            order[name] = [
                HookImplementation(
                    name,
                    impl.plugin_name,
                    impl.plugin,
                    impl.wrapper,
                    impl.tryfirst,
                    impl.trylast,
                    is_async(impl.function),
                )
                for impl in impls
            ]
        return order

    def _check(self, plugin_name: str) -> None:
        plugin = self._pluggy.get_plugin(plugin_name)
        for caller in self._pluggy.get_hookcallers(plugin) or ():
            for impl in caller.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                where = f"plugin {plugin_name!r}, {caller.name}"
                if not caller.has_spec():
                    known = ", ".join(HOOKS)
                    closest = difflib.get_close_matches(caller.name, HOOKS, n=1)
                    hint = f"; did you mean {closest[0]}?" if closest else ""
                    raise PluginValidationError(f"{where}: there is no such hook{hint} (known hooks: {known})")
                if impl.hookwrapper:
                    raise PluginValidationError(f"{where}: old-style hookwrapper is not supported, use wrapper=True")
                if impl.wrapper and not inspect.isgeneratorfunction(impl.function):
                    raise PluginValidationError(f"{where}: a wrapper must be a plain generator function (yield once)")
                if not impl.wrapper and not HOOKS[caller.name].policy.may_await and is_async(impl.function):
                    raise PluginValidationError(f"{where}: {caller.name} cannot await; implement it with a plain def")

    def _build(self) -> Chains:
        chains: dict[str, Chain] = {}
        for name, spec in HOOKS.items():
            caller: pluggy.HookCaller = getattr(self._pluggy.hook, name)
            impls: list[Impl] = []
            wrappers: list[Impl] = []
            # pluggy keeps implementations in reverse call order, wrappers last.
            for hookimpl in reversed(caller.get_hookimpls()):
                plan = _plan(hookimpl.function, spec.argnames)
                call = _spec_order(plan, spec.argnames)
                plugin, asynchronous = hookimpl.plugin_name, is_async(hookimpl.function)
                if call is plan.function:  # takes the spec's arguments positionally, as they come
                    impl = Impl(plugin, call, asynchronous)
                else:
                    impl = Impl(plugin, call, asynchronous, plan.function, plan.argnames, plan.by_keyword)
                (wrappers if hookimpl.wrapper else impls).append(impl)
            if impls or wrappers:
                chains[name] = build_chain(name, spec.policy, spec.argnames, tuple(impls), tuple(wrappers))
        return MappingProxyType(chains)


_NO_CHAINS: Chains = MappingProxyType({})
