"""What a fleet rollout is, as the controller, the console and the command line read it from etcd.

A rollout moves a set of nodes to one target version, a few at a time, and can move them all back.
Its spec never changes after it is written; its status, one record per node and an append-only log of
intents (what a person asked) and decisions (what the controller did, and why) change as it goes.
"""

from __future__ import annotations

import enum
import re
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field, PrivateAttr, ValidationError, field_validator, model_validator

from lifsea_tui.api.models import LABEL_KEY, LABEL_VALUE, REASON_MAX, Strict


class Phase(enum.StrEnum):
    planned = "planned"  # written, not yet looked at by a controller
    waiting = "waiting"  # for a maintenance window
    canary = "canary"
    progressing = "progressing"
    soaking = "soaking"
    paused = "paused"
    rolling_back = "rolling-back"
    rolled_back = "rolled-back"
    completed = "completed"
    aborted = "aborted"


FINISHED = frozenset({Phase.completed, Phase.rolled_back, Phase.aborted})


class NodeState(enum.StrEnum):
    pending = "pending"
    staging = "staging"
    rebooting = "rebooting"
    verifying = "verifying"
    done = "done"
    failed = "failed"
    skipped = "skipped"
    reverted = "reverted"


IN_FLIGHT = frozenset({NodeState.staging, NodeState.rebooting, NodeState.verifying})
SETTLED = frozenset({NodeState.done, NodeState.failed, NodeState.skipped, NodeState.reverted})


class OnFailure(enum.StrEnum):
    pause = "pause"
    rollback = "rollback"


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Window(Strict):
    """A maintenance window: on these weekdays, from `start` for `minutes`, in time zone `tz`."""

    days: list[Day] = Field(default_factory=lambda: list(DAYS), min_length=1)
    start: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    minutes: int = Field(gt=0, le=7 * 24 * 60)
    tz: str = "UTC"

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, tz: str) -> str:
        # An unknown zone would otherwise surface in the controller, at every tick, as an exception.
        try:
            ZoneInfo(tz)
        except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
            raise ValueError(f"unknown time zone {tz!r} (an IANA name such as Europe/Berlin)") from None
        return tz

    @classmethod
    def parse(cls, text: str) -> Window:
        """`DAYS HH:MM LENGTH [ZONE]`, as a person writes it: `mon-fri 02:00 4h Europe/Berlin`,
        `sat,sun 22:00 90m`, `daily 01:00 1h30m`. ValueError says what is wrong."""
        parts = text.split()
        if len(parts) not in (3, 4):
            raise ValueError(f"a window is 'DAYS HH:MM LENGTH [ZONE]', e.g. 'mon-fri 02:00 4h UTC'; not {text!r}")
        days_text, start, length = parts[:3]
        days: list[Day] = []
        for item in days_text.lower().split(","):
            if item in ("daily", "*"):
                days += DAYS
                continue
            first, _, last = item.partition("-")
            if first not in DAYS or (last and last not in DAYS):
                raise ValueError(f"days are mon..sun, ranges (mon-fri), lists (sat,sun) or daily; not {item!r}")
            lo = DAYS.index(first)
            hi = DAYS.index(last) if last else lo
            days += [DAYS[(lo + i) % 7] for i in range((hi - lo) % 7 + 1)]
        match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?", length.lower())
        if not length or match is None:
            raise ValueError(f"a length is hours and minutes: 4h, 90m, 1h30m; not {length!r}")
        minutes = int(match.group(1) or 0) * 60 + int(match.group(2) or 0)
        zone = parts[3] if len(parts) == 4 else "UTC"
        try:
            return cls(days=sorted(set(days), key=DAYS.index), start=start, minutes=minutes, tz=zone)
        except ValidationError as error:
            field = str(error.errors()[0]["loc"][0])
            raise ValueError(
                {
                    "start": f"a start is HH:MM from 00:00 to 23:59; not {start!r}",
                    "minutes": f"a length is more than 0 and at most a week; not {length!r}",
                }.get(field, f"unknown time zone {zone!r} (an IANA name such as Europe/Berlin)")
            ) from None

    def __str__(self) -> str:
        days = "daily" if len(self.days) == 7 else ",".join(self.days)
        hours, minutes = divmod(self.minutes, 60)
        length = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
        return f"{days} {self.start} {length} {self.tz}"


