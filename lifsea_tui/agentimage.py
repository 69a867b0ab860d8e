"""The agent as a container image, built offline with Debian's tools, and the runc bundle that runs it.

A LifseaOS host has no Python: the agent runs in a privileged container with the host at /host. Teams
with a registry build deploy/Containerfile; this module builds the same image without a container
engine or any download outside the package registries (Debian's mirror, PyPI):

    debootstrap (PACKAGES) -> a venv at VENV with the project's wheel[agent] -> umoci: an OCI image layout

and writes the runc bundle a host (the systemd unit) or the lab runs it from, with the mounts a
DaemonSet gives the pod: the host's root at /host, its sysroot at /host/sysroot, its /run (the bus) at
/host/run, the agent's state and config, the host's pid namespace (ops sessions join /proc/1/ns) and,
privileged, every capability, no seccomp, every device.

    python -m lifsea_tui.agentimage build [--out build/agent-image] [--dirty]
    python -m lifsea_tui.agentimage bundle --image build/agent-image:0.1.0 --out /var/lib/lifsea-agent/bundle

An image is built from a clean tree only (its label names the commit it was built from); `--dirty`
says otherwise out loud.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifsea_tui import __version__

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# The same as deploy/Containerfile (a test holds them together). systemd: journalctl, for the logs.
PACKAGES = [
    "python3",
    "python3-venv",
    "python3-gi",
    "gir1.2-ostree-1.0",
    "ostree",
    "runc",
    "ca-certificates",
    "systemd",
]
VENV = "/opt/lifsea-agent"
ENTRYPOINT = [f"{VENV}/bin/lifsea-agent"]
CMD = ["serve", "--config", "/etc/lifsea-agent/agent.toml"]
PORT = 7443
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NAME = "lifsea-agent"
ROOT = Path(__file__).resolve().parent.parent  # the repository, when run from a checkout

Progress = Callable[[str], None]

# Every capability, in kernel order (bit 0 first); a privileged container gets those the host holds.
CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
]  # fmt: skip


class ImageError(Exception):
    pass


def _run(argv: list[str], what: str, **kwargs: Any) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kwargs)
    if result.returncode != 0:
        tail = " / ".join((result.stderr or result.stdout).strip().splitlines()[-4:])
        raise ImageError(f"{what} failed (exit {result.returncode}): {tail}")
    return str(result.stdout)


def tool_missing() -> str | None:
    """Why this machine cannot build the image, or None."""
    missing = [tool for tool in ("debootstrap", "umoci", "git") if shutil.which(tool) is None]
    return f"missing {', '.join(missing)} (scripts/setup.sh installs them)" if missing else None


def source_state(repo: Path) -> str:
    """The commit the image is built from; an ImageError naming the changes when the tree is dirty."""
    changes = _run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=normal"], "git status")
    if changes.strip():
        names = [line[3:] for line in changes.splitlines()][:8]
        raise ImageError(
            f"the tree at {repo} has uncommitted changes ({', '.join(names)}): an image must name the commit "
            "it was built from; commit them, or pass --dirty"
        )
    return _run(["git", "-C", str(repo), "rev-parse", "HEAD"], "git rev-parse").strip()


def build(out: Path, *, repo: Path = ROOT, dirty: bool = False, progress: Progress = print) -> str:
    """Build the agent image into the OCI layout `out`; returns its reference (out:VERSION)."""
    if why := tool_missing():
        raise ImageError(why)
    try:
        revision = source_state(repo)
    except ImageError:
        if not dirty:
            raise
        revision = _run(["git", "-C", str(repo), "rev-parse", "HEAD"], "git rev-parse").strip() + "-dirty"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lifsea-agent-image-", dir=out.parent) as tmp:
        work = Path(tmp)
        progress("building the project's wheel")
        _run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), str(repo)], "pip wheel"
        )
        (wheel,) = (work / "dist").glob("lifsea_tui-*.whl")
        progress("downloading the agent's dependencies (PyPI, the versions requirements.lock pins)")
        lock = repo / "requirements.lock"
        constraints = ["-c", str(lock)] if lock.exists() else []
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "-d",
                str(work / "wheels"),
                *constraints,
                f"{wheel}[agent]",
            ],
            "pip download",
        )
        rootfs = work / "rootfs"
        progress(f"debootstrap {SUITE} with {', '.join(PACKAGES)}: a minute or two")
        _run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(rootfs), MIRROR],
            "debootstrap",
        )
        progress(f"installing the agent into {VENV}")
        shutil.copytree(work / "wheels", rootfs / "tmp" / "wheels")
        shutil.copy(wheel, rootfs / "tmp" / "wheels")
        _run(["chroot", str(rootfs), "python3", "-m", "venv", "--system-site-packages", VENV], "venv")
        _run(
            [
                "chroot", str(rootfs), f"{VENV}/bin/pip", "install", "-q", "--no-index", "--find-links", "/tmp/wheels",
                "--disable-pip-version-check", f"/tmp/wheels/{wheel.name}[agent]",
            ],
            "pip install (in the image)",
        )  # fmt: skip
        for volatile in ("tmp/wheels", "var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
            shutil.rmtree(rootfs / volatile, ignore_errors=True)
        for directory in ("etc/lifsea-agent", "var/lib/lifsea-agent", "host"):
            (rootfs / directory).mkdir(parents=True, exist_ok=True)
        (rootfs / "etc" / "hostname").unlink(missing_ok=True)
        progress(f"writing the OCI image {out}:{__version__} (umoci)")
        image = f"{out}:{__version__}"
        if not (out / "index.json").exists():
            _run(["umoci", "init", "--layout", str(out)], "umoci init")
        _run(["umoci", "new", "--image", image], "umoci new")
        bundle = work / "bundle"
        _run(["umoci", "unpack", "--image", image, str(bundle)], "umoci unpack")
        shutil.rmtree(bundle / "rootfs")
        os.rename(rootfs, bundle / "rootfs")
        _run(["umoci", "repack", "--image", image, str(bundle)], "umoci repack")
        config = ["--config.entrypoint", ENTRYPOINT[0], "--config.env", f"PATH={VENV}/bin:{PATH}"]
        for arg in CMD:
            config += ["--config.cmd", arg]
        labels = {
            "org.opencontainers.image.title": NAME,
            "org.opencontainers.image.version": __version__,
            "org.opencontainers.image.revision": revision,
        }
        for key, value in labels.items():
            config += ["--config.label", f"{key}={value}"]
        _run(["umoci", "config", "--image", image, *config, "--config.exposedports", f"{PORT}/tcp"], "umoci config")
        _run(["umoci", "gc", "--layout", str(out)], "umoci gc")
    progress(f"built {image} from {revision}")
    return image


def labels(image: str) -> dict[str, str]:
    """The labels of an image in a layout (out:TAG), as its config holds them."""
    layout, _, tag = image.rpartition(":")
    index = json.loads((Path(layout) / "index.json").read_text())
    manifest_digest = next(
        m["digest"]
        for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
    )
    blob = Path(layout) / "blobs" / "sha256"
    manifest = json.loads((blob / manifest_digest.split(":", 1)[1]).read_text())
    config = json.loads((blob / manifest["config"]["digest"].split(":", 1)[1]).read_text())
    found: dict[str, str] = config.get("config", {}).get("Labels") or {}
    return found


@dataclass
class Mounts:
    """Where the host's parts are, from where runc runs the container. A real host: the defaults."""

    host_root: Path = Path("/")
    sysroot: Path = Path("/sysroot")
    run: Path = Path("/run")  # the host's /run, whose dbus/system_bus_socket the agent talks to
    config: Path = Path("/etc/lifsea-agent")
    state: Path = Path("/var/lib/lifsea-agent")
    var: Path | None = None  # the host's /var when it is not under host_root (the lab's nodes)
    run_at: str = "/host/run"  # where `run` goes in the container (the lab binds only run/dbus)
    pid_namespace: Path | None = None  # None: the host's (hostPID), as runc's own
    args: list[str] = field(default_factory=list)  # after the image's command (--node-name NAME)


