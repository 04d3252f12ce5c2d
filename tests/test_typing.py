"""Typing contract: plugin code that must type-check, and mistakes that mypy AND pyright must reject.

Each file in tests/typing/fail/ marks every line the checkers must flag, with
the error code each must report::

    def ws_close(self, *, websocket: WebSocket) -> Close:  # E: override  P: reportIncompatibleMethodOverride

``E:`` is mypy's error code (``mypy --strict``), ``P:`` pyright's rule (strict
mode); a line may name several pyright rules, comma-separated. Every marked line
needs both, and neither checker may report anything else in the file. The
must-pass files (tests/typing/*.py) must be clean under both.
"""

from __future__ import annotations

import json
import re
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from mypy import api

from tests.checkers import run_pyright
from tests.typing import plugin_usage

TYPING_DIR = Path(__file__).parent / "typing"
FAIL_DIR = TYPING_DIR / "fail"
ROOT = Path(__file__).parent.parent
FAIL_FILES = sorted(FAIL_DIR.glob("*.py"))
PASS_FILES = sorted(path for path in TYPING_DIR.glob("*.py") if path.name != "__init__.py")
MYPY_MARK = re.compile(r"#\s*E:\s*([\w-]+)")
PYRIGHT_MARK = re.compile(r"\bP:\s*(\w+(?:\s*,\s*\w+)*)")


def expected_errors(path: Path) -> tuple[set[tuple[int, str]], set[tuple[int, str]]]:
    """The (line, code) pairs marked for mypy and for pyright."""
    mypy: set[tuple[int, str]] = set()
    pyright: set[tuple[int, str]] = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if match := MYPY_MARK.search(line):
            mypy.add((number, match.group(1)))
        if match := PYRIGHT_MARK.search(line):
            pyright.update((number, rule.strip()) for rule in match.group(1).split(","))
    return mypy, pyright


def mypy_errors(path: Path) -> tuple[set[tuple[int, str]], str]:
    stdout, _, _ = api.run(
        ["--strict", "--no-incremental", "--cache-dir=/dev/null", "--config-file=", "--show-error-codes", str(path)]
    )
    found = {
        (int(m.group(1)), m.group(2))
        for m in re.finditer(rf"{re.escape(path.name)}:(\d+): error: .*\[([\w-]+)\]", stdout)
    }
    return found, stdout


@cache
def pyright_report() -> dict[Path, list[dict[str, Any]]]:
    """Run pyright (strict) once over every typing file; its diagnostics by file."""
    with tempfile.TemporaryDirectory() as tmp:
        report = run_pyright([*FAIL_FILES, *PASS_FILES], Path(tmp))
    by_file: dict[Path, list[dict[str, Any]]] = {}
    for diagnostic in report["generalDiagnostics"]:
        by_file.setdefault(Path(diagnostic["file"]).resolve(), []).append(diagnostic)
    return by_file


def pyright_errors(path: Path) -> tuple[set[tuple[int, str]], str]:
    """The (line, rule) pairs pyright reports for the file, errors and warnings alike."""
    diagnostics = [d for d in pyright_report().get(path.resolve(), []) if d["severity"] in {"error", "warning"}]
    found = {(int(d["range"]["start"]["line"]) + 1, str(d.get("rule", "?"))) for d in diagnostics}
    return found, json.dumps(diagnostics, indent=1)


def test_usage_example_registers_and_runs() -> None:
    manager = plugin_usage.build()
    hooks = {name: manager.hooks_of(plugin) for name, plugin in manager.list_name_plugin()}
    assert hooks == {
        "Everything": ["ws_accept", "ws_close", "ws_denial", "ws_receive", "ws_send"],
        "timing": ["ws_receive", "ws_send"],
        "partial": ["ws_close", "ws_denial", "ws_receive", "ws_send"],
    }
    wrappers = {impl.plugin_name for impls in manager.hook_order().values() for impl in impls if impl.wrapper}
    assert wrappers == {"timing", "partial"}


def test_there_are_enough_must_fail_cases() -> None:
    assert len(FAIL_FILES) >= 20


def test_pyright_checks_this_checkout() -> None:
    """pyright resolved ``toolkit`` (an unresolved import would be the only error) to the hook declarations."""
    diagnostics = pyright_report().get((FAIL_DIR / "wrong_argument_type.py").resolve(), [])
    assert any('overrides class "HookSpecs"' in str(d["message"]) for d in diagnostics), diagnostics


@pytest.mark.parametrize("path", FAIL_FILES, ids=lambda p: p.stem)
def test_mypy_rejects(path: Path) -> None:
    expected, _ = expected_errors(path)
    assert expected, f"{path.name} marks no expected mypy error"
    found, output = mypy_errors(path)
    assert found == expected, output


@pytest.mark.parametrize("path", FAIL_FILES, ids=lambda p: p.stem)
def test_pyright_rejects(path: Path) -> None:
    _, expected = expected_errors(path)
    assert expected, f"{path.name} marks no expected pyright error"
    found, output = pyright_errors(path)
    assert found == expected, output


@pytest.mark.parametrize("path", FAIL_FILES, ids=lambda p: p.stem)
def test_every_marked_line_is_rejected_by_both(path: Path) -> None:
    mypy, pyright = expected_errors(path)
    assert {line for line, _ in mypy} == {line for line, _ in pyright}


@pytest.mark.parametrize("path", PASS_FILES, ids=lambda p: p.stem)
def test_must_pass_files_are_clean(path: Path) -> None:
    found, output = mypy_errors(path)
    assert not found, output
    found, output = pyright_errors(path)
    assert not found, output
