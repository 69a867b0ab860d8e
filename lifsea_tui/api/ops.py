"""The `lifsea.ops.v1` protocol of the break-glass shell's attach websocket.

Every message is a binary frame whose first byte names a channel:

- 0 stdin, client to agent: bytes for the shell's terminal.
- 1 stdout, agent to client: bytes the terminal printed (stderr is the same terminal).
- 3 control, both ways: one JSON object with a "type".

The client opens with a control `hello` {cols, rows}; anything else first is a protocol error. The agent
answers with its `hello` {session, recording, expires_at, replayed, reattached}, then sends what the
terminal printed before this attach (a reset and the recent output, `replayed` bytes) on stdout. Later
the client may send `resize` {cols, rows} and `eof`; the agent sends `expiring` {seconds_left} before
the TTL ends and `exit` {code, reason} when the session is over, then closes with 1000. Protocol
violations close with one of the codes below and are audited on the node.
"""

from __future__ import annotations

import json
from typing import Any

SUBPROTOCOL = "lifsea.ops.v1"

STDIN = 0
STDOUT = 1
CONTROL = 3

# The largest frame either side may send (a paste is split by the client).
MAX_FRAME = 64 * 1024
MAX_COLS = 1000
MAX_ROWS = 500

# Close codes (4000-4999 is the application range); 4401/4403 are shared with /v1/events.
CLOSE_PROTOCOL = 4400  # bad JSON, unknown channel or control type, data before hello, bad sizes
CLOSE_NOT_FOUND = 4404  # no such session, or it has ended
CLOSE_TAKEN_OVER = 4409  # the same session was attached from another connection
CLOSE_TOO_LARGE = 4413  # a frame over MAX_FRAME
CLOSE_ENDED = 4410  # the session ended (TTL, DELETE, agent shutdown) while attached; see the exit message
CLOSE_MEANINGS = {
    4400: "protocol violation",
    4401: "not authenticated",
    4403: "not allowed",
    4404: "no such session",
    4409: "attached from another connection",
    4410: "session ended",
    4413: "frame too large",
    1001: "the agent went away",
    1012: "the agent is stopping; its sessions end with it",
}

# Ping every PING_INTERVAL; a peer that does not answer a ping within PING_TIMEOUT is dropped.
PING_INTERVAL = 5.0
PING_TIMEOUT = 15.0


class ProtocolError(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def control(kind: str, **fields: Any) -> bytes:
    return bytes([CONTROL]) + json.dumps({"type": kind, **fields}, separators=(",", ":")).encode()


def data(channel: int, payload: bytes) -> bytes:
    return bytes([channel]) + payload


def parse(frame: bytes | str, *, allowed: frozenset[int]) -> tuple[int, bytes | dict[str, Any]]:
    """Split a frame into (channel, payload); control payloads come back as a dict with a str "type"."""
    if isinstance(frame, str):
        raise ProtocolError(CLOSE_PROTOCOL, "text frame: the protocol uses binary frames")
    if len(frame) > MAX_FRAME + 1:
        raise ProtocolError(CLOSE_TOO_LARGE, f"frame of {len(frame)} bytes (at most {MAX_FRAME})")
    if not frame:
        raise ProtocolError(CLOSE_PROTOCOL, "empty frame")
    channel, payload = frame[0], frame[1:]
    if channel not in allowed:
        raise ProtocolError(CLOSE_PROTOCOL, f"unknown channel {channel}")
    if channel != CONTROL:
        return channel, payload
    try:
        message = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError(CLOSE_PROTOCOL, "control frame is not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError(CLOSE_PROTOCOL, 'control frame without a "type"')
    return channel, message


def size_of(message: dict[str, Any]) -> tuple[int, int]:
    """The (cols, rows) of a hello or resize, validated."""
    cols, rows = message.get("cols"), message.get("rows")
    if not isinstance(cols, int) or not isinstance(rows, int) or isinstance(cols, bool) or isinstance(rows, bool):
        raise ProtocolError(CLOSE_PROTOCOL, f"{message['type']} needs integer cols and rows")
    if not (1 <= cols <= MAX_COLS and 1 <= rows <= MAX_ROWS):
        raise ProtocolError(CLOSE_PROTOCOL, f"terminal size {cols}x{rows} out of range")
    return cols, rows
