"""The install path a user takes: build the sdist and wheel, check them, install the wheel elsewhere, run it.

The wheel goes into a fresh virtualenv in a temporary directory, with that directory as the working
directory and no PYTHONPATH, so nothing of this checkout can be imported by accident. There it runs
``python -m toolkit_demo`` (a real client joins the chat) and the README's first example under
uvicorn (a real client gets its message back in capitals). About 15 s: build, and pip from its cache
or the package index.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Final

import pytest
from websockets.sync.client import connect
from websockets.typing import Origin, Subprotocol

from tests.test_demo_server import demo_process, stop_with_ctrl_c
from tests.test_docs import README, ROOT, python_blocks

pytestmark = [pytest.mark.install, pytest.mark.server]

STEP: Final = 5.0


def run(*command: str | Path, cwd: Path, env: dict[str, str], timeout: float = 180) -> str:
    result = subprocess.run(  # noqa: S603 - our own tools on our own files
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_the_wheel_installs_elsewhere_and_runs_the_demo_and_the_readme_example(tmp_path: Path) -> None:
    # Not this test process's environment: no PYTHONPATH, no coverage hook for the fresh interpreter.
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "COVERAGE_PROCESS_START")}
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--outdir", dist, ROOT, cwd=tmp_path, env=env)
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    assert len(wheels) == 1
    assert len(sdists) == 1
    assert "PASSED" in run(sys.executable, "-m", "twine", "check", "--strict", *wheels, *sdists, cwd=tmp_path, env=env)

    # What a package index shows: the licence text, who, where, which Pythons.
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(next(name for name in names if name.endswith(".dist-info/METADATA"))).decode()
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert "License-Expression: MIT" in metadata
    assert re.search(r"^Author: .+", metadata, flags=re.MULTILINE)
    assert re.search(r"^Project-URL: Source, https://", metadata, flags=re.MULTILINE)
    assert "Classifier: Programming Language :: Python :: 3.11" in metadata
    assert "## Install" in metadata  # the README is the long description
    with tarfile.open(sdists[0]) as sdist:
        assert any(name.endswith("/LICENSE") for name in sdist.getnames())

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path, env=env)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", f"{wheels[0]}[demo]", cwd=tmp_path, env=env)
    where = run(
        python,
        "-c",
        "import toolkit, toolkit_demo; print(toolkit.__file__, toolkit_demo.__file__)",
        cwd=tmp_path,
        env=env,
    )
    assert str(ROOT) not in where
    assert str(venv) in where

    # The demo, as the README says to start it.
    with demo_process(tmp_path / "demo.log", python=str(python), cwd=tmp_path, env=env) as (process, banner):
        base = banner[0].split(": ", 1)[1].rstrip("/")
        token = next(line.split("#token=", 1)[1] for line in banner if "#token=" in line)
        offer = [Subprotocol("chat.v1"), Subprotocol(f"bearer.{token}")]
        ws = base.replace("http://", "ws://") + "/ws"
        with connect(ws, origin=Origin(base), subprotocols=offer, open_timeout=STEP, close_timeout=STEP) as conn:
            conn.send('{"type":"join"}')
            assert json.loads(conn.recv(timeout=STEP))["type"] == "joined"
        stop_with_ctrl_c(process)

    # The README's first example, pasted into a module and served with uvicorn on a socket we bound.
    (tmp_path / "readme_example.py").write_text(python_blocks(README)[0], encoding="utf-8")
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
        server = subprocess.Popen(  # noqa: S603 - the venv's interpreter
            [python, "-m", "uvicorn", "readme_example:app", "--fd", str(sock.fileno()), "--lifespan", "off"],
            cwd=tmp_path,
            env=env,
            pass_fds=[sock.fileno()],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    try:
        deadline = time.monotonic() + 15
        while True:  # the socket listens already: connecting waits until uvicorn serves it (bounded)
            try:
                conn = connect(f"ws://127.0.0.1:{port}/", open_timeout=STEP, close_timeout=STEP)
                break
            except (OSError, TimeoutError):
                assert server.poll() is None, "uvicorn exited"
                assert time.monotonic() < deadline, "the README example never answered"
                time.sleep(0.1)
        with conn:
            conn.send("hello")
            assert conn.recv(timeout=STEP) == "HELLO"
    finally:
        server.terminate()
        _, errors = server.communicate(timeout=STEP)
    assert re.search(r"Application startup complete|Uvicorn running", errors.decode()), errors