def _begins(window: Window, at: float, days: range) -> list[float]:
    """When `window` begins on each day of `days` (offsets from the day of `at`, in its zone)."""
    zone = ZoneInfo(window.tz)
    today = datetime.fromtimestamp(at, zone).date().toordinal()
    hour, minute = (int(part) for part in window.start.split(":"))
    begins = []
    for offset in days:
        begin = datetime.fromordinal(today + offset).replace(hour=hour, minute=minute, tzinfo=zone)
        if DAYS[begin.weekday()] in window.days:
            begins.append(begin.timestamp())
    return begins


def window_open(windows: list[Window], at: float) -> bool:
    """No windows: any time. Else whether one is open at `at` (one that began days ago may still be)."""
    if not windows:
        return True
    return any(b <= at < b + w.minutes * 60 for w in windows for b in _begins(w, at, range(-7, 1)))


def next_opening(windows: list[Window], at: float) -> float | None:
    """When the next window begins after `at` (None with no windows)."""
    return min((b for w in windows for b in _begins(w, at, range(0, 9)) if b > at), default=None)


Selector = list[tuple[str, str, str | None]]  # (key, "=" | "!=" | "has", value)


def parse_selector(text: str) -> Selector:
    """`zone=a,pool!=edge,gpu`: every term must hold (a bare key: the label is there). ValueError says why."""
    terms: Selector = []
    for term in (part.strip() for part in text.split(",")):
        key, op, value = term, "has", None
        for sign in ("!=", "="):
            if sign in term:
                key, _, value = term.partition(sign)
                op = sign
                break
        key = key.strip()
        if not LABEL_KEY.fullmatch(key) or (value is not None and not LABEL_VALUE.fullmatch(value.strip())):
            raise ValueError(f"a selector is key=value, key!=value or key, joined by commas; not {term!r}")
        terms.append((key, op, value.strip() if value is not None else None))
    return terms


def selects(selector: Selector, labels: dict[str, str]) -> bool:
    for key, op, value in selector:
        if op == "has" and key not in labels:
            return False
        if op == "=" and labels.get(key) != value:
            return False
        if op == "!=" and labels.get(key) == value:
            return False
    return True


def spread(nodes: list[str], groups: dict[str, str]) -> list[str]:
    """The nodes taken from each group in turn (a, b, c, a, b, ...), so each batch spans the groups."""
    queues: dict[str, list[str]] = {}
    for name in nodes:
        queues.setdefault(groups.get(name, ""), []).append(name)
    order: list[str] = []
    while any(queues.values()):
        for queue in queues.values():
            if queue:
                order.append(queue.pop(0))
    return order


