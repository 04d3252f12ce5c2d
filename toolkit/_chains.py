"""Calling hooks: one generic chain runner whose result policy is a parameter, and a compiled fast path.

pluggy finds, validates and orders the implementations (toolkit/_plugins.py);
this module calls them, because pluggy's callers neither await coroutines nor
isolate a failing plugin. What a hook's results mean is its :class:`Policy`,
declared once beside the hook's specification (toolkit/_hookspecs.py): the
runners here know nothing of particular hooks.

A chain of plain ``def`` implementations without wrappers is compiled once,
when the plugins change, into one straight-line function (:func:`_compile`):
calling it costs one Python call per implementation and an ``is None`` test,
which is what keeps a hook call cheap on the per-message path.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, final

__all__ = [
    "Chain",
    "ChainSource",
    "Chains",
    "HookFailure",
    "HookTimer",
    "Impl",
    "Policy",
    "build_chain",
    "is_async",
    "log_failure",
    "log_hook_failure",
    "logger",
    "run_async",
    "run_observers",
    "timed",
]

#: The toolkit's logger; plugin failures are reported here, once each, with the plugin's name.
logger: Final = logging.getLogger("toolkit")


def is_async(function: object) -> bool:
    """Whether calling ``function`` returns a coroutine: an ``async def``, or an object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        inspect.getattr_static(type(function), "__call__", None)
    )


class HookFailure(Exception):
    """A hook implementation raised or returned something it may not. Internal: mapped to 1011 or a denial."""

    def __init__(self, plugin_name: str, hook_name: str, problem: str) -> None:
        super().__init__(f"plugin {plugin_name!r} failed in {hook_name}: {problem}")
        self.plugin_name = plugin_name
        self.hook_name = hook_name
        self.problem = problem


@final
@dataclass(frozen=True, slots=True)
class Policy:
    """What a hook's results mean; declared with the hook's specification.

    The chain passes a value from one implementation to the next (the hook's
    second argument): a result of a ``replaces`` type becomes the next value,
    one of an ``ends`` type stops the chain and is the outcome, ``None`` keeps
    the value. Anything else is the plugin's failure.
    """

    #: Implementations may be ``async def`` (the hook may need I/O).
    may_await: bool
    #: Result types that replace the value passed on.
    replaces: tuple[type[object], ...] = ()
    #: Result types that stop the chain and become its outcome.
    ends: tuple[type[object], ...] = ()
    #: A failing implementation is logged and skipped instead of failing the connection (observers).
    isolated: bool = False
    #: The words a log uses for a result outside the policy, when it needs more than the type's name.
    refusals: Mapping[type[object], str] = field(default_factory=dict)


@final
@dataclass(frozen=True, slots=True)
class Impl:
    """One hook implementation, ready to call with the hook's arguments in spec order."""

    plugin_name: str
    #: Takes the hook's arguments positionally, in spec order (adapted when the implementation's differ).
    call: Callable[..., Any]
    is_async: bool
    #: When its arguments differ from the spec's: the implementation, the spec arguments it takes (in
    #: its order) and whether they go by name. The compiled chain calls it so, without ``call``'s adapter.
    function: Callable[..., Any] | None = None
    argnames: tuple[str, ...] | None = None
    by_keyword: bool = False


@final
@dataclass(frozen=True, slots=True)
class Chain:
    """The implementations of one hook, in call order, split into wrappers and plain ones."""

    name: str
    policy: Policy
    impls: tuple[Impl, ...]
    #: ``wrapper=True`` generators, outermost first.
    wrappers: tuple[Impl, ...]
    #: Set when no implementation is async and there is no wrapper: the compiled chain, run without awaiting.
    run_sync: Callable[..., Any] | None


#: Called after each timed hook implementation: ``(hook name, plugin name, seconds)``. See :func:`timed`.
HookTimer = Callable[[str, str, float], None]


