"""``python -m toolkit_demo [--host 127.0.0.1] [--port 8000] [--log-level info] [--workers N --redis URL]``.

Serves the demo chat with uvicorn. Prints the page's address and a fresh token per person, then serves
until Ctrl+C, which closes every chat connection with 1001 "going away" and stops within a few seconds
(toolkit_demo/_server.py has the server's limits). ``--port 0`` picks a free port (the banner shows
which). ``--redis redis://HOST:PORT/DB`` shares the room and the limits through Redis, so that
``--workers N`` uvicorn processes on one listening socket serve one chat; more than one worker without
Redis is refused (each would be a separate room). With several workers, uvicorn's supervisor runs them,
with the same limits, and Ctrl+C ends their connections with uvicorn's 1012 (service restart).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import socket
import sys
from typing import Any
from urllib.parse import urlsplit

try:  # uvicorn serves the demo, and needs websockets for its WebSocket protocol
    import uvicorn  # noqa: F401
    import websockets  # noqa: F401
    from uvicorn.config import LOGGING_CONFIG
    from uvicorn.supervisors import Multiprocess
except ModuleNotFoundError as _missing:
    raise ModuleNotFoundError(
        f"python -m toolkit_demo needs {_missing.name}, from the demo extra: pip install 'ws-toolkit[demo]'",
        name=_missing.name,
    ) from _missing

from starlette.routing import WebSocketRoute

from toolkit import WebSocketApp

from ._app import CONFIG_VARIABLE, create_app, demo_tokens, local_origins, log_filter
from ._server import DemoServer, server_config

__all__ = ["main"]

_LOG_LEVELS = ("debug", "info", "warning")


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError("a port is a number from 0 to 65535")
    return port


def _workers(value: str) -> int:
    workers = int(value)
    if not 1 <= workers <= 64:
        raise argparse.ArgumentTypeError("--workers is a number from 1 to 64")
    return workers


def _redis_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "redis" or not parts.hostname:
        raise argparse.ArgumentTypeError("--redis is a URL like redis://127.0.0.1:6379/0")
    return value


def _log_config(level: str, workers: int = 1) -> dict[str, Any]:
    """uvicorn's logging, the toolkit's loggers in the same format, and every other logger through root.

    Every handler carries the demo's :func:`~toolkit_demo.log_filter`: at DEBUG, uvicorn and websockets
    print each handshake header (the token in ``Sec-WebSocket-Protocol``) and each close reason raw.
    With several workers, each line starts with the worker's process id, so you can see which one
    holds which connection.
    """
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": log_filter}}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact"]
    ours = "DEBUG" if level == "debug" else "INFO"
    loggers = ("toolkit", "toolkit_auth", "toolkit_broadcast", "toolkit_limits", "toolkit_logging", "toolkit_messages")
    for name in loggers:
        config["loggers"][name] = {"handlers": ["default"], "level": ours, "propagate": False}
    config["root"] = {"handlers": ["default"], "level": level.upper()}
    if workers > 1:
        for formatter in config["formatters"].values():
            formatter["fmt"] = "[%(process)d] " + formatter["fmt"]
    return config


def _redis_answers(url: str, within: float = 2.0) -> str | None:
    """None if Redis at ``url`` answers PING within ``within`` seconds, else why not."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "", parts.port or 6379), timeout=within) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = sock.recv(64)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None if reply.startswith((b"+PONG", b"-NOAUTH")) else f"unexpected reply {reply[:40]!r}"


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
    parser.add_argument(
        "--workers",
        type=_workers,
        default=1,
        help="uvicorn processes on the one port (default: 1); needs --redis",
    )
    parser.add_argument(
        "--redis",
        type=_redis_url,
        metavar="URL",
        help="share the room and the limits through Redis (redis://HOST:PORT/DB)",
    )
    args = parser.parse_args(argv)
    if args.workers > 1 and args.redis is None:
        parser.error(
            f"--workers {args.workers} needs --redis URL: without Redis each worker would be a separate room "
            "with its own limits (people on different workers would not see each other)"
        )
    if args.redis is not None and (problem := _redis_answers(args.redis)) is not None:
        print(f"cannot reach Redis at {args.redis}: {problem}", file=sys.stderr)
        return 1

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    try:
        sock = socket.create_server((args.host, args.port), family=family, backlog=128)
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    port: int = sock.getsockname()[1]
    tokens = demo_tokens()
    origins = local_origins(port, args.host)

    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host  # noqa: S104 - a wildcard: show loopback
    url = f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"
    width = max(len(name) for name in tokens.values())
    lines = [
        f"ws-toolkit demo chat: {url}",
        "Open a link per person (the token after # stays in the browser), or paste a token into the page:",
        *(f"  {name:<{width}}  {url}#token={token}" for token, name in tokens.items()),
        *([f"{args.workers} worker(s) share the room and the limits through {args.redis}."] if args.redis else []),
        "Tokens are new on every start. Ctrl+C stops the server.",
    ]
    print("\n".join(lines), flush=True)

    logging = {"log_config": _log_config(args.log_level, args.workers), "log_level": args.log_level}
    if args.workers == 1:
        app = create_app(tokens, origins, redis_url=args.redis)
        config = server_config(app, lifespan="off" if args.redis is None else "on", **logging)
        chats = [route.app for route in app.routes if isinstance(route, WebSocketRoute)]
        DemoServer(config, [chat for chat in chats if isinstance(chat, WebSocketApp)]).run(sockets=[sock])
        return 0
    # Each worker is a new process that imports the app: it reads the tokens, origins and URL from here.
    os.environ[CONFIG_VARIABLE] = json.dumps({"tokens": tokens, "origins": origins, "redis": args.redis})
    config = server_config(
        "toolkit_demo._server:worker_app", factory=True, workers=args.workers, lifespan="on", **logging
    )
    Multiprocess(config, sockets=[sock]).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
