"""A cgroup of its own for each lab machine.

systemd-nspawn run with `--keep-unit` and no registration puts its container in `payload/` under the
cgroup it was started in. Every machine of a lab is started by the one supervisor, so without this they
all got the same `payload/`, and each machine's systemd took that same tree for its own: node1's
nginx.service and node2's shared one cgroup, and one machine stopping or starting a unit while another
did the same to its namesake failed with `status=219/CGROUP` (seen as a unit failed after a reboot).

So each machine's nspawn starts in a cgroup named after its lab and node, in the hierarchies systemd
uses (the named v1 `systemd` one and the unified one, whichever the host has).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

# The hierarchies systemd in a machine builds its tree in: the v1 named one, and cgroup2.
_SYSTEMD_V1 = "name=systemd"


def _hierarchies() -> list[tuple[Path, str]]:
    """(mount point, this process's cgroup in it) for each hierarchy systemd uses, from /proc."""
    mounts: dict[str, Path] = {}
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            dash = fields.index("-")
            kind, options = fields[dash + 1], fields[dash + 3].split(",")
            if kind == "cgroup2":
                mounts.setdefault("", Path(fields[4]))
            elif kind == "cgroup" and _SYSTEMD_V1 in options:
                mounts.setdefault(_SYSTEMD_V1, Path(fields[4]))
    found = []
    with open("/proc/self/cgroup") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controllers in mounts:
                found.append((mounts[controllers], path.lstrip("/")))
    return found


def name(lab_root: Path, node: str) -> str:
    """The machine's cgroup name: unique per lab directory and node, so two labs never share one."""
    return f"lifsea-lab-{hashlib.sha256(str(lab_root.resolve()).encode()).hexdigest()[:10]}-{node}"


def prepare(cgroup: str) -> list[Path]:
    """Make the machine's cgroup in each hierarchy; the `cgroup.procs` files its nspawn should join.

    Empty where the host lets us make none (no cgroup mounts, read-only ones): nspawn then runs where
    the supervisor runs, as before."""
    procs = []
    for mount, own in _hierarchies():
        directory = mount / own / cgroup
        try:
            directory.mkdir(exist_ok=True)
        except OSError:
            continue
        procs.append(directory / "cgroup.procs")
    return procs


def join_argv(procs: list[Path], argv: list[str]) -> list[str]:
    """argv run by a shell that first moves itself into each cgroup, then execs argv (so nspawn starts
    there, before it makes its `payload/`). A shell rather than preexec_fn, which is unsafe beside
    threads."""
    if not procs:
        return argv
    script = 'for f in "$@"; do [ "$f" = -- ] && break; echo $$ > "$f" || exit 125; shift; done; shift; exec "$@"'
    return ["/bin/sh", "-c", script, "sh", *map(str, procs), "--", *argv]


def remove(procs: list[Path]) -> None:
    """Remove the machine's cgroups (deepest first) once its nspawn has exited; what is still busy stays."""
    for proc_file in procs:
        top = proc_file.parent
        if not top.is_dir():
            continue
        for directory, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
            with contextlib.suppress(OSError):
                os.rmdir(directory)
