"""``python -m toolkit_demo --log-level debug`` on 127.0.0.1: no token reaches any log line, and no
client-sent control character reaches one raw.

At DEBUG, uvicorn's websockets-sansio implementation logs every handshake header (the token offered as
a ``bearer.`` subprotocol, ``Authorization``, ``Cookie``) and every frame, close reasons included; the
access line holds the query string. The demo's log config sends every logger (uvicorn's, websockets',
the toolkit's, root) through handlers that carry ``toolkit_demo.log_filter()``. This reads the demo's
whole stderr, as an operator would see it.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Final

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin, Subprotocol

from tests.test_demo_server import demo_process, stop_with_ctrl_c

pytestmark = pytest.mark.server

STEP: Final = 5.0
#: A close reason that tries to forge a log line and recolour the terminal.
FORGED: Final = "bye\r\n2025-01-01 00:00:00 INFO forged line\x1b[31m\u2028red"


def test_debug_logs_of_the_demo_show_no_token_and_no_raw_control_character(tmp_path: Path) -> None:
    log = tmp_path / "demo.log"
    with demo_process(log, "--log-level", "debug") as (process, banner):
        base = banner[0].split(": ", 1)[1].rstrip("/")
        tokens = {line.split()[0]: line.split("#token=", 1)[1] for line in banner if "#token=" in line}
        wrong = secrets.token_urlsafe(12)
        ws = base.replace("http://", "ws://") + "/ws"

        def offer(token: str) -> list[Subprotocol]:
            return [Subprotocol("chat.v1"), Subprotocol(f"bearer.{token}")]

        # The page's way (the subprotocol), plus the token everywhere else a client might put it.
        alice = tokens["alice"]
        with connect(
            f"{ws}?room=1&token={alice}&access_token={alice}",
            origin=Origin(base),
            subprotocols=offer(alice),
            additional_headers={"Authorization": f"Bearer {alice}", "Cookie": f"session={alice}; theme=dark"},
            open_timeout=STEP,
            close_timeout=STEP,
        ) as conn:
            conn.send('{"type":"join"}')
            assert '"joined"' in str(conn.recv(timeout=STEP))
            conn.send(f'{{"type":"say","text":"my token is in the header: {alice[:4]}"}}')
            assert '"said"' in str(conn.recv(timeout=STEP))
            conn.close(4000, FORGED)
        with pytest.raises(InvalidStatus) as info, connect(ws, origin=Origin(base), subprotocols=offer(wrong)):
            pass
        assert info.value.response.status_code == 401

        stop_with_ctrl_c(process)

    output = log.read_text(encoding="utf-8")
    lines = output.splitlines()
    # DEBUG really was on, for uvicorn's websockets implementation and the toolkit's loggers alike.
    assert any("< sec-websocket-protocol: [redacted]" in line for line in lines), output[:3000]
    assert any("< authorization: [redacted]" in line for line in lines)
    assert any("< cookie: [redacted]" in line for line in lines)
    assert any("< CLOSE 4000" in line for line in lines)
    assert any("websocket message conn=" in line for line in lines)
    assert any("token=[redacted]&access_token=[redacted]" in line for line in lines)  # the access line
    for token in (*tokens.values(), wrong):
        assert token not in output
    # The forged line is part of the close frame's line, escaped; nothing starts a line of its own.
    assert not [line for line in lines if line.startswith(("2025-01-01", "red"))]
    assert "\x1b" not in output
    assert "\r" not in output
    assert "\u2028" not in output
    assert r"bye\r\n2025-01-01 00:00:00 INFO forged line\x1b[31m\u2028red" in output
