"""The node's audit log: pages of records, and the check of its chain, head and sealed recordings."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query

from lifsea_tui.agent.routes.deps import ERRORS, AgentDep
from lifsea_tui.api import AuditPage, AuditVerify
from lifsea_tui.api import routes as r

router = APIRouter(responses=ERRORS)


@router.get(r.AUDIT)
async def get_audit(
    agent: AgentDep,
    before: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    after: Annotated[int | None, Query(ge=-1, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    records = await asyncio.to_thread(agent.audit.page, before=before, after=after, limit=limit)
    head = agent.audit.head
    return AuditPage(records=records, head_seq=head.seq, head_hash=head.hash if head.seq >= 0 else None)


@router.get(r.AUDIT_VERIFY)
async def get_audit_verify(agent: AgentDep) -> AuditVerify:
    return await asyncio.to_thread(agent.audit.verify, agent.config.ops.recordings)
