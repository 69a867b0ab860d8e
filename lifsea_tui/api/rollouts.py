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

from pydantic import BaseModel, Field, field_validator

from lifsea_tui.api.models import REASON_MAX, Strict


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


class RolloutSpec(Strict):
    """Immutable once written."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    target_version: str = Field(min_length=1, max_length=128)
    nodes: list[str] = Field(min_length=1, description="in order: the canaries first")
    canary: int = Field(default=1, ge=0)
    max_unavailable: int = Field(ge=1, description="nodes in flight at once, this rollout's and other holders'")
    group: str = Field(default="default", description="the reboot slot group it shares with FleetLock clients")
    soak: float = Field(default=0.0, ge=0, description="seconds of health after each batch before the next")
    node_deadline: float = Field(default=900.0, gt=0, description="seconds from a node's start to its verdict")
    error_budget: int = Field(default=0, ge=0, description="failed nodes tolerated before it stops")
    on_failure: OnFailure = OnFailure.pause
    windows: list[Window] = Field(default_factory=list, description="none: any time")
    pre_hook: str | None = Field(default=None, description="command run before a node is touched; {node} is its name")
    post_hook: str | None = Field(default=None, description="command run after a node passed its gates")
    hook_timeout: float = Field(default=300.0, gt=0)
    probe: str | None = Field(default=None, description="URL template ({node}) that must answer 2xx after a reboot")
    reason: str = Field(min_length=1, max_length=REASON_MAX, pattern=r"[^ \t\n\r\f\v]")
    created_by: str
    created_at: datetime

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
    pre_hook_done: bool = False
    reason_back: str | None = Field(default=None, description="why it is going back (who asked, or which failure)")


class LogEntry(BaseModel):
    seq: int
    time: float
    who: str
    kind: Literal["intent", "decision"]
    action: str
    reason: str


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
            "created_by": self.spec.created_by,
            "reason": self.spec.reason,
            "nodes": [
                {
                    "name": node.name,
                    "state": node.state.value,
                    "direction": node.direction,
                    "batch": node.batch,
                    "booted": node.booted_version,
                    "before": node.before_version,
                    "reason": node.reason,
                }
                for node in self.nodes
            ],
            "log": [entry.model_dump() for entry in self.log],
        }
