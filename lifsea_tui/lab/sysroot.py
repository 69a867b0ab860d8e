"""A node's ostree sysroot: made, pointed at the update server, first deployment, and what to boot next."""

from __future__ import annotations

import subprocess
from pathlib import Path

from lifsea_tui.lab.image import OPS_REF, OSNAME, REF, ImageError

REMOTE = "lab"


def _run(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        tail = " / ".join(result.stderr.strip().splitlines()[-3:])
        raise ImageError(f"{what} failed: {tail or f'exit status {result.returncode}'}")


def create(sysroot: Path, remote_url: str) -> None:
    """An initialized sysroot with the lab remote, and the current release deployed as the only deployment."""
    sysroot.mkdir(parents=True, exist_ok=True)
    _run(["ostree", "admin", "init-fs", "--modern", str(sysroot)], "init-fs")
    _run(["ostree", "admin", f"--sysroot={sysroot}", "os-init", OSNAME], "os-init")
    repo = sysroot / "ostree" / "repo"
    _run(["ostree", f"--repo={repo}", "remote", "add", "--force", "--no-gpg-verify", REMOTE, remote_url], "remote add")
    _run(["ostree", f"--repo={repo}", "pull", REMOTE, REF], "first pull")
    _run(["ostree", "admin", "deploy", f"--sysroot={sysroot}", f"--os={OSNAME}", f"{REMOTE}:{REF}"], "first deploy")


def release(sysroot: Path) -> None:
    """Lift the immutable bit ostree sets on each deployment's root directory, so the sysroot can be
    removed (by `down --purge`, or a test's temporary directory) like any other tree."""
    for deployment in sysroot.glob("ostree/deploy/*/deploy/*"):
        if deployment.is_dir():
            subprocess.run(["chattr", "-i", str(deployment)], capture_output=True)


def set_remote(sysroot: Path, remote_url: str) -> None:
    """Point the node at the update server's current address (its port may change between lab runs)."""
    repo = sysroot / "ostree" / "repo"
    _run(["ostree", f"--repo={repo}", "remote", "delete", "--if-exists", REMOTE], "remote delete")
    _run(["ostree", f"--repo={repo}", "remote", "add", "--no-gpg-verify", REMOTE, remote_url], "remote add")


def pull_ops_image(sysroot: Path, lab_repo: Path) -> None:
    """Give the node the ops image now, so the first break-glass shell does not wait for a download.

    Straight from the lab's repo on this machine (as the update server would serve it, several times
    faster), recorded as the lab remote's ref so a later `ostree pull lab` updates it.
    """
    repo = sysroot / "ostree" / "repo"
    _run(["ostree", f"--repo={repo}", "pull-local", f"--remote={REMOTE}", str(lab_repo), OPS_REF], "pull the ops image")


def is_created(sysroot: Path) -> bool:
    return any((sysroot / "ostree" / "deploy" / OSNAME / "deploy").glob("*.origin"))


def default_deployment(sysroot: Path) -> Path:
    """The deployment directory a bootloader would boot: the boot entry with the highest version."""
    entries = sorted((sysroot / "boot" / "loader" / "entries").glob("ostree-*.conf"))
    best: tuple[int, str] | None = None
    for entry in entries:
        fields = dict(line.split(" ", 1) for line in entry.read_text().splitlines() if " " in line)
        options = fields.get("options", "")
        ostree_arg = next((opt.split("=", 1)[1] for opt in options.split() if opt.startswith("ostree=")), None)
        if ostree_arg and (best is None or int(fields.get("version", "0")) > best[0]):
            best = (int(fields.get("version", "0")), ostree_arg)
    if best is None:
        raise ImageError(f"{sysroot} has no boot entries: nothing to boot")
    # The ostree= argument is a symlink chain inside the sysroot, ending at the deployment directory.
    return (sysroot / best[1].lstrip("/")).resolve()


def stateroot_var(sysroot: Path) -> Path:
    return sysroot / "ostree" / "deploy" / OSNAME / "var"
