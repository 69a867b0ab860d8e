"""One ops session as the agent holds it: who, why, until when, its terminal, recording and client."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from lifsea_tui.agent.auth import Identity
from lifsea_tui.agent.recording import Recorder
from lifsea_tui.api import OpsAccess, OpsSession, OpsSessionState

TAIL_BYTES = 64 * 1024  # what a re-attach gets replayed


@dataclass(eq=False)
class Attachment:
    """One websocket attached to a session; `send` writes a whole frame, `close` ends the connection."""

    send: Callable[[bytes], Awaitable[None]]
    close: Callable[[int, str], Awaitable[None]]


@dataclass(eq=False)
class Session:
    id: str
    node: str
    owner: Identity
    reason: str
    ticket: str | None
    access: OpsAccess
    created: datetime
    expires_at: datetime
    audit_seq: int
    recorder: Recorder
    container: str
    bundle: Path
    state: OpsSessionState = OpsSessionState.starting
    master: int | None = None
    pid: int | None = None
    pidfd: int | None = None
    cols: int = 80
    rows: int = 24
    tail: deque[bytes] = field(default_factory=deque)
    tail_size: int = 0
    attachment: Attachment | None = None
    attached_once: bool = False
    detached_at: float | None = None
    last_input: float = field(default_factory=time.monotonic)
    warned: set[int] = field(default_factory=set)
    exit_code: int | None = None
    end_reason: str | None = None
    ending: bool = False
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def model(self) -> OpsSession:
        return OpsSession(
            id=self.id,
            node=self.node,
            actor=self.owner.actor,
            reason=self.reason,
            ticket=self.ticket,
            access=self.access,
            state=self.state,
            created=self.created,
            expires_at=self.expires_at,
            recording=self.recorder.id,
            audit_seq=self.audit_seq,
            exit_code=self.exit_code,
            end_reason=self.end_reason,
        )

    def remember(self, data: bytes) -> None:
        self.tail.append(data)
        self.tail_size += len(data)
        while self.tail_size > TAIL_BYTES and len(self.tail) > 1:
            self.tail_size -= len(self.tail.popleft())

    def replay(self) -> bytes:
        """The screen tail for a re-attach: a terminal reset, then recent output from a line start."""
        data = b"".join(self.tail)
        if len(data) > TAIL_BYTES:
            data = data[-TAIL_BYTES:]
            data = data[data.find(b"\n") + 1 :]
        return b"\x1bc" + data
