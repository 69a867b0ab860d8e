"""One step of one node through a rollout, read from the node and decided afresh every time.

A step reads what the node says now (its deployments, update state, failed units, uptime) and returns
what to write and, at most, one action to ask of the node. Nothing is remembered between steps except
what the node record in etcd holds, so a controller that starts in the middle of a rollout takes each
node from where the node really is: a node already staged or already booted on the target is not
staged again.

Forward:  staging (check, stage the target) -> rebooting -> verifying (gates) -> done | failed
Back:     staging (cancel, or roll back to the deployment it had) -> rebooting -> verifying -> reverted
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
from dataclasses import dataclass
from functools import cache

import httpx

from lifsea_tui.api import ActionRequest, NodeSummary, StageRequest
from lifsea_tui.api.models import Deployment, UpdateState
from lifsea_tui.api.rollouts import NodeRollout, NodeState, RolloutSpec
from lifsea_tui.client import runbook
from lifsea_tui.client.node import NodeClient, NodeError
from lifsea_tui.client.runbook import Proposal, Runbook

SETTLE_SECONDS = 5.0  # a node judged this soon after boot may not have started (or failed) its units yet
# Gate runbooks judge a node this long after systemd finished starting it (not after its boot: a node
# that takes a minute to start would be judged before its units had a chance to loop).
RUNBOOK_SETTLE = 20.0
# A node whose systemd still answers this long after its reboot was asked, and says it has not booted
# since, never got the ask (the controller died, or its store write outlived a lost answer, between
# writing "rebooting" and asking): ask again. While it shuts down or boots, its systemd does not answer
# (the agent may: in the lab it runs beside the machine), and then the controller only waits.
REBOOT_ASK_AGAIN = 60.0


@cache
def gate_runbooks() -> dict[str, Runbook]:
    """The shipped runbooks a rollout may gate on, by id."""
    found, _ = runbook.load([runbook.SHIPPED])
    return {book.id: book for book in found}


class NotYet(Exception):
    """The node cannot be judged now (a gate could not look); wait, and say why in its record."""


async def fired_runbooks(spec: RolloutSpec, client: NodeClient, *, sure: bool = False) -> list[Proposal]:
    """The rollout's gate runbooks whose first checks find a problem on the node now. `sure`: raise
    NotYet when a first check could not look, rather than count that runbook as quiet."""
    books = [gate_runbooks()[name] for name in spec.runbooks if name in gate_runbooks()]
    proposals = await runbook.triage(client, books)
    if sure:
        unsure = [(p, f) for p in proposals for f in p.findings if f.status is runbook.Status.unknown]
        if unsure:
            proposal, finding = unsure[0]
            raise NotYet(f"runbook {proposal.runbook.id}: {finding.summary}")
    return [p for p in proposals if p.status is runbook.Status.problem]


@dataclass
class Step:
    """What a step decided: the node's new record, an action to take, and a line for the log."""

    node: NodeRollout
    action: tuple[str, ActionRequest] | None = None
    decision: str | None = None  # worth a line in the rollout's log
    hook: str | None = None  # a hook command to run before writing (pre or post)


def _booted(summary: NodeSummary) -> Deployment | None:
    return next((d for d in summary.deployments.deployments if d.booted), None)


def _pending(summary: NodeSummary) -> Deployment | None:
    return next((d for d in summary.deployments.deployments if d.pending), None)


def _default(summary: NodeSummary) -> Deployment | None:
    return next((d for d in summary.deployments.deployments if d.index == 0), None)


def action_reason(spec: RolloutSpec, node: NodeRollout, what: str) -> str:
    """Every node action names the rollout and its batch, so the node's own audit log says why it moved;
    going back, it names why the rollout is going back."""
    if node.direction == "back":
        text = f"rollout {spec.id} rolling back: {what} ({node.reason_back or spec.reason})"
    else:
        text = f"rollout {spec.id} batch {node.batch + 1}/{len(spec.batches())}: {what} ({spec.reason})"
    return text[:500]


