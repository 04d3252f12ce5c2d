"""toolkit_pytest seen from outside: pytest loads it through its entry point, and a hanging test fails.

Each test runs pytest on a throwaway project (pytester). Those that could hang if the plugin broke
run it in a fresh interpreter, bounded by a timeout.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).parent.parent
#: Outer bound for each inner pytest run: a hang fails the test instead of stalling CI.
RUN_TIMEOUT = 120


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=RUN_TIMEOUT)


def test_the_plugin_is_registered_through_its_pytest11_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from importlib.metadata import entry_points

        import toolkit_pytest.plugin


        def test_loaded(request, ws_client, hook_recorder):
            assert request.config.pluginmanager.get_plugin("ws_toolkit") is toolkit_pytest.plugin
            (entry_point,) = entry_points(group="pytest11", name="ws_toolkit")
            assert entry_point.value == "toolkit_pytest.plugin"
            assert entry_point.dist.name == "ws-toolkit"
            assert hook_recorder.calls == []
        """
    )
    run(pytester).assert_outcomes(passed=1)
    # Blocked by the entry point's name, the fixtures are gone: they come from nowhere else.
    blocked = run(pytester, "-p", "no:ws_toolkit")
    blocked.assert_outcomes(errors=1)
    blocked.stdout.fnmatch_lines(["*fixture 'ws_client' not found*"])


def test_a_hanging_receive_fails_with_a_timeout_instead_of_hanging(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nws_toolkit_timeout = 0.3\n")
    pytester.makepyfile(
        """
        import pytest
        import toolkit


        async def silent(websocket):
            await websocket.accept()
            async for _ in websocket.iter_text():
                pass  # never answers


        @pytest.mark.anyio
        @pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
        async def test_waits_for_an_answer(ws_client, anyio_backend):
            async with ws_client(toolkit.WebSocketApp(silent)) as client:
                await client.send_text("anyone?")
                await client.receive_text()  # would wait forever
        """
    )
    started = time.monotonic()
    result = run(pytester)
    assert time.monotonic() - started < 60  # interpreter start-up included; each test waits 0.3s, not forever
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*ReceiveTimeout: the app sent nothing within 0.3s*"])


def test_an_app_that_never_ends_is_cancelled_and_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import anyio
        import pytest
        import toolkit


        async def deaf(websocket):
            await websocket.accept()
            await anyio.sleep_forever()


        @pytest.mark.anyio
        @pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
        async def test_leaves(ws_client, anyio_backend):
            async with ws_client(toolkit.WebSocketApp(deaf), timeout=0.2):
                pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*AppDidNotFinish: the app did not finish within 0.2s of the client leaving*"])


def test_a_bad_timeout_setting_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nws_toolkit_timeout = soon\n")
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ws_toolkit_timeout must be a positive number of seconds, not 'soon'*"])


def test_raise_plugin_errors_fails_the_test_with_the_plugins_exception(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        import toolkit
        from toolkit_pytest import ConnectionDenied

        pytestmark = pytest.mark.anyio


        class Buggy(toolkit.Plugin):
            def ws_receive(self, *, websocket, data):
                if data == "boom":
                    raise LookupError("receive bug")
                return None


        class BuggyGate(toolkit.Plugin):
            def ws_accept(self, *, websocket, accept):
                raise KeyError("gate bug")


        async def echo(websocket):
            await websocket.accept()
            async for text in websocket.iter_text():
                await websocket.send_text(text)


        APP = toolkit.WebSocketApp(echo, plugins=toolkit.PluginManager(Buggy()))
        GATED = toolkit.WebSocketApp(echo, plugins=toolkit.PluginManager(BuggyGate()))


        async def test_receive_raising(ws_client):
            async with ws_client(APP, raise_plugin_errors=True) as client:
                await client.send_text("boom")
                await client.assert_closed(1011)  # the client still sees the close; leaving raises


        async def test_accept_raising(ws_client):
            async with ws_client(GATED, raise_plugin_errors=True):
                pass


        async def test_clean_with_the_option(ws_client):
            async with ws_client(APP, raise_plugin_errors=True) as client:
                await client.send_text("hi")
                assert await client.receive_text() == "hi"


        async def test_receive_raising_by_default_is_a_close(ws_client):
            async with ws_client(APP) as client:
                await client.send_text("boom")
                await client.assert_closed(1011)


        async def test_accept_raising_by_default_is_a_denial(ws_client):
            with pytest.raises(ConnectionDenied):
                async with ws_client(GATED):
                    pass
        """
    )
    result = run(pytester, "-p", "anyio", "-k", "asyncio")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines(["E*LookupError: receive bug", "E*KeyError: 'gate bug'"])
    result.stdout.fnmatch_lines(["FAILED *test_receive_raising*asyncio*", "FAILED *test_accept_raising*asyncio*"])
    result.stdout.fnmatch_lines(["*ws_client(raise_plugin_errors=True): plugin 'Buggy' failed in ws_receive: raised*"])


def test_the_testing_page_examples_pass(pytester: pytest.Pytester) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "testing.md").read_text(), flags=re.DOTALL)
    assert len(blocks) >= 2
    pytester.makepyfile(**{f"test_doc_{i}": block for i, block in enumerate(blocks)})
    result = pytester.runpytest("-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 4, result.stdout.str()
    assert set(outcomes) == {"passed"}, result.stdout.str()


def test_the_plugin_loads_without_anyio() -> None:
    # pytest loads the plugin wherever ws-toolkit is installed; without anyio only the client is missing.
    code = textwrap.dedent(
        """
        import sys
        sys.modules["anyio"] = None  # as if not installed
        import toolkit_pytest.plugin
        from toolkit_pytest import HookRecorder
        HookRecorder()
        try:
            toolkit_pytest.connect
        except ImportError:
            print("client needs anyio")
        """
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )
    assert (result.returncode, result.stdout) == (0, "client needs anyio\n"), result.stderr
