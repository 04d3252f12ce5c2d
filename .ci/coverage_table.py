"""Coverage per package from coverage.py's JSON report, with floors: `python .ci/coverage_table.py coverage.json`.

Prints one row per import package (``toolkit`` and each ``plugins/toolkit_*``): statements and
branches, line and branch coverage, and coverage.py's own combined figure. ``--floor toolkit=95``
fails (exit 1) when a package's combined figure is below the floor.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import PurePosixPath


@dataclass
class Totals:
    """Statements and branches of one package, and how many of each the tests ran."""

    statements: int = 0
    covered_lines: int = 0
    branches: int = 0
    covered_branches: int = 0

    def add(self, summary: dict[str, int]) -> None:
        self.statements += summary["num_statements"]
        self.covered_lines += summary["covered_lines"]
        self.branches += summary.get("num_branches", 0)
        self.covered_branches += summary.get("covered_branches", 0)

    @staticmethod
    def percent(part: int, whole: int) -> float:
        return 100.0 * part / whole if whole else 100.0

    @property
    def line_percent(self) -> float:
        return self.percent(self.covered_lines, self.statements)

    @property
    def branch_percent(self) -> float:
        return self.percent(self.covered_branches, self.branches)

    @property
    def combined_percent(self) -> float:
        """coverage.py's figure: lines and branches counted together."""
        return self.percent(self.covered_lines + self.covered_branches, self.statements + self.branches)


def package_of(path: str) -> str:
    """``toolkit`` for ``toolkit/_app.py``, ``toolkit_auth`` for ``plugins/toolkit_auth/_gate.py``."""
    parts = PurePosixPath(path.replace("\\", "/")).parts
    for before, part in zip(("", *parts), parts, strict=False):
        if part == "toolkit" or (before == "plugins" and part.startswith("toolkit_")):
            return part
    return parts[0]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="the file `coverage json -o FILE` wrote")
    parser.add_argument("--floor", action="append", default=[], metavar="PACKAGE=PERCENT")
    args = parser.parse_args(argv)
    floors = {name: float(value) for name, _, value in (f.partition("=") for f in args.floor)}

    with open(args.report, encoding="utf-8") as file:
        files: dict[str, dict[str, dict[str, int]]] = json.load(file)["files"]
    packages: dict[str, Totals] = {}
    for path, data in files.items():
        packages.setdefault(package_of(path), Totals()).add(data["summary"])

    header = f"{'package':<18} {'stmts':>6} {'lines':>7} {'branches':>8} {'branch':>7} {'total':>7}  floor"
    print(header)
    print("-" * len(header))
    failures: list[str] = []
    for name in sorted(packages):
        t = packages[name]
        floor = floors.get(name)
        verdict = ""
        if floor is not None:
            verdict = f"{floor:.0f}%" + ("" if t.combined_percent >= floor else "  BELOW THE FLOOR")
            if t.combined_percent < floor:
                failures.append(f"{name}: {t.combined_percent:.2f}% < {floor:.0f}%")
        print(
            f"{name:<18} {t.statements:>6} {t.line_percent:>6.2f}% {t.branches:>8} {t.branch_percent:>6.2f}%"
            f" {t.combined_percent:>6.2f}%  {verdict}"
        )
    unknown = sorted(set(floors) - set(packages))
    if unknown:
        failures.append(f"floors for packages that were not measured: {unknown}")
    for failure in failures:
        print(f"coverage floor not met: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
