"""uvicorn's two WebSocket implementations against hostile frames, measured: why the toolkit recommends one.

docs/demo.md ("Which server implementation") states these results; this test keeps them true. A raw
socket completes the handshake, then sends one malformed frame; the test records what came back
before the server hung up: a close frame and its code, or nothing.
"""

from __future__ import annotations

import struct

import pytest

import toolkit
from tests.server import WS_IMPLEMENTATIONS, run_server
from tests.test_timeouts import handshake_and_stop_reading
from toolkit import WebSocket

pytestmark = pytest.mark.server


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(text)


def masked_frame_head(opcode: int, length: int) -> bytes:
    """A client frame's head (FIN set, masked) announcing ``length`` bytes of payload, and its mask key."""
    first = 0x80 | opcode
    if length < 126:
        head = struct.pack("!BB", first, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, length)
    return head + b"\0\0\0\0"  # a zero mask key: the payload goes as is


def answer_to(port: int, frame: bytes) -> int | None:
    """Send ``frame`` after a handshake; the close code the server answered with, or None if it just hung up."""
    sock = handshake_and_stop_reading(port)
    try:
        sock.settimeout(5)
        sock.sendall(frame)
        received = b""
        while True:  # until the server hangs up (bounded by the timeout)
            try:
                chunk = sock.recv(4096)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            received += chunk
    finally:
        sock.close()
    if len(received) >= 4 and received[0] == 0x88:  # an unmasked close frame with a code
        return int(struct.unpack("!H", received[2:4])[0])
    assert not received, received
    return None


#: What each implementation answers (close code, or None: dropped without a close frame).
EXPECTED: dict[str, dict[str, int | None]] = {
    "websockets-sansio": {"huge": 1009, "bad-utf8": 1007},
    "wsproto": {"huge": None, "bad-utf8": None},
}


@pytest.mark.parametrize("implementation", WS_IMPLEMENTATIONS)
@pytest.mark.parametrize(
    ("case", "frame"),
    [
        ("huge", masked_frame_head(0x1, 1 << 62)),  # announces 4 EiB
        ("bad-utf8", masked_frame_head(0x1, 2) + b"\xff\xfe"),  # a text frame that is not UTF-8
    ],
)
def test_hostile_frames(implementation: str, case: str, frame: bytes) -> None:
    with run_server(toolkit.WebSocketApp(echo), ws=implementation, ws_max_size=1 << 20) as server:
        assert answer_to(server.port, frame) == EXPECTED[implementation][case]
