"""CI step: ``pyright --verifytypes`` must find each package of the wheel in this checkout and score 100%.

Usage: ``.venv-ci/bin/python .ci/verifytypes.py`` (run with the CI virtualenv's Python: its ``pyright``
is used, and pyright finds the packages through that virtualenv). Exits 1 when a package scores below
100% (printing the symbols pyright reports), or when pyright did not find it in this checkout.

Why the checks beyond the score: ``--verifytypes`` ignores ``--pythonpath`` (pyright 1.1.414) and asks
the ``python`` first on ``PATH`` for its search paths; we put this virtualenv's ``bin`` first. The
project is installed there editable (hatchling's ``.pth`` lists this checkout's root and ``plugins/``
as plain paths, which pyright reads; it does not run import hooks, which other editable installs
use). A package pyright cannot see scores 0% with no symbols; one it finds elsewhere (another
checkout's install) could pass without checking ours: so each package's directory must be ours.

``--ignoreexternal``: symbols from pluggy, Starlette, pydantic and pytest that our API mentions are
those projects' to complete, not ours; what we declare must be complete.
"""

from __future__ import annotations

import os
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.checkers import bundled_pyright  # noqa: E402 - the one way this project runs pyright


def packages() -> list[str]:
    """The import packages of the wheel, from pyproject.toml: ``toolkit`` and each ``toolkit_*``."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return [Path(path).name for path in config["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]]


def verify(package: str) -> tuple[str, dict[str, Any], float]:
    """pyright's JSON report for one package, and the seconds it took."""
    start = time.perf_counter()
    report, failure = bundled_pyright(["--verifytypes", package, "--ignoreexternal"], ROOT)
    if report is None:
        sys.exit(f"pyright --verifytypes {package} gave no JSON ({failure})")
    return package, report, time.perf_counter() - start


def problems(package: str, report: dict[str, Any]) -> list[str]:
    """What is wrong with one package's report: empty when pyright found ours and scored it 100%."""
    completeness = report["typeCompleteness"]
    found = Path(completeness.get("packageRootDirectory") or "/nonexistent")
    expected = {ROOT / package, ROOT / "plugins" / package}
    if found not in expected or not completeness.get("pyTypedPath"):
        return [f"pyright did not find {package} in this checkout (found: {str(found)!r})"]
    lines: list[str] = []
    for diagnostic in report.get("generalDiagnostics", []):
        if diagnostic["severity"] == "error":
            lines.append(diagnostic["message"])
    for symbol in completeness["symbols"]:
        for diagnostic in symbol["diagnostics"]:
            if diagnostic["severity"] == "error":
                where = Path(diagnostic["file"]).relative_to(ROOT) if diagnostic.get("file") else "?"
                line = diagnostic.get("range", {}).get("start", {}).get("line", -1) + 1
                message = diagnostic["message"].replace("\n", " ")
                lines.append(f"{where}:{line}: {symbol['name']}: {message}")
    if completeness["completenessScore"] < 1 and not lines:
        lines.append("below 100% with no symbol reported")
    return lines


def main() -> int:
    names = packages()
    with ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:  # the CPUs we may use
        results = list(pool.map(verify, names))
    failed = False
    print(f"{'package':<18} {'complete':>9} {'symbols':>8} {'seconds':>8}")
    for package, report, seconds in results:
        completeness = report["typeCompleteness"]
        counts = completeness["exportedSymbolCounts"]
        print(f"{package:<18} {completeness['completenessScore']:>9.1%} {sum(counts.values()):>8} {seconds:>8.1f}")
        for problem in dict.fromkeys(problems(package, report)):  # pyright repeats a symbol per reference
            failed = True
            print(f"    {problem}")
    if failed:
        print("pyright --verifytypes: every package must be found in this checkout and score 100%", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
