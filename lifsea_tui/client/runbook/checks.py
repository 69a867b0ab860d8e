"""The checks a runbook runs: read-only looks through the node API, each giving a finding with evidence;
and the triage that runs every runbook's first checks on a node."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from lifsea_tui.api import Deployment, LogEntry, UnitInfo
from lifsea_tui.client.node import NodeClient, NodeError
from lifsea_tui.client.runbook.model import Finding, Runbook, Status, Step, fill

Check = Callable[[NodeClient, Mapping[str, Any]], Awaitable[Finding]]


def _int(params: Mapping[str, Any], key: str, default: int) -> int:
    value = params.get(key, default)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def human_size(n: float) -> str:
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


LOOPING_STATES = ("activating", "failed")  # with sub-state auto-restart: between two runs of a loop


def _between_runs(unit: UnitInfo) -> bool:
    return unit.sub_state == "auto-restart" or unit.active_state in LOOPING_STATES


async def check_restarts(client: NodeClient, params: Mapping[str, Any]) -> Finding:
    """Services systemd keeps restarting. One seen between two runs (waiting to restart, starting,
    failed) with `min` restarts or more is looping. One seen running with as many restarts may be
    between two crashes, so it is looked at again `relook` seconds later and counts if its restarts
    went up (a manual start resets systemd's count, so a unit that settled stays where it was)."""
    least = _int(params, "min", 3)
    relook = _int(params, "relook", 2)
    counted = [u for u in (await client.services(kind="service")).units if (u.restarts or 0) >= least]
    looping = [(u, f"now {u.active_state} ({u.sub_state})") for u in counted if _between_runs(u)]
    # Running (or stopping) now; one stopped by hand (inactive) keeps its count but loops no more.
    running = [u for u in counted if not _between_runs(u) and u.active_state != "inactive"]
    running = sorted(running, key=lambda u: -(u.restarts or 0))[:10]
    if running:
        await asyncio.sleep(relook)

        async def now(unit: UnitInfo) -> UnitInfo | None:
            try:
                return await client.service(unit.name)
            except NodeError as error:
                if error.status == 404:
                    return None  # unloaded since: it loops no more
                raise

        for before, after in zip(running, await asyncio.gather(*(now(u) for u in running)), strict=True):
            if after is not None and ((after.restarts or 0) > (before.restarts or 0) or _between_runs(after)):
                how = f"{before.restarts} → {after.restarts} in {relook} s"
                looping.append((after, f"{how}, now {after.active_state} ({after.sub_state})"))
    if not looping:
        return Finding(Status.ok, f"no service restarting ({least} restarts or more)")
    looping.sort(key=lambda found: -(found[0].restarts or 0))
    top = looping[0][0]
    evidence = [f"{u.name}: {u.restarts} restarts, {how}" for u, how in looping[:10]]
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
    free, total = human_size(usage.free_bytes), human_size(usage.total_bytes)
    evidence = [f"{usage.path}: {usage.used_percent:.1f}% used, {free} free of {total}"]
    evidence += [f"{human_size(entry.bytes):>10}  {entry.path}" for entry in usage.largest[:6]]
    if not usage.complete:
        evidence.append("(sizes from a partial walk: the node has many files)")
    facts = {"used_percent": f"{usage.used_percent:.1f}"}
    if usage.largest:
        # The deepest entry that holds nearly all of the biggest: the file or directory that grew.
        top = usage.largest[0].bytes
        culprit = max((e for e in usage.largest if e.bytes >= 0.9 * top), key=lambda e: e.path.count("/"))
        facts["largest"] = culprit.path
        facts["largest_size"] = human_size(culprit.bytes)
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
    """Run a check step; a node that cannot answer gives an `unknown` finding, never an exception. So
    does a check that fails on what a node sent (it names the fault): a screen waiting on a finding
    must get one."""
    try:
        return await CHECKS[step.what](client, params_of(step, facts))
    except NodeError as error:
        return Finding(Status.unknown, f"could not check: {error}")
    except Exception as error:  # noqa: BLE001 - see above; the finding says what went wrong
        return Finding(Status.unknown, f"could not check: {type(error).__name__}: {error}"[:500])


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
