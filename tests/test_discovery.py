"""Plugins found through the ``ws_toolkit.plugins`` entry-point group (toolkit.load_plugins).

The happy path uses a real installed package, tests/example-plugin (`.ci/run` installs it). Broken
and odd plugins are distributions written to a temporary directory on ``sys.path``: importlib.metadata
finds them exactly as it finds installed ones, and they never outlive the test.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import pytest
from toolkit_pytest import ClientFactory, HookRecorder

import toolkit
from tests.test_docs import run_blocks
from toolkit import (
    DISABLE_AUTOLOAD_ENV,
    ENTRY_POINT_GROUP,
    SKIP_PLUGINS_ENV,
    ClosedBy,
    PluginLoadError,
    PluginLoadWarning,
    PluginManager,
    PluginStatus,
    WebSocket,
    find_plugins,
    load_plugins,
)

ROOT = Path(__file__).parent.parent
EXAMPLE_DIST = "ws-toolkit-example-plugin"

#: Writes a distribution declaring ``{entry point name: value}`` plus the modules it names.
MakeDist = Callable[..., Path]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DISABLE_AUTOLOAD_ENV, raising=False)
    monkeypatch.delenv(SKIP_PLUGINS_ENV, raising=False)


@pytest.fixture(scope="module", autouse=True)
def _example_plugin_installed() -> None:
    try:
        metadata.distribution(EXAMPLE_DIST)
    except metadata.PackageNotFoundError:
        pytest.fail(f"{EXAMPLE_DIST} is not installed: run `pip install -e tests/example-plugin` (.ci/run does)")


@pytest.fixture
def make_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeDist]:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    modules: list[str] = []

    def make(name: str, entry_points: dict[str, str], sources: dict[str, str] | None = None) -> Path:
        dist_info = root / f"{name.replace('-', '_')}-1.0.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
        (dist_info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
        for module, source in (sources or {}).items():
            (root / f"{module}.py").write_text(textwrap.dedent(source))
            modules.append(module)
        return root

    yield make
    for module in modules:
        sys.modules.pop(module, None)


def names(manager: PluginManager) -> list[str]:
    return sorted(name for name, _ in manager.list_name_plugin())


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for data in websocket.iter_text():
        await websocket.send_text(data)


# --- the installed example package, end to end -----------------------------------------------------


def test_find_plugins_reads_the_installed_package_metadata_without_importing() -> None:
    sys.modules.pop("ws_toolkit_example_plugin", None)
    (example,) = [plugin for plugin in find_plugins() if plugin.name == "example"]
    assert (example.value, example.distribution, example.version) == (
        "ws_toolkit_example_plugin:ExamplePlugin",
        EXAMPLE_DIST,
        "0.1.0",
    )
    assert (example.status, example.reason) == (PluginStatus.LOAD, "")
    assert "ws_toolkit_example_plugin" not in sys.modules


@pytest.mark.anyio
async def test_an_installed_plugin_is_registered_and_its_hooks_fire(
    ws_client: ClientFactory, hook_recorder: HookRecorder
) -> None:
    from ws_toolkit_example_plugin import ExamplePlugin

    manager = PluginManager()
    assert "example" in load_plugins(manager)
    example = manager.pluggy.get_plugin("example")
    assert isinstance(example, ExamplePlugin)  # the class the entry point names, instantiated
    assert manager.hooks_of(example) == ["ws_accept", "ws_close", "ws_receive", "ws_send"]
    manager.register(hook_recorder)

    sent: list[int] = []

    async def endpoint(websocket: WebSocket) -> None:
        await echo(websocket)
        sent.append(websocket.state.example_sent)

    async with ws_client(toolkit.WebSocketApp(endpoint, plugins=manager)) as client:
        assert (b"x-example-plugin", b"1") in client.accept_headers
        await client.send_text("my secret")
        assert await client.receive_text() == "my ******"
        await client.send_text("again")
        assert await client.receive_text() == "again"
    hook_recorder.assert_fired("ws_accept", "ws_receive", "ws_send", "ws_receive", "ws_send", "ws_close")
    assert hook_recorder.calls_of("ws_receive")[0].result == "my ******"
    assert sent == [2]
    assert example.closes == [(1000, ClosedBy.CLIENT)]


def test_loading_is_opt_in() -> None:
    assert toolkit.PluginManager().list_name_plugin() == []
    sys.modules.pop("ws_toolkit_example_plugin", None)
    toolkit.WebSocketApp(echo, plugins=toolkit.PluginManager())
    assert "ws_toolkit_example_plugin" not in sys.modules


# --- switched off, skipped ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1", "true", "YES", "anything"])
def test_the_environment_variable_switches_loading_off(
    make_dist: MakeDist, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    make_dist("explodes", {"explodes": "explodes_on_import"}, {"explodes_on_import": "raise RuntimeError('imported')"})
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, value)
    manager = PluginManager()
    assert load_plugins(manager) == []  # no warning either: filterwarnings = error
    assert manager.list_name_plugin() == []
    assert {plugin.status for plugin in find_plugins()} == {PluginStatus.DISABLED}
    assert "explodes_on_import" not in sys.modules


@pytest.mark.parametrize("value", ["", "0", "false", "No", " off "])
def test_false_values_leave_loading_on(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, value)
    assert "example" in load_plugins(PluginManager())


def test_skipped_plugins_are_not_even_imported(make_dist: MakeDist, monkeypatch: pytest.MonkeyPatch) -> None:
    make_dist(
        "explodes",
        {"explodes": "explodes_on_import", "also-explodes": "explodes_on_import"},
        {"explodes_on_import": "raise RuntimeError('imported')"},
    )
    monkeypatch.setenv(SKIP_PLUGINS_ENV, " other , also-explodes ,, ")
    manager = PluginManager()
    assert load_plugins(manager, skip=["explodes"]) == ["example"]
    status = {plugin.name: (plugin.status, plugin.reason) for plugin in find_plugins(skip=["explodes"])}
    assert status["explodes"] == (PluginStatus.SKIPPED, "skip= argument")
    assert status["also-explodes"] == (PluginStatus.SKIPPED, SKIP_PLUGINS_ENV)
    assert "explodes_on_import" not in sys.modules


def test_skip_must_be_a_collection_of_names() -> None:
    with pytest.raises(TypeError, match="not a single string"):
        load_plugins(PluginManager(), skip="example")


# --- broken plugins: a warning each, the others still load ------------------------------------------

BROKEN = {
    "missing-module": ("no_such_module_anywhere:Plugin", "importing it raised ModuleNotFoundError"),
    "missing-attribute": ("plugin_sources:Nope", "importing it raised AttributeError"),
    "factory-raises": ("plugin_sources:failing_factory", "calling plugin_sources:failing_factory raised RuntimeError"),
    "factory-none": ("plugin_sources:none_factory", "plugin_sources:none_factory returned None instead of a plugin"),
    "misspelt-hook": ("plugin_sources:Misspelt", "ws_recieve: there is no such hook"),
    "async-close": ("plugin_sources:AsyncClose", "ws_close cannot await"),
    "no-hooks": ("plugin_sources:NOTHING", "plugin 'no-hooks' implements no hook"),
}
SOURCES = {
    "plugin_sources": """
        def failing_factory():
            raise RuntimeError("no configuration")

        def none_factory():
            return None

        class Misspelt:
            def ws_recieve(self, websocket, data):
                return None

        class AsyncClose:
            async def ws_close(self, *, websocket, code, reason, closed_by):
                pass

        NOTHING = object()
        """
}


def test_each_broken_plugin_warns_and_the_others_load(make_dist: MakeDist) -> None:
    make_dist("broken-plugins", {name: value for name, (value, _) in BROKEN.items()}, SOURCES)
    manager = PluginManager()
    with pytest.warns(PluginLoadWarning) as warned:
        loaded = load_plugins(manager)
    assert loaded == ["example"]
    assert names(manager) == ["example"]
    assert {record.filename for record in warned} == {__file__}  # each points at the load_plugins() call
    by_name = {w.plugin.name: w for w in (record.message for record in warned) if isinstance(w, PluginLoadWarning)}
    assert sorted(by_name) == sorted(BROKEN)
    for name, (value, problem) in BROKEN.items():
        message = str(by_name[name])
        assert message.startswith(f"plugin {name} = {value} (from broken-plugins 1.0) was not loaded: ")
        assert problem in message
    errors = {name: warning.error for name, warning in by_name.items()}
    assert isinstance(errors["missing-module"], ModuleNotFoundError)
    assert isinstance(errors["factory-raises"], RuntimeError)
    assert isinstance(errors["misspelt-hook"], toolkit.PluginValidationError)
    assert errors["factory-none"] is None


def test_strict_raises_on_the_first_failure_and_registers_nothing(make_dist: MakeDist) -> None:
    # "zz-missing" sorts after "example": the example is loaded, then unregistered again.
    make_dist("broken-plugins", {"zz-missing": "no_such_module_anywhere"})
    observer = _Observer()
    manager = PluginManager(observer)
    with pytest.raises(
        PluginLoadError, match=r"plugin zz-missing = no_such_module_anywhere .* was not loaded"
    ) as error:
        load_plugins(manager, strict=True)
    assert isinstance(error.value.__cause__, ModuleNotFoundError)
    assert error.value.plugin.distribution == "broken-plugins"
    assert manager.list_name_plugin() == [("_Observer", observer)]
    assert manager.chains.get("ws_accept") is None  # the example's hooks are gone
    assert manager.chains.get("ws_close") is not None


class _Observer:
    def ws_close(self, *, websocket: WebSocket, code: int, reason: str, closed_by: ClosedBy) -> None:
        pass


def test_loading_twice_warns_instead_of_registering_twice() -> None:
    manager = PluginManager()
    assert "example" in load_plugins(manager)
    with pytest.warns(PluginLoadWarning, match="a plugin named 'example' is already registered"):
        assert load_plugins(manager) == []


def test_two_packages_claiming_one_name_keep_the_first_and_warn(make_dist: MakeDist) -> None:
    # Same name: ordered by value, "ws_toolkit_example_plugin:ExamplePlugin" before "zz_clash".
    make_dist("clash", {"example": "zz_clash"}, {"zz_clash": "def ws_close(code):\n    pass\n"})
    manager = PluginManager()
    with pytest.warns(
        PluginLoadWarning, match=r"plugin example = zz_clash \(from clash 1.0\) was not loaded: a plugin"
    ):
        loaded = load_plugins(manager)
    assert loaded == ["example"]
    assert type(manager.pluggy.get_plugin("example")).__name__ == "ExamplePlugin"
    assert "zz_clash" not in sys.modules


# --- what an entry point may name ------------------------------------------------------------------


def test_modules_objects_classes_and_factories(make_dist: MakeDist) -> None:
    make_dist(
        "forms",
        {
            "as-module": "form_module",
            "as-object": "form_objects:INSTANCE",
            "as-class": "form_objects:Tagger",
            "as-function": "form_objects:make",
            "as-classmethod": "form_objects:Tagger.configured",
        },
        {
            "form_module": """
                def ws_receive(data):
                    return data + "|module"
                """,
            "form_objects": """
                class Tagger:
                    def __init__(self, tag="class"):
                        self.tag = tag

                    def ws_receive(self, data):
                        return data + "|" + self.tag

                    @classmethod
                    def configured(cls):
                        return cls("classmethod")

                INSTANCE = Tagger("object")

                def make():
                    return Tagger("function")
                """,
        },
    )
    manager = PluginManager()
    loaded = load_plugins(manager, skip=["example"])
    assert loaded == ["as-class", "as-classmethod", "as-function", "as-module", "as-object"]  # name order
    assert manager.pluggy.get_plugin("as-module") is sys.modules["form_module"]
    assert manager.pluggy.get_plugin("as-object") is sys.modules["form_objects"].INSTANCE
    tags = {name: getattr(manager.pluggy.get_plugin(name), "tag", None) for name in loaded}
    assert tags == {
        "as-class": "class",
        "as-classmethod": "classmethod",
        "as-function": "function",
        "as-module": None,
        "as-object": "object",
    }
    # Registered in name order, so the last name runs first (as for any registration).
    chain = manager.chains.get("ws_receive")
    assert chain is not None
    assert [impl.plugin_name for impl in chain.impls] == loaded[::-1]


# --- the docs --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_discovery_page_example_loads_the_installed_plugin(ws_client: ClientFactory) -> None:
    namespace = run_blocks(ROOT / "docs" / "discovery.md")
    assert "example" in namespace["loaded"]
    async with ws_client(namespace["app"]) as client:
        await client.send_text("a secret")
        assert await client.receive_text() == "a ******"