class RolloutSpec(Strict):
    """Immutable once written."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    target_version: str = Field(min_length=1, max_length=128)
    nodes: list[str] = Field(min_length=1, description="in order: the canaries first")
    canary: int = Field(default=1, ge=0)
    max_unavailable: int = Field(ge=1, description="nodes in flight at once, this rollout's and other holders'")
    group: str = Field(default="default", description="the reboot slot group it shares with FleetLock clients")
    selector: str | None = Field(default=None, description="the labels the nodes were chosen by, as given")
    group_by: str | None = Field(default=None, description="a label key; group_max limits each of its values")
    groups: dict[str, str] = Field(default_factory=dict, description="node -> its group_by label value")
    group_max: dict[str, int] = Field(default_factory=dict, description="group value -> nodes moving at once")
    soak: float = Field(default=0.0, ge=0, description="seconds of health after each batch before the next")
    node_deadline: float = Field(default=900.0, gt=0, description="seconds from a node's start to its verdict")
    error_budget: int = Field(default=0, ge=0, description="failed nodes tolerated before it stops")
    on_failure: OnFailure = OnFailure.pause
    windows: list[Window] = Field(default_factory=list, description="none: any time")
    pre_hook: str | None = Field(default=None, description="command run before a node is touched; {node} is its name")
    post_hook: str | None = Field(default=None, description="command run after a node passed its gates")
    hook_timeout: float = Field(default=300.0, gt=0)
    probe: str | None = Field(default=None, description="URL template ({node}) that must answer 2xx after a reboot")
    runbooks: list[str] = Field(
        default_factory=list,
        description="runbooks whose first checks must stay clean after a reboot (those that fired before the "
        "node was touched excepted)",
    )
    reason: str = Field(min_length=1, max_length=REASON_MAX, pattern=r"[^ \t\n\r\f\v]")
    created_by: str
    created_at: datetime

    @model_validator(mode="after")
    def _grouped(self) -> RolloutSpec:
        if (self.group_by is None) != (not self.group_max):
            raise ValueError("group_by and group_max go together")
        if self.group_by is not None:
            if set(self.groups) != set(self.nodes):
                raise ValueError("every node of a grouped rollout has its group")
            if set(self.groups.values()) - set(self.group_max):
                raise ValueError("every group has its limit")
            if min(self.group_max.values()) < 1:
                raise ValueError("a group limit of 0 lets no node of it move")
        return self

    def group_of(self, node: str) -> str | None:
        """The group `node` counts in (None when the rollout is not grouped)."""
        return self.groups.get(node) if self.group_by is not None else None

    @field_validator("nodes")
    @classmethod
    def _distinct(cls, nodes: list[str]) -> list[str]:
        if len(set(nodes)) != len(nodes):
            raise ValueError("a node is named twice")
        for name in nodes:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", name):
                raise ValueError(f"not a node name: {name!r}")
        return nodes

    def batches(self) -> list[list[str]]:
        """The canaries alone, then the rest `max_unavailable` at a time."""
        canaries = self.nodes[: self.canary]
        rest = self.nodes[self.canary :]
        chunks = [rest[i : i + self.max_unavailable] for i in range(0, len(rest), self.max_unavailable)]
        return ([canaries] if canaries else []) + chunks


class RolloutStatus(BaseModel):
    phase: Phase
    message: str = Field(description="why the phase is what it is, for a person")
    batch: int = 0
    soak_until: float | None = Field(default=None, description="epoch seconds: the soak of the batch ends")
    paused_from: Phase | None = Field(default=None, description="the phase a resume goes back to")
    target_checksum: str | None = None
    applied: int = Field(default=0, description="the last log entry the controller has acted on")
    updated_at: float


class NodeRollout(BaseModel):
    """One node of a rollout: where it is, and why."""

    name: str
    batch: int
    state: NodeState = NodeState.pending
    direction: Literal["forward", "back"] = "forward"
    reason: str = ""
    deadline: float | None = Field(default=None, description="epoch seconds: failed if not settled by then")
    started_at: float | None = None
    finished_at: float | None = None
    reboot_at: float | None = None
    before_checksum: str | None = None
    before_version: str | None = None
    booted_version: str | None = None
    baseline_failed: list[str] | None = None
    baseline_runbooks: list[str] | None = Field(default=None, description="gate runbooks that fired before")
    pre_hook_done: bool = False
    reason_back: str | None = Field(default=None, description="why it is going back (who asked, or which failure)")


class LogEntry(BaseModel):
    seq: int
    time: float
    who: str = Field(description="the person or controller, as it names itself")
    kind: Literal["intent", "decision"]
    action: str
    reason: str
    writer: str | None = Field(default=None, description="the etcd user that wrote it (its certificate's name)")
    _digest: str | None = PrivateAttr(default=None)  # SHA-256 of the bytes etcd holds, set when read

    @property
    def digest(self) -> str | None:
        return self._digest


class Intent(Strict):
    action: Literal["pause", "resume", "abort", "rollback"]
    reason: str = Field(min_length=1, max_length=REASON_MAX, pattern=r"[^ \t\n\r\f\v]")


class Rollout(BaseModel):
    """Everything etcd holds about one rollout, read at one revision."""

    spec: RolloutSpec
    status: RolloutStatus
    nodes: list[NodeRollout]
    log: list[LogEntry]

    def node(self, name: str) -> NodeRollout:
        return next(node for node in self.nodes if node.name == name)

    def summary(self) -> dict[str, object]:
        """The shape `lifsea-tui rollout status --json` prints (stable: scripts read it)."""
        return {
            "id": self.spec.id,
            "phase": self.status.phase.value,
            "message": self.status.message,
            "target": self.spec.target_version,
            "batch": self.status.batch,
            "batches": len(self.spec.batches()),
            "max_unavailable": self.spec.max_unavailable,
            "selector": self.spec.selector,
            "group_by": self.spec.group_by,
            "group_max": self.spec.group_max,
            "windows": [str(window) for window in self.spec.windows],
            "runbooks": self.spec.runbooks,
            "created_by": self.spec.created_by,
            "reason": self.spec.reason,
            "nodes": [
                {
                    "name": node.name,
                    "state": node.state.value,
                    "direction": node.direction,
                    "batch": node.batch,
                    "group": self.spec.group_of(node.name),
                    "booted": node.booted_version,
                    "before": node.before_version,
                    "reason": node.reason,
                }
                for node in self.nodes
            ],
            "log": [entry.model_dump() for entry in self.log],
        }
