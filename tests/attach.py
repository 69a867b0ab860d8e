"""A node that records every frame of the ops attach protocol and answers with a fixed screen, served
for real over TLS on loopback: what a shell screen sends, and a shell screen that always looks the same."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from lifsea_tui.api import OpsAccess, OpsSession, OpsSessionState
from lifsea_tui.api import ops as proto
from lifsea_tui.api import routes as r

SESSION = "5" * 16


def session(*, expires: datetime | None = None) -> OpsSession:
    now = datetime.now(UTC)
    return OpsSession(
        id=SESSION, node="n", actor="me", reason="INC-12 look at the node", ticket=None, access=OpsAccess.read_only,
        state=OpsSessionState.detached, created=now, expires_at=expires or now + timedelta(hours=1),
        recording=SESSION, audit_seq=1,
    )  # fmt: skip


def attach_node(frames: list[bytes], *, screen: bytes = b"$ ", exit_code: int | None = None) -> Starlette:
    """Start a session on POST; on attach, answer the hello, print `screen`, record what comes back, and
    end the session with `exit_code` at once when one is given."""

    async def start(request: Request) -> JSONResponse:
        return JSONResponse(session().model_dump(mode="json"), status_code=201)

    async def attach(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol=proto.SUBPROTOCOL)
        frames.append(await websocket.receive_bytes())
        hello = proto.control("hello", session=SESSION, recording=SESSION, expires_at="2099-01-01T00:00:00Z",
                              replayed=0, reattached=False)  # fmt: skip
        await websocket.send_bytes(hello)
        await websocket.send_bytes(proto.data(proto.STDOUT, screen))
        if exit_code is not None:
            await asyncio.sleep(0.2)
            await websocket.send_bytes(proto.control("exit", code=exit_code, reason="exited"))
            await websocket.close(1000)
            return
        try:
            while True:
                frames.append(await websocket.receive_bytes())
        except WebSocketDisconnect:
            return

    return Starlette(routes=[Route(r.OPS_SESSIONS, start, methods=["POST"]), WebSocketRoute(r.OPS_ATTACH, attach)])
