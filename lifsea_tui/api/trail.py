"""The audit trail collected off the nodes, as the fleet controller keeps it in etcd (`audit/NODE`) and
the console and `lifsea-tui audit` read it."""

from __future__ import annotations

from pydantic import BaseModel, Field

from lifsea_tui.api.chain import GENESIS


class Problem(BaseModel):
    first_bad_seq: int
    what: str  # for a person: what the node's log no longer holds
    found_at: float


class NodeTrail(BaseModel):
    """What etcd holds of one node's collection: `audit/NODE`."""

    name: str
    collected_seq: int = -1
    collected_hash: str = GENESIS
    node_seq: int | None = None  # the node's head when last asked
    node_hash: str | None = None
    checked_at: float | None = None  # when the node last answered
    lag: float | None = None  # seconds from the newest record written on the node to its collection
    problem: Problem | None = None
    unreachable: str | None = None  # why the last pass could not ask the node
    silent_during: list[str] = Field(
        default_factory=list, description="break-glass sessions that were open when the node stopped answering"
    )

    @property
    def ok(self) -> bool:
        return self.problem is None
