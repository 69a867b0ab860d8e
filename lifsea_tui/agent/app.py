"""The agent's HTTP and websocket API: routes, authorization, the one error shape, metrics."""

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Path, Query, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lifsea_tui import __version__
from lifsea_tui.agent import diagnostics
from lifsea_tui.agent.audit import AuditLog, AuditUnavailable
from lifsea_tui.agent.auth import ANONYMOUS, RULES, Authenticator, AuthError, Identity
from lifsea_tui.agent.config import AgentConfig
from lifsea_tui.agent.errors import ApiError, BackendError
from lifsea_tui.agent.events import EventHub
from lifsea_tui.agent.limits import LimitReached, RefusalTally, StreamLimits
from lifsea_tui.agent.logs import Journal
from lifsea_tui.agent.node import HISTORY_EVENTS, history, node_info
from lifsea_tui.agent.ops import Attachment, OpsManager
from lifsea_tui.agent.ostree import OstreeBackend
from lifsea_tui.agent.recording import RecordingError, cast_path, file_seal, read_meta
from lifsea_tui.agent.services import Services, UnitPolicy, check_unit_name
from lifsea_tui.agent.systemd import SystemdBackend
from lifsea_tui.agent.updates import UpdateManager
from lifsea_tui.api import (
    ActionRequest,
    AuditPage,
    AuditVerify,
    Capability,
    ClockStatus,
    DebugRecord,
    DebugRecorded,
    Deployment,
    DeploymentList,
    DiskUsage,
    DnsStatus,
    EndRequest,
    ErrorBody,
    EtcChanges,
    EventKind,
    HistoryList,
    LogEntry,
    LogPage,
    NodeInfo,
    NodeSummary,
    OperationResult,
    OpsSession,
    OpsSessionList,
    OpsSessionRequest,
    RecordingInfo,
    RecordingList,
    StageRequest,
    UnitActionResult,
    UnitInfo,
    UnitList,
    UpdateStatus,
)
from lifsea_tui.api import ops as proto
from lifsea_tui.api import routes as r
from lifsea_tui.api.routes import CLOSE_FORBIDDEN, CLOSE_TOO_MANY, CLOSE_UNAUTHORIZED

log = logging.getLogger("lifsea.agent")
T = TypeVar("T")

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "malformed request",
        401: "no or unknown token",
        403: "the caller's role may not do this",
        413: "request body too large",
        503: "a backend of the node is unavailable",
    }.items()
}
ACTION_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    409: {"model": ErrorBody, "description": "the node is in the wrong state for this"},
    423: {"model": ErrorBody, "description": "another operation is in progress"},
    502: {"model": ErrorBody, "description": "the backend command failed"},
}