def timed(hook_name: str, impl: Impl, timer: HookTimer) -> Impl:
    """``impl`` with its call timed (wall time, awaiting included), reported to ``timer`` after each call.

    Arguments pass through untouched, positional or by name. A timer that raises is logged and
    ignored: it must never become the plugin's failure, nor hide it. Only built when a timer is
    set (``PluginManager.set_hook_timer``), so untimed chains are exactly as fast as before.
    """
    call, plugin_name, clock = impl.call, impl.plugin_name, time.perf_counter

    def report(started: float) -> None:
        try:
            timer(hook_name, plugin_name, clock() - started)
        except Exception:
            logger.exception("the hook timer failed after %s of plugin %r", hook_name, plugin_name)

    if impl.is_async:

        async def run_async_impl(*args: Any, **kwargs: Any) -> Any:
            started = clock()
            try:
                return await call(*args, **kwargs)
            finally:
                report(started)

        return Impl(plugin_name, run_async_impl, True)

    def run_impl(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            return call(*args, **kwargs)
        finally:
            report(started)

    return Impl(plugin_name, run_impl, False)


#: Hook name -> its chain, for the hooks that have at least one implementation.
Chains = Mapping[str, Chain]


class ChainSource(Protocol):
    """What a :class:`toolkit.WebSocket` takes its hooks from: a :class:`toolkit.PluginManager`."""

    @property
    def chains(self) -> Chains: ...


def build_chain(
    name: str, policy: Policy, argnames: tuple[str, ...], impls: tuple[Impl, ...], wrappers: tuple[Impl, ...]
) -> Chain:
    """A hook's chain; compiled when it can run without awaiting (observers use :func:`run_observers`)."""
    sync = not wrappers and not any(impl.is_async for impl in impls) and not policy.isolated
    run_sync = _compile(name, policy, argnames, impls) if sync else None
    return Chain(name, policy, impls, wrappers, run_sync)


# --- results ---------------------------------------------------------------------------------------


def _refused(impl: Impl, hook_name: str, policy: Policy, result: object) -> HookFailure:
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        problem = "returned an awaitable from a plain def; declare it async def"
    else:
        problem = policy.refusals.get(type(result)) or f"returned an unsupported {type(result).__name__}"
    return HookFailure(impl.plugin_name, hook_name, problem)


def _failed(impl: Impl, hook_name: str, exc: BaseException) -> HookFailure:
    failure = HookFailure(impl.plugin_name, hook_name, "raised")
    failure.__cause__ = exc
    return failure


def _note_ender(websocket: Any, plugin_name: str) -> None:
    """Record on the connection which plugin's result ended a chain (DROP, Reply, Close, a denial).

    The WebSocket reads it right after the chain returns, when the result closes or denies the
    connection (``WebSocket.ended_by_plugin``); a stale value from an earlier DROP is never read.
    """
    websocket._chain_ender = plugin_name


# --- the compiled sync chain (the per-message hot path) --------------------------------------------


def _compile(name: str, policy: Policy, argnames: tuple[str, ...], impls: tuple[Impl, ...]) -> Callable[..., Any]:
    """One function that runs ``impls`` in order under ``policy``, without a loop or attribute lookups.

    Generated once per chain when plugins are registered, never per message. For
    two implementations of ``ws_receive`` it reads::

        def run(websocket, value):
            try:
                result = call0(websocket, value)
            except Exception as exc:
                raise failed(impls[0], name, exc) from exc
            if result is not None:
                if isinstance(result, replaces):
                    value = result
                else:
                    return end(0, result, websocket)
            try:
                result = call1(websocket, value)
            ...
            return value

    (``try`` costs nothing in CPython 3.11+ until something raises.) The hook's other
    arguments, if any, follow ``value`` by name (``arg2``, ...). An implementation that takes
    other arguments is called with its own, ``call0(value)`` or ``call0(data=value)``: no adapter.
    """
    namespace: dict[str, Any] = {"failed": _failed, "replaces": policy.replaces, "impls": impls, "name": name}

    def end(at: int, result: object, websocket: Any) -> object:
        if isinstance(result, policy.ends):
            _note_ender(websocket, impls[at].plugin_name)
            return result
        raise _refused(impls[at], name, policy, result)

    namespace["end"] = end
    local = ["websocket", "value", *(f"arg{i}" for i in range(2, len(argnames)))]
    by_name = dict(zip(argnames, local, strict=True))
    params = ", ".join(local)
    lines = [f"def run({params}):"]
    for at, impl in enumerate(impls):
        if impl.argnames is None:
            namespace[f"call{at}"], args = impl.call, params
        else:
            namespace[f"call{at}"] = impl.function
            passed = (f"{arg}={by_name[arg]}" if impl.by_keyword else by_name[arg] for arg in impl.argnames)
            args = ", ".join(passed)
        lines += [
            "    try:",
            f"        result = call{at}({args})",
            "    except Exception as exc:",
            f"        raise failed(impls[{at}], name, exc) from exc",
            "    if result is not None:",
            "        if isinstance(result, replaces):",
            "            value = result",
            "        else:",
            f"            return end({at}, result, websocket)",
        ]
    lines.append("    return value")
    exec(compile("\n".join(lines), f"<toolkit chain {name}>", "exec"), namespace)  # noqa: S102 - our own text
    run: Callable[..., Any] = namespace["run"]
    return run


# --- the generic runners ---------------------------------------------------------------------------


async def run_async(chain: Chain, websocket: object, value: object, *rest: object) -> Any:
    """Run a chain that has async implementations or wrappers; returns the outcome or raises HookFailure."""
    if not chain.wrappers:
        return await _run_impls(chain, websocket, value, rest)
    inner: list[object] = []

    async def run_inner() -> Any:
        inner.append(await _run_impls(chain, websocket, value, rest))
        return inner[0]

    outcome = await _wrapped(chain, (websocket, value, *rest), run_inner)
    if outcome is None:  # every wrapper kept the outcome, and the implementations' failure was swallowed
        return value
    policy = chain.policy
    if not isinstance(outcome, policy.replaces + policy.ends):
        raise HookFailure(chain.wrappers[0].plugin_name, chain.name, "a wrapper returned an unsupported result")
    if isinstance(outcome, policy.ends) and not (inner and inner[0] is outcome):
        _note_ender(websocket, chain.wrappers[0].plugin_name)  # a wrapper ended the chain: the outermost answers for it
    return outcome


async def _run_impls(chain: Chain, websocket: object, value: object, rest: tuple[object, ...]) -> Any:
    policy = chain.policy
    for impl in chain.impls:
        try:
            result = impl.call(websocket, value, *rest)
            if impl.is_async:
                result = await result
        except Exception as exc:
            raise _failed(impl, chain.name, exc) from exc
        if result is None:
            continue
        if isinstance(result, policy.replaces):
            value = result
        elif isinstance(result, policy.ends):
            _note_ender(websocket, impl.plugin_name)
            return result
        else:
            raise _refused(impl, chain.name, policy, result)
    return value


def run_observers(chain: Chain, websocket: object, value: object, *rest: object) -> Any:
    """Run an isolated (sync-only) chain: every failure is logged and skipped, the outcome always stands."""
    if not chain.wrappers:
        return _run_observers_sync(chain, websocket, value, rest)
    policy = chain.policy

    def inner() -> Any:
        outcome = _run_observers_sync(chain, websocket, value, rest)
        return outcome if policy.replaces else None  # a pure observer's wrappers see None (Wrapper[None])

    try:
        outcome = _wrapped_sync(chain, (websocket, value, *rest), inner)
    except HookFailure as failure:
        log_hook_failure(failure)
        return value
    if outcome is None or outcome is value:
        return value
    if isinstance(outcome, policy.replaces):
        return outcome
    log_failure(
        chain.wrappers[0].plugin_name, chain.name, f"a wrapper returned an unsupported {type(outcome).__name__}"
    )
    return value


def _run_observers_sync(chain: Chain, websocket: object, value: object, rest: tuple[object, ...]) -> Any:
    name, policy = chain.name, chain.policy
    for impl in chain.impls:
        try:
            result = impl.call(websocket, value, *rest)
        except Exception:
            log_failure(impl.plugin_name, name)
            continue
        if result is None:
            continue
        if isinstance(result, policy.replaces):
            value = result
        else:
            log_hook_failure(_refused(impl, name, policy, result))
    return value


# --- wrapper=True generators -----------------------------------------------------------------------


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
    try:
        return _exit(chain.name, started, result, error)
    finally:
        if error is not None and not isinstance(error, Exception):
            raise error  # a wrapper may see a cancellation or KeyboardInterrupt, never swallow it


def _enter(impl: Impl, hook_name: str, args: tuple[object, ...]) -> Generator[None, object, object]:
    try:
        gen: Generator[None, object, object] = impl.call(*args)
        next(gen)
    except Exception as exc:
        raise _failed(impl, hook_name, exc) from exc
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
            if stop.value is not None:  # None keeps the outcome, as a hook's None keeps the value
                result = stop.value
            error = None
            continue
        except Exception as exc:
            if exc is thrown:
                continue  # re-raised as it came in: still the failure of the plugin that raised it
            error = exc if isinstance(exc, HookFailure) else _failed(impl, hook_name, exc)
            continue
        except BaseException as exc:
            error = exc
            continue
        gen.close()
        error = HookFailure(impl.plugin_name, hook_name, "a wrapper yielded more than once")
    if error is not None:
        raise error
    return result


# --- logging ---------------------------------------------------------------------------------------


def log_failure(plugin_name: str, hook_name: str, problem: str = "raised", cause: BaseException | None = None) -> None:
    """Log a plugin failure once, with the plugin's own traceback when there is one."""
    logger.error("plugin %r failed in %s: %s", plugin_name, hook_name, problem, exc_info=cause or problem == "raised")


def log_hook_failure(failure: HookFailure) -> None:
    log_failure(failure.plugin_name, failure.hook_name, failure.problem, failure.__cause__)
