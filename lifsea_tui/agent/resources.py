"""What the node has left: load, memory, /var and uptime, cheap enough for every /v1/summary and scrape.

Each figure is read on its own: one that cannot be read is None (and the others are still given), never a
guess and never an error for the whole answer.
"""

from __future__ import annotations

import os
from pathlib import Path

from lifsea_tui.agent import nodefs
from lifsea_tui.agent.errors import BackendError
from lifsea_tui.agent.systemd import SystemdBackend
from lifsea_tui.api import NodeResources

PROC = Path("/proc")


def _load(proc: Path) -> list[float] | None:
    try:
        fields = (proc / "loadavg").read_text().split()
        return [float(fields[0]), float(fields[1]), float(fields[2])]
    except (OSError, ValueError, IndexError):
        return None


def _memory(proc: Path) -> tuple[int | None, int | None]:
    found: dict[str, int] = {}
    try:
        with (proc / "meminfo").open() as lines:
            for line in lines:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    found[key] = int(rest.split()[0]) * 1024
                    if len(found) == 2:
                        break
    except (OSError, ValueError, IndexError):
        return None, None
    return found.get("MemTotal"), found.get("MemAvailable")


def _var(host_root: Path) -> tuple[int | None, int | None, int | None]:
    """/var of the node (opened inside its root: a link cannot point this at the agent's own /var)."""
    try:
        top = nodefs.open_in(host_root, "/var", directory=True)
    except OSError:
        return None, None, None
    try:
        stats = os.fstatvfs(top)
    except OSError:
        return None, None, None
    finally:
        os.close(top)
    total = stats.f_blocks * stats.f_frsize
    return total, total - stats.f_bfree * stats.f_frsize, stats.f_bavail * stats.f_frsize


async def read(host_root: Path, systemd: SystemdBackend, proc: Path = PROC) -> NodeResources:
    memory_total, memory_available = _memory(proc)
    var_total, var_used, var_free = _var(host_root)
    try:
        uptime: float | None = await systemd.uptime_seconds()
    except BackendError:
        uptime = None
    return NodeResources(
        load=_load(proc),
        cpus=os.cpu_count(),
        memory_total_bytes=memory_total,
        memory_available_bytes=memory_available,
        var_total_bytes=var_total,
        var_used_bytes=var_used,
        var_free_bytes=var_free,
        uptime_seconds=uptime,
    )
