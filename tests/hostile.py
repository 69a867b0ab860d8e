"""A hostile node, served for real over TLS on loopback: every string of every answer is an attack.

Everything a node sends is chosen by whoever controls it (or by anyone with a reader token: debug
records, refused requests). This node answers every route the console reads with well-formed API
models whose every text field carries Rich markup that would crash or link, OSC 52 / OSC 0 / OSC 8,
CSI, DCS and C1 sequences, bidirectional overrides, zero-width characters and very long strings; its
event stream, log stream and ops shell do the same, and its actions fail with such error details.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from lifsea_tui.api import (
    AuditPage,
    AuditRecord,
    AuditVerify,
    BadRecording,
    Capability,
    ClockStatus,
    DebugRecorded,
    Deployment,
    DeploymentList,
    DiffSummary,
    DiskUsage,
    DnsProbe,
    DnsStatus,
    EtcChange,
    EtcChanges,
    HistoryEntry,
    HistoryList,
    LogEntry,
    LogPage,
    NodeInfo,
    NodeSummary,
    OpsAccess,
    OpsSession,
    OpsSessionList,
    OpsSessionState,
    PathSize,
    RecordingInfo,
    RecordingList,
    UnitInfo,
    UnitList,
    UpdateState,
    UpdateStatus,
    UpdateTarget,
)
from lifsea_tui.api import ops as proto
from lifsea_tui.api import routes as r
from tests.helpers import serve

MARKUP = "[/nope] [link=https://evil.example/]click me[/link] [bold red]loud [@click=app.quit]quit[/]"
OSC = "\x1b]52;c;cHduZWQ=\x07\x1b]0;PWNED-TITLE\x07\x1b]8;;https://evil.example/\x1b\\link\x1b]8;;\x1b\\"
CONTROL = "\x1b[2J\x1b[H\x1b[31m\x1bP+q\x1b\\\x9b31m\x9d0;C1-TITLE\x9c\x07\x08\r"
TRICKS = "\u202eevil.exe\u202c a\u200bb \u2066x\u2069 \U000e0041"
EVIL = f"{MARKUP} {OSC} {CONTROL} {TRICKS}"
LONG = EVIL + " " + "W" * 20_000
RECORDING_ID = "0123456789abcdef"
SESSION_ID = "fedcba9876543210"
CHECKSUM = "c" * 64
NOW = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
# What a person must still be able to read on the screen, literally.
LITERAL = "[/nope]"


def _evil(name: str) -> str:
    return f"{name}:{EVIL}"


def deployment(index: int, booted: bool) -> Deployment:
    return Deployment(
        index=index, osname=_evil("os"), checksum=f"{index}" * 64, serial=0, version=_evil("v"), timestamp=NOW,
        subject=LONG, origin_refspec=_evil("ref"), booted=booted, default=index == 0, pending=not booted and index == 0,
        rollback=index == 1, pinned=False,
    )  # fmt: skip


def update() -> UpdateStatus:
    diff = DiffSummary(
        added=1, modified=2, removed=3, sample=[_evil("A /usr/x")], packages_added=[_evil("pkg")],
        packages_removed=[_evil("old")], packages_changed=[_evil("changed")],
    )  # fmt: skip
    return UpdateStatus(
        state=UpdateState.failed, refspec=_evil("refspec"), booted_checksum=CHECKSUM,
        targets=[UpdateTarget(checksum=CHECKSUM, version=_evil("7.0"), timestamp=NOW, subject=LONG, diff=diff)],
        operation=None, last_error=LONG, last_checked=NOW, changed_at=NOW,
    )  # fmt: skip


def audit_record(seq: int) -> AuditRecord:
    return AuditRecord(
        seq=seq, time=NOW, node=_evil("node"), actor=_evil("actor"), role=_evil("role"), action=_evil("action"),
        reason=LONG, params={"evil": EVIL}, outcome=_evil("refused"), prev="0" * 64, hash="1" * 64,
    )  # fmt: skip


def unit(name: str, state: str) -> UnitInfo:
    return UnitInfo(
        name=name, description=LONG, load_state=_evil("loaded"), active_state=state, sub_state=_evil("sub"),
        since=NOW, main_pid=42, restarts=7, memory_bytes=1 << 20, result=_evil("result"),
    )  # fmt: skip


def log_entry(index: int) -> LogEntry:
    return LogEntry(
        cursor=f"c{index}", time=NOW, unit=_evil("unit"), identifier=_evil("ident"), priority=3, pid=7,
        message=LONG if index % 2 else EVIL,
    )  # fmt: skip


def ops_session() -> OpsSession:
    return OpsSession(
        id=SESSION_ID, node=_evil("node"), actor=_evil("actor"), reason=LONG, ticket=_evil("ticket"),
        access=OpsAccess.read_only, state=OpsSessionState.detached, created=NOW,
        expires_at=datetime(2099, 1, 1, tzinfo=UTC), recording=RECORDING_ID, audit_seq=1, end_reason=_evil("end"),
    )  # fmt: skip


def recording_file() -> bytes:
    header = {"version": 2, "width": 80, "height": 24, "title": EVIL}
    events = [[0.1, "o", EVIL + "\r\n"], [0.2, "m", EVIL], [0.3, "o", "\x1b]52;c;cHduZWQ=\x07done\r\n"]]
    return "\n".join(json.dumps(line) for line in [header, *events]).encode() + b"\n"


GETS: dict[str, Any] = {
    r.SUMMARY: lambda: NodeSummary(
        deployments=DeploymentList(deployments=[deployment(0, False), deployment(1, True)], booted_known=True),
        update=update(),
        audit_head_seq=3,
        audit_head_hash="1" * 64,
        ops_sessions=1,
        failed_units=[_evil("failed.service"), LONG],
    ),
    r.NODE: lambda: NodeInfo(
        name=_evil("name"),
        machine_id=_evil("mid"),
        os_name=LONG,
        os_version=_evil("ver"),
        kernel=_evil("k"),
        uptime_seconds=12.0,
        agent_version=_evil("agent"),
        booted_checksum=CHECKSUM,
        capabilities={_evil("cap"): Capability(available=False, reason=LONG), "ops_shell": Capability(available=True)},
    ),
    r.DEPLOYMENTS: lambda: DeploymentList(deployments=[deployment(0, False), deployment(1, True)], booted_known=True),
    r.HISTORY: lambda: HistoryList(
        entries=[
            HistoryEntry(
                time=NOW, event=_evil("ev"), checksum=CHECKSUM, version=_evil("v"), actor=_evil("who"), reason=LONG
            )
        ]
    ),
    r.UPGRADES: update,
    r.AUDIT: lambda: AuditPage(records=[audit_record(i) for i in range(4)], head_seq=3, head_hash="1" * 64),
    r.AUDIT_VERIFY: lambda: AuditVerify(
        ok=False,
        records=3,
        head_seq=3,
        head_hash=None,
        first_bad_seq=2,
        problem=LONG,
        bad_recordings=[BadRecording(id=_evil("rec"), audit_seq=1, problem=EVIL)],
    ),
    r.OPS_SESSIONS: lambda: OpsSessionList(sessions=[ops_session()]),
    r.RECORDINGS: lambda: RecordingList(
        recordings=[
            RecordingInfo(
                id=RECORDING_ID,
                actor=_evil("actor"),
                reason=LONG,
                started=NOW,
                ended=NOW,
                size=10,
                sha256=_evil("sha"),
                end_reason=_evil("interrupted"),
            )
        ]
    ),
    r.SERVICES: lambda: UnitList(
        units=[
            unit(_evil("failed.service"), "failed"),
            unit(_evil("nginx.service"), "active"),
            unit("lifsea-app.service", "failed"),
        ]
    ),
    r.LOGS: lambda: LogPage(entries=[log_entry(i) for i in range(6)], cursor="c5"),
    r.DIAGNOSTICS_DISK: lambda: DiskUsage(
        path="/var",
        total_bytes=100,
        free_bytes=1,
        used_bytes=99,
        used_percent=99.0,
        largest=[PathSize(path=_evil("/var/big"), bytes=90)],
        complete=True,
    ),
    r.DIAGNOSTICS_CLOCK: lambda: ClockStatus(node_time=NOW, ntp_synchronized=False, timezone=_evil("tz"), detail=EVIL),
    r.DIAGNOSTICS_DNS: lambda: DnsStatus(
        resolv_conf=LONG,
        nameservers=[_evil("ns")],
        name=_evil("name"),
        probes=[DnsProbe(server=_evil("ns"), ok=False, rcode=None, answers=0, millis=None, error=EVIL)],
    ),
    r.DIAGNOSTICS_ETC: lambda: EtcChanges(
        changes=[EtcChange(path=_evil("/etc/x"), change="modified", mtime=NOW)], complete=True
    ),
}


def make_app() -> Starlette:
    async def get(request: Request) -> Response:
        template = request.scope["route"].path
        if template == r.RECORDING:
            return Response(recording_file(), media_type="application/x-asciicast")
        if template == r.SERVICE:
            return JSONResponse(unit(request.path_params["unit"], "failed").model_dump(mode="json"))
        if template == r.OPS_SESSION and request.method == "GET":
            return JSONResponse(ops_session().model_dump(mode="json"))
        return JSONResponse(GETS[template]().model_dump(mode="json"))

    async def refuse(request: Request) -> Response:
        """Every change fails, with a detail that attacks whoever shows it."""
        if request.scope["route"].path == r.DEBUG_RECORDS:
            return JSONResponse(DebugRecorded(audit_seq=9).model_dump(mode="json"), status_code=201)
        if request.scope["route"].path == r.OPS_SESSIONS:
            return JSONResponse(ops_session().model_dump(mode="json"), status_code=201)
        return JSONResponse({"error": "wrong_state", "detail": LONG}, status_code=409)

    async def events(websocket: WebSocket) -> None:
        await websocket.accept()
        hello = {"node": _evil("node"), "audit_head": {"seq": 3, "hash": "1" * 64}, "error": EVIL}
        await websocket.send_json({"kind": "hello", "time": NOW.isoformat(), "data": hello})
        await websocket.send_json({"kind": "services", "time": NOW.isoformat(), "data": {"unit": EVIL}})
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            return

    async def follow(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(json.dumps([log_entry(i).model_dump(mode="json") for i in range(10)]))
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            return

    async def attach(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol=proto.SUBPROTOCOL)
        await websocket.receive_bytes()  # the client's hello
        await websocket.send_bytes(
            proto.control("hello", session=SESSION_ID, recording=RECORDING_ID, expires_at="2099-01-01T00:00:00Z",
                          replayed=0, reattached=False)
        )  # fmt: skip
        await websocket.send_bytes(proto.data(proto.STDOUT, (EVIL + "\r\n").encode()))
        await asyncio.sleep(0.3)
        await websocket.send_bytes(proto.control("exit", code=3, reason=LONG))
        await websocket.close(1000)

    routes: list[Any] = [Route(path, get, methods=["GET"]) for path in [*GETS, r.RECORDING, r.SERVICE, r.OPS_SESSION]]
    routes += [
        Route(path, refuse, methods=["POST", "DELETE"])
        for path in (r.UPGRADES_CHECK, r.UPGRADES_STAGE, r.UPGRADES_CANCEL, r.ROLLBACK, r.REBOOT, r.SERVICE_ACTION,
                     r.DEBUG_RECORDS, r.OPS_SESSIONS, r.OPS_SESSION)
    ]  # fmt: skip
    routes += [
        WebSocketRoute(r.EVENTS, events),
        WebSocketRoute(r.LOGS_FOLLOW, follow),
        WebSocketRoute(r.OPS_ATTACH, attach),
    ]
    return Starlette(routes=routes)


class HostileNode:
    def __init__(self, cert: Path, key: Path) -> None:
        self.served = serve(
            uvicorn.Config(make_app(), ssl_certfile=str(cert), ssl_keyfile=str(key), log_level="critical",
                           lifespan="off", ws="websockets-sansio")
        )  # fmt: skip
        self.url = self.served.url

    def stop(self) -> None:
        self.served.stop()
