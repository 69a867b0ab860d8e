"""Session recordings: listed with the seal the audit log holds, and served only while they match it; and
read live, as the agent wrote them, from memory (for the copy kept off the node)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import FileResponse, Response

from lifsea_tui.agent import audited
from lifsea_tui.agent.errors import ApiError
from lifsea_tui.agent.recording import cast_path, file_seal, read_meta
from lifsea_tui.agent.routes.deps import ERRORS, AgentDep, Caller
from lifsea_tui.api import ErrorBody, RecordingInfo, RecordingList
from lifsea_tui.api import routes as r

router = APIRouter(responses=ERRORS)
RecordingId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")]
LIVE_PAGE = 1 << 20


@router.get(r.RECORDINGS)
async def recordings(agent: AgentDep) -> RecordingList:
    found = []
    directory = agent.config.ops.recordings
    for path in sorted(directory.glob("*.cast")) if directory.is_dir() else []:
        meta = read_meta(directory, path.stem) or {}
        try:
            found.append(
                RecordingInfo(
                    id=path.stem,
                    actor=str(meta.get("actor", "unknown")),
                    reason=str(meta.get("reason", "")),
                    started=meta.get("started") or datetime.fromtimestamp(path.stat().st_mtime, UTC),
                    ended=meta.get("ended"),
                    size=path.stat().st_size,
                    # The seal the audit log holds, not the sidecar's: both are on the node, only one is chained.
                    sha256=seal.sha256 if (seal := agent.audit.sealed_recording(path.stem)) else None,
                    end_reason=meta.get("end_reason"),
                )
            )
        except (OSError, ValueError):
            continue
    found.sort(key=lambda info: info.started, reverse=True)
    return RecordingList(recordings=found)


@router.get(
    r.RECORDING,
    response_class=FileResponse,
    responses={
        200: {"content": {"application/x-asciicast": {}}},
        404: {"model": ErrorBody, "description": "none"},
        409: {"model": ErrorBody, "description": "changed since it was sealed"},
        503: {"model": ErrorBody, "description": "the view could not be audited"},
    },
)
async def recording(recording_id: RecordingId, who: Caller, agent: AgentDep) -> FileResponse:
    path = cast_path(agent.config.ops.recordings, recording_id)
    if not path.is_file():
        raise ApiError("not_found", f"no recording {recording_id}")
    sealed = await asyncio.to_thread(agent.audit.sealed_recording, recording_id)
    now = await asyncio.to_thread(file_seal, path)
    changed = sealed is not None and sealed.sha256 != now.sha256
    detail = (
        f"recording {recording_id} changed since it was sealed (audit record {sealed.seq}: SHA-256 "
        f"{sealed.sha256[:16]}…, now {now.sha256[:16]}…); it is not served as the session's record"
        if changed and sealed is not None
        else ""
    )
    audited.record(
        agent.audit, who, "recording.view", f"refused: {detail}" if changed else "ok",
        params={"recording": recording_id, "sha256": now.sha256, "size": now.size},
        otherwise="a recording is not shown unaudited",
    )  # fmt: skip
    if changed:
        raise ApiError("recording_changed", detail, audited=True)
    return FileResponse(path, media_type="application/x-asciicast", filename=f"{recording_id}.cast")


@router.get(
    r.RECORDING_LIVE,
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "bytes from `offset`, as written"},
        404: {"model": ErrorBody, "description": "not held in memory from `offset`"},
        503: {"model": ErrorBody, "description": "the first read could not be audited"},
    },
)
async def recording_live(
    recording_id: RecordingId,
    who: Caller,
    agent: AgentDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=LIVE_PAGE)] = LIVE_PAGE,
) -> Response:
    """The bytes of a session's recording from `offset` on, from the agent's memory: what it wrote, even if
    the file on disk has been changed since. Held while the session is open and for a while after its seal
    (the newest LIVE_BYTES only). The first read by each caller is audited."""
    recorder = agent.ops.recorder(recording_id)
    data = recorder.live(offset, limit) if recorder is not None else None
    if recorder is None or data is None:
        raise ApiError("not_found", f"recording {recording_id} is not held in memory from byte {offset}")
    if who.actor not in recorder.followers:
        audited.record(
            agent.audit, who, "recording.follow", "ok", params={"recording": recording_id, "offset": offset},
            otherwise="a recording is not shown unaudited",
        )  # fmt: skip
        recorder.followers.add(who.actor)
    headers = {r.RECORDING_SIZE_HEADER: str(recorder.size)}
    if recorder.sealed is not None:
        headers[r.RECORDING_SEALED_HEADER] = recorder.sealed.sha256
    return Response(data, media_type="application/octet-stream", headers=headers)
