"""The node's journal: a page of entries, or entries followed as they are written."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from lifsea_tui.agent.errors import ApiError
from lifsea_tui.agent.routes.deps import ERRORS, AgentDep
from lifsea_tui.agent.routes.streams import drain, limited
from lifsea_tui.agent.services import check_unit_name
from lifsea_tui.api import LogEntry, LogPage
from lifsea_tui.api import ops as proto
from lifsea_tui.api import routes as r

router = APIRouter(responses=ERRORS)
LOG_FRAME_BYTES = 512 * 1024


def log_frames(batch: list[LogEntry]) -> Iterator[str]:
    """A burst of entries as JSON arrays of at most LOG_FRAME_BYTES (an entry is at most ~70 KiB)."""
    parts: list[str] = []
    size = 0
    for item in batch:
        text = item.model_dump_json()
        if parts and size + len(text) > LOG_FRAME_BYTES:
            yield "[" + ",".join(parts) + "]"
            parts, size = [], 0
        parts.append(text)
        size += len(text) + 1
    if parts:
        yield "[" + ",".join(parts) + "]"


@router.get(r.LOGS)
async def logs(
    agent: AgentDep,
    unit: Annotated[str | None, Query(max_length=256)] = None,
    priority: Annotated[int | None, Query(ge=0, le=7, description="this and more urgent")] = None,
    since: datetime | None = None,
    grep: Annotated[str | None, Query(max_length=200, description="PCRE pattern on the message")] = None,
    after_cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> LogPage:
    entries = await agent.journal.read(
        unit=check_unit_name(unit) if unit else None,
        priority=priority,
        since=since,
        grep=grep,
        after_cursor=after_cursor,
        limit=limit,
    )
    return LogPage(entries=entries, cursor=entries[-1].cursor if entries else after_cursor)


@router.websocket(r.LOGS_FOLLOW)
async def logs_follow(websocket: WebSocket, agent: AgentDep) -> None:
    """Entries as JSON text frames as the node writes them (after a backlog, or after a cursor)."""

    async def follow(websocket: WebSocket) -> None:
        query = websocket.query_params
        try:
            unit = check_unit_name(query["unit"]) if query.get("unit") else None
            priority = int(query["priority"]) if query.get("priority") else None
            if priority is not None and not 0 <= priority <= 7:
                raise ValueError("priority must be 0..7")
            backlog = int(query.get("backlog", "50"))
            if not 0 <= backlog <= 5000:
                raise ValueError("backlog must be 0..5000")
            grep = query.get("grep") or None
            cursor = query.get("after_cursor") or None
            if (grep and len(grep) > 200) or (cursor and len(cursor) > 512):
                raise ValueError("grep or cursor too long")
        except (ApiError, ValueError) as error:
            await websocket.close(proto.CLOSE_PROTOCOL, str(getattr(error, "detail", error))[:120])
            return

        async def stream() -> None:
            async for batch in agent.journal.follow(
                unit=unit, priority=priority, grep=grep, after_cursor=cursor, backlog=backlog
            ):
                for frame in log_frames(batch):
                    await websocket.send_text(frame)

        sender = asyncio.create_task(stream())
        receiver = asyncio.create_task(drain(websocket))
        try:
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if sender.done() and isinstance(sender.exception(), ApiError):
                await websocket.close(proto.CLOSE_PROTOCOL, str(sender.exception())[:120])
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            sender.cancel()
            receiver.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)

    await limited(websocket, r.LOGS_FOLLOW, agent.follows, follow)
