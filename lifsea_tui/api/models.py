"""Request and response bodies of node API v1.

One module of a little over 500 lines, on purpose: it is the wire contract that agent, console,
controller and the OpenAPI schema all read, and a reader checking what a route answers finds every
body here, in the order of the API's areas. What is not node API v1 (rollouts, the ops protocol, the
audit chain's encoding) has its own module beside it.
"""

from __future__ import annotations

import enum
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter

# A reason is what an auditor reads months later: short enough for one line, never empty.
REASON_MAX = 500

# Labels name what a node is for (zone=a, pool=edge), as Kubernetes labels do, with the same spelling:
# a key of lower-case letters, digits and . _ / -; a value of letters, digits and . _ - (or empty).
LABEL_KEY = re.compile(r"[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?")
LABELS_MAX = 32


def check_labels(labels: object) -> dict[str, str]:
    """The labels, or ValueError naming the first one that is not a label."""
    if not isinstance(labels, dict):
        raise ValueError('labels are a table of key = "value"')
    if len(labels) > LABELS_MAX:
        raise ValueError(f"at most {LABELS_MAX} labels")
    for key, value in labels.items():
        if not isinstance(key, str) or not LABEL_KEY.fullmatch(key):
            raise ValueError(f"label key {key!r}: lower-case letters, digits and . _ / - (at most 63)")
        if not isinstance(value, str) or not LABEL_VALUE.fullmatch(value):
            raise ValueError(f"label {key}={value!r}: a value is letters, digits and . _ - (at most 63)")
    return dict(labels)


Labels = Annotated[dict[str, str], AfterValidator(check_labels)]


