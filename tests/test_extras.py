"""A plugin whose extra is not installed says which extra to install, instead of a bare ``No module named ...``.

Each case runs in a fresh interpreter in which the extra's dependency cannot be imported
(``sys.modules[name] = None``, which makes ``import name`` raise ``ModuleNotFoundError``).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

#: (what the user runs, the modules made unimportable, the extra the error must name)
CASES = [
    ("import toolkit_messages", ("pydantic",), "messages"),
    ("import toolkit_auth", ("anyio",), "auth"),
    ("import toolkit_demo", ("starlette",), "demo"),
    ("import toolkit_demo", ("anyio",), "demo"),
    ("import toolkit_demo", ("pydantic",), "demo"),
    ("import runpy; runpy.run_module('toolkit_demo', run_name='__main__')", ("uvicorn",), "demo"),
    ("from toolkit_pytest import connect", ("anyio",), "testing"),
    # The demo across workers (--redis): coredis, imported only when create_app is given a Redis URL.
    ("import toolkit_demo; toolkit_demo.create_app({}, [], redis_url='redis://127.0.0.1:1/0')", ("coredis",), "redis"),
    # toolkit_limits imports without anyio; only its SendTimeouts middleware needs it, when made.
    ("import toolkit_limits; toolkit_limits.SendTimeouts(None, send=1)", ("anyio",), "limits"),
]


def import_without(statement: str, blocked: tuple[str, ...]) -> str:
    """What ``statement`` raises (type and message) in a fresh interpreter where ``blocked`` cannot be imported."""
    script = textwrap.dedent(
        f"""
        import sys
        for name in {blocked!r}:
            sys.modules[name] = None
        try:
            {statement}
        except ImportError as exc:
            print(type(exc).__name__, exc, sep=": ")
        else:
            print("imported")
        """
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    return result.stdout.strip()


@pytest.mark.parametrize(("statement", "blocked", "extra"), CASES)
def test_a_missing_extra_names_the_extra_to_install(statement: str, blocked: tuple[str, ...], extra: str) -> None:
    error = import_without(statement, blocked)
    # ModuleNotFoundError (an ImportError), so code that catches either still does.
    assert error.startswith("ModuleNotFoundError: "), error
    assert f"pip install 'ws-toolkit[{extra}]'" in error
    assert blocked[0] in error  # and what is missing


def test_plugins_without_an_extra_import_with_only_the_core() -> None:
    # toolkit_logging and toolkit_limits need nothing beyond pluggy and pydantic-core.
    blocked = ("pydantic", "anyio", "starlette", "uvicorn", "websockets", "msgpack")
    assert import_without("import toolkit_logging, toolkit_limits", blocked) == "imported"
