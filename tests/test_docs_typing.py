"""The code in the README, CONTRIBUTING.md and docs/ type-checks under mypy --strict and pyright strict.

tests/test_docs.py and the page tests run the blocks; this checks their types, as a reader's checker
would. Each page's ```python blocks form one module, in order (the page tests run them in one namespace),
with every other line of the page left blank so that a module's line numbers are the page's. The
modules are named ``docs_<page>``, which shadows nothing. One mypy run and one pyright run cover all pages.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from mypy import api

from tests.checkers import run_pyright

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", flags=re.DOTALL)


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
    # Each block repeats the imports it uses, so that it reads (and copies) on its own.
    report = run_pyright(list(modules), next(iter(modules)).parent, reportDuplicateImport=False)
    by_file = {module.resolve(): page for module, page in modules.items()}
    errors = [
        f"{where(by_file[Path(d['file']).resolve()], d['range']['start']['line'] + 1)}: "
        f"{d['message']} [{d.get('rule', '')}]"
        for d in report["generalDiagnostics"]
        if d["severity"] in {"error", "warning"}
    ]
    assert not errors, "\n".join(errors)