class Agent:
    """Everything one agent process holds: its backends, audit log, events and counters."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.audit = AuditLog(config.audit_dir, config.node_name, tracked=HISTORY_EVENTS)
        self.events = EventHub()
        self.ostree = OstreeBackend(config.sysroot, config.host_root, config.osname)
        self.systemd = SystemdBackend(config.system_bus)
        self.updates = UpdateManager(self.ostree, self.systemd, self.audit, self.events, config.pull_timeout)
        self.ops = OpsManager(config, self.audit, self.events, self.ostree)
        self.services = Services(self.systemd, self.audit, self.events, UnitPolicy.from_config(config.services))
        self.journal = Journal(config.journal_dirs)
        self.authn = Authenticator(config.tokens)
        self.refusals = RefusalTally(self.audit)
        self.follows = StreamLimits("log follows", config.limits.follows_per_caller, config.limits.follows)
        self.event_streams = StreamLimits(
            "event streams", config.limits.event_streams_per_caller, config.limits.event_streams
        )
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.started = time.monotonic()
        self._last_deployments: Any = None
        self._last_booted: str | None = None

    async def start(self) -> None:
        await self.ops.start()
        await self.updates.recover()
        for record in self.audit.of_actions(["node.booted"]):
            if isinstance(record.params.get("checksum"), str):
                self._last_booted = record.params["checksum"]

    async def watch(self) -> None:
        """Notice what changes on disk and in the node (reboots) and tell subscribers; audit new boots."""
        while True:
            try:
                await self.observe()
            except ApiError:
                pass  # the sysroot is unreadable for now; the capability says why
            except Exception:
                log.exception("watch failed")
            await asyncio.sleep(self.config.watch_interval)

    async def observe(self) -> None:
        if self.ostree.unavailable_reason() is not None:
            return
        deployments, _ = await self.ostree.deployments()
        self.note_boot(deployments)
        snapshot = [d.model_dump(mode="json") for d in deployments]
        if snapshot == self._last_deployments:
            return
        self._last_deployments = snapshot
        self.events.publish(EventKind.deployments, {"deployments": snapshot})
        await self.updates.publish()

    def note_boot(self, deployments: list[Deployment]) -> None:
        """Audit a boot into a different deployment the first time anything sees it.

        Called by the watcher and by every request that reads deployments, so a short-lived boot is
        recorded even when it falls between two watcher ticks.
        """
        booted = next((d for d in deployments if d.booted), None)
        if booted is None or booted.checksum == self._last_booted:
            return
        self._last_booted = booted.checksum
        with contextlib.suppress(AuditUnavailable):
            self.audit.append(
                actor="system",
                role=None,
                action="node.booted",
                reason=None,
                params={"checksum": booted.checksum, "version": booted.version},
                outcome="ok",
            )

    def metrics(self) -> str:
        lines = [
            "# HELP lifsea_agent_requests_total HTTP requests by method, route and status.",
            "# TYPE lifsea_agent_requests_total counter",
        ]
        for (method, route, status), count in sorted(self.requests.items()):
            lines.append(f'lifsea_agent_requests_total{{method="{method}",route="{route}",status="{status}"}} {count}')
        lines += [
            "# HELP lifsea_agent_audit_head_seq Sequence number of the newest audit record.",
            "# TYPE lifsea_agent_audit_head_seq gauge",
            f"lifsea_agent_audit_head_seq {self.audit.head.seq}",
            "# HELP lifsea_agent_event_subscribers Open /v1/events connections.",
            "# TYPE lifsea_agent_event_subscribers gauge",
            f"lifsea_agent_event_subscribers {self.events.subscribers}",
            "# HELP lifsea_agent_uptime_seconds Seconds since the agent started.",
            "# TYPE lifsea_agent_uptime_seconds gauge",
            f"lifsea_agent_uptime_seconds {time.monotonic() - self.started:.3f}",
            "# HELP lifsea_agent_info Agent version.",
            "# TYPE lifsea_agent_info gauge",
            f'lifsea_agent_info{{version="{__version__}",node="{self.config.node_name}"}} 1',
        ]
        return "\n".join(lines) + "\n"


class LimitsMiddleware:
    """Refuses oversize bodies before they are read, and counts requests for /metrics."""

    def __init__(self, app: ASGIApp, agent: Agent) -> None:
        self.app = app
        self.agent = agent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.agent.config.max_body_bytes
        method, path = scope["method"], scope["path"]
        route = path if (method, path) in RULES else "other"
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            declared = next((int(v) for k, v in scope["headers"] if k == b"content-length"), 0)
        except ValueError:
            declared = limit + 1
        if declared > limit:
            response = JSONResponse({"error": "too_large", "detail": f"body over {limit} bytes"}, status_code=413)
            await response(scope, receive, counting_send)
        else:
            seen = 0

            async def limited_receive() -> Message:
                nonlocal seen
                message = await receive()
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise ApiError("too_large", f"body over {limit} bytes")
                return message

            await self.app(scope, limited_receive, counting_send)
        self.agent.requests[(method, route, status)] += 1


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


def create_app(config: AgentConfig) -> FastAPI:
    agent = Agent(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await agent.start()
        watcher = asyncio.create_task(agent.watch())
        unit_watcher = asyncio.create_task(agent.services.watch())
        summaries = asyncio.create_task(agent.refusals.run(config.limits.refusal_summary_seconds))
        try:
            yield
        finally:
            watcher.cancel()
            unit_watcher.cancel()
            summaries.cancel()
            await asyncio.gather(summaries, return_exceptions=True)
            await agent.ops.shutdown()
            await agent.updates.shutdown()

    app = FastAPI(title="lifsea-agent", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.agent = agent

    def authorize(conn: HTTPConnection) -> Identity:
        route = conn.scope.get("route")
        path = getattr(route, "path", conn.scope["path"])
        identity = agent.authn.identify(conn.headers.get("authorization"))
        conn.state.identity = identity
        agent.authn.authorize(conn.scope["method"], path, identity)
        return identity

    Caller = Annotated[Identity, Depends(authorize)]
    api = APIRouter(responses=ERRORS)

    def answer(status: UpdateStatus, seq: int, operation: str, accepted: bool = True) -> OperationResult:
        return OperationResult(operation=operation, accepted=accepted, audit_seq=seq, status=status)

    @api.get(r.HEALTHZ, responses={200: {"content": {"text/plain": {}}}}, response_class=PlainTextResponse)
    async def healthz() -> str:
        return "ok\n"

    @api.get(r.METRICS, response_class=PlainTextResponse)
    async def metrics(who: Caller) -> str:
        return agent.metrics()

    @api.get(r.NODE)
    async def get_node(who: Caller) -> NodeInfo:
        info = await node_info(
            config.node_name, config.host_root, agent.ostree, agent.systemd, agent.ops.unavailable_reason()
        )
        try:
            agent.journal.directory()
            info.capabilities["logs"] = Capability(available=True, reason=None)
        except BackendError as error:
            info.capabilities["logs"] = Capability(available=False, reason=error.detail)
        return info

    @api.get(r.DEPLOYMENTS)
    async def get_deployments(who: Caller) -> DeploymentList:
        deployments, booted_known = await agent.ostree.deployments()
        agent.note_boot(deployments)
        return DeploymentList(deployments=deployments, booted_known=booted_known)

    @api.get(r.SUMMARY)
    async def get_summary(who: Caller) -> NodeSummary:
        deployments, booted_known = await agent.ostree.deployments()
        agent.note_boot(deployments)
        head = agent.audit.head
        return NodeSummary(
            deployments=DeploymentList(deployments=deployments, booted_known=booted_known),
            update=await agent.updates.status(),
            audit_head_seq=head.seq,
            audit_head_hash=head.hash if head.seq >= 0 else None,
            ops_sessions=len(agent.ops.sessions),
            failed_units=agent.services.failed_units(),
        )

    @api.get(r.HISTORY)
    async def get_history(who: Caller) -> HistoryList:
        return HistoryList(entries=await history(agent.audit, agent.ostree))

    @api.get(r.UPGRADES)
    async def get_upgrades(who: Caller) -> UpdateStatus:
        return await agent.updates.status()

    @api.post(r.UPGRADES_CHECK, responses=ACTION_ERRORS)
    async def check(body: ActionRequest, who: Caller) -> OperationResult:
        status, seq = await agent.updates.check(who, body.reason)
        return answer(status, seq, "check")

    @api.post(r.UPGRADES_STAGE, status_code=202, responses=ACTION_ERRORS)
    async def stage(body: StageRequest, who: Caller) -> OperationResult:
        status, seq = await agent.updates.stage(who, body.reason, body.checksum)
        return answer(status, seq, "stage")

    @api.post(r.UPGRADES_CANCEL, responses=ACTION_ERRORS)
    async def cancel(body: ActionRequest, who: Caller) -> OperationResult:
        status, seq = await agent.updates.cancel(who, body.reason)
        return answer(status, seq, "cancel")

    @api.post(r.ROLLBACK, responses=ACTION_ERRORS)
    async def rollback(body: ActionRequest, who: Caller) -> OperationResult:
        status, seq = await agent.updates.rollback(who, body.reason)
        return answer(status, seq, "rollback")

    @api.post(r.REBOOT, responses=ACTION_ERRORS)
    async def reboot(body: ActionRequest, who: Caller) -> OperationResult:
        if agent.ostree.unavailable_reason() is None:
            agent.note_boot((await agent.ostree.deployments())[0])
        status, seq = await agent.updates.reboot(who, body.reason)
        return answer(status, seq, "reboot")

    @api.get(r.AUDIT)
    async def get_audit(
        who: Caller,
        before: Annotated[int | None, Query(ge=0, le=2**62)] = None,
        after: Annotated[int | None, Query(ge=-1, le=2**62)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> AuditPage:
        records = await asyncio.to_thread(agent.audit.page, before=before, after=after, limit=limit)
        head = agent.audit.head
        return AuditPage(records=records, head_seq=head.seq, head_hash=head.hash if head.seq >= 0 else None)

    @api.get(r.AUDIT_VERIFY)
    async def get_audit_verify(who: Caller) -> AuditVerify:
        return await asyncio.to_thread(agent.audit.verify, config.ops.recordings)

    # -- services ----------------------------------------------------------------------------------

    UnitName = Annotated[str, Path(max_length=256)]

    @api.get(r.SERVICES)
    async def services(
        who: Caller,
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

    @api.get(r.SERVICE, responses={404: {"model": ErrorBody, "description": "no such unit"}})
    async def service(unit: UnitName, who: Caller) -> UnitInfo:
        return await agent.systemd.unit(check_unit_name(unit))

    @api.post(r.SERVICE_ACTION, responses=ACTION_ERRORS)
    async def service_action(
        unit: UnitName, action: Annotated[str, Path(max_length=16)], body: ActionRequest, who: Caller
    ) -> UnitActionResult:
        return await agent.services.act(who, unit, action, body.reason)

    # -- logs ----------------------------------------------------------------------------------------

    @api.get(r.LOGS)
    async def logs(
        who: Caller,
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

    # -- read-only diagnostics and the audit trail of guided debugging -------------------------------

    async def bounded(seconds: float, look: Callable[..., T], *args: Any) -> T:
        """A diagnostic in a thread, answered within `seconds` even when the node's filesystem hangs."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(look, *args), seconds)
        except TimeoutError:
            raise ApiError("unavailable", f"no answer within {seconds:g} s (is the node's filesystem hung?)") from None

    @api.get(r.DIAGNOSTICS_DISK)
    async def diagnostics_disk(
        who: Caller, path: Annotated[Literal["var", "etc"], Query(description="which filesystem")] = "var"
    ) -> DiskUsage:
        return await bounded(diagnostics.WALK_BUDGET + 3, diagnostics.disk, config.host_root, path)

    @api.get(r.DIAGNOSTICS_CLOCK)
    async def diagnostics_clock(who: Caller) -> ClockStatus:
        return await bounded(3, diagnostics.clock, config.host_root)

    @api.get(r.DIAGNOSTICS_DNS)
    async def diagnostics_dns(
        who: Caller,
        name: Annotated[
            str | None, Query(max_length=253, pattern=r"^[A-Za-z0-9.-]+$", description="default: the node's hostname")
        ] = None,
    ) -> DnsStatus:
        netns = config.ops.namespaces / "net"
        seconds = diagnostics.MAX_NAMESERVERS * diagnostics.DNS_TIMEOUT + 3
        return await bounded(seconds, diagnostics.dns, config.host_root, netns, name)

    @api.get(r.DIAGNOSTICS_ETC)
    async def diagnostics_etc(who: Caller, since: datetime | None = None) -> EtcChanges:
        return await bounded(diagnostics.ETC_BUDGET + 3, diagnostics.etc_changes, config.host_root, since)

    @api.post(r.DEBUG_RECORDS, status_code=201, responses=ACTION_ERRORS)
    async def debug_record(body: DebugRecord, who: Caller) -> DebugRecorded:
        params: dict[str, Any] = {"walk": body.walk, "runbook": body.runbook, "step": body.step}
        if body.evidence:
            params["evidence"] = body.evidence
        try:
            record = agent.audit.append(
                actor=who.actor, role=who.role, action=f"debug.{body.event}", reason=body.summary, params=params,
                outcome="ok",
            )  # fmt: skip
        except AuditUnavailable as error:
            raise ApiError("audit_unavailable", str(error)) from error
        return DebugRecorded(audit_seq=record.seq)

    # -- break-glass ops sessions and their recordings ---------------------------------------------

    SessionId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")]
    OPS_ERRORS: dict[int | str, dict[str, Any]] = {
        **ACTION_ERRORS,
        404: {"model": ErrorBody, "description": "no such session"},
        429: {"model": ErrorBody, "description": "too many ops sessions open"},
    }

    @api.post(r.OPS_SESSIONS, status_code=201, responses=OPS_ERRORS)
    async def ops_start(body: OpsSessionRequest, who: Caller) -> OpsSession:
        return (await agent.ops.create(who, body)).model()

    @api.get(r.OPS_SESSIONS)
    async def ops_list(who: Caller) -> OpsSessionList:
        return OpsSessionList(sessions=agent.ops.open_sessions())

    @api.get(r.OPS_SESSION, responses={404: {"model": ErrorBody, "description": "no such session"}})
    async def ops_get(session_id: SessionId, who: Caller) -> OpsSession:
        session = agent.ops.find(session_id)
        if session is None:
            raise ApiError("not_found", f"no ops session {session_id}")
        return session.model()

    @api.delete(r.OPS_SESSION, responses=OPS_ERRORS)
    async def ops_end(session_id: SessionId, body: EndRequest, who: Caller) -> OpsSession:
        session = agent.ops.sessions.get(session_id)
        if session is None:
            raise ApiError("not_found", f"no open ops session {session_id}")
        await agent.ops.stop(session, who, body.reason)
        return session.model()

    @api.get(r.RECORDINGS)
    async def recordings(who: Caller) -> RecordingList:
        found = []
        directory = config.ops.recordings
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

    @api.get(
        r.RECORDING,
        response_class=FileResponse,
        responses={
            200: {"content": {"application/x-asciicast": {}}},
            404: {"model": ErrorBody, "description": "none"},
            409: {"model": ErrorBody, "description": "changed since it was sealed"},
            503: {"model": ErrorBody, "description": "the view could not be audited"},
        },
    )
    async def recording(recording_id: Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")], who: Caller) -> FileResponse:
        path = cast_path(config.ops.recordings, recording_id)
        if not path.is_file():
            raise ApiError("not_found", f"no recording {recording_id}")
        sealed = await asyncio.to_thread(agent.audit.sealed_recording, recording_id)
        now = await asyncio.to_thread(file_seal, path)
        params = {"recording": recording_id, "sha256": now.sha256, "size": now.size}
        changed = sealed is not None and sealed.sha256 != now.sha256
        detail = (
            f"recording {recording_id} changed since it was sealed (audit record {sealed.seq}: SHA-256 "
            f"{sealed.sha256[:16]}…, now {now.sha256[:16]}…); it is not served as the session's record"
            if changed and sealed is not None
            else ""
        )
        try:
            agent.audit.append(
                actor=who.actor,
                role=who.role,
                action="recording.view",
                reason=None,
                params=params,
                outcome=f"refused: {detail}" if changed else "ok",
            )
        except AuditUnavailable as error:
            raise ApiError("audit_unavailable", f"{error}; a recording is not shown unaudited") from error
        if changed:
            raise ApiError("recording_changed", detail, audited=True)
        return FileResponse(path, media_type="application/x-asciicast", filename=f"{recording_id}.cast")

    app.include_router(api)

    def peer(conn: HTTPConnection) -> str | None:
        return conn.client.host if conn.client else None

    async def accepted(websocket: WebSocket, route: str) -> Identity | None:
        """Accept, then check the token and the rules table; close with 4401/4403 when they refuse."""
        await websocket.accept()
        try:
            identity = agent.authn.identify(websocket.headers.get("authorization"))
            agent.authn.authorize("WS", route, identity)
        except AuthError as error:
            if error.status == 401:
                agent.refusals.count(f"WS {route}", peer(websocket))
            await websocket.close(CLOSE_UNAUTHORIZED if error.status == 401 else CLOSE_FORBIDDEN, error.detail[:120])
            return None
        return identity

    async def over_limit(websocket: WebSocket, route: str, identity: Identity, error: LimitReached) -> None:
        """Close a stream the caller may not hold now: its first such refusal is recorded at once, the
        rest (a caller retrying in a loop) go into the next summary."""
        what = f"limit: WS {route}"
        if agent.refusals.first_in_interval(identity.actor, what):
            with contextlib.suppress(AuditUnavailable):
                agent.audit.append(
                    actor=identity.actor, role=identity.role, action=route.removeprefix("/v1/").replace("/", "."),
                    params={"close_code": CLOSE_TOO_MANY}, outcome=f"refused: {error}",
                )  # fmt: skip
        else:
            agent.refusals.count(what, peer(websocket), identity.actor)
        await websocket.close(CLOSE_TOO_MANY, str(error)[:120])

    async def limited(
        websocket: WebSocket, route: str, limits: StreamLimits, serve: Callable[[WebSocket], Awaitable[None]]
    ) -> None:
        """Serve an authorized caller's stream while it, and everyone together, are within `limits`."""
        identity = await accepted(websocket, route)
        if identity is None:
            return
        try:
            with limits.hold(identity.actor):
                await serve(websocket)
        except LimitReached as error:
            await over_limit(websocket, route, identity, error)

    @app.websocket(r.LOGS_FOLLOW)
    async def logs_follow(websocket: WebSocket) -> None:
        await limited(websocket, r.LOGS_FOLLOW, agent.follows, follow_logs)

    async def follow_logs(websocket: WebSocket) -> None:
        """Entries as JSON text frames as the node writes them (after a backlog, or after a cursor)."""
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
        receiver = asyncio.create_task(_drain(websocket))
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

    @app.websocket(r.OPS_ATTACH)
    async def ops_attach(websocket: WebSocket, session_id: str) -> None:
        def refuse(actor: str, role: str | None, code: int, detail: str) -> None:
            with contextlib.suppress(AuditUnavailable):
                agent.audit.append(
                    actor=actor,
                    role=role,
                    action="ops.session.attach",
                    reason=None,
                    params={"session": session_id[:64], "close_code": code},
                    outcome=f"refused: {detail}"[:500],
                )

        if proto.SUBPROTOCOL not in websocket.scope.get("subprotocols", []):
            await websocket.accept()
            await websocket.close(proto.CLOSE_PROTOCOL, f"subprotocol {proto.SUBPROTOCOL} required")
            return
        await websocket.accept(subprotocol=proto.SUBPROTOCOL)
        try:
            identity = agent.authn.identify(websocket.headers.get("authorization"))
            agent.authn.authorize("WS", r.OPS_ATTACH, identity)
        except AuthError as error:
            code = CLOSE_UNAUTHORIZED if error.status == 401 else CLOSE_FORBIDDEN
            if error.status == 401:
                agent.refusals.count(f"WS {r.OPS_ATTACH}", peer(websocket))
            else:
                refuse(identity.actor, identity.role, code, error.detail)
            await websocket.close(code, error.detail[:120])
            return
        session = agent.ops.sessions.get(session_id)
        if session is None or session.ending:
            await websocket.close(proto.CLOSE_NOT_FOUND, f"no open ops session {session_id[:32]}")
            return
        if identity.actor != session.owner.actor:
            detail = f"session {session_id} belongs to {session.owner.actor}"
            refuse(identity.actor, identity.role, CLOSE_FORBIDDEN, detail)
            await websocket.close(CLOSE_FORBIDDEN, detail)
            return
        inbound = frozenset({proto.STDIN, proto.CONTROL})

        async def receive() -> bytes | str | None:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return None
            return message.get("bytes") if message.get("bytes") is not None else message.get("text", "")

        async def violation(error: proto.ProtocolError) -> None:
            refuse(identity.actor, identity.role, error.code, f"protocol: {error.detail}")
            with contextlib.suppress(Exception):
                await websocket.close(error.code, error.detail[:120])

        try:
            first = await asyncio.wait_for(receive(), 10)
            if first is None:
                return
            _, hello = proto.parse(first, allowed=inbound)
            if not isinstance(hello, dict) or hello["type"] != "hello":
                raise proto.ProtocolError(proto.CLOSE_PROTOCOL, "data before hello")
            cols, rows = proto.size_of(hello)
        except TimeoutError:
            await violation(proto.ProtocolError(proto.CLOSE_PROTOCOL, "no hello within 10 s"))
            return
        except proto.ProtocolError as error:
            await violation(error)
            return
        except (WebSocketDisconnect, RuntimeError, OSError):
            return
        attachment = Attachment(send=websocket.send_bytes, close=websocket.close)
        try:
            await agent.ops.attach(session, attachment, cols, rows)
            while not session.ending:
                frame = await receive()
                if frame is None or session.ending:
                    break
                _, payload = proto.parse(frame, allowed=inbound)
                if isinstance(payload, bytes):
                    await agent.ops.write_input(session, payload)
                elif payload["type"] == "resize":
                    agent.ops.resize(session, *proto.size_of(payload))
                elif payload["type"] == "eof":
                    await agent.ops.write_input(session, b"\x04")
                else:
                    raise proto.ProtocolError(
                        proto.CLOSE_PROTOCOL, f"unexpected control message {payload['type'][:40]!r}"
                    )
        except proto.ProtocolError as error:
            agent.ops.detach(session, attachment)
            await violation(error)
        except RecordingError as error:
            await agent.ops.end(session, f"recording failed: {error}")
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            agent.ops.detach(session, attachment)

    @app.websocket(r.EVENTS)
    async def events(websocket: WebSocket) -> None:
        await limited(websocket, r.EVENTS, agent.event_streams, stream_events)

    async def stream_events(websocket: WebSocket) -> None:
        with agent.events.subscribe() as queue:
            try:
                deployments, booted_known = await agent.ostree.deployments()
                hello: dict[str, Any] = {
                    "node": config.node_name,
                    "audit_head": {"seq": agent.audit.head.seq, "hash": agent.audit.head.hash},
                    "deployments": [d.model_dump(mode="json") for d in deployments],
                    "booted_known": booted_known,
                    "update": (await agent.updates.status()).model_dump(mode="json"),
                }
            except ApiError as error:
                hello = {"node": config.node_name, "error": error.detail}
            await websocket.send_json({"kind": "hello", "data": hello})
            receiver = asyncio.create_task(_drain(websocket))
            try:
                while not receiver.done():
                    getter = asyncio.create_task(queue.get())
                    done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
                    if getter not in done:
                        getter.cancel()
                        break
                    await websocket.send_text(getter.result().model_dump_json())
            except (WebSocketDisconnect, RuntimeError, OSError):
                pass
            finally:
                receiver.cancel()

    # -- one error shape ---------------------------------------------------------------------------------

    def audit_refusal(request: Request, status: int, detail: str) -> None:
        """A refused change is audited too: who tried what, and why it was refused. A caller without a
        valid token is counted into the next summary instead (it must not be able to spend the disk)."""
        if request.method in ("GET", "HEAD", "OPTIONS") or (request.method, request.url.path) not in RULES:
            return
        identity = getattr(request.state, "identity", None)
        if identity is None:
            try:
                identity = agent.authn.identify(request.headers.get("authorization"))
            except AuthError:
                identity = ANONYMOUS
        if identity.role is None:
            agent.refusals.count(f"{request.method} {request.url.path}", peer(request))
            return
        with contextlib.suppress(AuditUnavailable):
            agent.audit.append(
                actor=identity.actor,
                role=identity.role,
                action=request.url.path.removeprefix("/v1/").replace("/", "."),
                reason=None,
                params={"status": status},
                outcome=f"refused: {detail}"[:500],
            )

    def error(status: int, code: str, detail: str) -> JSONResponse:
        return JSONResponse({"error": code, "detail": detail}, status_code=status)

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        if not exc.audited:
            audit_refusal(request, exc.status, exc.detail)
        return error(exc.status, exc.code, exc.detail)

    @app.exception_handler(AuthError)
    async def on_auth_error(request: Request, exc: AuthError) -> JSONResponse:
        audit_refusal(request, exc.status, exc.detail)
        return error(exc.status, exc.code, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for item in exc.errors()[:5]:
            where = ".".join(str(part) for part in item.get("loc", ()) if part != "body") or "body"
            problems.append(f"{where}: {item.get('msg', 'invalid')}")
        detail = "; ".join(problems) or "malformed request"
        audit_refusal(request, 400, detail)
        return error(400, "bad_request", detail)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error(500, "internal", f"internal error ({type(exc).__name__}); see the agent's log")

    app.add_middleware(LimitsMiddleware, agent=agent)
    return app


async def _drain(websocket: WebSocket) -> None:
    """Read and ignore what the client sends; returns when it goes away."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
