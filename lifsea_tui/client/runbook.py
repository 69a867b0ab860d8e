"""Runbooks: guided debugging as data, and the checks they run against a node's API.

A runbook is a TOML file: a symptom, and steps by name. A step is one of
- a check (`check = "disk"`, ...): a read-only look through the node API that gives a finding with
  evidence, and goes on to the step named by `problem`, `ok` or `unknown` (what the finding was);
- an action (`action = "restart"`, ...): something that changes the node, done only when the person says
  so and gives a reason, then `then`;
- a shell (`shell = "title"`): a break-glass shell, with `commands` suggested beside it (never typed), then
  `then`;
- an end (`end = "text"`): where the walk stops, `resolved = true` when the trouble is gone.
Text may name facts found by earlier checks, like `{unit}`; a fact not found yet stays as written.

The first step's check says whether the runbook applies: the console proposes the runbooks whose first
check finds a problem. Runbooks ship with the package and more can be put in the user's config dir; a
file with errors is reported with what is wrong and where, and the others still load.
"""

from __future__ import annotations

import asyncio
import enum
import re
import secrets
import string
import time
import tomllib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lifsea_tui.api import ActionRequest, DebugEvent, DebugRecord, Deployment, LogEntry, OpsAccess
from lifsea_tui.api.models import REASON_MAX
from lifsea_tui.client.node import NodeClient, NodeError

SHIPPED = Path(__file__).resolve().parent.parent / "runbooks"
ACTIONS = ("start", "stop", "restart", "rollback", "reboot")
UNIT_ACTIONS = ("start", "stop", "restart")
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,79}$")


class Status(enum.StrEnum):
    problem = "problem"
    ok = "ok"
    unknown = "unknown"  # the check could not look (node unreachable, capability missing)


@dataclass
class Finding:
    status: Status
    summary: str
    evidence: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    name: str
    kind: str  # check, action, shell or end
    what: str  # the check's or action's kind, the shell's title, the end's text
    explain: str
    params: Mapping[str, Any]
    next: Mapping[str, str]  # problem/ok/unknown for a check; "then" for an action or a shell

    @property
    def access(self) -> OpsAccess:
        """What a shell step's break-glass shell may do to the node (read-only unless it says)."""
        return OpsAccess(self.params.get("access", OpsAccess.read_only.value))


@dataclass(frozen=True)
class Runbook:
    id: str
    title: str
    symptom: str
    start: str
    steps: Mapping[str, Step]
    source: Path
    applies: tuple[str, ...]  # the checks that propose it when one finds a problem (default: the first)

    @property
    def first(self) -> Step:
        return self.steps[self.start]


@dataclass(frozen=True)
class LoadError:
    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


class RunbookError(Exception):
    pass


# -- loading ----------------------------------------------------------------------------------------


def _text(table: Mapping[str, Any], key: str, where: str, required: bool = True) -> str:
    value = table.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise RunbookError(f"{where}: `{key}` must be a non-empty string")
    return value


def parse(text: str, source: Path) -> Runbook:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RunbookError(f"not valid TOML: {error}") from error
    unknown = set(data) - {"id", "title", "symptom", "start", "applies", "steps"}
    if unknown:
        raise RunbookError(f"unknown keys: {', '.join(sorted(unknown))}")
    runbook_id = _text(data, "id", "runbook")
    if not NAME.match(runbook_id):
        raise RunbookError(f"id {runbook_id!r}: lowercase letters, digits and dashes only")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, dict) or not raw_steps:
        raise RunbookError("no [steps.NAME] tables")
    steps = {name: _step(name, table) for name, table in raw_steps.items()}
    start = _text(data, "start", "runbook")
    if start not in steps:
        raise RunbookError(f"start names {start!r}, which is not a step")
    if steps[start].kind != "check":
        raise RunbookError(f"the first step ({start}) must be a check: it decides whether the runbook applies")
    applies = data.get("applies", [start])
    if not isinstance(applies, list) or not applies or not all(isinstance(a, str) for a in applies):
        raise RunbookError("`applies` must be a list of step names")
    for name in applies:
        if name not in steps or steps[name].kind != "check":
            raise RunbookError(f"applies names {name!r}, which is not a check step")
    for step in steps.values():
        for outcome, target in step.next.items():
            if target not in steps:
                raise RunbookError(f"step {step.name}: `{outcome}` names {target!r}, which is not a step")
    return Runbook(
        id=runbook_id,
        title=_text(data, "title", "runbook"),
        symptom=_text(data, "symptom", "runbook"),
        start=start,
        steps=steps,
        source=source,
        applies=tuple(applies),
    )


