"""docs/observability.md's waterfall is rendered from real spans: this test makes them and compares.

The bars are placed by the order of the span events (each start and end is one column), not by
their times, so the picture is the same on every run. ``UPDATE_DOCS=1`` rewrites the picture.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import pytest
from opentelemetry.sdk.trace import ReadableSpan

import toolkit
from tests.otel_support import Telemetry
from tests.support import Transport, connect, disconnect, make_scope, text
from toolkit import Accept, WebSocket

DOC: Final = Path(__file__).resolve().parent.parent / "docs" / "observability.md"
BEGIN: Final = "<!-- waterfall: rendered by tests/test_otel_docs.py -->"
END: Final = "<!-- /waterfall -->"
TRACEPARENT: Final = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Gate(toolkit.Plugin):
    def ws_accept(self, *, websocket: WebSocket, accept: Accept) -> None:
        return None


def render(spans: list[ReadableSpan]) -> str:
    moments = sorted({t for span in spans for t in (span.start_time or 0, span.end_time or 0)})
    column = {moment: index for index, moment in enumerate(moments)}
    connection = next(span for span in spans if span.kind.name == "SERVER")
    assert connection.context is not None
    assert connection.parent is not None
    lines = [
        f"trace {connection.context.trace_id:032x} (from the client's traceparent; parent span "
        f"{connection.parent.span_id:016x}, remote)",
        "",
        f"{'span':<24} {'kind':<9} timeline (one column per start or end)",
    ]
    width = len(moments)
    for span in [connection, *(s for s in spans if s is not connection)]:
        start, end = column[span.start_time or 0], column[span.end_time or 0]
        bar = " " * start + ("█" * (end - start) if end > start else "|") + " " * (width - max(end, start + 1))
        name = span.name if span is connection else f"  {span.name}"
        lines.append(f"{name:<24} {span.kind.name:<9} {bar}")
    lines.append("")
    for span in spans:
        if span is connection:
            continue
        linked = [link.context.span_id == connection.context.span_id for link in span.links]
        assert linked == [True]
    lines.append("Each message span is the root of a trace of its own, linked to the connection's span.")
    attributes = dict(connection.attributes or {})
    lines += ["", f"{connection.name} attributes:"]
    lines += [f"  {key} = {attributes[key]!r}" for key in sorted(attributes) if key not in ("client.port",)]
    return "\n".join(lines)


@pytest.mark.anyio
async def test_the_waterfall_in_the_docs_is_rendered_from_real_spans(anyio_backend: str) -> None:
    if anyio_backend != "asyncio":
        pytest.skip("one rendering is enough")
    telemetry = Telemetry()
    manager = toolkit.PluginManager(Gate(), telemetry.plugin(route="/chat", message_spans=1.0))

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol="chat.v1")
        await websocket.send_text(await websocket.receive_text())
        await websocket.close(1000, "done")

    transport = Transport([connect(), text("hello"), disconnect()])
    scope = make_scope(path="/chat", headers=[(b"host", b"example.com"), (b"traceparent", TRACEPARENT)])
    scope["subprotocols"] = ["chat.v1"]
    await toolkit.WebSocketApp(endpoint, plugins=manager)(scope, transport.receive, transport.send)
    picture = render(sorted(telemetry.spans(), key=lambda span: span.start_time or 0))
    block = f"{BEGIN}\n```text\n{picture}\n```\n{END}"
    doc = DOC.read_text(encoding="utf-8")
    start, end = doc.index(BEGIN), doc.index(END) + len(END)
    if os.environ.get("UPDATE_DOCS"):
        DOC.write_text(doc[:start] + block + doc[end:], encoding="utf-8")
        pytest.skip("UPDATE_DOCS is set: wrote the waterfall into docs/observability.md")
    assert doc[start:end] == block
