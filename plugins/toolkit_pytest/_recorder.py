"""``HookRecorder``: a plugin that records which hooks fired, in what order, with what."""

from __future__ import annotations

import reprlib
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, final

import toolkit
from toolkit import (
    Accept,
    AcceptResult,
    ClosedBy,
    DenialResponse,
    DenialResult,
    MessageResult,
    ReceiveResult,
    WebSocket,
    Wrapper,
)

__all__ = ["HookCall", "HookRecorder"]

_HOOKS = ("ws_accept", "ws_receive", "ws_send", "ws_close", "ws_denial")
_repr = reprlib.Repr()
_repr.maxstring = 40
_repr.maxother = 60


@dataclass(eq=False)
class HookCall:
    """One call of a hook: its arguments as the chain got them, and the chain's outcome."""

    #: The hook's name, e.g. ``"ws_receive"``.
    name: str
    websocket: WebSocket = field(repr=False)
    #: The hook's arguments other than ``websocket``, e.g. ``{"data": "hi"}``.
    args: Mapping[str, Any]
    #: What the whole chain produced: the (changed) ``Accept`` or a denial, the final message,
    #: ``DROP`` or a ``Close``, the final denial response; ``None`` for ``ws_close``.
    result: Any = None
    #: What the chain raised instead (a plugin failure, or a cancellation), if anything.
    error: BaseException | None = None

    def __getitem__(self, key: str) -> Any:
        return self.args[key]

    def __str__(self) -> str:
        args = ", ".join(f"{key}={_repr.repr(value)}" for key, value in self.args.items())
        outcome = f" raised {type(self.error).__name__}" if self.error is not None else ""
        if not outcome and self.name != "ws_close":
            outcome = f" -> {_repr.repr(self.result)}"
        return f"{self.name}({args}){outcome}"


def _check_names(names: tuple[str, ...]) -> None:
    unknown = [name for name in names if name not in _HOOKS]
    if unknown:
        raise ValueError(f"not a hook: {', '.join(map(repr, unknown))} (hooks: {', '.join(_HOOKS)})")


@final
class HookRecorder:
    """A plugin that records every hook call of the connections it is registered for.

    Register it like any plugin, ``toolkit.PluginManager(MyPlugin(), recorder)``. Each hook is a
    ``tryfirst`` wrapper, so it sees the arguments the chain starts with and the chain's outcome
    (or exception) while changing nothing. ``ws_close`` fires when the connection ends: check it
    after the client's ``async with`` block.
    """

    def __init__(self) -> None:
        #: Every call so far, in the order the hooks fired.
        self.calls: list[HookCall] = []

    def _record(self, name: str, websocket: WebSocket, args: dict[str, Any]) -> Generator[None, Any, Any]:
        call = HookCall(name, websocket, args)
        self.calls.append(call)
        try:
            call.result = yield
        except BaseException as exc:
            call.error = exc
            raise
        return call.result

    @toolkit.hookimpl(wrapper=True, tryfirst=True)
    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> Wrapper[AcceptResult]:
        outcome: AcceptResult = yield from self._record("ws_accept", websocket, {"accept": accept})
        return outcome

    @toolkit.hookimpl(wrapper=True, tryfirst=True)
    def ws_receive(self, *, websocket: WebSocket, data: str | bytes) -> Wrapper[ReceiveResult]:
        outcome: ReceiveResult = yield from self._record("ws_receive", websocket, {"data": data})
        return outcome

    @toolkit.hookimpl(wrapper=True, tryfirst=True)
    def ws_send(self, *, websocket: WebSocket, data: str | bytes) -> Wrapper[MessageResult]:
        outcome: MessageResult = yield from self._record("ws_send", websocket, {"data": data})
        return outcome

    @toolkit.hookimpl(wrapper=True, tryfirst=True)
    def ws_close(self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> Wrapper[None]:
        args = {"code": code, "reason": reason, "closed_by": closed_by}
        yield from self._record("ws_close", websocket, args)

    @toolkit.hookimpl(wrapper=True, tryfirst=True)
    def ws_denial(self, *, websocket: WebSocket, response: DenialResponse) -> Wrapper[DenialResult]:
        outcome: DenialResult = yield from self._record("ws_denial", websocket, {"response": response})
        return outcome

    # --- reading and asserting ----------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """The names of the hooks fired so far, in order."""
        return [call.name for call in self.calls]

    def calls_of(self, name: str) -> list[HookCall]:
        """The calls of one hook, in order."""
        _check_names((name,))
        return [call for call in self.calls if call.name == name]

    def last(self, name: str) -> HookCall:
        """The latest call of ``name``; fails the test if it never fired."""
        calls = self.calls_of(name)
        if not calls:
            raise AssertionError(f"{name} never fired\n{self._fired()}")
        return calls[-1]

    def clear(self) -> None:
        """Forget the calls recorded so far."""
        self.calls.clear()

    def assert_fired(self, *names: str) -> None:
        """Exactly these hooks fired, in this order, and no others."""
        _check_names(names)
        if self.names != list(names):
            raise AssertionError(f"expected exactly: {', '.join(names) or '(nothing)'}\n{self._fired()}")

    def assert_fired_in_order(self, *names: str) -> None:
        """These hooks fired in this order; others may have fired in between."""
        _check_names(names)
        remaining = iter(self.names)
        if not all(name in remaining for name in names):  # `in` advances the iterator: a subsequence test
            raise AssertionError(f"expected in this order: {', '.join(names)}\n{self._fired()}")

    def assert_not_fired(self, *names: str) -> None:
        """None of these hooks fired."""
        _check_names(names)
        fired = [name for name in names if name in self.names]
        if fired:
            raise AssertionError(f"expected not to fire: {', '.join(fired)}\n{self._fired()}")

    def _fired(self) -> str:
        if not self.calls:
            return "no hook fired"
        return "fired:\n" + "\n".join(f"  {i}. {call}" for i, call in enumerate(self.calls, 1))
