"""Upgrades, rollback and reboot: one operation at a time, each audited before it acts and after."""

from __future__ import annotations

from fastapi import APIRouter

from lifsea_tui.agent.routes.deps import ACTION_ERRORS, ERRORS, AgentDep, Caller
from lifsea_tui.api import ActionRequest, OperationResult, StageRequest, UpdateStatus
from lifsea_tui.api import routes as r

router = APIRouter(responses=ERRORS)


def answer(status: UpdateStatus, seq: int, operation: str) -> OperationResult:
    return OperationResult(operation=operation, accepted=True, audit_seq=seq, status=status)


@router.get(r.UPGRADES)
async def get_upgrades(agent: AgentDep) -> UpdateStatus:
    return await agent.updates.status()


@router.post(r.UPGRADES_CHECK, responses=ACTION_ERRORS)
async def check(body: ActionRequest, who: Caller, agent: AgentDep) -> OperationResult:
    status, seq = await agent.updates.check(who, body.reason)
    return answer(status, seq, "check")


@router.post(r.UPGRADES_STAGE, status_code=202, responses=ACTION_ERRORS)
async def stage(body: StageRequest, who: Caller, agent: AgentDep) -> OperationResult:
    status, seq = await agent.updates.stage(who, body.reason, body.checksum)
    return answer(status, seq, "stage")


@router.post(r.UPGRADES_CANCEL, responses=ACTION_ERRORS)
async def cancel(body: ActionRequest, who: Caller, agent: AgentDep) -> OperationResult:
    status, seq = await agent.updates.cancel(who, body.reason)
    return answer(status, seq, "cancel")


@router.post(r.ROLLBACK, responses=ACTION_ERRORS)
async def rollback(body: ActionRequest, who: Caller, agent: AgentDep) -> OperationResult:
    status, seq = await agent.updates.rollback(who, body.reason)
    return answer(status, seq, "rollback")


@router.post(r.REBOOT, responses=ACTION_ERRORS)
async def reboot(body: ActionRequest, who: Caller, agent: AgentDep) -> OperationResult:
    if agent.ostree.unavailable_reason() is None:
        agent.note_boot((await agent.ostree.deployments())[0])
    status, seq = await agent.updates.reboot(who, body.reason)
    return answer(status, seq, "reboot")
