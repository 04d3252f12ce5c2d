"""``python -m toolkit_demo [--host 127.0.0.1] [--port 8000] [--log-level info]``: serve the demo chat with uvicorn.

Prints the page's address and a fresh token per person, then serves until Ctrl+C, which closes
every chat connection with 1001 "going away" and stops within a few seconds (toolkit_demo/_server.py
has the server's limits). ``--port 0`` picks a free port (the banner shows which).
"""

from __future__ import annotations

import argparse
import copy
import socket
import sys
from typing import Any

try:  # uvicorn serves the demo, and needs websockets for its WebSocket protocol
    import uvicorn  # noqa: F401
    import websockets  # noqa: F401
    from uvicorn.config import LOGGING_CONFIG
except ModuleNotFoundError as _missing:
    raise ModuleNotFoundError(
        f"python -m toolkit_demo needs {_missing.name}, from the demo extra: pip install 'ws-toolkit[demo]'",
        name=_missing.name,
    ) from _missing

from starlette.routing import WebSocketRoute

from toolkit import WebSocketApp

from ._app import create_app, demo_tokens, local_origins, log_filter
from ._server import DemoServer, server_config

__all__ = ["main"]

_LOG_LEVELS = ("debug", "info", "warning")


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError("a port is a number from 0 to 65535")
    return port


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, the toolkit's loggers in the same format, and every other logger through root.

    Every handler carries the demo's :func:`~toolkit_demo.log_filter`: at DEBUG, uvicorn and websockets
    print each handshake header (the token in ``Sec-WebSocket-Protocol``) and each close reason raw.
    """
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": log_filter}}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact"]
    ours = "DEBUG" if level == "debug" else "INFO"
    for name in ("toolkit", "toolkit_auth", "toolkit_limits", "toolkit_logging", "toolkit_messages"):
        config["loggers"][name] = {"handlers": ["default"], "level": ours, "propagate": False}
    config["root"] = {"handlers": ["default"], "level": level.upper()}
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolkit_demo", description="Serve the ws-toolkit demo chat.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=_port, default=8000, help="port to listen on; 0 picks a free one (default: 8000)"
    )
    parser.add_argument(
        "--log-level",
        choices=_LOG_LEVELS,
        default="info",
        help="debug shows every handshake header and frame, credentials redacted (default: info)",
    )
    args = parser.parse_args(argv)

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    try:
        sock = socket.create_server((args.host, args.port), family=family, backlog=128)
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    port: int = sock.getsockname()[1]
    tokens = demo_tokens()
    app = create_app(tokens, local_origins(port, args.host))

    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host  # noqa: S104 - a wildcard: show loopback
    url = f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"
    width = max(len(name) for name in tokens.values())
    lines = [
        f"ws-toolkit demo chat: {url}",
        "Open a link per person (the token after # stays in the browser), or paste a token into the page:",
        *(f"  {name:<{width}}  {url}#token={token}" for token, name in tokens.items()),
        "Tokens are new on every start. Ctrl+C stops the server.",
    ]
    print("\n".join(lines), flush=True)

    config = server_config(app, log_config=_log_config(args.log_level), log_level=args.log_level)
    chats = [route.app for route in app.routes if isinstance(route, WebSocketRoute)]
    DemoServer(config, [chat for chat in chats if isinstance(chat, WebSocketApp)]).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