def _update(node: NodeRollout, **changes: object) -> NodeRollout:
    return node.model_copy(update=changes)


def _fail(node: NodeRollout, why: str, now: float) -> Step:
    return Step(
        _update(node, state=NodeState.failed, reason=why, finished_at=now), decision=f"{node.name} failed: {why}"
    )


async def run_hook(template: str, node: str, timeout: float) -> str | None:
    """Run a hook for `node`; None when it exited 0, else why it did not."""
    command = template.replace("{node}", shlex.quote(node))
    proc = await asyncio.create_subprocess_shell(
        command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        return f"`{command}` did not finish within {timeout:.0f} s and was killed"
    if proc.returncode != 0:
        tail = output.decode(errors="replace").strip().splitlines()[-1:] or [""]
        return f"`{command}` exited {proc.returncode}: {tail[0][:200]}"
    return None


async def probe(template: str, node: str) -> str | None:
    url = template.replace("{node}", node)
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.get(url)
    except httpx.HTTPError as error:
        return f"probe {url}: {error or type(error).__name__}"
    if not 200 <= response.status_code < 300:
        return f"probe {url} answered HTTP {response.status_code}"
    return None


async def runbook_gate(spec: RolloutSpec, node: NodeRollout, client: NodeClient) -> str | None:
    """None when no gate runbook fires that had not fired before the rollout touched the node."""
    if not spec.runbooks or node.direction != "forward":
        return None
    fired = await fired_runbooks(spec, client, sure=True)
    new = [p for p in fired if p.runbook.id not in (node.baseline_runbooks or [])]
    if not new:
        return None
    return "; ".join(f"runbook {p.runbook.id} ({p.runbook.title}) applies: {p.summary}" for p in new)[:400]


async def gates(
    spec: RolloutSpec,
    node: NodeRollout,
    client: NodeClient,
    want: str,
    summary: NodeSummary | None = None,
    *,
    runbooks: bool = True,
) -> str | None:
    """None when the node is healthy on `want` (a checksum), else why not. `runbooks`: with the gate
    runbooks (the verify step asks them apart, once the node has been up RUNBOOK_SETTLE)."""
    summary = summary or await client.summary()
    booted = _booted(summary)
    if booted is None:
        return "the node cannot tell which deployment it booted"
    if booted.checksum != want:
        return f"it booted {booted.version or booted.checksum[:12]} instead of the target: the node fell back"
    failed = set(summary.failed_units or [])
    new = sorted(failed - set(node.baseline_failed or []))
    if new:
        return f"units failed that were not failed before: {', '.join(new[:5])}"
    if spec.probe and node.direction == "forward":
        why = await probe(spec.probe, node.name)
        if why is not None:
            return why
    return await runbook_gate(spec, node, client) if runbooks else None


async def step(spec: RolloutSpec, target: str, node: NodeRollout, client: NodeClient, now: float) -> Step | None:
    """The next step of an in-flight node; None when there is nothing to do yet (waiting on the node)."""
    if node.deadline is not None and now > node.deadline:
        return _fail(node, f"no verdict before its deadline ({spec.node_deadline:.0f} s; it was {node.state})", now)
    try:
        if node.direction == "forward":
            return await _forward(spec, target, node, client, now)
        return await _back(spec, node, client, now)
    except (NodeError, NotYet) as error:
        # Unreachable, refused, slow, a gate that could not look: wait (the deadline decides), but say
        # why in the node's record.
        why = f"waiting: {error}"
        if node.reason == why:
            return None
        return Step(_update(node, reason=why))


async def _forward(spec: RolloutSpec, target: str, node: NodeRollout, client: NodeClient, now: float) -> Step | None:
    if node.state is NodeState.staging:
        if spec.pre_hook and not node.pre_hook_done:
            return Step(_update(node, pre_hook_done=True, reason="pre hook passed"), hook=spec.pre_hook)
        summary = await client.summary()
        booted, pending = _booted(summary), _pending(summary)
        if node.before_checksum is None:
            if booted is None:
                return None
            # What it ran before, and its failed units then (the baseline the health gate compares with),
            # are written with whatever this step goes on to do: one write, not two.
            fired = [p.runbook.id for p in await fired_runbooks(spec, client)] if spec.runbooks else None
            node = _update(
                node,
                before_checksum=booted.checksum,
                before_version=booted.version,
                booted_version=booted.version,
                baseline_failed=sorted(summary.failed_units or []),
                baseline_runbooks=fired,
                reason=f"was on {booted.version or booted.checksum[:12]}",
            )
            recorded = Step(node)
        else:
            recorded = None
        if booted is not None and booted.checksum == target:
            return Step(_update(node, state=NodeState.verifying, reason="already booted on the target"))
        if pending is not None and pending.checksum == target:
            return _reboot(spec, node, now, f"reboot into {spec.target_version}", "staged; rebooting")
        update = summary.update
        if update.state in (UpdateState.checking, UpdateState.staging) or update.operation:
            return recorded if node.reason in ("staging", "checking") else Step(_update(node, reason="staging"))
        if pending is not None:
            # Another deployment is staged (by hand, or by a rollout that was stopped): the node would
            # boot it at its reboot, and the agent stages one at a time. The rollout's target replaces it,
            # and the node's audit log says so.
            other = pending.version or pending.checksum[:12]
            what = f"cancel the staged {other}: the rollout's target is {spec.target_version}"
            request = ActionRequest(reason=action_reason(spec, node, what))
            return Step(_update(node, reason=f"replacing the staged {other}"), action=("cancel", request))
        if update.state is UpdateState.failed and node.reason == "staging":
            return _fail(node, f"staging failed: {update.last_error or 'no detail'}", now)
        rollback = next((d for d in summary.deployments.deployments if d.rollback), None)
        if rollback is not None and rollback.checksum == target:  # an older release, still on the node
            request = ActionRequest(reason=action_reason(spec, node, f"roll back to {spec.target_version}"))
            return Step(_update(node, reason="rolling back to the target"), action=("rollback", request))
        if not any(t.checksum == target for t in update.targets):
            # The node says it checked since this node's turn began (not just that a check was asked: the
            # ask may never have reached it): not offered here, and checking again will not change that.
            last, began = update.last_checked, node.started_at
            if node.reason == "checking" and last is not None and began is not None and last.timestamp() >= began:
                return _fail(node, f"{spec.target_version} is not offered to this node by its update server", now)
            request = ActionRequest(reason=action_reason(spec, node, "check for updates"))
            return Step(_update(node, reason="checking"), action=("check", request))
        request = StageRequest(reason=action_reason(spec, node, f"stage {spec.target_version}"), checksum=target)
        return Step(_update(node, reason="staging"), action=("stage", request))
    if node.state is NodeState.rebooting:
        return await _rebooting(spec, node, client, now, f"reboot into {spec.target_version}")
    if node.state is NodeState.verifying:
        return await _verify(spec, node, client, target, now, NodeState.done)
    return None


def _reboot(spec: RolloutSpec, node: NodeRollout, now: float, what: str, reason: str = "rebooting") -> Step:
    """Into rebooting, with the time it was asked (written before the node is asked, as every action is)."""
    request = ActionRequest(reason=action_reason(spec, node, what))
    return Step(_update(node, state=NodeState.rebooting, reboot_at=now, reason=reason), action=("reboot", request))


async def _rebooting(spec: RolloutSpec, node: NodeRollout, client: NodeClient, now: float, what: str) -> Step | None:
    if node.reboot_at is None:  # its reboot was refused: ask again
        return _reboot(spec, node, now, what)
    info = await client.node()
    if info.booted_after(node.reboot_at, now):
        return Step(_update(node, state=NodeState.verifying, reason="booted again; checking its health"))
    if info.uptime_seconds is not None and now - node.reboot_at > REBOOT_ASK_AGAIN:
        return _reboot(spec, node, now, what, f"no reboot {REBOOT_ASK_AGAIN:.0f} s after it was asked; asking again")
    return None


async def _verify(
    spec: RolloutSpec, node: NodeRollout, client: NodeClient, want: str, now: float, success: NodeState
) -> Step | None:
    info = await client.node()
    if info.uptime_seconds is not None and info.uptime_seconds < SETTLE_SECONDS:
        return None
    summary = await client.summary()
    booted = _booted(summary)
    why = await gates(spec, node, client, want, summary, runbooks=False)
    if why is None and spec.runbooks and node.direction == "forward":
        if info.ready_seconds is None or info.ready_seconds < RUNBOOK_SETTLE:
            waiting = f"healthy so far; the gate runbooks look {RUNBOOK_SETTLE:.0f} s after it has started"
            return None if node.reason == waiting else Step(_update(node, reason=waiting))
        why = await runbook_gate(spec, node, client)
    version = booted.version if booted else None
    if why is not None:
        return _fail(_update(node, booted_version=version), why, now)
    if success is NodeState.done and spec.post_hook:
        done = _update(node, state=success, reason="healthy on the target", booted_version=version, finished_at=now)
        return Step(done, hook=spec.post_hook, decision=f"{node.name} done: healthy on {version}")
    reason = "healthy on the target" if success is NodeState.done else f"back on {version}"
    return Step(
        _update(node, state=success, reason=reason, booted_version=version, finished_at=now),
        decision=f"{node.name} {success.value}: {reason}",
    )


async def _back(spec: RolloutSpec, node: NodeRollout, client: NodeClient, now: float) -> Step | None:
    before = node.before_checksum
    if before is None:  # never touched: nothing to undo
        return Step(_update(node, state=NodeState.skipped, reason="never moved", finished_at=now))
    if node.state is NodeState.staging:
        summary = await client.summary()
        booted, pending, default = _booted(summary), _pending(summary), _default(summary)
        if booted is None:
            # The node cannot tell which deployment it booted (just up, or its view of the host is not
            # back yet): nothing here can be judged gone; look again (the deadline decides).
            why = "waiting: the node cannot tell which deployment it booted"
            return None if node.reason == why else Step(_update(node, reason=why))
        if booted.checksum == before:
            if pending is not None and pending.checksum != before:
                request = ActionRequest(reason=action_reason(spec, node, "cancel the staged target"))
                return Step(_update(node, reason="cancelling the staged target"), action=("cancel", request))
            return Step(
                _update(node, state=NodeState.reverted, reason="back where it was", finished_at=now),
                decision=f"{node.name} reverted: it had not moved",
            )
        if default is not None and default.checksum == before:
            return _reboot(spec, node, now, f"reboot back into {node.before_version}", "rolled back; rebooting")
        rollback = next((d for d in summary.deployments.deployments if d.rollback), None)
        if rollback is not None and rollback.checksum == before:
            request = ActionRequest(reason=action_reason(spec, node, "roll back to the deployment it had"))
            return Step(_update(node, reason="rolling back"), action=("rollback", request))
        return _fail(node, "the deployment it ran before the rollout is no longer on the node", now)
    if node.state is NodeState.rebooting:
        return await _rebooting(spec, node, client, now, f"reboot back into {node.before_version}")
    if node.state is NodeState.verifying:
        return await _verify(spec, node, client, before, now, NodeState.reverted)
    return None


def started(node: NodeRollout, spec: RolloutSpec, now: float, direction: str = "forward") -> NodeRollout:
    return _update(
        node,
        state=NodeState.staging,
        direction=direction,
        started_at=now,
        finished_at=None,
        deadline=now + spec.node_deadline,
        reboot_at=None,
        pre_hook_done=False if direction == "forward" else True,
        reason="starting" if direction == "forward" else "going back",
    )