def _step(name: str, table: Any) -> Step:
    where = f"step {name}"
    if not NAME.match(name):
        raise RunbookError(f"{where}: a step name is lowercase letters, digits and dashes (at most 80)")
    if not isinstance(table, dict):
        raise RunbookError(f"{where}: must be a table")
    kinds = [kind for kind in ("check", "action", "shell", "end") if kind in table]
    if len(kinds) != 1:
        raise RunbookError(f"{where}: needs exactly one of check, action, shell or end")
    kind = kinds[0]
    what = _text(table, kind, where)
    explain = _text(table, "explain", where, required=False)
    nexts = {key: table[key] for key in ("problem", "ok", "unknown", "then") if key in table}
    for key, value in nexts.items():
        if not isinstance(value, str):
            raise RunbookError(f"{where}: `{key}` must name a step")
    params = {k: v for k, v in table.items() if k not in {kind, "explain", *nexts}}
    if kind == "check":
        if what not in CHECKS:
            raise RunbookError(f"{where}: no check {what!r} (there are: {', '.join(sorted(CHECKS))})")
        if "then" in nexts:
            raise RunbookError(f"{where}: a check goes on by `problem`, `ok` or `unknown`, not `then`")
        allowed = CHECK_PARAMS[what]
    elif kind == "action":
        if what not in ACTIONS:
            raise RunbookError(f"{where}: no action {what!r} (there are: {', '.join(ACTIONS)})")
        if what in UNIT_ACTIONS and not isinstance(table.get("unit"), str):
            raise RunbookError(f"{where}: `{what}` needs `unit`")
        allowed = {"unit"}
    elif kind == "shell":
        commands = table.get("commands", [])
        if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
            raise RunbookError(f"{where}: `commands` must be a list of strings")
        if table.get("access", OpsAccess.read_only.value) not in {level.value for level in OpsAccess}:
            levels = ", ".join(f'"{level.value}"' for level in OpsAccess)
            raise RunbookError(f"{where}: `access` must be one of {levels}")
        allowed = {"commands", "access"}
    else:
        if not isinstance(table.get("resolved", False), bool):
            raise RunbookError(f"{where}: `resolved` must be true or false")
        allowed = {"resolved"}
    if kind != "check" and kind != "end" and "then" not in nexts:
        raise RunbookError(f"{where}: needs `then`, the step after it")
    if kind == "end" and nexts:
        raise RunbookError(f"{where}: an end goes nowhere")
    extra = set(params) - allowed
    if extra:
        raise RunbookError(f"{where}: unknown keys {', '.join(sorted(extra))}")
    return Step(name=name, kind=kind, what=what, explain=explain, params=params, next=nexts)


def load(directories: list[Path]) -> tuple[list[Runbook], list[LoadError]]:
    """Every runbook in the directories, in order; a later one with the same id replaces an earlier."""
    found: dict[str, Runbook] = {}
    errors = []
    for directory in directories:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.toml")):
            try:
                runbook = parse(path.read_text(errors="replace"), path)
            except (OSError, RunbookError) as error:
                errors.append(LoadError(path, str(error)))
                continue
            found[runbook.id] = runbook
    return list(found.values()), errors


# -- facts in text ------------------------------------------------------------------------------------