def held_capabilities() -> list[str]:
    """CAPABILITIES this process may pass on (its bounding set): a privileged container gets all of
    them, and asking runc for one the host withholds fails the start ("unable to apply caps")."""
    try:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("CapBnd:"))
    except (OSError, StopIteration):
        return list(CAPABILITIES)
    mask = int(line.split()[1], 16)
    return [name for number, name in enumerate(CAPABILITIES) if mask & (1 << number)]


def _bind(destination: str, source: Path, *options: str) -> dict[str, Any]:
    return {"destination": destination, "type": "bind", "source": str(source), "options": ["rbind", *options]}


def runtime_config(base: dict[str, Any], mounts: Mounts) -> dict[str, Any]:
    """`base` (umoci's config.json for the image) made privileged, with the host's parts mounted."""
    config: dict[str, Any] = json.loads(json.dumps(base))  # a deep copy
    process = config["process"]
    process["args"] = [*ENTRYPOINT, *CMD, *mounts.args]
    process["terminal"] = False
    process["noNewPrivileges"] = False
    held = held_capabilities()
    process["capabilities"] = {kind: list(held) for kind in ("bounding", "effective", "permitted")}
    process.pop("rlimits", None)
    process.pop("apparmorProfile", None)
    config["root"] = {"path": "rootfs", "readonly": True}
    config.pop("hostname", None)
    kept = {"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue"}
    host = [
        _bind("/host", mounts.host_root, "rw"),
        *([_bind("/host/var", mounts.var, "rw")] if mounts.var is not None else []),
        _bind("/host/sysroot", mounts.sysroot, "rw"),
        _bind(mounts.run_at, mounts.run, "rw"),
        _bind("/etc/lifsea-agent", mounts.config, "ro"),
        _bind("/var/lib/lifsea-agent", mounts.state, "rw"),
    ]
    config["mounts"] = [
        *(m for m in config.get("mounts", []) if m["destination"] in kept),
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup2", "source": "cgroup2", "options": ["nosuid", "nodev"]},
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=755"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]},
        # libostree stages what it pulls under /var/tmp (the root is read-only)
        {"destination": "/var/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]},
        *host,
    ]  # fmt: skip
    linux = config.setdefault("linux", {})
    # Its own mount namespace; the host's pid namespace (or the one named) and network; no user or
    # cgroup namespace, so the ops sessions' runc sees the host's cgroups.
    namespaces = [{"type": "mount"}, {"type": "ipc"}, {"type": "uts"}]
    if mounts.pid_namespace is not None:
        namespaces.append({"type": "pid", "path": str(mounts.pid_namespace)})
    linux["namespaces"] = namespaces
    linux.pop("seccomp", None)
    linux.pop("maskedPaths", None)
    linux.pop("readonlyPaths", None)
    linux.pop("uidMappings", None)
    linux.pop("gidMappings", None)
    linux["resources"] = {"devices": [{"allow": True, "access": "rwm"}]}
    return config


def bundle(image: str, out: Path, mounts: Mounts | None = None) -> Path:
    """Unpack `image` (LAYOUT:TAG) into the runc bundle `out` (replaced) and write its config.json."""
    if shutil.which("umoci") is None:
        raise ImageError("umoci is missing (scripts/setup.sh installs it)")
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _run(["umoci", "unpack", "--image", image, str(out)], "umoci unpack")
    write_config(out, mounts or Mounts())
    return out


def write_config(out: Path, mounts: Mounts) -> None:
    """(Re)write a bundle's config.json for `mounts`, from the one umoci unpacked (kept beside it)."""
    original = out / "config.image.json"
    if not original.exists():
        shutil.copy(out / "config.json", original)
    config = runtime_config(json.loads(original.read_text()), mounts)
    fresh = out / "config.json.tmp"
    fresh.write_text(json.dumps(config, indent=2))
    os.replace(fresh, out / "config.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lifsea_tui.agentimage", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    made = commands.add_parser("build", help="build the agent image into an OCI layout")
    made.add_argument("--out", type=Path, default=ROOT / "build" / "agent-image", help="the OCI layout directory")
    made.add_argument("--dirty", action="store_true", help="build from a tree with uncommitted changes anyway")
    made.add_argument("--repo", type=Path, default=ROOT, help="the repository to build from (default: this one)")
    unpacked = commands.add_parser("bundle", help="unpack the image as a runc bundle for a host (the systemd unit)")
    unpacked.add_argument("--image", required=True, help="LAYOUT:TAG, as build printed it")
    unpacked.add_argument("--out", type=Path, default=Path("/var/lib/lifsea-agent/bundle"))
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(build(args.out, repo=args.repo, dirty=args.dirty, progress=lambda line: print(line, file=sys.stderr)))
        else:
            print(bundle(args.image, args.out))
    except ImageError as error:
        print(f"lifsea-agent-image: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
