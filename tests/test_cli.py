"""The ``ws-toolkit plugins`` command, run as users run it: in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from toolkit import DISABLE_AUTOLOAD_ENV, ENTRY_POINT_GROUP, SKIP_PLUGINS_ENV

TIMEOUT = 60


def make_site(root: Path) -> Path:
    """A directory with two more plugin distributions: one broken, one whose import would fail loudly."""
    dist_info = root / "cli_plugins-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: cli-plugins\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nbroken = cli_missing_module:Plugin\nloud = cli_loud\nlast = cli_last:Last\n"
    )
    (root / "cli_loud.py").write_text("raise SystemExit('imported a plugin that should not be imported')\n")
    (root / "cli_last.py").write_text(
        "import toolkit\n\n\nclass Last:\n"
        "    @toolkit.hookimpl(trylast=True)\n"
        "    def ws_receive(self, *, websocket, data):\n        return None\n\n"
        "    def ws_denial(self, *, websocket, response):\n        return None\n"
    )
    return root


def run(*args: str, site: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {key: value for key, value in os.environ.items() if not key.startswith("WS_TOOLKIT_")}
    if site is not None:
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), environ.get("PYTHONPATH")]))
    environ.update(env)
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "toolkit", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=environ,
        check=False,
    )


def as_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_json_lists_each_plugin_with_status_hooks_and_call_order(tmp_path: Path) -> None:
    data = as_json(run("plugins", "--json", site=make_site(tmp_path), **{SKIP_PLUGINS_ENV: "loud"}))
    plugins = {plugin["name"]: plugin for plugin in data["plugins"]}
    assert [plugin["name"] for plugin in data["plugins"]] == ["broken", "example", "last", "loud"]
    example = plugins["example"]
    assert (example["status"], example["distribution"], example["version"], example["value"]) == (
        "active",
        "ws-toolkit-example-plugin",
        "0.1.0",
        "ws_toolkit_example_plugin:ExamplePlugin",
    )
    flags = {hook["name"]: {k for k, v in hook.items() if v is True} for hook in example["hooks"]}
    assert flags == {"ws_accept": {"tryfirst"}, "ws_receive": {"async"}, "ws_send": {"wrapper"}, "ws_close": set()}
    assert plugins["broken"]["status"] == "failed"
    assert (
        plugins["broken"]["reason"] == "importing it raised ModuleNotFoundError: No module named 'cli_missing_module'"
    )
    assert plugins["broken"]["hooks"] == []
    assert (plugins["loud"]["status"], plugins["loud"]["reason"]) == ("skipped", SKIP_PLUGINS_ENV)
    assert [(hook["name"], hook["trylast"], hook["tryfirst"]) for hook in plugins["last"]["hooks"]] == [
        ("ws_receive", True, False),
        ("ws_denial", False, False),
    ]
    assert data["call_order"] == {
        "ws_accept": ["example"],
        "ws_receive": ["example", "last"],  # `last` is registered last but trylast
        "ws_send": ["example (wrapper)"],
        "ws_close": ["example"],
        "ws_denial": ["last"],
    }
    assert data["autoload_disabled"] is False


def test_text_output_shows_the_same(tmp_path: Path) -> None:
    result = run("plugins", "--skip", "loud", site=make_site(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{ENTRY_POINT_GROUP} entry points: 4 installed, 2 active"
    text = result.stdout
    assert "example  (ws-toolkit-example-plugin 0.1.0)  ws_toolkit_example_plugin:ExamplePlugin" in text
    assert "  hooks:  ws_accept [tryfirst], ws_receive [async], ws_send [wrapper], ws_close\n" in text
    assert "  status: failed (importing it raised ModuleNotFoundError: No module named 'cli_missing_module')" in text
    assert "  status: skipped (skip= argument)" in text
    assert "  ws_receive  example, last\n" in text
    assert "  ws_denial   last\n" in text


def test_check_fails_only_when_a_plugin_fails(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    assert run("plugins", "--check", "--skip", "loud", site=site).returncode == 1
    assert run("plugins", "--check", "--skip", "loud", "--skip", "broken", site=site).returncode == 0
    assert run("plugins", "--skip", "loud", site=site).returncode == 0  # without --check: a report only


def test_disabled_imports_nothing_and_says_so(tmp_path: Path) -> None:
    result = run("plugins", site=make_site(tmp_path), **{DISABLE_AUTOLOAD_ENV: "1"})
    assert result.returncode == 0, result.stderr  # `loud` would have exited with a message
    assert f"{DISABLE_AUTOLOAD_ENV} is set: load_plugins() loads nothing." in result.stdout
    assert result.stdout.count(f"  status: disabled ({DISABLE_AUTOLOAD_ENV} is set)") == 4
    data = as_json(run("plugins", "--json", site=tmp_path, **{DISABLE_AUTOLOAD_ENV: "1"}))
    assert data["autoload_disabled"] is True
    assert all(not names for names in data["call_order"].values())


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "ws-toolkit"
    result = subprocess.run(  # noqa: S603 - the script this project installs
        [str(script), "plugins", "--json"], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "example" in {plugin["name"] for plugin in json.loads(result.stdout)["plugins"]}


@pytest.mark.parametrize("args", [(), ("unknown",)])
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert "usage: ws-toolkit" in result.stderr


# --- ws-toolkit asyncapi ---------------------------------------------------------------------------


def test_asyncapi_prints_the_document_a_callable_returns() -> None:
    from toolkit_demo import asyncapi_document

    data = as_json(run("asyncapi", "toolkit_demo:asyncapi_document"))
    assert data == asyncapi_document()
    assert data["asyncapi"] == "3.0.0"
    assert data["channels"]["ws"]["address"] == "/ws"


def test_asyncapi_takes_a_ready_document_from_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "cli_doc.py").write_text(
        "from toolkit_demo import chat_messages\n"
        "from toolkit_messages import asyncapi\n\n"
        "class Api:\n"
        "    document = asyncapi('Mine', '0.1', {'/chat': chat_messages})\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "toolkit", "asyncapi", "cli_doc:Api.document"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=tmp_path,
        check=False,
    )
    data = as_json(result)
    assert data["info"] == {"title": "Mine", "version": "0.1"}
    assert list(data["channels"]) == ["chat"]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("toolkit_demo", "expected module:attr"),
        ("no_such_module_here:x", "cannot import 'no_such_module_here'"),
        ("toolkit_demo:nothing", "has no attribute 'nothing'"),
        ("toolkit_demo:CHAT_PATH", "is not an AsyncAPI document"),
    ],
)
def test_asyncapi_refuses_what_is_not_a_document(target: str, message: str) -> None:
    result = run("asyncapi", target)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""