class _Facts(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(text: str, facts: Mapping[str, str]) -> str:
    """Text with `{fact}` replaced by what the walk has found; unknown names and stray braces stay."""
    try:
        return string.Formatter().vformat(text, (), _Facts(facts))
    except (ValueError, IndexError, KeyError, AttributeError):
        return text


# -- checks ----------------------------------------------------------------------------------------------

Check = Callable[[NodeClient, Mapping[str, Any]], Awaitable[Finding]]


def _int(params: Mapping[str, Any], key: str, default: int) -> int:
    value = params.get(key, default)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


async def check_units(client: NodeClient, params: Mapping[str, Any]) -> Finding:
    wanted = [str(u) for u in params.get("units", [])]
    units = {u.name: u for u in (await client.services()).units}
    evidence, bad, present = [], [], []
    for name in wanted:
        unit = units.get(name)
        if unit is None or unit.load_state == "not-found":
            evidence.append(f"{name}: not on this node")
            continue
        present.append(name)
        evidence.append(
            f"{name}: {unit.active_state} ({unit.sub_state})"
            + (f", result {unit.result}" if unit.result and unit.result != "success" else "")
        )
        if unit.active_state != "active":
            bad.append(name)
    if bad:
        return Finding(
            Status.problem, f"{', '.join(bad)} not running", evidence, {"unit": bad[0], "units": " ".join(bad)}
        )
    if not present:
        return Finding(Status.ok, "none of these services is on this node", evidence)
    return Finding(Status.ok, f"{', '.join(present)} running", evidence)


CHANGING = ("activating", "deactivating", "reloading")


async def check_unit(client: NodeClient, params: Mapping[str, Any]) -> Finding:
    """One unit's state; one that is changing (just started, say) is given `settle` seconds to arrive."""
    name = str(params["unit"])
    deadline = time.monotonic() + _int(params, "settle", 10)
    try:
        unit = await client.service(name)
        while unit.active_state in CHANGING and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            unit = await client.service(name)
    except NodeError as error:
        if error.status == 404:
            return Finding(Status.ok, f"{name} is not on this node", [str(error)], {"unit": name})
        raise
    expect = str(params.get("expect", "active"))
    facts = {"unit": name, "state": unit.active_state, "restarts": str(unit.restarts or 0)}
    line = (
        f"{name}: {unit.active_state} ({unit.sub_state}) since {unit.since:%H:%M:%S}"
        if unit.since
        else f"{name}: {unit.active_state} ({unit.sub_state})"
    )
    evidence = [
        line,
        *([f"restarts: {unit.restarts}"] if unit.restarts else []),
        *([f"result: {unit.result}"] if unit.result else []),
    ]
    if unit.active_state != expect:
        return Finding(Status.problem, f"{name} is {unit.active_state}, not {expect}", evidence, facts)
    return Finding(Status.ok, f"{name} is {expect}", evidence, facts)


async def check_failed_units(client: NodeClient, params: Mapping[str, Any]) -> Finding:
    failed = (await client.services(state="failed")).units
    if not failed:
        return Finding(Status.ok, "no failed units")
    names = [u.name for u in failed]
    evidence = [
        f"{u.name}: {u.sub_state}, result {u.result or '?'}"
        + (f", since {u.since:%Y-%m-%d %H:%M:%S}" if u.since else "")
        for u in failed[:10]
    ]
    return Finding(
        Status.problem,
        f"{len(names)} failed: {', '.join(names[:5])}",
        evidence,
        {"unit": names[0], "units": " ".join(names)},
    )


async def check_restarts(client: NodeClient, params: Mapping[str, Any]) -> Finding:
    least = _int(params, "min", 3)
    looping = [
        u
        for u in (await client.services(kind="service")).units
        if (u.restarts or 0) >= least and (u.sub_state == "auto-restart" or u.active_state in ("activating", "failed"))
    ]
    if not looping:
        return Finding(Status.ok, f"no service restarting ({least} restarts or more)")
    looping.sort(key=lambda u: -(u.restarts or 0))
    top = looping[0]
    evidence = [f"{u.name}: {u.restarts} restarts, now {u.active_state} ({u.sub_state})" for u in looping[:10]]
    return Finding(
        Status.problem,
        f"{top.name} is crash-looping: {top.restarts} restarts",
        evidence,
        {"unit": top.name, "restarts": str(top.restarts)},
    )


async def check_journal(client: NodeClient, params: Mapping[str, Any]) -> Finding:
    minutes = _int(params, "minutes", 30)
    least = _int(params, "min", 1)
    filters: dict[str, Any] = {
        "priority": _int(params, "priority", 3),
        "since": (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat(),
        "limit": 200,
    }
    unit = params.get("unit")
    if unit:
        filters["unit"] = str(unit)
    if params.get("pattern"):
        filters["grep"] = str(params["pattern"])
    entries = (await client.logs(**filters)).entries
    where = f"{unit}'s journal" if unit else "the journal"
    if len(entries) < least:
        return Finding(
            Status.ok,
            f"nothing in {where} in the last {minutes} min"
            + (f" matching {params['pattern']!r}" if params.get("pattern") else ""),
        )

    def line(e: LogEntry) -> str:
        return f"{e.time:%H:%M:%S} {e.unit or e.identifier or ''}: {e.message}"[:300]

    evidence = [line(e) for e in entries[-8:]]
    context = _int(params, "context", 0)
    if context and unit:
        # What the unit's own processes said last (their stderr is logged as info, not as an error), not
        # systemd's lines about the unit, which the errors above already are.
        said = (await client.logs(unit=str(unit), priority=6, since=filters["since"], limit=context * 5)).entries
        own = [e for e in said if e.identifier != "systemd"][-context:]
        if own:
            evidence += [f"what {unit} said last:", *(line(e) for e in own)]
    return Finding(
        Status.problem,
        f"{len(entries)}{'+' if len(entries) == 200 else ''} entries in {where} in the last {minutes} min",
        evidence,
        {"message": entries[-1].message[:200]},
    )


async def check_disk(client: NodeClient, params: Mapping[str, Any]) -> Finding:
    usage = await client.disk(str(params.get("path", "var")))
    above = _int(params, "above_percent", 90)
    evidence = [
        f"{usage.path}: {usage.used_percent:.1f}% used, {_size(usage.free_bytes)} free of {_size(usage.total_bytes)}"
    ]
    evidence += [f"{_size(entry.bytes):>10}  {entry.path}" for entry in usage.largest[:6]]
    if not usage.complete:
        evidence.append("(sizes from a partial walk: the node has many files)")
    facts = {"used_percent": f"{usage.used_percent:.1f}"}
    if usage.largest:
        # The deepest entry that holds nearly all of the biggest: the file or directory that grew.
        top = usage.largest[0].bytes
        culprit = max((e for e in usage.largest if e.bytes >= 0.9 * top), key=lambda e: e.path.count("/"))
        facts["largest"] = culprit.path
        facts["largest_size"] = _size(culprit.bytes)
    if usage.used_percent >= above or usage.free_bytes == 0:
        return Finding(Status.problem, f"{usage.path} is {usage.used_percent:.1f}% full", evidence, facts)
    return Finding(Status.ok, f"{usage.path} is {usage.used_percent:.1f}% full: room left", evidence, facts)


async def check_deployment(client: NodeClient, params: Mapping[str, Any]) -> Finding:
    deployments = (await client.deployments()).deployments
    booted = next((d for d in deployments if d.booted), None)
    if booted is None:
        return Finding(Status.unknown, "the node does not say which deployment it booted")
    rollback = next((d for d in deployments if d.rollback), None)

    def line(d: Deployment) -> str:
        role = "booted" if d.booted else "rollback" if d.rollback else "pending" if d.default else ""
        return f"{role:8} {d.version or '?'} ({d.checksum[:10]}) {d.subject or ''}".rstrip()

    evidence = [line(d) for d in deployments]
    facts = {"booted_version": booted.version or booted.checksum[:10]}
    newer = rollback is not None and (
        rollback.timestamp is None or booted.timestamp is None or rollback.timestamp < booted.timestamp
    )
    if rollback is None or not newer:
        return Finding(
            Status.ok, f"booted {facts['booted_version']}, with no older version to go back to", evidence, facts
        )
    facts["rollback_version"] = rollback.version or rollback.checksum[:10]
    summary = f"booted {facts['booted_version']}, newer than {facts['rollback_version']} (what a rollback boots)"
    return Finding(Status.problem, summary, evidence, facts)


async def check_update(client: NodeClient, params: Mapping[str, Any]) -> Finding:
    """The node's update state: a problem when it is one of `states` (default: failed)."""
    status = await client.upgrades()
    states = [str(state) for state in params.get("states", ["failed"])]
    evidence = [f"update state {status.state}" + (f" (running: {status.operation})" if status.operation else "")]
    evidence += [f"available {t.version or t.checksum[:10]}" for t in status.targets[:3]]
    if status.last_error:
        evidence.append(f"last error: {status.last_error}")
    facts = {"update_state": str(status.state)}
    if status.state in states:
        return Finding(Status.problem, f"update state is {status.state}", evidence, facts)
    return Finding(Status.ok, f"update state is {status.state}", evidence, facts)


async def check_etc_changes(client: NodeClient, params: Mapping[str, Any]) -> Finding:
    minutes = _int(params, "minutes", 120)
    changes = (await client.etc_changes(since=datetime.now(UTC) - timedelta(minutes=minutes))).changes
    match = str(params.get("match", ""))
    if match:
        changes = [c for c in changes if match in c.path]
    if not changes:
        return Finding(
            Status.ok, f"no file in /etc changed in the last {minutes} min" + (f" matching {match!r}" if match else "")
        )
    evidence = [f"{c.change:8} {c.path}" + (f" at {c.mtime:%H:%M:%S}" if c.mtime else "") for c in changes[:10]]
    return Finding(
        Status.problem,
        f"{len(changes)} file(s) in /etc changed in the last {minutes} min, newest {changes[0].path}",
        evidence,
        {"changed": changes[0].path},
    )


async def check_clock(client: NodeClient, params: Mapping[str, Any]) -> Finding:
    sent = time.time()
    status = await client.clock()
    received = time.time()
    skew = status.node_time.timestamp() - (sent + received) / 2
    limit = _int(params, "max_skew", 5)
    sync = {True: "synchronized", False: "NOT synchronized", None: f"unknown ({status.detail})"}[
        status.ntp_synchronized
    ]
    evidence = [
        f"node time {status.node_time:%Y-%m-%d %H:%M:%S} UTC, {skew:+.2f} s from this console",
        f"clock {sync}",
        f"time zone {status.timezone or '?'}",
    ]
    facts = {"skew": f"{skew:+.1f}"}
    if abs(skew) > limit:
        return Finding(Status.problem, f"the node's clock is {skew:+.1f} s off", evidence, facts)
    if params.get("require_sync") and status.ntp_synchronized is False:
        return Finding(Status.problem, "the node's clock is not synchronized", evidence, facts)
    return Finding(Status.ok, f"clock within {limit} s of this console", evidence, facts)


async def check_dns(client: NodeClient, params: Mapping[str, Any]) -> Finding:
    status = await client.dns(str(params["name"]) if params.get("name") else None)
    evidence = [f"resolv.conf nameservers: {', '.join(status.nameservers) or 'none'}"]
    for probe in status.probes:
        got = f"{probe.answers} answer(s) in {probe.millis} ms" if probe.ok else probe.error or f"rcode {probe.rcode}"
        evidence.append(f"{probe.server} for {status.name}: {got}")
    facts = {"name": status.name}
    if status.nameservers:
        facts["nameserver"] = status.nameservers[0]
    if not status.nameservers:
        return Finding(Status.problem, "/etc/resolv.conf names no nameserver", evidence, facts)
    if not any(p.ok for p in status.probes):
        return Finding(Status.problem, f"no nameserver answers for {status.name}", evidence, facts)
    return Finding(Status.ok, f"{status.name} resolves", evidence, facts)


CHECKS: dict[str, Check] = {
    "units": check_units,
    "unit": check_unit,
    "failed-units": check_failed_units,
    "restarts": check_restarts,
    "journal": check_journal,
    "disk": check_disk,
    "deployment": check_deployment,
    "update": check_update,
    "etc-changes": check_etc_changes,
    "clock": check_clock,
    "dns": check_dns,
}
CHECK_PARAMS: dict[str, set[str]] = {
    "units": {"units"},
    "unit": {"unit", "expect", "settle"},
    "failed-units": set(),
    "restarts": {"min"},
    "journal": {"unit", "priority", "minutes", "pattern", "min", "context"},
    "disk": {"path", "above_percent"},
    "deployment": set(),
    "update": {"states"},
    "etc-changes": {"minutes", "match"},
    "clock": {"max_skew", "require_sync"},
    "dns": {"name"},
}


def _filled(value: Any, facts: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return fill(value, facts)
    if isinstance(value, list):
        return [_filled(item, facts) for item in value]
    return value


async def run_check(client: NodeClient, step: Step, facts: Mapping[str, str]) -> Finding:
    """Run a check step; a node that cannot answer gives an `unknown` finding, never an exception."""
    try:
        return await CHECKS[step.what](client, params_of(step, facts))
    except NodeError as error:
        return Finding(Status.unknown, f"could not check: {error}")


def params_of(step: Step, facts: Mapping[str, str]) -> dict[str, Any]:
    return {key: _filled(value, facts) for key, value in step.params.items()}


@dataclass
class Proposal:
    """A runbook's first checks on one node: it is proposed when one of them finds a problem."""

    runbook: Runbook
    findings: list[Finding]

    @property
    def status(self) -> Status:
        statuses = {finding.status for finding in self.findings}
        if Status.problem in statuses:
            return Status.problem
        return Status.unknown if statuses == {Status.unknown} else Status.ok

    @property
    def summary(self) -> str:
        chosen = [f for f in self.findings if f.status == self.status] or self.findings
        return "; ".join(f.summary for f in chosen)


async def triage(client: NodeClient, runbooks: list[Runbook]) -> list[Proposal]:
    """Run every runbook's first checks on the node (each distinct check once, all at once)."""
    tasks: dict[str, asyncio.Task[Finding]] = {}

    def task(step: Step) -> asyncio.Task[Finding]:
        key = f"{step.what} {sorted(step.params.items())!r}"
        if key not in tasks:
            tasks[key] = asyncio.create_task(run_check(client, step, {}))
        return tasks[key]

    wanted = [(runbook, [task(runbook.steps[name]) for name in runbook.applies]) for runbook in runbooks]
    await asyncio.gather(*tasks.values())
    proposals = [Proposal(runbook, [t.result() for t in checks]) for runbook, checks in wanted]
    order = {Status.problem: 0, Status.unknown: 1, Status.ok: 2}
    proposals.sort(key=lambda p: (order[p.status], p.runbook.title))
    return proposals


# -- a walk through one runbook on one node --------------------------------------------------------------


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

    def markdown(self) -> str:
        """The walk for an incident report."""
        lines = [
            f"# {self.runbook.title} on {self.node}",
            "",
            f"- Runbook: `{self.runbook.id}` ({self.runbook.source.name})",
            f"- Walk: `{self.id}` (audit records `debug.*` with this walk id on {self.node})",
            f"- Started: {self.started:%Y-%m-%d %H:%M:%S} UTC",
            f"- Outcome: {OUTCOME[self.resolved]}",
            "",
            f"Symptom: {self.runbook.symptom}",
            "",
            "| Time (UTC) | Step | What | Audit |",
            "|---|---|---|---|",
        ]
        for entry in self.entries:
            summary = entry.summary.replace("|", "\\|")
            seq = str(entry.audit_seq) if entry.audit_seq is not None else "not recorded yet"
            lines.append(f"| {entry.time:%H:%M:%S} | {entry.step} | {entry.event}: {summary} | {seq} |")
        lines.append("")
        for entry in self.entries:
            if entry.evidence:
                lines += [
                    f"## {entry.time:%H:%M:%S} {entry.step}: {entry.summary}",
                    "",
                    "```",
                    *entry.evidence,
                    "```",
                    "",
                ]
        if self._unsent:
            lines.append(f"**{len(self._unsent)} record(s) not yet in the node's audit log** (node unreachable).")
        return "\n".join(lines) + "\n"
