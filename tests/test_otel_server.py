"""toolkit_otel on a real uvicorn server on 127.0.0.1, and its Prometheus bridge across processes.

The spans come from the server thread into an in-memory exporter; ``GET /metrics`` is the demo's.
The multiprocess test runs two "workers" as separate processes sharing ``PROMETHEUS_MULTIPROC_DIR``,
as ``uvicorn --workers 2`` would, and scrapes from a third; the last runs docs/observability.md's
example under ``uvicorn --workers 2`` itself.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from toolkit_demo import create_app, local_origins
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin, Subprotocol

import toolkit
from tests.otel_support import Telemetry
from tests.server import LiveServer, SwitchableApp, run_server
from tests.test_server import echo

pytestmark = [pytest.mark.server, pytest.mark.anyio]

STEP: Final = 5.0
TRACE_ID: Final = "4bf92f3577b34da6a3ce929d0e0e4736"
ROOT: Final = Path(__file__).resolve().parent.parent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the websockets client needs asyncio


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[LiveServer, SwitchableApp]]:
    switch = SwitchableApp()
    with run_server(switch) as server:
        yield server, switch


async def test_a_real_connection_gets_its_span_continuing_the_clients_trace(
    live: tuple[LiveServer, SwitchableApp],
) -> None:
    server, switch = live
    telemetry = Telemetry()
    plugin = telemetry.plugin(route="/ws", message_sizes=True)
    switch.app = toolkit.WebSocketApp(echo, plugins=toolkit.PluginManager(plugin))
    headers = {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}
    async with asyncio.timeout(STEP), connect(f"{server.url}/ws?room=7", additional_headers=headers) as client:
        await client.send("hello")
        assert await client.recv() == "hello"
    await server.wait_idle()
    (span,) = telemetry.spans()
    assert span.name == "WS /ws"
    assert span.context is not None
    assert format(span.context.trace_id, "032x") == TRACE_ID
    attributes = dict(span.attributes or {})
    assert attributes["url.path"] == "/ws"  # never the query string
    assert attributes["client.address"] == "127.0.0.1"
    assert attributes["server.port"] == server.port
    assert (attributes["websocket.close.code"], attributes["websocket.closed_by"]) == (1000, "client")
    assert (attributes["websocket.messages.received"], attributes["websocket.bytes.sent"]) == (1, 5)


def get(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=STEP) as response:  # noqa: S310 - our own 127.0.0.1 server
        return response.headers["content-type"], response.read().decode()


async def test_the_demo_serves_its_metrics_in_prometheus_text_format(live: tuple[LiveServer, SwitchableApp]) -> None:
    server, switch = live
    switch.app = create_app({"alice-token": "alice"}, local_origins(server.port))
    origin = Origin(server.http_url)
    async with (
        asyncio.timeout(STEP),
        connect(
            f"{server.url}/ws",
            origin=origin,
            subprotocols=[Subprotocol("chat.v1"), Subprotocol("bearer.alice-token")],
        ),
    ):
        pass
    with pytest.raises(InvalidStatus):
        async with asyncio.timeout(STEP), connect(f"{server.url}/ws", origin=origin):
            pass
    await server.wait_idle()
    content_type, body = await asyncio.to_thread(get, f"{server.http_url}/metrics")
    assert content_type.startswith("text/plain; version=0.0.4")
    lines = body.splitlines()
    expected = [
        'websocket_server_active_connections{http_route="/ws"} 0.0',
        'websocket_server_connections_closed_total{http_route="/ws",websocket_close_code="1000",'
        'websocket_closed_by="client"} 1.0',
        'websocket_server_handshakes_denied_total{http_response_status_code="401",http_route="/ws",'
        'websocket_closed_by="plugin",websocket_plugin="AuthGate"} 1.0',
        'websocket_server_messages_total{http_route="/ws",network_io_direction="receive"} 0.0',
    ]
    for line in expected:
        assert line in lines, f"{line!r} not in the scrape:\n{body}"
    assert any(
        line.startswith('websocket_server_hook_duration_seconds_count{websocket_hook="ws_accept"') for line in lines
    )
    assert "alice-token" not in body


WORKER: Final = textwrap.dedent(
    """
    import asyncio, sys
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    import toolkit
    from toolkit_otel import WebSocketTelemetry
    from toolkit_otel.prometheus import PrometheusBridge

    bridge = PrometheusBridge()
    reader = PeriodicExportingMetricReader(bridge, export_interval_millis=60_000)
    plugin = WebSocketTelemetry(
        meter_provider=MeterProvider(metric_readers=[reader]), route="/chat", message_sizes=True
    )

    async def echo(websocket):
        await websocket.accept()
        async for message in websocket.iter_text():
            await websocket.send_text(message)

    async def main(n):
        app = toolkit.WebSocketApp(echo, plugins=toolkit.PluginManager(plugin))
        incoming = [{"type": "websocket.connect"}] + [{"type": "websocket.receive", "text": "hi"}] * n
        incoming.append({"type": "websocket.disconnect", "code": 1000})
        async def receive():
            return incoming.pop(0)
        async def send(message):
            pass
        scope = {"type": "websocket", "path": "/chat", "headers": [], "query_string": b""}
        await app(scope, receive, send)

    asyncio.run(main(int(sys.argv[1])))
    reader.force_flush()
    """
)
SCRAPE: Final = "from toolkit_otel.prometheus import scrape; print(scrape().decode())"


def test_prometheus_multiprocess_mode_sums_every_worker(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for messages in (2, 3):  # two workers, one after the other: files of both stay
        subprocess.run([sys.executable, "-c", WORKER, str(messages)], env=env, check=True, timeout=60, cwd=ROOT)  # noqa: S603
    scraped = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", SCRAPE], env=env, check=True, timeout=60, capture_output=True, text=True, cwd=ROOT
    ).stdout.splitlines()
    assert 'websocket_server_messages_total{http_route="/chat",network_io_direction="receive"} 5.0' in scraped
    assert 'websocket_server_io_bytes_total{http_route="/chat",network_io_direction="transmit"} 10.0' in scraped
    assert (
        'websocket_server_connections_closed_total{http_route="/chat",websocket_close_code="1000",'
        'websocket_closed_by="client"} 2.0'
    ) in scraped
    # Both workers are gone: their open-connection gauges are forgotten, not summed as stale values.
    assert not [line for line in scraped if line.startswith("websocket_server_active_connections{")]
    duration = [line for line in scraped if line.startswith("websocket_server_connection_duration_seconds_count")]
    assert duration == [
        'websocket_server_connection_duration_seconds_count{http_route="/chat",websocket_closed_by="client"} 2.0'
    ]


# --- the documented setup, under a real `uvicorn --workers 2` --------------------------------------


def documented_example() -> str:
    """docs/observability.md's example.py, as the page has it."""
    from tests.test_docs import python_blocks

    [block] = [b for b in python_blocks(ROOT / "docs" / "observability.md") if "PrometheusBridge()" in b]
    return block


