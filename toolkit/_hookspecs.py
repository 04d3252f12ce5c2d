"""The hook specifications: the one place each hook is declared, with the policy for its results.

Everything else is derived from :class:`HookSpecs`: the hook names, which hooks
may be ``async``, what each hook's results mean (its :class:`Policy`), and the
typed :class:`Plugin` base class, which *is* the specifications. Adding a hook
is its specification here and its call site in the WebSocket.

Hook order follows pluggy: ``tryfirst`` first, ``trylast`` last, otherwise the
most recently registered plugin first; ``wrapper=True`` generators wrap the rest.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, TypeVar, final

import pluggy

from ._chains import Policy
from ._close import Close
from ._responses import DenialResponse
from ._results import (
    Accept,
    AcceptResult,
    ClosedBy,
    DenialResult,
    Drop,
    MessageResult,
    ReceiveResult,
    Reply,
    Wrapper,
)
from ._websocket import WebSocket

__all__ = ["HOOKS", "PLUGGY_SPECS", "PROJECT", "HookSpec", "HookSpecs", "Plugin", "hookimpl", "hookspec"]

PROJECT: Final = "toolkit"
#: Marks a function or method as a hook implementation: ``@toolkit.hookimpl(tryfirst=True)``.
hookimpl: Final = pluggy.HookimplMarker(PROJECT)
hookspec: Final = pluggy.HookspecMarker(PROJECT)

_F = TypeVar("_F", bound=Callable[..., object])
_POLICY_ATTR: Final = "toolkit_policy"


def _spec(policy: Policy) -> Callable[[_F], _F]:
    """Declare a hook: a pluggy specification, with the policy its results follow."""

    def mark(function: _F) -> _F:
        setattr(function, _POLICY_ATTR, policy)
        return hookspec(function)

    return mark


_OBSERVER: Final = Policy(may_await=False, isolated=True)
_REPLY_REFUSED: Final[dict[type[object], str]] = {Reply: "returned Reply, which only ws_receive may return"}


class HookSpecs:
    """The hook specifications registered with every :class:`toolkit.PluginManager`.

    Arguments are keyword-only: the toolkit passes them by name, so an
    implementation that renames one is a type error (and refused by
    ``register()``), not a hook that never sees its value. Each method's body is
    empty on purpose: it declares the hook, and a :class:`Plugin` subclass that
    does not define a hook inherits the declaration, which the manager
    recognises and skips (it costs nothing).

    Every hook may also be implemented by a wrapper: a generator function
    returning :data:`toolkit.Wrapper` of the hook's result type.
    """

    @_spec(Policy(may_await=True, replaces=(Accept,), ends=(DenialResponse,)))
    def ws_accept(
        self, *, websocket: WebSocket, accept: Accept
    ) -> AcceptResult | Awaitable[AcceptResult] | Wrapper[AcceptResult]:
        """The app (or the toolkit for it) is about to accept the connection.

        Return ``None`` to keep ``accept``, a changed :class:`Accept` (the next
        implementation sees it), or a :class:`DenialResponse` to refuse the
        connection; a denial stops the chain. May be ``async``.
        """

    @_spec(Policy(may_await=True, replaces=(str, bytes), ends=(Drop, Close, Reply)))
    def ws_receive(
        self, *, websocket: WebSocket, data: str | bytes
    ) -> ReceiveResult | Awaitable[ReceiveResult] | Wrapper[ReceiveResult]:
        """A data message arrived from the client, before the app sees it.

        Return ``None`` to keep it, a ``str``/``bytes`` to replace it (the next
        implementation sees the replacement), :data:`DROP` to discard it,
        :class:`Reply` to discard it and answer the client, or :class:`Close` to
        close the connection. May be ``async``.
        """

    @_spec(Policy(may_await=True, replaces=(str, bytes), ends=(Drop, Close), refusals=_REPLY_REFUSED))
    def ws_send(
        self, *, websocket: WebSocket, data: str | bytes
    ) -> MessageResult | Awaitable[MessageResult] | Wrapper[MessageResult]:
        """The app is sending a data message. Same results as ``ws_receive``. May be ``async``."""

    @_spec(_OBSERVER)
    def ws_close(self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> Wrapper[None] | None:
        """The connection ended. Fires exactly once per connection, denials included (code 1006).

        Sync only: it also runs while the task is being cancelled.
        """

    @_spec(Policy(may_await=False, replaces=(DenialResponse,), isolated=True))
    def ws_denial(self, *, websocket: WebSocket, response: DenialResponse) -> DenialResult | Wrapper[DenialResult]:
        """A denial is about to go out, whoever sent it. Return a replacement to change it. Sync only."""


class Plugin(HookSpecs):
    """Optional typed base class for plugins.

    Subclass it and define only the hooks you need, with keyword-only arguments
    (``def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> MessageResult``):
    mypy and pyright then check each method against the hook's declaration in
    :class:`HookSpecs`, so a renamed argument, a wrong type, or an ``async def``
    for a sync-only hook is a type error. To take only some arguments, end with
    ``**_: object``. Hooks you leave out cost nothing. Methods need no
    ``@hookimpl`` unless they take options; a generator method is a wrapper.
    """


@final
@dataclass(frozen=True, slots=True)
class HookSpec:
    """One hook, as derived from its declaration in :class:`HookSpecs`."""

    name: str
    #: The arguments, in order (without ``self``).
    argnames: tuple[str, ...]
    policy: Policy


def _derive() -> Mapping[str, HookSpec]:
    hooks: dict[str, HookSpec] = {}
    for name, function in vars(HookSpecs).items():
        policy = getattr(function, _POLICY_ATTR, None)
        if isinstance(policy, Policy):
            argnames = tuple(inspect.signature(function).parameters)[1:]
            hooks[name] = HookSpec(name, argnames, policy)
    return MappingProxyType(hooks)


#: Every hook, by name, in declaration order.
HOOKS: Final = _derive()


def _for_pluggy() -> type:
    """The specifications as pluggy reads them: the same functions, their arguments positional.

    pluggy only sees positional parameters (it would find no argument in a
    keyword-only declaration); the toolkit calls implementations by name itself.
    """
    namespace: dict[str, object] = {"__doc__": HookSpecs.__doc__}
    for name in HOOKS:
        declared = vars(HookSpecs)[name]
        code = declared.__code__
        code = code.replace(co_argcount=code.co_argcount + code.co_kwonlyargcount, co_kwonlyargcount=0)
        function = types.FunctionType(code, declared.__globals__, name)
        function.__doc__ = declared.__doc__
        namespace[name] = hookspec(function)
    return type("HookSpecs", (), namespace)


#: :class:`HookSpecs` for pluggy's registration (see :func:`_for_pluggy`).
PLUGGY_SPECS: Final = _for_pluggy()
