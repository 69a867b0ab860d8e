"""One node's API, over HTTPS with a bearer token; every failure becomes a NodeError that says why."""

from __future__ import annotations

import asyncio
import enum
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import pydantic
import websockets

from lifsea_tui.api import (
    EVENT,
    ActionRequest,
    AuditPage,
    AuditVerify,
    ClockStatus,
    DebugRecord,
    DebugRecorded,
    DeploymentList,
    DiskUsage,
    DnsStatus,
    EndRequest,
    EtcChanges,
    Event,
    HistoryList,
    LogEntry,
    LogPage,
    NodeInfo,
    NodeSummary,
    OperationResult,
    OpsSession,
    OpsSessionList,
    OpsSessionRequest,
    RecordingList,
    UnitActionResult,
    UnitInfo,
    UnitList,
    UpdateStatus,
)
from lifsea_tui.api import routes as r

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)

# How long an idle connection to a node is kept for the next request: longer than a refresh interval (the
# console's is 5 s), shorter than the agent keeps it (agent/serving.py), so that the client, not the
# agent, closes it and a request never races the agent's close. httpx's default, 5 s, cost a TLS
# handshake with every node at every refresh.
KEEPALIVE_SECONDS = 60.0


class Problem(enum.StrEnum):
    """Why a node did not give an answer, in the words the console shows."""

    unreachable = "unreachable"
    timeout = "timeout"
    tls = "TLS failure"
    unauthorized = "unauthorized"
    forbidden = "forbidden"
    refused = "refused"
    too_many = "too many streams"
    server_error = "server error"
    bad_response = "bad response"