class Strict(BaseModel):
    """A request body: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class Role(enum.StrEnum):
    reader = "reader"
    operator = "operator"
    admin = "admin"
    auditor = "auditor"  # reads everything, recordings included; changes nothing


class ErrorBody(BaseModel):
    error: str = Field(description="machine-readable code, e.g. busy, wrong_state, unauthorized")
    detail: str = Field(description="what went wrong, for a person")


class Capability(BaseModel):
    available: bool
    reason: str | None = Field(default=None, description="why it is not available")


class NodeInfo(BaseModel):
    name: str
    machine_id: str | None
    os_name: str | None
    os_version: str | None
    kernel: str
    uptime_seconds: float | None
    ready_seconds: float | None = Field(
        default=None,
        description="seconds since systemd finished starting the node; null while it is still starting",
    )
    agent_version: str
    booted_checksum: str | None
    capabilities: dict[str, Capability]
    labels: Labels = Field(default_factory=dict, description="what the node is for, from the agent's [labels]")

    def booted_after(self, when: float, now: float, slack: float = 2.0) -> bool:
        """Whether this boot began after `when` (wall-clock seconds; `now` is when this answer was had),
        give or take `slack` for the clocks of asker and node: how a reboot that was asked is seen done."""
        return self.uptime_seconds is not None and now - self.uptime_seconds > when - slack


class Deployment(BaseModel):
    index: int = Field(description="position in the boot order; 0 is the next boot")
    osname: str
    checksum: str
    serial: int
    version: str | None
    timestamp: datetime | None
    subject: str | None
    origin_refspec: str | None
    booted: bool
    default: bool
    pending: bool = Field(description="the next boot, and not what runs now")
    rollback: bool = Field(description="what a rollback would boot")
    pinned: bool


class DeploymentList(BaseModel):
    deployments: list[Deployment]
    booted_known: bool = Field(description="false when the booted deployment cannot be determined")


class HistoryEntry(BaseModel):
    time: datetime
    event: str = Field(description="deployed, booted, rolled-back, undeployed, committed")
    checksum: str | None
    version: str | None
    actor: str | None
    reason: str | None
    audit_seq: int | None = None


class HistoryList(BaseModel):
    entries: list[HistoryEntry]


class UpdateState(enum.StrEnum):
    idle = "idle"
    checking = "checking"
    available = "available"
    staging = "staging"
    staged = "staged"
    failed = "failed"


class DiffSummary(BaseModel):
    added: int
    modified: int
    removed: int
    sample: list[str] = Field(description="a few changed paths, prefixed A, M or D")
    packages_added: list[str]
    packages_removed: list[str]
    packages_changed: list[str]


class UpdateTarget(BaseModel):
    checksum: str
    version: str | None
    timestamp: datetime | None
    subject: str | None
    diff: DiffSummary | None = Field(description="against the booted deployment; newest target only")


class UpdateProgress(BaseModel):
    """How far a check (which fetches the newest release whole, for its diff) or a staging is: libostree's
    own pull progress, objects and bytes; then, staging, the deploy."""

    phase: Literal["pulling", "deploying"]
    fetched: int = Field(description="objects fetched so far")
    requested: int = Field(description="objects the pull knows it needs so far (grows while it scans)")
    scanned_metadata: int = Field(default=0, description="metadata objects scanned")
    bytes_transferred: int
    started_at: datetime
    bytes_per_second: float | None = Field(default=None, description="since the pull started")

    @property
    def fraction(self) -> float | None:
        if self.phase == "deploying":
            return 1.0
        return self.fetched / self.requested if self.requested else None


class UpdateStatus(BaseModel):
    state: UpdateState
    refspec: str | None
    booted_checksum: str | None
    targets: list[UpdateTarget] = Field(description="newer commits on the origin ref, newest first")
    operation: str | None = Field(description="the operation running now, if any")
    last_error: str | None
    last_checked: datetime | None
    changed_at: datetime
    progress: UpdateProgress | None = Field(default=None, description="while checking or staging: how far it is")


class NodeResources(BaseModel):
    """What the node has left, cheap to read (a few /proc files, one statfs, one bus property). Load and
    memory are the kernel's figures, host-wide: on a lab node, the lab machine's."""

    load: list[float] | None = Field(default=None, description="1, 5 and 15 minute load averages")
    cpus: int | None = Field(default=None, description="online CPUs, to read the load against")
    memory_total_bytes: int | None = None
    memory_available_bytes: int | None = Field(default=None, description="MemAvailable: what can be had without swap")
    var_total_bytes: int | None = None
    var_used_bytes: int | None = None
    var_free_bytes: int | None = Field(default=None, description="what an unprivileged writer may still use")
    uptime_seconds: float | None = Field(default=None, description="since the node's systemd started")

    @property
    def var_used_ratio(self) -> float | None:
        if not self.var_total_bytes or self.var_used_bytes is None:
            return None
        return self.var_used_bytes / self.var_total_bytes

    @property
    def memory_used_ratio(self) -> float | None:
        if not self.memory_total_bytes or self.memory_available_bytes is None:
            return None
        return 1 - self.memory_available_bytes / self.memory_total_bytes


class NodeSummary(BaseModel):
    """What a fleet view polls: deployments, update state and audit head in one cheap answer."""

    deployments: DeploymentList
    update: UpdateStatus
    audit_head_seq: int
    audit_head_hash: str | None
    ops_sessions: int = Field(default=0, description="break-glass sessions open on the node")
    failed_units: list[str] | None = Field(
        default=None, description="units in the failed state (at most 50); null while the bus is unreachable"
    )
    labels: Labels = Field(default_factory=dict, description="the agent's [labels], as in /v1/node")
    resources: NodeResources | None = Field(default=None, description="load, memory, /var and uptime")


class ActionRequest(Strict):
    # Not only blanks. Spelled out in ASCII so that every regex engine that reads the schema (Python's,
    # the Rust one pydantic validates with, a client's JavaScript) agrees on what it accepts.
    reason: str = Field(min_length=1, max_length=REASON_MAX, pattern=r"[^ \t\n\r\f\v]")


class StageRequest(ActionRequest):
    checksum: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="which available target; the newest when absent",
    )


class OperationResult(BaseModel):
    operation: str
    accepted: bool
    audit_seq: int
    status: UpdateStatus


class AuditRecord(BaseModel):
    seq: int
    time: datetime
    node: str
    actor: str
    role: str | None
    action: str
    reason: str | None
    params: dict[str, Any]
    outcome: str
    prev: str
    hash: str


class AuditPage(BaseModel):
    records: list[AuditRecord]
    head_seq: int = Field(description="seq of the newest record, -1 when the log is empty")
    head_hash: str | None


class BadRecording(BaseModel):
    id: str
    audit_seq: int = Field(description="the audit record that sealed it")
    problem: str


class AuditVerify(BaseModel):
    ok: bool = Field(description="the chain holds, ends where the agent last wrote, and every sealed recording matches")
    records: int
    head_seq: int
    head_hash: str | None
    first_bad_seq: int | None = Field(description="seq (or line number) of the first bad record")
    problem: str | None
    recordings_checked: int = Field(default=0, description="sealed recordings whose bytes were hashed again")
    bad_recordings: list[BadRecording] = Field(default_factory=list, description="changed or missing since sealed")


class UnitInfo(BaseModel):
    name: str
    description: str
    load_state: str
    active_state: str = Field(description="active, inactive, failed, activating, deactivating, reloading")
    sub_state: str
    since: datetime | None = Field(description="when the unit last changed state")
    main_pid: int | None = None
    restarts: int | None = Field(default=None, description="NRestarts: how often systemd restarted it")
    memory_bytes: int | None = Field(default=None, description="MemoryCurrent, when memory accounting is on")
    result: str | None = Field(default=None, description="why it last stopped: success, exit-code, signal, ...")


class UnitList(BaseModel):
    units: list[UnitInfo]


class UnitActionResult(BaseModel):
    unit: str
    action: str
    job: str = Field(description="systemd's job for the request; /v1/events shows the unit's new state")
    audit_seq: int


class LogEntry(BaseModel):
    cursor: str = Field(description="resume after this entry with after_cursor")
    time: datetime
    unit: str | None
    identifier: str | None = Field(description="SYSLOG_IDENTIFIER")
    priority: int = Field(description="0 emerg … 7 debug")
    pid: int | None
    message: str
    cut: bool = Field(default=False, description="the message was longer and is cut")
    binary: bool = Field(default=False, description="the message was not text; undecodable bytes are escaped")


class LogPage(BaseModel):
    entries: list[LogEntry]
    cursor: str | None = Field(description="the last entry's cursor: pass as after_cursor for what follows")


class EventKind(enum.StrEnum):
    hello = "hello"
    deployments = "deployments"
    update = "update"
    ops = "ops"
    services = "services"
    lagged = "lagged"


# -- break-glass ops sessions ---------------------------------------------------------------------------


class OpsAccess(enum.StrEnum):
    """What a break-glass shell may do to its node; each level is a boundary the agent enforces."""

    read_only = "read-only"  # no path to a write on the node: no signals, ptrace, network changes, mounts
    debug = "debug"  # adds ptrace, signals and network changes (strace, lsof, kill, ip): it CAN change the node
    writable = "writable"  # the node's /etc and /var read-write at /host, as root


ACCESS_TEXT = {
    OpsAccess.read_only: "read-only: nothing this shell does can change the node",
    OpsAccess.debug: "debug: strace, kill and ip can change the node's processes and network",
    OpsAccess.writable: "writable: the node's /etc and /var can be changed at /host",
}


class OpsSessionRequest(ActionRequest):
    ticket: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=r"[^ \t\n\r\f\v]", description="incident or change ticket"
    )
    ttl_seconds: int | None = Field(default=None, ge=10, le=24 * 3600, description="capped by the agent's config")
    access: OpsAccess = Field(default=OpsAccess.read_only, description="only levels the node's config allows")


class OpsSessionState(enum.StrEnum):
    starting = "starting"
    attached = "attached"
    detached = "detached"  # running, nobody attached; torn down when the grace period ends
    ended = "ended"


class OpsSession(BaseModel):
    id: str
    node: str
    actor: str
    reason: str
    ticket: str | None
    access: OpsAccess
    state: OpsSessionState
    created: datetime
    expires_at: datetime
    recording: str = Field(description="id for /v1/recordings/{id}")
    audit_seq: int = Field(description="the audit record of the session's start")
    exit_code: int | None = None
    end_reason: str | None = None


class OpsSessionList(BaseModel):
    sessions: list[OpsSession]


class AuditHead(BaseModel):
    seq: int
    hash: str


class EventsHello(BaseModel):
    """The first message of /v1/events: the node's state now (or why it cannot be read)."""

    node: str
    audit_head: AuditHead | None = None
    deployments: list[Deployment] = Field(default_factory=list)
    booted_known: bool = False
    update: UpdateStatus | None = None
    error: str | None = Field(default=None, description="why the state could not be read")


