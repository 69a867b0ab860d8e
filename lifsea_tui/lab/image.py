"""The lab's OS image: a Debian tree in the ostree layout, committed into an archive repo, and new versions.

The base is a debootstrap of Debian with systemd, D-Bus and journald, built once and cached. The tree is
turned into what ostree deploys: /etc moved to /usr/etc, an os-release naming the version, a kernel stub
under /usr/lib/modules (the lab boots with systemd-nspawn, so no kernel runs from it), and the package
list at /usr/share/lifsea/packages.list for the agent's diff summaries.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

OSNAME = "lifsea"
REF = "lifsea/x86_64/stable"
KERNEL = "6.1.0-lifsea"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# Realistic services for a container-host node: cron and a small web server stand in for workloads.
# systemd-resolved is the node's resolver (127.0.0.53), as on other container-optimized systems.
PACKAGES = ["systemd", "systemd-sysv", "systemd-resolved", "dbus", "procps", "iproute2", "cron", "nginx-light", "less"]

# The ops image: what the break-glass shell runs in. Diagnostic tools the node itself does not carry.
OPS_REF = "lifsea/x86_64/ops"
OPS_PACKAGES = [
    "procps", "iproute2", "less", "strace", "curl", "ca-certificates", "vim-tiny", "iputils-ping", "lsof",
    "dnsutils", "psmisc",
]  # fmt: skip
OPS_PROFILE = r"""# The break-glass shell: make it impossible to mistake for an ordinary one, and say what it may do.
PS1='\[\e[1;97;41m\] OPS \[\e[0m\] \u@\h:\w\$ '
case "$LIFSEA_OPS_ACCESS" in
  writable) what="WRITABLE: the node's /etc and /var can be changed at /host" ;;
  debug) what="DEBUG: strace, kill and ip can change the node; /host is read-only" ;;
  *) what="READ-ONLY: nothing here can change the node; its root is read-only at /host" ;;
esac
echo "ops shell on $(hostname), $what. Recorded."
"""

Progress = Callable[[str], None]


def recipe() -> str:
    """What the cached images are made of: a cache built from another recipe is not used."""
    text = "\n".join([SUITE, MIRROR, *PACKAGES, "--", *OPS_PACKAGES, OPS_PROFILE])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class ImageError(Exception):
    pass


def _run(argv: list[str], what: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        tail = " / ".join(result.stderr.strip().splitlines()[-3:])
        raise ImageError(f"{what} failed: {tail or f'exit status {result.returncode}'}")
    return result.stdout


def os_release(version: str) -> str:
    return (
        'NAME="LifseaOS"\nID=lifsea\nID_LIKE=debian\n'
        f'VERSION_ID="{version}"\nVERSION="{version}"\nPRETTY_NAME="LifseaOS {version}"\n'
        'HOME_URL="https://example.invalid/lifsea"\n'
    )


def dpkg_packages(root: Path) -> list[str]:
    """'name version' for each installed package, read from the tree's dpkg status file."""
    status = root / "var" / "lib" / "dpkg" / "status"
    if not status.exists():
        return []
    packages = []
    name = version = None
    installed = False
    for line in [*status.read_text(errors="replace").splitlines(), ""]:
        if line.startswith("Package: "):
            name = line.split(": ", 1)[1]
        elif line.startswith("Version: "):
            version = line.split(": ", 1)[1]
        elif line.startswith("Status: "):
            installed = line.endswith(" installed")
        elif not line.strip():
            if name and version and installed:
                packages.append(f"{name} {version}")
            name = version = None
            installed = False
    return sorted(packages)


