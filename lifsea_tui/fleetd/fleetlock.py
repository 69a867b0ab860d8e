"""FleetLock (the reboot-slot protocol Zincati speaks): POST /v1/pre-reboot and /v1/steady-state.

Slots are the same etcd keys the rollouts take, so a reboot from any client of the protocol counts
against the same limit as the controller's own. Any controller serves it, leader or not: a slot is
taken by an etcd transaction, not by the controller's memory.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from lifsea_tui.client import rollouts as keys
from lifsea_tui.client.etcd import Store, StoreUnavailable


class ClientParams(BaseModel):
    id: str = Field(pattern=r"^[A-Za-z0-9._:-]{1,128}$")
    group: str = Field(pattern=r"^[a-zA-Z0-9.-]{1,64}$")


class LockRequest(BaseModel):
    client_params: ClientParams


def _error(status: int, kind: str, value: str) -> JSONResponse:
    return JSONResponse({"kind": kind, "value": value}, status_code=status)


def app(store: Store, limits: Mapping[str, int], default_limit: int = 1) -> FastAPI:
    """`limits`: slots per group; other groups get `default_limit`."""
    api = FastAPI(title="lifsea-fleetd FleetLock", openapi_url=None, docs_url=None, redoc_url=None)

    async def parse(request: Request) -> ClientParams | JSONResponse:
        if request.headers.get("fleet-lock-protocol") != "true":
            return _error(400, "missing_header", "the fleet-lock-protocol header must be `true`")
        body = await request.body()
        if len(body) > 4096:
            return _error(413, "too_large", "the request body is larger than 4 KiB")
        try:
            return LockRequest.model_validate_json(body).client_params
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            return _error(400, "bad_request", f"{where}: {problem['msg']}")

    @api.post("/v1/pre-reboot")
    async def pre_reboot(request: Request) -> JSONResponse:
        params = await parse(request)
        if isinstance(params, JSONResponse):
            return params
        limit = limits.get(params.group, default_limit)
        try:
            taken = await keys.take_slot(store, params.group, params.id, limit, "FleetLock client")
            if not taken:
                held = ", ".join(slot.holder for slot in await keys.slots(store, params.group))
                return _error(
                    409, "failed_lock_semaphore_full", f"all {limit} slots of group {params.group} are held: {held}"
                )
        except StoreUnavailable as error:
            return _error(503, "store_unavailable", str(error))
        return JSONResponse({"kind": "ok", "value": f"{params.id} holds a slot of {params.group}"})

    @api.post("/v1/steady-state")
    async def steady_state(request: Request) -> JSONResponse:
        params = await parse(request)
        if isinstance(params, JSONResponse):
            return params
        try:
            await keys.free_slot(store, params.group, params.id)
        except StoreUnavailable as error:
            return _error(503, "store_unavailable", str(error))
        return JSONResponse({"kind": "ok", "value": f"{params.id} holds no slot of {params.group}"})

    return api