class NodeError(Exception):
    def __init__(self, problem: Problem, detail: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(detail)
        self.problem = problem
        self.detail = detail
        self.status = status
        self.code = code

    def __str__(self) -> str:
        return f"{self.problem}: {self.detail}"


LOG_BATCH = pydantic.TypeAdapter(list[LogEntry])


@dataclass(frozen=True)
class LiveBytes:
    """A live read of a recording: `data` from the offset asked, the bytes written so far, and the seal
    once the session has ended."""

    data: bytes
    size: int
    sealed: str | None


@dataclass(frozen=True)
class NodeTarget:
    name: str
    url: str
    token: str  # "" when the client certificate alone says who the caller is
    ca_file: Path | None = None
    timeout: float = 10.0
    labels: dict[str, str] = field(default_factory=dict, hash=False)  # the inventory's, over the agent's
    client_cert: Path | None = None  # presented to agents that ask for one (their tls.client_ca)
    client_key: Path | None = None

    def tls(self) -> ssl.SSLContext:
        return ssl_context(self.ca_file, self.client_cert, self.client_key)

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


@lru_cache(maxsize=64)
def ssl_context(
    ca_file: Path | None, client_cert: Path | None = None, client_key: Path | None = None
) -> ssl.SSLContext:
    """One context per CA file and client certificate: building one reads the CA bundle, which a fleet
    of a thousand shares."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    if client_cert is not None:
        context.load_cert_chain(client_cert, client_key)
    return context


def _tls_failure(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "SSL" in str(error) or "certificate" in str(error).lower()


_READ = httpx.ByteStream(b"")


def _release(response: httpx.Response) -> None:
    """Let a read response go when its last reference does. httpx's response and its stream refer to each
    other, so every request left a cycle of ~37 objects for the collector: 37,000 a 1,000-node refresh,
    and the collections they caused were the console's longest pauses (key-to-screen p99)."""
    response.stream = _READ


class NodeClient:
    def __init__(self, target: NodeTarget, *, max_connections: int = 4) -> None:
        self.target = target
        self._http = httpx.AsyncClient(
            verify=target.tls(),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=KEEPALIVE_SECONDS,
            ),
        )
        self._headers = target.auth_headers()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        model: type[ModelT],
        *,
        body: pydantic.BaseModel | None = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> ModelT:
        # Connections belong to the loop that opened them; a second loop would hang on them, silently.
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError(f"NodeClient for {self.target.name} used from a second event loop")
        try:
            response = await self._http.request(
                method,
                self.target.url + path,
                json=body.model_dump(mode="json", exclude_none=True) if body is not None else None,
                params=params,
                headers=self._headers,
                timeout=timeout or self.target.timeout,
            )
        except httpx.TimeoutException as error:
            raise NodeError(Problem.timeout, f"no answer within {timeout or self.target.timeout:.0f} s") from error
        except httpx.TransportError as error:
            if _tls_failure(error):
                raise NodeError(Problem.tls, str(error) or "TLS handshake failed") from error
            raise NodeError(Problem.unreachable, str(error) or type(error).__name__) from error
        _release(response)
        if response.status_code >= 400:
            raise self._http_error(response)
        try:
            return model.model_validate_json(response.content)
        except pydantic.ValidationError as error:
            problems = error.errors()
            where = ".".join(str(part) for part in problems[0]["loc"]) if problems else "?"
            what = problems[0]["msg"] if problems else "invalid"
            raise NodeError(
                Problem.bad_response,
                f"answer does not match the API ({where}: {what})"[:300],
                status=response.status_code,
            ) from error

    @staticmethod
    def _http_error(response: httpx.Response) -> NodeError:
        code, detail = None, response.reason_phrase or f"HTTP {response.status_code}"
        try:
            body = response.json()
            if isinstance(body, dict) and isinstance(body.get("detail"), str):
                code, detail = body.get("error"), body["detail"]
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
        status = response.status_code
        problem = {401: Problem.unauthorized, 403: Problem.forbidden}.get(status)
        if problem is None:
            problem = Problem.server_error if status >= 500 else Problem.refused
        return NodeError(problem, f"{detail} (HTTP {status})", status=status, code=code)

    # -- reads ------------------------------------------------------------------------------------------

    async def node(self) -> NodeInfo:
        return await self._request("GET", r.NODE, NodeInfo)

    async def summary(self) -> NodeSummary:
        return await self._request("GET", r.SUMMARY, NodeSummary)

    async def deployments(self) -> DeploymentList:
        return await self._request("GET", r.DEPLOYMENTS, DeploymentList)

    async def history(self) -> HistoryList:
        return await self._request("GET", r.HISTORY, HistoryList)

    async def upgrades(self) -> UpdateStatus:
        return await self._request("GET", r.UPGRADES, UpdateStatus)

    async def audit(self, *, before: int | None = None, after: int | None = None, limit: int = 100) -> AuditPage:
        params = {
            key: value for key, value in (("before", before), ("after", after), ("limit", limit)) if value is not None
        }
        return await self._request("GET", r.AUDIT, AuditPage, params=params)

    async def audit_verify(self) -> AuditVerify:
        return await self._request("GET", r.AUDIT_VERIFY, AuditVerify, timeout=60)

    # -- actions (each needs a reason, which the node audits) ----------------------------------------------

    async def action(self, name: str, request: ActionRequest) -> OperationResult:
        """check, stage (a StageRequest may name the target), cancel, rollback or reboot."""
        paths = {
            "check": r.UPGRADES_CHECK,
            "stage": r.UPGRADES_STAGE,
            "cancel": r.UPGRADES_CANCEL,
            "rollback": r.ROLLBACK,
            "reboot": r.REBOOT,
        }
        # A check pulls from the update server and may take a while; the rest answer at once.
        timeout = 300.0 if name == "check" else None
        return await self._request("POST", paths[name], OperationResult, body=request, timeout=timeout)

    # -- services ------------------------------------------------------------------------------------------

    async def services(self, *, state: str | None = None, kind: str | None = None) -> UnitList:
        params = {key: value for key, value in (("state", state), ("kind", kind)) if value}
        return await self._request("GET", r.SERVICES, UnitList, params=params)

    async def service(self, unit: str) -> UnitInfo:
        return await self._request("GET", r.path(r.SERVICE, unit=unit), UnitInfo)

    async def service_action(self, unit: str, action: str, request: ActionRequest) -> UnitActionResult:
        path = r.path(r.SERVICE_ACTION, unit=unit, action=action)
        return await self._request("POST", path, UnitActionResult, body=request, timeout=30)

    # -- logs ------------------------------------------------------------------------------------------

    async def logs(self, **filters: Any) -> LogPage:
        params = {key: value for key, value in filters.items() if value is not None}
        return await self._request("GET", r.LOGS, LogPage, params=params, timeout=60)

    async def follow_logs(
        self,
        *,
        unit: str | None = None,
        priority: int | None = None,
        grep: str | None = None,
        after_cursor: str | None = None,
        backlog: int = 200,
    ) -> AsyncIterator[list[LogEntry]]:
        """Journal entries as the node writes them, a burst at a time, until the connection ends (NodeError
        says why). A frame is one entry, or an array of them."""
        query = {"unit": unit, "priority": priority, "grep": grep, "after_cursor": after_cursor, "backlog": backlog}
        path = r.LOGS_FOLLOW + "?" + urlencode({key: value for key, value in query.items() if value is not None})
        async for message in self._stream(path, "log stream", max_size=1024 * 1024):
            try:
                if message[:1] in ("[", b"["):
                    yield LOG_BATCH.validate_json(message)
                else:
                    yield [LogEntry.model_validate_json(message)]
            except pydantic.ValidationError as error:
                raise NodeError(Problem.bad_response, "log entry does not match the API") from error

    async def _stream(self, path: str, what: str, *, max_size: int) -> AsyncIterator[str | bytes]:
        """The messages of one of the node's websockets; every way it can fail becomes a NodeError."""
        url = self.target.url.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + path
        try:
            async with websockets.connect(
                url,
                ssl=self.target.tls() if url.startswith("wss://") else None,
                additional_headers=self.target.auth_headers(),
                open_timeout=self.target.timeout,
                max_size=max_size,
            ) as socket:
                async for message in socket:
                    yield message
        except websockets.ConnectionClosedError as error:
            code = error.rcvd.code if error.rcvd else None
            reason = (error.rcvd.reason if error.rcvd else "") or "connection dropped"
            problem = {
                r.CLOSE_UNAUTHORIZED: Problem.unauthorized,
                r.CLOSE_FORBIDDEN: Problem.forbidden,
                r.CLOSE_TOO_MANY: Problem.too_many,
                4400: Problem.refused,
            }.get(code or 0, Problem.unreachable)
            raise NodeError(problem, f"{what} closed: {reason}") from error
        except (OSError, TimeoutError, websockets.InvalidHandshake) as error:
            problem = Problem.tls if _tls_failure(error) else Problem.unreachable
            raise NodeError(problem, f"{what}: {error}") from error

    # -- break-glass ops sessions -------------------------------------------------------------------------

    async def ops_start(self, request: OpsSessionRequest) -> OpsSession:
        return await self._request("POST", r.OPS_SESSIONS, OpsSession, body=request, timeout=60)

    async def ops_sessions(self) -> OpsSessionList:
        return await self._request("GET", r.OPS_SESSIONS, OpsSessionList)

    async def ops_session(self, session_id: str) -> OpsSession:
        return await self._request("GET", r.path(r.OPS_SESSION, session_id=session_id), OpsSession)

    async def ops_end(self, session_id: str, request: EndRequest) -> OpsSession:
        path = r.path(r.OPS_SESSION, session_id=session_id)
        return await self._request("DELETE", path, OpsSession, body=request, timeout=30)

    # -- read-only diagnostics and debugging walks --------------------------------------------------

    async def disk(self, path: str = "var") -> DiskUsage:
        return await self._request("GET", r.DIAGNOSTICS_DISK, DiskUsage, params={"path": path})

    async def clock(self) -> ClockStatus:
        return await self._request("GET", r.DIAGNOSTICS_CLOCK, ClockStatus)

    async def dns(self, name: str | None = None) -> DnsStatus:
        return await self._request("GET", r.DIAGNOSTICS_DNS, DnsStatus, params={"name": name} if name else None)

    async def etc_changes(self, since: datetime | None = None) -> EtcChanges:
        params = {"since": since.isoformat()} if since else None
        return await self._request("GET", r.DIAGNOSTICS_ETC, EtcChanges, params=params)

    async def debug_record(self, record: DebugRecord) -> DebugRecorded:
        return await self._request("POST", r.DEBUG_RECORDS, DebugRecorded, body=record)

    async def recordings(self) -> RecordingList:
        return await self._request("GET", r.RECORDINGS, RecordingList)

    async def _raw(
        self, path: str, what: str, params: dict[str, Any] | None = None, timeout: float = 0
    ) -> httpx.Response:
        """A GET whose answer is bytes, not a model (recordings)."""
        try:
            response = await self._http.get(
                self.target.url + path, headers=self._headers, params=params, timeout=timeout or self.target.timeout
            )
        except httpx.TimeoutException as error:
            raise NodeError(Problem.timeout, f"{what} timed out") from error
        except httpx.TransportError as error:
            if _tls_failure(error):
                raise NodeError(Problem.tls, str(error) or "TLS handshake failed") from error
            raise NodeError(Problem.unreachable, str(error) or type(error).__name__) from error
        _release(response)
        if response.status_code >= 400:
            raise self._http_error(response)
        return response

    async def recording(self, recording_id: str) -> bytes:
        """The asciicast file (the node audits that it was viewed)."""
        path = r.path(r.RECORDING, recording_id=recording_id)
        return (await self._raw(path, "recording download", timeout=max(self.target.timeout, 60))).content

    async def recording_live(self, recording_id: str, offset: int, limit: int = 1 << 20) -> LiveBytes:
        """Bytes of a recording from `offset`, as the agent wrote them (from its memory, while the session
        is open and a while after): NodeError 404 when it no longer holds them."""
        path = r.path(r.RECORDING_LIVE, recording_id=recording_id)
        response = await self._raw(path, "live recording read", {"offset": offset, "limit": limit})
        try:
            size = int(response.headers[r.RECORDING_SIZE_HEADER])
        except (KeyError, ValueError) as error:
            raise NodeError(Problem.bad_response, "a live recording read without its size") from error
        return LiveBytes(response.content, size, response.headers.get(r.RECORDING_SEALED_HEADER))

    # -- events --------------------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[Event]:
        """The node's pushed events, each kind with its own payload: first its hello, then its changes,
        until the socket closes."""
        async for message in self._stream(r.EVENTS, "event stream", max_size=8 * 1024 * 1024):
            try:
                yield EVENT.validate_json(message)
            except pydantic.ValidationError as error:
                raise NodeError(Problem.bad_response, "event does not match the API") from error