def test_the_documented_setup_sums_every_worker_under_uvicorn_workers(tmp_path: Path) -> None:
    (tmp_path / "example.py").write_text(documented_example())
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "PYTHONPATH": str(tmp_path)}
    server = subprocess.Popen(  # noqa: S603 - our own interpreter; uvicorn's CLI, as the docs run it
        [sys.executable, "-m", "uvicorn", "example:app", "--workers", "2", "--fd", str(sock.fileno())],
        pass_fds=[sock.fileno()],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sock.close()
    try:
        connections = 12

        async def chat() -> None:
            for _ in range(100):  # both workers up: the first connections may come before they listen
                try:
                    async with connect(f"ws://127.0.0.1:{port}/chat", open_timeout=STEP):
                        break
                except OSError:
                    await asyncio.sleep(0.1)
            clients = [await connect(f"ws://127.0.0.1:{port}/chat", open_timeout=STEP) for _ in range(connections)]
            for client in clients:  # open at once: spread over the workers by the kernel
                await client.send("hi")
                assert await asyncio.wait_for(client.recv(), STEP) == "hi"
            for client in clients:
                await client.close()

        asyncio.run(chat())
        wanted = (
            f'websocket_server_messages_total{{http_route="/chat",network_io_direction="receive"}} {connections:.1f}'
        )
        scraped: list[str] = []
        for _ in range(100):  # each worker exports every 5 s; a scrape flushes its own worker first
            scraped = get(f"http://127.0.0.1:{port}/metrics")[1].splitlines()
            if wanted in scraped:
                break
            time.sleep(0.1)
        assert wanted in scraped, [line for line in scraped if line.startswith("websocket_server_messages")]
        closed = [line for line in scraped if line.startswith("websocket_server_connections_closed_total")]
        assert sum(float(line.rsplit(" ", 1)[1]) for line in closed) == connections + 1  # and the probe
        # Which worker took which connection is the kernel's choice (often all to one); that the sum
        # spans processes is test_prometheus_multiprocess_mode_sums_every_worker's point. This one is
        # that the page's setup, as written, runs under the CLI with workers and scrapes the full count.
    finally:
        server.terminate()
        server.wait(STEP * 2)
