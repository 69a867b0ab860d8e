"""Read-only looks at the node for guided debugging, and the audit trail of a debugging walk."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Query

from lifsea_tui.agent import audited, diagnostics
from lifsea_tui.agent.errors import ApiError
from lifsea_tui.agent.routes.deps import ACTION_ERRORS, ERRORS, AgentDep, Caller
from lifsea_tui.api import ClockStatus, DebugRecord, DebugRecorded, DiskUsage, DnsStatus, EtcChanges
from lifsea_tui.api import routes as r

router = APIRouter(responses=ERRORS)
T = TypeVar("T")


async def bounded(seconds: float, look: Callable[..., T], *args: Any) -> T:
    """A diagnostic in a thread, answered within `seconds` even when the node's filesystem hangs."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(look, *args), seconds)
    except TimeoutError:
        raise ApiError("unavailable", f"no answer within {seconds:g} s (is the node's filesystem hung?)") from None


@router.get(r.DIAGNOSTICS_DISK)
async def diagnostics_disk(
    agent: AgentDep, path: Annotated[Literal["var", "etc"], Query(description="which filesystem")] = "var"
) -> DiskUsage:
    return await bounded(diagnostics.WALK_BUDGET + 3, diagnostics.disk, agent.config.host_root, path)


@router.get(r.DIAGNOSTICS_CLOCK)
async def diagnostics_clock(agent: AgentDep) -> ClockStatus:
    return await bounded(3, diagnostics.clock, agent.config.host_root)


@router.get(r.DIAGNOSTICS_DNS)
async def diagnostics_dns(
    agent: AgentDep,
    name: Annotated[
        str | None, Query(max_length=253, pattern=r"^[A-Za-z0-9.-]+$", description="default: the node's hostname")
    ] = None,
) -> DnsStatus:
    netns = agent.config.ops.namespaces / "net"
    seconds = diagnostics.MAX_NAMESERVERS * diagnostics.DNS_TIMEOUT + 3
    return await bounded(seconds, diagnostics.dns, agent.config.host_root, netns, name)


@router.get(r.DIAGNOSTICS_ETC)
async def diagnostics_etc(agent: AgentDep, since: datetime | None = None) -> EtcChanges:
    return await bounded(diagnostics.ETC_BUDGET + 3, diagnostics.etc_changes, agent.config.host_root, since)


@router.post(r.DEBUG_RECORDS, status_code=201, responses=ACTION_ERRORS)
async def debug_record(body: DebugRecord, who: Caller, agent: AgentDep) -> DebugRecorded:
    params: dict[str, Any] = {"walk": body.walk, "runbook": body.runbook, "step": body.step}
    if body.evidence:
        params["evidence"] = body.evidence
    record = audited.record(agent.audit, who, f"debug.{body.event}", "ok", reason=body.summary, params=params)
    return DebugRecorded(audit_seq=record.seq)