def var_to_tmpfiles(root: Path) -> str:
    """tmpfiles.d lines that recreate the tree's /var directories and links on an empty /var at boot.

    ostree does not carry /var in a commit (it belongs to the node, not the image), so what packages put
    there must be made by systemd-tmpfiles, as image-based systems do.
    """
    lines = []
    var = root / "var"
    for path in sorted(var.rglob("*")):
        relative = "/" + str(path.relative_to(root))
        if any(part in ("cache", "log", "tmp") for part in path.relative_to(var).parts[:1]) and path.is_file():
            continue
        st = path.lstat()
        if path.is_symlink():
            lines.append(f"L {relative} - - - - {os.readlink(path)}")
        elif path.is_dir():
            lines.append(f"d {relative} {st.st_mode & 0o7777:04o} {st.st_uid} {st.st_gid} -")
    return "".join(f"{line}\n" for line in lines)


def to_ostree_layout(root: Path, version: str) -> None:
    """Make a plain root filesystem tree deployable by `ostree admin deploy`."""
    packages = dpkg_packages(root)
    if (root / "var").is_dir():
        tmpfiles = root / "usr" / "lib" / "tmpfiles.d"
        tmpfiles.mkdir(parents=True, exist_ok=True)
        (tmpfiles / "lifsea-var.conf").write_text(var_to_tmpfiles(root))
    # The node's name comes from the machine, not from the host that built the image.
    (root / "etc" / "hostname").unlink(missing_ok=True)
    if (root / "etc").exists():
        if (root / "usr" / "etc").exists():
            shutil.rmtree(root / "usr" / "etc")
        (root / "etc").rename(root / "usr" / "etc")
    for volatile in ("dev", "proc", "sys", "run", "tmp", "var"):
        path = root / volatile
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        path.mkdir(exist_ok=True)
    (root / "sysroot").mkdir(exist_ok=True)
    (root / "usr" / "lib").mkdir(parents=True, exist_ok=True)
    (root / "usr" / "lib" / "os-release").write_text(os_release(version))
    etc_release = root / "usr" / "etc" / "os-release"
    etc_release.unlink(missing_ok=True)
    etc_release.symlink_to("../usr/lib/os-release")
    kernel_dir = root / "usr" / "lib" / "modules" / KERNEL
    kernel_dir.mkdir(parents=True, exist_ok=True)
    (kernel_dir / "vmlinuz").write_text("lab kernel stub: nodes boot with systemd-nspawn\n")
    listing = root / "usr" / "share" / "lifsea"
    listing.mkdir(parents=True, exist_ok=True)
    (listing / "packages.list").write_text("".join(f"{p}\n" for p in packages))
    (listing / "version").write_text(f"{version}\n")


def commit(repo: Path, trees: list[str], version: str, subject: str, ref: str = REF) -> str:
    """Commit the layered `trees` (ostree --tree arguments, later ones on top) as `version` on `ref`."""
    out = _run(
        [
            "ostree",
            f"--repo={repo}",
            "commit",
            f"--branch={ref}",
            f"--subject={subject}",
            f"--add-metadata-string=version={version}",
            *(f"--tree={tree}" for tree in trees),
        ],
        f"commit {version}",
    )
    _run(["ostree", f"--repo={repo}", "summary", "--update"], "summary")
    return out.strip()


def init_repo(repo: Path) -> None:
    if not (repo / "config").exists():
        repo.mkdir(parents=True, exist_ok=True)
        _run(["ostree", f"--repo={repo}", "init", "--mode=archive"], "repo init")


def has_ref(repo: Path, ref: str = REF) -> bool:
    if not (repo / "config").exists():
        return False
    result = subprocess.run(["ostree", f"--repo={repo}", "rev-parse", ref], capture_output=True)
    return result.returncode == 0


def _debootstrap(rootfs: Path, packages: list[str], what: str, progress: Progress) -> Path:
    if rootfs.exists():
        shutil.rmtree(rootfs)
    progress(f"debootstrap {SUITE} for {what} ({', '.join(packages)}) from {MIRROR}: about a minute")
    _run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", SUITE, str(rootfs), MIRROR],
        f"debootstrap ({what})",
    )
    return rootfs


