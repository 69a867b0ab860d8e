"""The console's side of a break-glass shell: one attachment to an ops session, kept across drops.

`OpsShell.events()` yields what happens, in order: Hello (attached, with the replayed screen tail
following as Output), Output, Expiring, Reconnecting (the connection dropped; the session lives on at
the node for its grace period and the shell re-attaches), Exit (the session is over, with the shell's
exit code) or Closed (the node refused or ended the connection for good). Keystrokes typed while
reconnecting are not queued: replaying blind input into a root shell is worse than losing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from lifsea_tui.api import ops as proto
from lifsea_tui.api import routes as r
from lifsea_tui.client.node import NodeTarget

# Close codes after which re-attaching cannot help.
FINAL_CODES = {
    proto.CLOSE_PROTOCOL,
    proto.CLOSE_NOT_FOUND,
    proto.CLOSE_TAKEN_OVER,
    proto.CLOSE_TOO_LARGE,
    r.CLOSE_UNAUTHORIZED,
    r.CLOSE_FORBIDDEN,
    1000,
    1001,  # going away
    1012,  # the agent is stopping (uvicorn's shutdown): its sessions end with it
}


@dataclass(frozen=True)
class Hello:
    session: str
    recording: str
    expires_at: datetime
    replayed: int
    reattached: bool


@dataclass(frozen=True)
class Output:
    data: bytes


@dataclass(frozen=True)
class Expiring:
    seconds_left: int


@dataclass(frozen=True)
class Reconnecting:
    attempt: int
    error: str
    gives_up_in: float


@dataclass(frozen=True)
class Exit:
    code: int | None
    reason: str


@dataclass(frozen=True)
class Closed:
    code: int | None
    reason: str


ShellEvent = Hello | Output | Expiring | Reconnecting | Exit | Closed


def attach_url(target: NodeTarget, session_id: str) -> str:
    base = target.url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return base + r.path(r.OPS_ATTACH, session_id=session_id)


class OpsShell:
    def __init__(self, target: NodeTarget, session_id: str, *, cols: int = 80, rows: int = 24, grace: float = 60.0):
        self.target = target
        self.session_id = session_id
        self.cols, self.rows = cols, rows
        self.grace = grace
        self._socket: ClientConnection | None = None
        self._closing = False

    @property
    def connected(self) -> bool:
        return self._socket is not None

    async def _connect(self) -> ClientConnection:
        url = attach_url(self.target, self.session_id)
        return await websockets.connect(
            url,
            ssl=self.target.tls() if url.startswith("wss://") else None,
            additional_headers=self.target.auth_headers(),
            subprotocols=[websockets.Subprotocol(proto.SUBPROTOCOL)],
            open_timeout=self.target.timeout,
            ping_interval=proto.PING_INTERVAL,
            ping_timeout=proto.PING_TIMEOUT,
            max_size=proto.MAX_FRAME + 1,
            compression=None,
        )

    async def events(self) -> AsyncIterator[ShellEvent]:
        attempt = 0
        attached_before = False
        dropped_at: float | None = None
        while not self._closing:
            try:
                socket = await self._connect()
            except (OSError, TimeoutError, websockets.InvalidHandshake) as error:
                if not attached_before:
                    yield Closed(None, f"cannot attach: {error}")
                    return
                left = self.grace - (time.monotonic() - (dropped_at or time.monotonic()))
                if left <= 0:
                    yield Closed(None, f"could not re-attach within {self.grace:.0f} s: {error}")
                    return
                attempt += 1
                yield Reconnecting(attempt, str(error), left)
                await asyncio.sleep(min(2.0, 0.25 * 2**attempt, left))
                continue
            self._socket = socket
            try:
                await socket.send(proto.control("hello", cols=self.cols, rows=self.rows))
                async for frame in socket:
                    event = self._decode(frame, attached_before)
                    if isinstance(event, Hello):
                        attached_before = True
                        attempt = 0
                        dropped_at = None
                    if event is not None:
                        yield event
                    if isinstance(event, Exit):
                        return
                code, reason = socket.close_code, socket.close_reason or ""
            except websockets.ConnectionClosed as error:
                code = error.rcvd.code if error.rcvd else None
                reason = (error.rcvd.reason if error.rcvd else "") or "connection dropped"
            except proto.ProtocolError as error:
                await socket.close(error.code, error.detail)
                yield Closed(error.code, f"the node sent a bad frame: {error.detail}")
                return
            finally:
                self._socket = None
            if self._closing:
                return
            if code in FINAL_CODES or not attached_before:
                meaning = proto.CLOSE_MEANINGS.get(code or 0, "closed")
                yield Closed(code, f"{meaning}: {reason}" if reason else meaning)
                return
            dropped_at = dropped_at or time.monotonic()
            attempt += 1
            yield Reconnecting(attempt, reason or "connection dropped", self.grace)

    def _decode(self, frame: bytes | str, reattached: bool) -> ShellEvent | None:
        _, payload = proto.parse(frame, allowed=frozenset({proto.STDOUT, proto.CONTROL}))
        if isinstance(payload, bytes):
            return Output(payload)
        message: dict[str, Any] = payload
        kind = message["type"]
        if kind == "hello":
            return Hello(
                session=str(message.get("session")),
                recording=str(message.get("recording")),
                expires_at=datetime.fromisoformat(str(message.get("expires_at")).replace("Z", "+00:00")),
                replayed=int(message.get("replayed") or 0),
                reattached=bool(message.get("reattached")) or reattached,
            )
        if kind == "expiring":
            return Expiring(int(message.get("seconds_left") or 0))
        if kind == "exit":
            code = message.get("code")
            return Exit(code if isinstance(code, int) else None, str(message.get("reason") or "ended"))
        return None  # a newer agent's message this console does not know: ignore it

    async def _send(self, frame: bytes) -> bool:
        socket = self._socket
        if socket is None:
            return False
        try:
            await socket.send(frame)
        except websockets.ConnectionClosed:
            return False
        return True

    async def send(self, data: bytes) -> bool:
        """Keystrokes or a paste for the shell; False when not attached (they are dropped, not queued)."""
        for start in range(0, len(data), proto.MAX_FRAME):
            if not await self._send(proto.data(proto.STDIN, data[start : start + proto.MAX_FRAME])):
                return False
        return True

    async def resize(self, cols: int, rows: int) -> None:
        cols, rows = max(1, min(cols, proto.MAX_COLS)), max(1, min(rows, proto.MAX_ROWS))
        if (cols, rows) != (self.cols, self.rows):
            self.cols, self.rows = cols, rows
            await self._send(proto.control("resize", cols=cols, rows=rows))

    async def eof(self) -> None:
        await self._send(proto.control("eof"))

    async def close(self) -> None:
        """Detach: the session keeps running at the node until its grace period ends (or it is ended)."""
        self._closing = True
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await self._socket.close()
