"""A runbook walked on one node: checks run, actions taken with a reason, shells opened, every step kept
on the node's audit log as one walk."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lifsea_tui.api import ActionRequest, DebugEvent, DebugRecord
from lifsea_tui.api.models import REASON_MAX
from lifsea_tui.client.node import NodeClient, NodeError
from lifsea_tui.client.runbook.checks import run_check
from lifsea_tui.client.runbook.model import UNIT_ACTIONS, Finding, Runbook, Status, Step, fill


@dataclass
class Entry:
    """One line of a walk: a finding, an action taken (or declined), a shell, the end."""

    time: datetime
    step: str
    event: DebugEvent
    summary: str
    evidence: list[str] = field(default_factory=list)
    status: Status | None = None
    audit_seq: int | None = None  # where the node's audit log holds it; None until it does


OUTCOME = {True: "resolved", False: "not resolved", None: "in progress"}
ACTION_WORDS = {"start": "Start", "stop": "Stop", "restart": "Restart", "rollback": "Roll back", "reboot": "Reboot"}


class Walk:
    """One runbook followed on one node, every step kept on the node as audit records of one walk id.

    A record the node cannot take yet (it is rebooting, or unreachable) is kept and sent before the next
    one, in order: the trail on the node ends up whole, and the Markdown export always has everything.
    """

    def __init__(self, runbook: Runbook, client: NodeClient, node: str) -> None:
        self.runbook = runbook
        self.client = client
        self.node = node
        self.id = secrets.token_hex(8)
        self.facts: dict[str, str] = {}
        self.entries: list[Entry] = []
        self.step: Step | None = runbook.first
        self.started = datetime.now(UTC)
        self.resolved: bool | None = None
        self._unsent: list[Entry] = []

    @property
    def unrecorded(self) -> int:
        return len(self._unsent)

    async def record(self, step: str, event: DebugEvent, summary: str, evidence: list[str] | None = None,
                     status: Status | None = None) -> Entry:  # fmt: skip
        entry = Entry(datetime.now(UTC), step, event, summary[:REASON_MAX], list(evidence or [])[:20], status)
        self.entries.append(entry)
        self._unsent.append(entry)
        await self.flush()
        return entry

    async def flush(self) -> None:
        while self._unsent:
            entry = self._unsent[0]
            record = DebugRecord(
                walk=self.id, runbook=self.runbook.id, event=entry.event, step=entry.step, summary=entry.summary,
                evidence=[line[:400] for line in entry.evidence],
            )  # fmt: skip
            try:
                entry.audit_seq = (await self.client.debug_record(record)).audit_seq
            except NodeError:
                return
            self._unsent.pop(0)

    async def begin(self, why: str) -> None:
        await self.record(self.runbook.start, DebugEvent.start, f"{self.runbook.title}: {why}")

    def text(self, value: str) -> str:
        return fill(value, self.facts)

    async def check(self) -> Finding:
        """Run the current step (a check) and move on by its finding."""
        step = self.step
        assert step is not None and step.kind == "check"
        finding = await run_check(self.client, step, self.facts)
        self.facts.update(finding.facts)
        await self.record(step.name, DebugEvent.finding, f"{finding.status}: {finding.summary}", finding.evidence,
                          finding.status)  # fmt: skip
        target = step.next.get(finding.status.value)
        self.step = self.runbook.steps[target] if target else None
        if self.step is None:
            ending = {
                Status.ok: "nothing more to look at: this runbook finds no trouble",
                Status.problem: "the runbook ends here",
                Status.unknown: "the check could not look at the node; the walk stops",
            }[finding.status]
            await self.end(ending, resolved=finding.status == Status.ok)
        return finding

    def reason(self, given: str) -> str:
        """The person's reason for an action or a shell, naming the walk it is part of (for the audit log)."""
        return f"{given} (runbook {self.runbook.id}, walk {self.id})"[:REASON_MAX]

    def describe_action(self, step: Step) -> str:
        unit = self.text(str(step.params.get("unit", "")))
        return f"{ACTION_WORDS[step.what]} {unit}".strip() if step.what in UNIT_ACTIONS else ACTION_WORDS[step.what]

    async def act(self, reason: str) -> str:
        """Do the current action with the person's reason; returns what the node said. Raises NodeError."""
        step = self.step
        assert step is not None and step.kind == "action"
        what = self.describe_action(step)
        reason = self.reason(reason)
        try:
            if step.what in UNIT_ACTIONS:
                unit = self.text(str(step.params["unit"]))
                result = await self.client.service_action(unit, step.what, ActionRequest(reason=reason))
                outcome = f"{what}: {await self._settled(unit, step.what)} (job {result.job})"
            else:
                operation = await self.client.action(step.what, ActionRequest(reason=reason))
                outcome = f"{what}: done, audit record {operation.audit_seq}"
        except NodeError as error:
            await self.record(step.name, DebugEvent.action, f"{what} failed: {error}", [f"reason: {reason}"])
            raise
        await self.record(step.name, DebugEvent.action, outcome, [f"reason: {reason}"])
        self.step = self.runbook.steps[step.next["then"]]
        return outcome

    async def _settled(self, unit: str, action: str, timeout: float = 15.0) -> str:
        """The unit's state once systemd has carried out the job: the next check must not race it."""
        arrived = ("inactive", "failed") if action == "stop" else ("active", "failed")
        deadline = time.monotonic() + timeout
        state = "?"
        while time.monotonic() < deadline:
            try:
                info = await self.client.service(unit)
            except NodeError as error:
                if error.status == 404 and action == "stop":
                    return "now stopped (and unloaded: nothing else wants it)"
                return f"state unknown ({error})"
            state = f"{info.active_state} ({info.sub_state})"
            if info.active_state in arrived:
                break
            await asyncio.sleep(0.3)
        return f"now {state}"

    async def shell_done(self, session: str | None, note: str) -> None:
        step = self.step
        assert step is not None and step.kind == "shell"
        evidence = [f"ops session {session}"] if session else []
        await self.record(step.name, DebugEvent.shell, note, evidence)
        self.step = self.runbook.steps[step.next["then"]]

    async def decline(self) -> None:
        """The person chose not to take the step offered: the walk ends there, and says so."""
        step = self.step
        assert step is not None
        await self.end(f"stopped at {step.name}: the person did not take the step offered", resolved=False)

    async def finish(self) -> None:
        """Reach an end step."""
        step = self.step
        assert step is not None and step.kind == "end"
        await self.end(self.text(step.what), resolved=bool(step.params.get("resolved", False)), at=step.name)

    async def end(self, summary: str, *, resolved: bool, at: str | None = None) -> None:
        self.resolved = resolved
        self.step = None
        await self.record(at or "end", DebugEvent.end, ("resolved: " if resolved else "not resolved: ") + summary)
