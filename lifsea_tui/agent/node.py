"""What the node is (identity, capabilities) and what it has been (history, from audit log and ostree)."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

from lifsea_tui import __version__
from lifsea_tui.agent import nodefs
from lifsea_tui.agent.audit import AuditLog
from lifsea_tui.agent.errors import BackendError
from lifsea_tui.agent.ostree import OstreeBackend
from lifsea_tui.agent.systemd import SystemdBackend
from lifsea_tui.api import Capability, HistoryEntry, NodeInfo

# Audit actions that change what a node runs, and the history event each becomes (on outcome "ok").
HISTORY_EVENTS = {
    "upgrade.stage": "deployed",
    "upgrade.cancel": "undeployed",
    "rollback": "rolled-back",
    "reboot": "rebooted",
    "node.booted": "booted",
}


def read_os_release(host_root: Path) -> dict[str, str]:
    for candidate in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            text = nodefs.read_text(host_root, candidate, 16 * 1024)
        except OSError:
            continue
        fields = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() and not key.startswith("#"):
                fields[key.strip()] = value.strip().strip("\"'")
        return fields
    return {}


async def node_info(
    name: str, host_root: Path, ostree: OstreeBackend, systemd: SystemdBackend, ops_reason: str | None
) -> NodeInfo:
    release = read_os_release(host_root)
    try:
        machine_id: str | None = nodefs.read_text(host_root, "/etc/machine-id", 64).strip() or None
    except OSError:
        machine_id = None
    capabilities = {}
    booted = None
    ostree_reason = ostree.unavailable_reason()
    if ostree_reason is None:
        deployments, booted_known = await ostree.deployments()
        booted = next((d.checksum for d in deployments if d.booted), None)
        if not booted_known:
            ostree_reason = f"no deployment is the host root {host_root} (node down, or host_root wrong)"
    capabilities["deployments"] = (
        Capability(available=True, reason=None)
        if ostree.unavailable_reason() is None
        else Capability(available=False, reason=ostree.unavailable_reason())
    )
    capabilities["upgrades"] = Capability(available=ostree_reason is None, reason=ostree_reason)
    uptime = ready = None
    try:
        uptime = await systemd.uptime_seconds()
        ready = await systemd.ready_seconds()
        capabilities["reboot"] = Capability(available=True, reason=None)
    except BackendError as error:
        capabilities["reboot"] = Capability(available=False, reason=error.detail)
    capabilities["ops_shell"] = Capability(available=ops_reason is None, reason=ops_reason)
    # Services go over the same bus as reboot: available exactly when it is.
    capabilities["services"] = capabilities["reboot"]
    return NodeInfo(
        name=name,
        machine_id=machine_id,
        os_name=release.get("NAME"),
        os_version=release.get("VERSION_ID") or release.get("VERSION"),
        kernel=os.uname().release,
        uptime_seconds=uptime,
        ready_seconds=ready,
        agent_version=__version__,
        booted_checksum=booted,
        capabilities=capabilities,
    )


async def history(audit: AuditLog, ostree: OstreeBackend) -> list[HistoryEntry]:
    """Newest first: every audited change of what the node runs, and the commits of its deployments."""
    entries = []
    for record in await asyncio.to_thread(audit.of_actions, HISTORY_EVENTS):
        event = HISTORY_EVENTS[record.action]
        if record.outcome != "ok":
            continue
        checksum = record.params.get("checksum")
        version = record.params.get("version")
        entries.append(
            HistoryEntry(
                time=record.time,
                event=event,
                checksum=checksum if isinstance(checksum, str) else None,
                version=version if isinstance(version, str) else None,
                actor=record.actor,
                reason=record.reason,
                audit_seq=record.seq,
            )
        )
    if ostree.unavailable_reason() is None:
        deployments, _ = await ostree.deployments()
        for deployment in deployments:
            entries.append(
                HistoryEntry(
                    time=deployment.timestamp or datetime.fromtimestamp(0, UTC),
                    event="committed",
                    checksum=deployment.checksum,
                    version=deployment.version,
                    actor=None,
                    reason=deployment.subject,
                )
            )
    entries.sort(key=lambda entry: entry.time, reverse=True)
    return entries
