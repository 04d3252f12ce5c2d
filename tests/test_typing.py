"""Typing contract: plugin code that must type-check, and mistakes that mypy must reject.

Each file in tests/typing/fail/ marks the lines mypy must flag with ``# E: <error code>``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mypy import api

from tests.typing import plugin_usage

FAIL_DIR = Path(__file__).parent / "typing" / "fail"
ROOT = Path(__file__).parent.parent
EXPECTED = re.compile(r"#\s*E:\s*([\w-]+)")


def test_usage_example_registers_and_runs() -> None:
    manager = plugin_usage.build()
    hooks = {name: manager.hooks_of(plugin) for name, plugin in manager.list_name_plugin()}
    assert hooks == {
        "Everything": ["ws_accept", "ws_close", "ws_denial", "ws_receive", "ws_send"],
        "timing": ["ws_receive", "ws_send"],
    }


@pytest.mark.parametrize("path", sorted(FAIL_DIR.glob("*.py")), ids=lambda p: p.stem)
def test_mypy_rejects(path: Path) -> None:
    expected = {
        (number, match.group(1))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if (match := EXPECTED.search(line))
    }
    assert expected, f"{path.name} marks no expected error"
    stdout, _, status = api.run(
        ["--strict", "--no-incremental", "--cache-dir=/dev/null", "--config-file=", "--show-error-codes", str(path)]
    )
    found = {
        (int(m.group(1)), m.group(2))
        for m in re.finditer(rf"{re.escape(path.name)}:(\d+): error: .*\[([\w-]+)\]", stdout)
    }
    assert status == 1, stdout
    assert found == expected, stdout
