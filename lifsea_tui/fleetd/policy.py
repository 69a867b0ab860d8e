"""What a rollout's spec and its nodes' records decide, without asking anyone: which nodes start, which
wait and why, which go back, whether the error budget is spent. Pure functions of a Rollout read from
etcd, so the controller's I/O (leadership, fenced writes, node tasks) stays apart from its policy."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from lifsea_tui.api.rollouts import FINISHED, IN_FLIGHT, NodeRollout, NodeState, Phase, Rollout, Window, next_opening


def closed_until(windows: list[Window], now: float) -> str:
    """'; the next opens Mon 02:00 UTC (in 3 h 5 min)', for a person reading why nothing moves."""
    opens = next_opening(windows, now)
    if opens is None:
        return ""
    hours, minutes = divmod(int((opens - now + 59) // 60), 60)
    days, hours = divmod(hours, 24)
    wait = f"{days} d {hours} h" if days else f"{hours} h {minutes} min" if hours else f"{minutes} min"
    return f"; the next opens {datetime.fromtimestamp(opens, UTC):%a %H:%M} UTC (in {wait})"


def skip_pending(rollout: Rollout, why: str) -> list[NodeRollout]:
    now = time.time()
    return [
        node.model_copy(update={"state": NodeState.skipped, "reason": why, "finished_at": now})
        for node in rollout.nodes
        if node.state is NodeState.pending
    ]


def turn_back(rollout: Rollout, why: str | None = None) -> list[NodeRollout]:
    """Settled nodes the rollout moved go back; untouched ones are skipped; in-flight ones follow later."""
    now, changed = time.time(), []
    why = why or rollout.status.message
    for node in rollout.nodes:
        if node.direction != "forward" or node.state in IN_FLIGHT:
            continue
        if node.state is NodeState.pending:
            changed.append(
                node.model_copy(update={"state": NodeState.skipped, "reason": "never moved", "finished_at": now})
            )
        elif node.before_checksum is not None and node.state in (NodeState.done, NodeState.failed):
            changed.append(
                node.model_copy(
                    update={
                        "state": NodeState.pending,
                        "direction": "back",
                        "reason": "to go back",
                        "reason_back": why,
                    }
                )
            )
    return changed


def failed_forward(rollout: Rollout) -> list[NodeRollout]:
    return [n for n in rollout.nodes if n.direction == "forward" and n.state is NodeState.failed]


def budget_exceeded(rollout: Rollout) -> str | None:
    failed = failed_forward(rollout)
    canary_failed = [n for n in failed if n.batch == 0 and rollout.spec.canary]
    if canary_failed:
        return f"canary {canary_failed[0].name} failed: {canary_failed[0].reason}"
    if len(failed) > rollout.spec.error_budget:
        return (
            f"{len(failed)} failed, more than the error budget of {rollout.spec.error_budget}: "
            f"{failed[-1].name}: {failed[-1].reason}"
        )
    return None


def within_groups(rollout: Rollout, pending: list[NodeRollout]) -> tuple[list[NodeRollout], list[NodeRollout]]:
    """The pending nodes their group's limit lets start, and the others (with a new reason to wait)."""
    spec = rollout.spec
    if spec.group_by is None:
        return pending, []
    moving: dict[str, int] = {}
    for node in rollout.nodes:
        if node.state in IN_FLIGHT:
            group = spec.groups[node.name]
            moving[group] = moving.get(group, 0) + 1
    admitted, held_back = [], []
    for node in pending:
        group = spec.groups[node.name]
        limit = spec.group_max[group]
        if moving.get(group, 0) < limit:
            moving[group] = moving.get(group, 0) + 1
            admitted.append(node)
            continue
        why = f"waiting: {limit} of {spec.group_by}={group or '(none)'} already moving"
        if node.reason != why:
            held_back.append(node.model_copy(update={"reason": why}))
    return admitted, held_back


def intent(rollout: Rollout, action: str, who: str) -> tuple[dict[str, Any], list[NodeRollout]] | None:
    """What a person's pause, resume, abort or rollback changes (status fields, node records), or None
    when there is nothing to do in the rollout's phase."""
    phase = rollout.status.phase
    if action == "pause" and phase not in FINISHED and phase is not Phase.paused:
        return {"phase": Phase.paused, "paused_from": phase, "message": f"paused by {who}"}, []
    if action == "resume" and phase is Phase.paused:
        back = rollout.status.paused_from or Phase.progressing
        return {"phase": back, "paused_from": None, "message": f"resumed by {who}"}, []
    if action == "abort" and phase not in FINISHED:
        skipped = skip_pending(rollout, "the rollout was aborted")
        return {"phase": Phase.aborted, "message": f"aborted by {who}"}, skipped
    if action == "rollback" and phase not in (Phase.rolling_back, Phase.rolled_back, Phase.aborted):
        going = turn_back(rollout, f"asked by {who}")
        return {"phase": Phase.rolling_back, "message": f"rolling back, asked by {who}"}, going
    return None
