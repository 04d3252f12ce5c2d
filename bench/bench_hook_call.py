"""What one hook call costs: the core's chain runner with one plain-``def`` implementation that keeps the message.

Three figures, in one process, interleaved: the bare call of the plugin method (the floor no
runner can beat), the runner calling it (what the core pays per hook per message), and the
difference (the runner's own overhead). ``python bench/bench_hook_call.py [--seconds 10]``.
bench/README.md has the figures, and the previous runner's for comparison.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

from _harness import SCOPE

import toolkit

#: Target for one hook call with one implementation, through the runner.
TARGET_NS = 60


class Keep(toolkit.Plugin):
    def ws_receive(self, *, websocket: toolkit.WebSocket, data: str | bytes) -> None:
        return None


def runner(manager: toolkit.PluginManager) -> Callable[[toolkit.WebSocket, str], object]:
    """The call the WebSocket makes per message for a chain of plain defs."""
    chain = manager.chains.get("ws_receive")
    assert chain is not None
    run = chain.run_sync
    assert run is not None
    return run


def per_call(function: Callable[[toolkit.WebSocket, str], object], websocket: toolkit.WebSocket, n: int) -> float:
    data = "hello"
    start = time.perf_counter()
    for _ in range(n):
        function(websocket, data)
    return (time.perf_counter() - start) / n


def loop_floor(websocket: toolkit.WebSocket, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        pass
    return (time.perf_counter() - start) / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--check", action="store_true", help=f"exit 1 if a hook call costs over {TARGET_NS} ns")
    args = parser.parse_args(argv)
    plugin = Keep()
    websocket = toolkit.WebSocket(dict(SCOPE))
    manager = toolkit.PluginManager(plugin)
    run = runner(manager)
    # The method as the chain calls it: positionally, through the twin the manager makes of a keyword-only method.
    bare: Callable[[toolkit.WebSocket, str], object] = manager.chains["ws_receive"].impls[0].call
    n = 20_000
    floors: list[float] = []
    bares: list[float] = []
    runs: list[float] = []
    deadline = time.perf_counter() + args.seconds
    rounds = 0
    while rounds < 20 or time.perf_counter() < deadline:
        floor = loop_floor(websocket, n)
        floors.append(floor)
        pair = [(bare, bares), (run, runs)]
        if rounds % 2:
            pair.reverse()
        for function, samples in pair:
            samples.append(per_call(function, websocket, n) - floor)
        rounds += 1
    bare_ns = statistics.median(bares) * 1e9
    run_ns = statistics.median(runs) * 1e9
    print(f"{rounds} rounds of {n:,} calls, loop overhead subtracted")
    print(f"bare plugin method call:           {bare_ns:6.1f} ns")
    print(f"one hook call through the runner:  {run_ns:6.1f} ns")
    print(f"the runner's own overhead:         {run_ns - bare_ns:6.1f} ns")
    met = run_ns <= TARGET_NS
    print(f"target: one hook call <= {TARGET_NS} ns: {'met' if met else 'MISSED'}")
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    sys.exit(main())