class DeploymentsChanged(BaseModel):
    deployments: list[Deployment]


class UnitChanged(BaseModel):
    unit: str
    active_state: str | None = None
    sub_state: str | None = None
    result: str | None = None


class OpsChanged(BaseModel):
    session: OpsSession


class Lagged(BaseModel):
    dropped: int = Field(description="events not delivered: read the state again over GETs")


class HelloEvent(BaseModel):
    kind: Literal[EventKind.hello] = EventKind.hello
    time: datetime
    data: EventsHello


class DeploymentsEvent(BaseModel):
    kind: Literal[EventKind.deployments] = EventKind.deployments
    time: datetime
    data: DeploymentsChanged


class UpdateEvent(BaseModel):
    kind: Literal[EventKind.update] = EventKind.update
    time: datetime
    data: UpdateStatus


class OpsEvent(BaseModel):
    kind: Literal[EventKind.ops] = EventKind.ops
    time: datetime
    data: OpsChanged


class ServicesEvent(BaseModel):
    kind: Literal[EventKind.services] = EventKind.services
    time: datetime
    data: UnitChanged


class LaggedEvent(BaseModel):
    kind: Literal[EventKind.lagged] = EventKind.lagged
    time: datetime
    data: Lagged


# What /v1/events sends, each kind with its own payload.
Event = Annotated[
    HelloEvent | DeploymentsEvent | UpdateEvent | OpsEvent | ServicesEvent | LaggedEvent,
    Field(discriminator="kind"),
]
EVENT: TypeAdapter[Event] = TypeAdapter(Event)


