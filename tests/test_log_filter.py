"""``toolkit_logging.RedactingFilter`` on single records, and ``toolkit_auth``'s credential locations.

tests/test_log_redaction_server.py runs it on the demo's real DEBUG output.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, ClassVar

import pytest
from toolkit_auth import AuthGate, Bearer, Cookie, CredentialLocations, Query, StaticTokens, Subprotocol
from toolkit_logging import REDACTED, RedactingFilter
from uvicorn.logging import AccessFormatter

from tests.test_docs import ROOT, run_blocks

FILTER = RedactingFilter(cookies=["session"], subprotocol_prefixes=["bearer."])


def record(msg: object, *args: Any, exc_info: Any = None) -> logging.LogRecord:
    made = logging.LogRecord("any.logger", logging.DEBUG, __file__, 1, msg, args or None, exc_info)
    if len(args) == 1 and isinstance(args[0], dict):  # as Logger.debug("%(x)s", {...}) stores it
        made.args = args[0]
    return made


def cleaned(msg: object, *args: Any, logfilter: RedactingFilter = FILTER) -> str:
    made = record(msg, *args)
    assert logfilter.filter(made) is True  # never drops a record
    return made.getMessage()


@pytest.mark.parametrize(
    ("msg", "args", "expected"),
    [
        # websockets' handshake lines: the header name and its value are two arguments.
        ("< %s: %s", ("sec-websocket-protocol", "chat.v1, bearer.abc"), "< sec-websocket-protocol: [redacted]"),
        ("< %s: %s", ("Authorization", "Bearer abc"), "< Authorization: [redacted]"),
        ("< %s: %s", ("X-Auth-Token", "abc"), "< X-Auth-Token: [redacted]"),
        ("< %s: %s", ("Cookie", "session=abc; theme=dark"), "< Cookie: [redacted]"),
        ("< %s: %s", ("host", "example.com"), "< host: example.com"),
        # One formatted string: only the matching header's value, to the end of its line.
        ("authorization: Bearer abc\nhost: h", (), "authorization: [redacted]\\nhost: h"),
        # The query string, by decoded name and suffix; a cookie by exact name; a subprotocol by prefix.
        (
            "GET %s",
            ("/ws?room=1&access_token=abc&%74oken=def",),
            "GET /ws?room=1&access_token=[redacted]&%74oken=[redacted]",
        ),
        ("a=token=abc session=s Session=kept", (), "a=token=[redacted] session=[redacted] Session=kept"),
        ("offered %s", (["chat.v1", "bearer.abc"],), "offered ['chat.v1', 'bearer.[redacted]']"),
        ("scope %s", ({"headers": [(b"cookie", b"session=abc")]},), "scope {'headers': [(b'cookie', b'[redacted]')]}"),
        # A value in the template's place: the record is formatted, then redacted.
        ("token=%s", ("abc",), "token=[redacted]"),
        # Control characters: escaped, backslashes left single.
        ("< CLOSE %s", ("1000 bye\r\nINFO forged\x1b[31m",), "< CLOSE 1000 bye\\r\\nINFO forged\\x1b[31m"),
        ("reason \u2028\u202e\x85 C:\\path", (), "reason \\u2028\\u202e\\x85 C:\\path"),
        ("%(who)s said %(what)s", ({"who": "a\nb", "what": "token=abc"},), "a\\nb said token=[redacted]"),
    ],
)
def test_redacts_and_escapes(msg: str, args: tuple[Any, ...], expected: str) -> None:
    assert cleaned(msg, *args) == expected


def test_clean_records_keep_their_arguments_for_formatters_that_read_them() -> None:
    # uvicorn's access formatter unpacks record.args: the filter cleans them one by one.
    made = record('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/?token=abc", "1.1", 200)
    FILTER.filter(made)
    assert made.args == ("127.0.0.1:5000", "GET", "/?token=[redacted]", "1.1", 200)
    formatted = AccessFormatter("%(client_addr)s %(request_line)s %(status_code)s", use_colors=False).format(made)
    assert formatted == "127.0.0.1:5000 GET /?token=[redacted] HTTP/1.1 200 OK"


def test_running_twice_changes_nothing_more() -> None:
    once = cleaned("< %s: %s x=\x1b y=\\n", "Cookie", "session=abc")
    assert cleaned(once) == once
    assert cleaned('websocket close reason="a\\\\nb" query=token=[redacted]') == (
        'websocket close reason="a\\\\nb" query=token=[redacted]'
    )


def test_a_record_whose_arguments_do_not_fit_is_not_shown() -> None:
    assert cleaned("%d tokens", "alice-token") == "[log record could not be formatted, so it is not shown]"


def test_tracebacks_are_redacted_and_keep_their_lines() -> None:
    try:
        raise ValueError("bad token=abc \x1b[2J")
    except ValueError:
        made = record("failed", exc_info=sys.exc_info())
    made.stack_info = "Stack (most recent call last):\n  cookie: session=abc"
    FILTER.filter(made)
    text = logging.Formatter().format(made)
    assert "abc" not in text
    assert "\x1b" not in text
    assert "ValueError: bad token=[redacted] \\x1b[2J" in text
    assert text.count("\n") >= 3  # still a traceback, a line per frame
    assert made.stack_info.endswith("cookie: [redacted]")


def test_names_replace_the_defaults() -> None:
    narrow = RedactingFilter(headers=["x-api-key"], query=["ticket"])
    assert cleaned("ticket=1 token=2", logfilter=narrow) == f"ticket={REDACTED} token=2"
    assert cleaned("x-api-key: k\nauthorization: a", logfilter=narrow) == f"x-api-key: {REDACTED}\\nauthorization: a"


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"headers": "authorization"}, TypeError),
        ({"cookies": "session"}, TypeError),
        ({"cookies": [""]}, ValueError),
        ({"subprotocol_prefixes": [1]}, ValueError),
        ({"query": [""]}, ValueError),
    ],
)
def test_bad_names_are_refused(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        RedactingFilter(**options)


def test_works_from_dict_config_on_a_handler() -> None:
    import logging.config

    class Collect(logging.Handler):
        lines: ClassVar[list[str]] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(self.format(record))

    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"redact": {"()": "toolkit_logging.RedactingFilter", "subprotocol_prefixes": ["bearer."]}},
            "handlers": {"collect": {"()": Collect, "filters": ["redact"]}},
            "loggers": {"tests.filter.parent": {"handlers": ["collect"], "level": "DEBUG", "propagate": False}},
        }
    )
    parent = logging.getLogger("tests.filter.parent")
    try:
        # A child's records reach the parent's handler: the handler's filter sees them all.
        logging.getLogger("tests.filter.parent.child").debug("< %s: %s", "x", "chat.v1, bearer.abc")
    finally:
        for handler in parent.handlers[:]:
            parent.removeHandler(handler)
    assert Collect.lines == ["< x: chat.v1, bearer.[redacted]"]


def test_auth_sources_say_where_their_credentials_travel() -> None:
    gate = AuthGate(
        StaticTokens({"t": "alice"}),
        sources=[Bearer(), Subprotocol("bearer."), Cookie("session"), Query("ticket"), Query("ticket")],
    )
    assert gate.credential_locations() == CredentialLocations(
        headers=("authorization",), cookies=("session",), query=("ticket",), subprotocol_prefixes=("bearer.",)
    )
    assert CredentialLocations.of([]) == CredentialLocations()


def test_the_logging_page_builds_a_uvicorn_config_that_redacts_the_gates_names() -> None:
    namespace = run_blocks(ROOT / "docs" / "logging.md")
    config = namespace["log_config"]
    assert all(handler["filters"] == ["redact"] for handler in config["handlers"].values())
    options = dict(config["filters"]["redact"])
    logfilter = options.pop("()")(**options)
    line = cleaned("< %s: %s sid=abc ?token=abc", "sec-websocket-protocol", "chat.v1, bearer.abc", logfilter=logfilter)
    assert line == "< sec-websocket-protocol: [redacted]"
    assert cleaned("subprotocols=%s sid=abc&token=abc", "bearer.abc", logfilter=logfilter) == (
        "subprotocols=bearer.[redacted] sid=[redacted]&token=[redacted]"
    )
