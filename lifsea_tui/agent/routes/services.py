"""systemd units on the node: listed, read, and started, stopped or restarted (audited, deny-listed)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from lifsea_tui.agent.routes.deps import ACTION_ERRORS, ERRORS, AgentDep, Caller
from lifsea_tui.agent.services import check_unit_name
from lifsea_tui.api import ActionRequest, ErrorBody, UnitActionResult, UnitInfo, UnitList
from lifsea_tui.api import routes as r

router = APIRouter(responses=ERRORS)
UnitName = Annotated[str, Path(max_length=256)]


@router.get(r.SERVICES)
async def services(
    agent: AgentDep,
    state: Annotated[str | None, Query(max_length=32, description="active state: failed, active, ...")] = None,
    kind: Annotated[str | None, Query(max_length=16, description="unit type: service, timer, ...")] = None,
) -> UnitList:
    units = await agent.systemd.units()
    if state:
        units = [u for u in units if u.active_state == state]
    if kind:
        units = [u for u in units if u.name.endswith(f".{kind}")]
    # Failed first, then by name: what an on-call engineer looks at first.
    units.sort(key=lambda u: (u.active_state != "failed", u.name))
    return UnitList(units=units)


@router.get(r.SERVICE, responses={404: {"model": ErrorBody, "description": "no such unit"}})
async def service(unit: UnitName, agent: AgentDep) -> UnitInfo:
    return await agent.systemd.unit(check_unit_name(unit))


@router.post(r.SERVICE_ACTION, responses=ACTION_ERRORS)
async def service_action(
    unit: UnitName, action: Annotated[str, Path(max_length=16)], body: ActionRequest, who: Caller, agent: AgentDep
) -> UnitActionResult:
    return await agent.services.act(who, unit, action, body.reason)