class EndRequest(ActionRequest):
    pass


class RecordingInfo(BaseModel):
    id: str
    actor: str
    reason: str
    started: datetime
    ended: datetime | None
    size: int
    sha256: str | None = Field(description="set when the recording is sealed")
    end_reason: str | None


class RecordingList(BaseModel):
    recordings: list[RecordingInfo]


# -- read-only diagnostics, for guided debugging ------------------------------------------------------


class PathSize(BaseModel):
    path: str = Field(description="as the node sees it, e.g. /var/log")
    bytes: int


class DiskUsage(BaseModel):
    path: str = Field(description="the node path measured: /var or /etc")
    total_bytes: int
    free_bytes: int = Field(description="what an unprivileged writer may still use")
    used_bytes: int
    used_percent: float
    largest: list[PathSize] = Field(
        description="the biggest entries below the path (directories summed), biggest first"
    )
    complete: bool = Field(description="false when the size walk stopped at its time budget")


class ClockStatus(BaseModel):
    node_time: datetime
    ntp_synchronized: bool | None = Field(description="the kernel's clock is synchronized; null when unknown")
    timezone: str | None
    detail: str | None = Field(default=None, description="why a value is unknown")


class DnsProbe(BaseModel):
    server: str
    ok: bool
    rcode: int | None = Field(description="the DNS response code; 0 is NOERROR, 3 NXDOMAIN")
    answers: int
    millis: float | None
    error: str | None


class DnsStatus(BaseModel):
    resolv_conf: str = Field(description="/etc/resolv.conf as the node has it (first 4 KiB)")
    nameservers: list[str]
    name: str = Field(description="the name each nameserver was asked for (its A record)")
    probes: list[DnsProbe] = Field(description="one query to each nameserver, from the node's network")


class EtcChange(BaseModel):
    path: str = Field(description="below /etc")
    change: str = Field(description="modified, added (not in the image) or removed (in the image, gone)")
    mtime: datetime | None


class EtcChanges(BaseModel):
    """/etc against the image's defaults (/usr/etc), as `ostree admin config-diff` compares them."""

    changes: list[EtcChange] = Field(description="newest first")
    complete: bool


class DebugEvent(enum.StrEnum):
    start = "start"
    finding = "finding"
    action = "action"
    shell = "shell"
    end = "end"


class DebugRecord(Strict):
    """One step of a guided debugging walk, kept in the node's audit log beside what it led to."""

    walk: str = Field(pattern=r"^[0-9a-f]{16}$", description="the same for every record of one walk")
    runbook: str = Field(min_length=1, max_length=80, pattern=r"^[a-z0-9][a-z0-9-]*$")
    event: DebugEvent
    step: str | None = Field(default=None, max_length=80)
    summary: str = Field(min_length=1, max_length=REASON_MAX, pattern=r"[^ \t\n\r\f\v]")
    evidence: list[Annotated[str, Field(max_length=400)]] = Field(default_factory=list, max_length=20)


class DebugRecorded(BaseModel):
    audit_seq: int
