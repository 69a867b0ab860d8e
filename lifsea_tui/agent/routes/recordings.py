"""Session recordings: listed with the seal the audit log holds, and served only while they match it."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse

from lifsea_tui.agent import audited
from lifsea_tui.agent.errors import ApiError
from lifsea_tui.agent.recording import cast_path, file_seal, read_meta
from lifsea_tui.agent.routes.deps import ERRORS, AgentDep, Caller
from lifsea_tui.api import ErrorBody, RecordingInfo, RecordingList
from lifsea_tui.api import routes as r

router = APIRouter(responses=ERRORS)


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
                    started=meta.get("started") or path.stat().st_mtime,
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
async def recording(
    recording_id: Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")], who: Caller, agent: AgentDep
) -> FileResponse:
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
