"""Who may call what, checked in one place, and every refusal answered in one shape and recorded once.

`authorize` is the dependency every router is mounted with, HTTP and websocket alike: it looks up the
matched route's template (never the raw path) in RULES, so no handler can forget its check and a route
without a rule is refused for everyone. A websocket is accepted first, so that a refusal reaches the
client as a close code (4401, 4403) it can show, not a failed handshake.

Refusals of callers with a valid token are written to the audit log one by one (who tried what, and
why it was refused); refusals of callers without one are counted into the periodic summary (limits.py),
so an anonymous caller cannot spend the node's disk. Errors become {"error": code, "detail": text}
with the right status, never a traceback.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.exceptions import WebSocketException
from starlette.requests import HTTPConnection, Request

from lifsea_tui.agent import audited, tls
from lifsea_tui.agent.agent import Agent
from lifsea_tui.agent.auth import ANONYMOUS, PUBLIC, RULES, AuthError, Identity
from lifsea_tui.agent.errors import ApiError
from lifsea_tui.api import ops as proto
from lifsea_tui.api.routes import CLOSE_FORBIDDEN, CLOSE_UNAUTHORIZED

log = logging.getLogger("lifsea.agent")
SUBPROTOCOLS = (proto.SUBPROTOCOL,)  # the websocket subprotocols the agent speaks


def agent_of(conn: HTTPConnection) -> Agent:
    agent: Agent = conn.app.state.agent
    return agent


def route_of(conn: HTTPConnection) -> tuple[str, str]:
    """(method, template) of the matched route: "WS" for websockets; the template, never the raw path."""
    method = "WS" if conn.scope["type"] == "websocket" else conn.scope["method"]
    return str(method), str(getattr(conn.scope.get("route"), "path", conn.scope["path"]))


def action_of(conn: HTTPConnection) -> str:
    """How a refused request is named in the audit log: its path, as words (services.cron.service.restart)."""
    return conn.url.path.removeprefix("/v1/").replace("/", ".")[:160]


async def authorize(conn: HTTPConnection) -> Identity:
    """The caller's identity, if RULES lets it call the matched route; refused (and recorded) otherwise."""
    agent = agent_of(conn)
    method, template = route_of(conn)
    websocket = conn.scope["type"] == "websocket"
    if websocket:
        offered = conn.scope.get("subprotocols", [])
        await conn.accept(subprotocol=next((p for p in offered if p in SUBPROTOCOLS), None))  # type: ignore[attr-defined]
    if RULES.get((method, template)) is PUBLIC:
        conn.state.identity = ANONYMOUS  # whatever the caller sends (a stale token must not fail /healthz)
        return ANONYMOUS
    try:
        identity = agent.authn.identify(conn.headers.get("authorization"), tls.peer_cert(conn.scope))
        conn.state.identity = identity
        agent.authn.authorize(method, template, identity)
    except AuthError as error:
        if not websocket:
            raise  # the exception handler answers and records it
        record(conn, error.status, error.detail)
        code = CLOSE_UNAUTHORIZED if error.status == 401 else CLOSE_FORBIDDEN
        raise WebSocketException(code, error.detail[:120]) from error
    return identity


def record(conn: HTTPConnection, status: int, detail: str) -> None:
    """Record a refusal: one audit record for a known caller, a count in the summary for anyone else.
    Refused reads over HTTP are not recorded (they change nothing and are answered with the reason)."""
    agent = agent_of(conn)
    method, template = route_of(conn)
    if method in ("GET", "HEAD", "OPTIONS"):
        return
    identity = getattr(conn.state, "identity", None)
    cert = tls.peer_cert(conn.scope)
    if identity is None:
        try:
            identity = agent.authn.identify(conn.headers.get("authorization"), cert)
        except AuthError:
            identity = ANONYMOUS
    if identity.role is None:
        # Counted, not recorded one by one; a certificate the CA signed but nobody mapped is named.
        actor = f"certificate {tls.describe(cert)}" if cert and not conn.headers.get("authorization") else None
        peer = conn.client.host if conn.client else None
        agent.refusals.count(f"{method} {template}", peer, actor or "unauthenticated")
        return
    audited.note(
        agent.audit, identity, action_of(conn), f"refused: {detail}"[:500],
        params={"status": status, "route": f"{method} {template}"},
    )  # fmt: skip


def _error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


def install(app: FastAPI) -> None:
    """The one error shape, mapped once."""

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        if not exc.audited:
            record(request, exc.status, exc.detail)
        return _error(exc.status, exc.code, exc.detail)

    @app.exception_handler(AuthError)
    async def on_auth_error(request: Request, exc: AuthError) -> JSONResponse:
        record(request, exc.status, exc.detail)
        return _error(exc.status, exc.code, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for item in exc.errors()[:5]:
            where = ".".join(str(part) for part in item.get("loc", ()) if part != "body") or "body"
            problems.append(f"{where}: {item.get('msg', 'invalid')}")
        detail = "; ".join(problems) or "malformed request"
        record(request, 400, detail)
        return _error(400, "bad_request", detail)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal", f"internal error ({type(exc).__name__}); see the agent's log")