def build_base(repo: Path, work: Path, progress: Progress) -> str:
    """Debootstrap the base system and commit it as 1.0; returns the commit."""
    init_repo(repo)
    rootfs = _debootstrap(work / "rootfs", PACKAGES, "the OS image", progress)
    progress("turning the tree into the ostree layout")
    # A node's journal should persist on its /var, as on a real host.
    journald = rootfs / "etc" / "systemd" / "journald.conf.d"
    journald.mkdir(parents=True, exist_ok=True)
    (journald / "lifsea.conf").write_text("[Journal]\nStorage=persistent\n")
    to_ostree_layout(rootfs, "1.0")
    progress("committing LifseaOS 1.0 into ostree")
    checksum = commit(repo, [f"dir={rootfs}"], "1.0", "LifseaOS 1.0: base image")
    shutil.rmtree(rootfs)
    return checksum


def publish(
    repo: Path, version: str, subject: str | None = None, ref: str = REF, extra: dict[str, str] | None = None
) -> str:
    """Commit `version` on top of the ref's head with a visible change: os-release, release notes, a package.

    `extra` adds files (path in the image: content; content "-> TARGET" makes a symbolic link).
    """
    if not has_ref(repo, ref):
        raise ImageError(f"{repo} has no {ref}; bring the lab up first")
    subject = subject or f"LifseaOS {version}"
    with tempfile.TemporaryDirectory(prefix="lifsea-publish-") as tmp:
        overlay = Path(tmp)
        packages = _run(["ostree", f"--repo={repo}", "cat", ref, "/usr/share/lifsea/packages.list"], "read packages")
        lines = [line for line in packages.splitlines() if line and not line.startswith("lifsea-release ")]
        lines.append(f"lifsea-release {version}")
        share = overlay / "usr" / "share" / "lifsea"
        share.mkdir(parents=True)
        (share / "packages.list").write_text("".join(f"{line}\n" for line in sorted(lines)))
        (share / "version").write_text(f"{version}\n")
        (share / f"release-notes-{version}.txt").write_text(f"{subject}\n")
        (overlay / "usr" / "lib").mkdir(parents=True)
        (overlay / "usr" / "lib" / "os-release").write_text(os_release(version))
        motd = overlay / "usr" / "etc"
        motd.mkdir(parents=True)
        (motd / "motd").write_text(f"LifseaOS {version}: {subject}\n")
        links = []
        for name, content in (extra or {}).items():
            path = overlay / name.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            if content.startswith("-> "):
                links.append((path, content[3:]))
            else:
                path.write_text(content)
        # Every directory here replaces the metadata of the same directory in the image, the root included.
        overlay.chmod(0o755)
        for path in overlay.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        for path, target in links:
            path.symlink_to(target)
        return commit(repo, [f"ref={ref}", f"dir={overlay}"], version, subject, ref)


def build_ops(repo: Path, work: Path, progress: Progress) -> str:
    """Debootstrap the ops image (a shell and diagnostic tools) and commit it on OPS_REF; returns the commit.

    It is a container root, not a bootable tree: /etc stays where it is, and /host is where the agent
    mounts the node's root.
    """
    init_repo(repo)
    rootfs = _debootstrap(work / "ops-rootfs", OPS_PACKAGES, "the ops image", progress)
    # Device nodes cannot be committed, and the runtime mounts /dev, /proc, /sys, /run and /tmp anyway.
    for volatile in ("var/cache/apt", "var/lib/apt/lists", "dev", "proc", "sys", "run", "tmp"):
        shutil.rmtree(rootfs / volatile, ignore_errors=True)
        (rootfs / volatile).mkdir(exist_ok=True)
    (rootfs / "host").mkdir(exist_ok=True)
    (rootfs / "etc" / "hostname").unlink(missing_ok=True)
    (rootfs / "etc" / "profile.d" / "lifsea-ops.sh").write_text(OPS_PROFILE)
    progress("committing the ops image into ostree")
    checksum = commit(repo, [f"dir={rootfs}"], "ops-1", "LifseaOS ops image", OPS_REF)
    shutil.rmtree(rootfs)
    return checksum
