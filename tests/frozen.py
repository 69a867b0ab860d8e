"""A fleet with fixed answers, for snapshot tests only.

Snapshots compare pictures, so every figure on screen must be the same on every run: latencies, times
and checksums here are fixed. The behaviour behind these screens is tested against real agents and lab
nodes elsewhere; this stands in for the network so that the pictures are stable.
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from lifsea_tui.api import (
    AuditPage,
    AuditRecord,
    AuditVerify,
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
    Event,
    HistoryEntry,
    HistoryList,
    LogEntry,
    LogPage,
    NodeInfo,
    NodeResources,
    OpsSessionList,
    PathSize,
    RecordingInfo,
    RecordingList,
    UnitInfo,
    UnitList,
    UpdateState,
    UpdateStatus,
    UpdateTarget,
)
from lifsea_tui.client.fleet import Fleet
from lifsea_tui.client.node import NodeError, NodeTarget, Problem

T0 = datetime(2026, 11, 26, 3, 0, 0, tzinfo=UTC)
OLD, NEW = "a" * 64, "b" * 64


def deployment(index: int, checksum: str, version: str, **flags: bool) -> Deployment:
    return Deployment(
        index=index,
        osname="lifsea",
        checksum=checksum,
        serial=0,
        version=version,
        timestamp=T0,
        subject=f"LifseaOS {version}",
        origin_refspec="lab:lifsea/x86_64/stable",
        booted=flags.get("booted", False),
        default=index == 0,
        pending=flags.get("pending", False),
        rollback=flags.get("rollback", False),
        pinned=False,
    )


DEPLOYMENTS = [deployment(0, NEW, "1.1", pending=True), deployment(1, OLD, "1.0", booted=True)]
UPDATE = UpdateStatus(
    state=UpdateState.staged,
    refspec="lab:lifsea/x86_64/stable",
    booted_checksum=OLD,
    targets=[
        UpdateTarget(
            checksum=NEW,
            version="1.1",
            timestamp=T0,
            subject="LifseaOS 1.1: security fixes",
            diff=DiffSummary(
                added=2,
                modified=3,
                removed=1,
                sample=["M /usr/lib/os-release", "A /usr/etc/motd"],
                packages_added=["lifsea-release 1.1"],
                packages_removed=[],
                packages_changed=["openssl 3.0.13 -> 3.0.14"],
            ),
        )
    ],
    operation=None,
    last_error=None,
    last_checked=T0,
    changed_at=T0,
)


LOG_ENTRIES = [
    LogEntry(cursor=f"c{i}", time=T0 + timedelta(seconds=i), unit="kubelet.service", identifier="kubelet", priority=p,
             pid=31, message=m)
    for i, (p, m) in enumerate([
        (6, "Starting kubelet"), (4, "node lease renew took 2.1 s"),
        (3, "failed to read /etc/kubelet.conf: no such key"), (6, "Stopped kubelet"),
    ])
]  # fmt: skip


class FrozenClient:
    def __init__(self, name: str) -> None:
        self.name = name

    async def node(self) -> NodeInfo:
        return NodeInfo(
            name=self.name,
            machine_id="0" * 32,
            os_name="LifseaOS",
            os_version="1.0",
            kernel="6.1.0-lifsea",
            uptime_seconds=5400.0,
            agent_version="0.1.0",
            booted_checksum=OLD,
            capabilities={
                "deployments": Capability(available=True),
                "reboot": Capability(available=True),
                "ops_shell": Capability(available=False, reason="not built into this agent version yet"),
            },
        )

    async def deployments(self) -> DeploymentList:
        return DeploymentList(deployments=DEPLOYMENTS, booted_known=True)

    async def history(self) -> HistoryList:
        return HistoryList(
            entries=[
                HistoryEntry(
                    time=T0,
                    event="deployed",
                    checksum=NEW,
                    version="1.1",
                    actor="alice",
                    reason="CHG-7 security fixes",
                    audit_seq=3,
                ),
                HistoryEntry(
                    time=T0, event="booted", checksum=OLD, version="1.0", actor="system", reason=None, audit_seq=0
                ),
            ]
        )

    async def upgrades(self) -> UpdateStatus:
        return UPDATE

    async def audit(self, **_: Any) -> AuditPage:
        records = [
            AuditRecord(
                seq=seq,
                time=T0,
                node=self.name,
                actor=actor,
                role=role,
                action=action,
                reason=reason,
                params={},
                outcome=outcome,
                prev="0" * 64,
                hash=f"{seq:064x}",
            )
            for seq, actor, role, action, reason, outcome in (
                (0, "system", None, "node.booted", None, "ok"),
                (1, "alice", "operator", "upgrade.check", "CHG-7 security fixes", "ok"),
                (2, "bob", "reader", "rollback", None, "refused: bob has role reader"),
                (3, "alice", "operator", "upgrade.stage", "CHG-7 security fixes", "ok"),
            )
        ]
        return AuditPage(records=records, head_seq=3, head_hash=f"{3:064x}")

    async def services(self, **_: Any) -> UnitList:
        def unit(name: str, active: str, sub: str, restarts: int, description: str) -> UnitInfo:
            return UnitInfo(
                name=name, description=description, load_state="loaded", active_state=active, sub_state=sub,
                since=T0, main_pid=None if active != "active" else 31, restarts=restarts,
                memory_bytes=12 * 2**20 if active == "active" else None,
                result="exit-code" if active == "failed" else "success",
            )  # fmt: skip

        return UnitList(
            units=[
                unit("kubelet.service", "failed", "failed", 5, "node agent (stand-in)"),
                unit("containerd.service", "activating", "auto-restart", 12, "container runtime (stand-in)"),
                unit("cron.service", "active", "running", 0, "Regular background program processing daemon"),
                unit("nginx.service", "inactive", "dead", 0, "A high performance web server"),
            ]
        )

    async def ops_sessions(self) -> OpsSessionList:
        return OpsSessionList(sessions=[])

    async def recordings(self) -> RecordingList:
        return RecordingList(
            recordings=[
                RecordingInfo(
                    id="0123456789abcdef",
                    actor="oncall",
                    reason="INC-7 disk full on /var",
                    started=T0,
                    ended=T0 + timedelta(minutes=12),
                    size=48213,
                    sha256="c" * 64,
                    end_reason="exited",
                )
            ]
        )

    async def audit_verify(self) -> AuditVerify:
        return AuditVerify(ok=True, records=4, head_seq=3, head_hash=f"{3:064x}", first_bad_seq=None, problem=None)

    async def events(self) -> AsyncIterator[Event]:
        raise NodeError(Problem.unreachable, "frozen fleet has no event stream")
        yield  # an async generator that ends at once

    # What guided debugging's checks read (the clock is now's: a check compares it with this console).

    async def service(self, unit: str) -> UnitInfo:
        return next(u for u in (await self.services()).units if u.name == unit)

    async def logs(self, **_: Any) -> LogPage:
        return LogPage(entries=LOG_ENTRIES[:3], cursor="c3")

    async def follow_logs(self, **_: Any) -> AsyncIterator[list[LogEntry]]:
        yield LOG_ENTRIES
        await asyncio.Event().wait()  # then nothing new, for ever

    async def disk(self, path: str = "var") -> DiskUsage:
        return DiskUsage(
            path=f"/{path}", total_bytes=2 << 30, free_bytes=200 << 20, used_bytes=(2 << 30) - (200 << 20),
            used_percent=90.2, largest=[PathSize(path="/var/log/journal", bytes=600 << 20)], complete=True,
        )  # fmt: skip

    async def clock(self) -> ClockStatus:
        return ClockStatus(node_time=datetime.now(UTC), ntp_synchronized=True, timezone="Etc/UTC")

    async def dns(self, name: str | None = None) -> DnsStatus:
        probe = DnsProbe(server="127.0.0.53", ok=True, rcode=0, answers=1, millis=0.4, error=None)
        return DnsStatus(resolv_conf="nameserver 127.0.0.53\n", nameservers=["127.0.0.53"], name="edge", probes=[probe])

    async def etc_changes(self, since: Any = None) -> EtcChanges:
        return EtcChanges(changes=[EtcChange(path="/etc/kubelet.conf", change="modified", mtime=T0)], complete=True)

    async def debug_record(self, record: Any) -> DebugRecorded:
        return DebugRecorded(audit_seq=9)

    async def aclose(self) -> None:
        pass


class FrozenFleet(Fleet):
    def __init__(self) -> None:
        names = ["edge-1", "edge-2", "edge-3", "edge-4"]
        super().__init__([NodeTarget(name=name, url=f"https://{name}:7443", token="t") for name in names])
        self.clients = {name: FrozenClient(name) for name in names}  # type: ignore[misc]
        future = 4_000_000_000.0  # "0s ago" on every run
        for index, name in enumerate(names):
            snapshot = self.snapshots[name]
            snapshot.labels = {"zone": "ab"[index % 2]}  # the inventory's, known even for a node that is down
            if name == "edge-4":
                snapshot.problem = "timeout: no answer within 10 s"
                continue
            snapshot.deployments = (
                DEPLOYMENTS
                if name == "edge-1"
                else [deployment(0, OLD if index else NEW, "1.0" if index else "1.1", booted=True)]
            )
            snapshot.update = (
                UPDATE
                if name == "edge-1"
                else UpdateStatus(
                    state=UpdateState.idle,
                    refspec=None,
                    booted_checksum=None,
                    targets=[],
                    operation=None,
                    last_error=None,
                    last_checked=None,
                    changed_at=T0,
                )
            )
            snapshot.latency_ms = 12.0 + index
            latencies = [10.0 + (step * (index + 3)) % 9 for step in range(12)]
            snapshot.latency_history = array("f", [*latencies, 12.0 + index])
            snapshot.load_history = array("f", [0.2 * ((step + index) % 6) for step in range(13)])
            snapshot.resources = NodeResources(
                load=[snapshot.load_history[-1], 0.5, 0.4],
                cpus=2,
                memory_total_bytes=8 << 30,
                memory_available_bytes=(5 - index) << 30,
                var_total_bytes=20 << 30,
                var_used_bytes=(19 if name == "edge-3" else 6 + index) << 30,
                var_free_bytes=(1 if name == "edge-3" else 14 - index) << 30,
                uptime_seconds=86_400.0 * (index + 1),
            )
            snapshot.ops_sessions = 1 if name == "edge-2" else 0
            snapshot.failed_units = ["kubelet.service"] if name == "edge-1" else []
            snapshot.last_seen = future

    async def refresh(self, names: Iterable[str] | None = None, *, force: bool = False, on_result: Any = None) -> None:
        for snapshot in self.snapshots.values():
            if on_result is not None:
                on_result(snapshot)
