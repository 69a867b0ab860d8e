"""Node API v1's routes, a router per area. Each is mounted with `refusals.authorize`, so every route,
HTTP and websocket, is checked against RULES by its template before its handler runs."""

from fastapi import APIRouter

from lifsea_tui.agent.routes import audit, diagnostics, logs, node, ops, recordings, services, upgrades

ROUTERS: list[APIRouter] = [
    node.router,
    upgrades.router,
    services.router,
    logs.router,
    diagnostics.router,
    ops.router,
    recordings.router,
    audit.router,
]
