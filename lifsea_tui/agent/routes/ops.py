"""Break-glass ops sessions: start, list, end, and the shell itself over the attach websocket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, WebSocket, WebSocketDisconnect

from lifsea_tui.agent import audited
from lifsea_tui.agent.errors import ApiError
from lifsea_tui.agent.ops import Attachment, OpsManager, Session
from lifsea_tui.agent.recording import RecordingError
from lifsea_tui.agent.routes.deps import ACTION_ERRORS, ERRORS, AgentDep, Caller
from lifsea_tui.api import EndRequest, ErrorBody, OpsSession, OpsSessionList, OpsSessionRequest
from lifsea_tui.api import ops as proto
from lifsea_tui.api import routes as r
from lifsea_tui.api.routes import CLOSE_FORBIDDEN

router = APIRouter(responses=ERRORS)
SessionId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")]
OPS_ERRORS: dict[int | str, dict[str, Any]] = {
    **ACTION_ERRORS,
    404: {"model": ErrorBody, "description": "no such session"},
    429: {"model": ErrorBody, "description": "too many ops sessions open"},
}
INBOUND = frozenset({proto.STDIN, proto.CONTROL})


@router.post(r.OPS_SESSIONS, status_code=201, responses=OPS_ERRORS)
async def ops_start(body: OpsSessionRequest, who: Caller, agent: AgentDep) -> OpsSession:
    return (await agent.ops.create(who, body)).model()


@router.get(r.OPS_SESSIONS)
async def ops_list(agent: AgentDep) -> OpsSessionList:
    return OpsSessionList(sessions=agent.ops.open_sessions())


@router.get(r.OPS_SESSION, responses={404: {"model": ErrorBody, "description": "no such session"}})
async def ops_get(session_id: SessionId, agent: AgentDep) -> OpsSession:
    session = agent.ops.find(session_id)
    if session is None:
        raise ApiError("not_found", f"no ops session {session_id}")
    return session.model()


@router.delete(r.OPS_SESSION, responses=OPS_ERRORS)
async def ops_end(session_id: SessionId, body: EndRequest, who: Caller, agent: AgentDep) -> OpsSession:
    session = agent.ops.sessions.get(session_id)
    if session is None:
        raise ApiError("not_found", f"no open ops session {session_id}")
    await agent.ops.stop(session, who, body.reason)
    return session.model()


@router.websocket(r.OPS_ATTACH)
async def ops_attach(websocket: WebSocket, session_id: str, who: Caller, agent: AgentDep) -> None:
    """The shell, over `lifsea.ops.v1` (api/ops.py); only the session's owner may attach."""

    def refuse(code: int, detail: str) -> None:
        params = {"session": session_id[:64], "close_code": code}
        audited.note(agent.audit, who, "ops.session.attach", f"refused: {detail}"[:500], params=params)

    if websocket.scope.get("subprotocols") is None or proto.SUBPROTOCOL not in websocket.scope["subprotocols"]:
        await websocket.close(proto.CLOSE_PROTOCOL, f"subprotocol {proto.SUBPROTOCOL} required")
        return
    session = agent.ops.sessions.get(session_id)
    if session is None or session.ending:
        await websocket.close(proto.CLOSE_NOT_FOUND, f"no open ops session {session_id[:32]}")
        return
    if who.actor != session.owner.actor:
        detail = f"session {session_id} belongs to {session.owner.actor}"
        refuse(CLOSE_FORBIDDEN, detail)
        await websocket.close(CLOSE_FORBIDDEN, detail)
        return
    await _shell(websocket, agent.ops, session, refuse)


async def _shell(websocket: WebSocket, ops: OpsManager, session: Session, refuse: Callable[[int, str], None]) -> None:
    """The attached shell: hello, then keys in and control messages until the session or the socket ends."""

    async def receive() -> bytes | str | None:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        return message.get("bytes") if message.get("bytes") is not None else message.get("text", "")

    async def violation(error: proto.ProtocolError) -> None:
        refuse(error.code, f"protocol: {error.detail}")
        with contextlib.suppress(Exception):
            await websocket.close(error.code, error.detail[:120])

    try:
        first = await asyncio.wait_for(receive(), 10)
        if first is None:
            return
        _, hello = proto.parse(first, allowed=INBOUND)
        if not isinstance(hello, dict) or hello["type"] != "hello":
            raise proto.ProtocolError(proto.CLOSE_PROTOCOL, "data before hello")
        cols, rows = proto.size_of(hello)
    except TimeoutError:
        await violation(proto.ProtocolError(proto.CLOSE_PROTOCOL, "no hello within 10 s"))
        return
    except proto.ProtocolError as error:
        await violation(error)
        return
    except (WebSocketDisconnect, RuntimeError, OSError):
        return
    attachment = Attachment(send=websocket.send_bytes, close=websocket.close)
    try:
        await ops.attach(session, attachment, cols, rows)
        while not session.ending:
            frame = await receive()
            if frame is None or session.ending:
                break
            _, payload = proto.parse(frame, allowed=INBOUND)
            if isinstance(payload, bytes):
                await ops.write_input(session, payload)
            elif payload["type"] == "resize":
                ops.resize(session, *proto.size_of(payload))
            elif payload["type"] == "eof":
                await ops.write_input(session, b"\x04")
            else:
                raise proto.ProtocolError(proto.CLOSE_PROTOCOL, f"unexpected control message {payload['type'][:40]!r}")
    except proto.ProtocolError as error:
        ops.detach(session, attachment)
        await violation(error)
    except RecordingError as error:
        await ops.end(session, f"recording failed: {error}")
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        ops.detach(session, attachment)
