"""What a break-glass shell may do to its node, per access level: the OCI runtime config that enforces it.

The ops container shares the node's pid, network, IPC and UTS namespaces, so that `ps`, `ip` and `ss`
show the node. That closeness is why each level has to be a real boundary, enforced by the kernel:

- read-only (the default): nothing the shell does can change the node. It runs as an unprivileged uid
  of its own (unique to the session, on no node process), keeping only CAP_DAC_READ_SEARCH, so it reads
  every file but owns none; the kernel then refuses it the node's processes (no signals, no ptrace, no
  /proc/PID/root, /proc/PID/fd or /proc/PID/mem: a different uid without CAP_SYS_PTRACE), its network
  configuration (no CAP_NET_ADMIN in the node's namespace), mounts and sysctls. Every mount under /host
  and /sys is read-only recursively (runc's `rro`: mount_setattr with AT_RECURSIVE, so no nested mount
  stays writable), no_new_privileges stops setuid binaries and file capabilities, and a seccomp filter
  refuses what should never be needed (mount, namespaces, ptrace, modules, kexec, bpf, handles...).
- debug: root with ptrace, signals and network administration, so strace, lsof, kill and ip work on the
  node's processes and network. That can change the node (a root with ptrace can also reach a node
  process's root through /proc), and the banner, the session record and the audit log say so. /host
  stays read-only; mounts, namespaces and modules stay refused.
- writable: as debug, plus the node's /etc and /var read-write at /host (its /usr stays read-only), with
  root's file capabilities. For the runbooks that must undo a change on disk or free a full /var.

A root shell that can change the node can also change the node's audit log: that is why the audit trail
is meant to be collected off the node.
"""

from __future__ import annotations

import platform
import re
import secrets
from pathlib import Path
from typing import Any

from lifsea_tui.api import OpsAccess

# Capability numbers, to keep only those the agent itself holds (runc cannot grant more).
CAPABILITY_BITS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3, "CAP_FSETID": 4,
    "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19, "CAP_SYS_RESOURCE": 24, "CAP_AUDIT_WRITE": 29,
}  # fmt: skip
DEBUG_CAPABILITIES = [
    "CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE", "CAP_KILL", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE",
]  # fmt: skip
CAPABILITIES: dict[OpsAccess, list[str]] = {
    OpsAccess.read_only: ["CAP_DAC_READ_SEARCH"],
    OpsAccess.debug: DEBUG_CAPABILITIES,
    OpsAccess.writable: [
        *DEBUG_CAPABILITIES, "CAP_DAC_OVERRIDE", "CAP_CHOWN", "CAP_FOWNER", "CAP_FSETID", "CAP_SETUID", "CAP_SETGID",
        "CAP_SYS_RESOURCE", "CAP_AUDIT_WRITE",
    ],
}  # fmt: skip

# The read-only shell's uid: one of these, chosen per session. No node process runs as one, and two
# sessions do not share one, so not even another ops shell is within reach of a signal.
SESSION_UID_BASE = 0x7F000000
SESSION_UID_SPAN = 0x10000

# Refused at every level (errno EPERM): what no debugging of a node needs, and what could undo the
# boundary (mounts, namespaces, kernel code, handles that bypass paths).
DENIED_ALWAYS = [
    "mount", "umount2", "pivot_root", "unshare", "setns", "fsopen", "fsmount", "fsconfig", "fspick", "move_mount",
    "open_tree", "mount_setattr", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "bpf", "perf_event_open", "open_by_handle_at", "name_to_handle_at", "keyctl",
    "add_key", "request_key", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "fanotify_init", "quotactl", "acct", "settimeofday", "clock_settime", "sethostname", "setdomainname",
    "vhangup", "lookup_dcookie",
]  # fmt: skip
DENIED_READ_ONLY = ["ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd"]
# clone() with a flag that makes a namespace is refused (each flag its own rule: the rules are OR'd);
# clone3 passes its flags in memory seccomp cannot read, so it says "not implemented" and the C library
# falls back to clone.
NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000, "CLONE_NEWTIME": 0x00000080,
}  # fmt: skip
EPERM, ENOSYS = 1, 38
# Where clone's flags are its first argument, and the architectures a process there may use.
SECCOMP_ARCHES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}


def _mount(destination: str, kind: str, source: str, *options: str) -> dict[str, Any]:
    return {"destination": destination, "type": kind, "source": source, "options": list(options)}


BASE_MOUNTS: list[dict[str, Any]] = [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    _mount("/dev", "tmpfs", "tmpfs", "nosuid", "strictatime", "mode=755", "size=65536k"),
    _mount("/dev/pts", "devpts", "devpts", "nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"),
    _mount("/dev/shm", "tmpfs", "shm", "nosuid", "noexec", "nodev", "mode=1777", "size=65536k"),
    # Recursively read-only at every level: nested mounts under /sys (cgroups, bpf, debugfs) included.
    _mount("/sys", "none", "/sys", "rbind", "nosuid", "noexec", "nodev", "rro"),
    _mount("/run", "tmpfs", "tmpfs", "nosuid", "nodev", "mode=755", "size=64m"),
]


def unsupported() -> str | None:
    """Why this machine cannot enforce the levels (the seccomp rules name clone's first argument)."""
    if platform.machine() not in SECCOMP_ARCHES:
        return f"the ops shell's seccomp filter is written for {', '.join(SECCOMP_ARCHES)}, not {platform.machine()}"
    return None


def runc_too_old(version_output: str) -> str | None:
    """Why this runc cannot hold the levels: before 1.1 it takes `rro` as mount data and ignores it, which
    would leave mounts under /host writable without a word."""
    found = re.search(r"runc version (\d+)\.(\d+)", version_output)
    if found is None:
        return f"cannot tell runc's version from {version_output[:60]!r}"
    if (int(found.group(1)), int(found.group(2))) < (1, 1):
        version = f"{found.group(1)}.{found.group(2)}"
        return f"runc {version} is too old for the access levels (recursive read-only mounts need 1.1)"
    return None


def held(wanted: list[str]) -> list[str]:
    """The capabilities in `wanted` that are in this process's bounding set."""
    try:
        status = Path("/proc/self/status").read_text()
        bounding = int(status.split("CapBnd:", 1)[1].split()[0], 16)
    except (OSError, IndexError, ValueError):
        return list(wanted)
    return [name for name in wanted if bounding >> CAPABILITY_BITS[name] & 1]


def session_uid() -> int:
    return SESSION_UID_BASE + secrets.randbelow(SESSION_UID_SPAN)


def seccomp(access: OpsAccess) -> dict[str, Any]:
    denied = DENIED_ALWAYS + (DENIED_READ_ONLY if access == OpsAccess.read_only else [])
    rules: list[dict[str, Any]] = [
        {"names": denied, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
    ]
    for flag in NAMESPACE_FLAGS.values():
        rules.append(
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": EPERM,
                "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
            }
        )
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": SECCOMP_ARCHES.get(platform.machine(), []),
        "syscalls": rules,
    }


def passwd_files(image_root: Path, bundle: Path, uid: int, access: OpsAccess) -> list[dict[str, Any]]:
    """/etc/passwd and /etc/group with the session's user, so the shell has a name and a home."""
    mounts = []
    for name, line in (
        ("passwd", f"ops:x:{uid}:{uid}:break-glass shell ({access.value}):/root:/bin/bash\n"),
        ("group", f"ops:x:{uid}:\n"),
    ):
        try:
            text = (image_root / "etc" / name).read_text()
        except OSError:
            text = ""
        (bundle / name).write_text(text + line)
        mounts.append(_mount(f"/etc/{name}", "bind", str(bundle / name), "bind", "ro"))
    return mounts


def bundle_spec(
    *,
    access: OpsAccess,
    image_root: Path,
    bundle: Path,
    namespaces: Path,
    cgroup: str,
    session_id: str,
    host_mounts: list[dict[str, Any]],
    shell: list[str],
    term: str,
) -> dict[str, Any]:
    """The OCI runtime config of an ops container at `access`."""
    uid = session_uid() if access == OpsAccess.read_only else 0
    owned = [f"uid={uid}", f"gid={uid}"] if uid else []
    caps = held(CAPABILITIES[access])
    user_mounts = passwd_files(image_root, bundle, uid, access) if uid else []
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": True,
            "user": {"uid": uid, "gid": uid},
            "args": shell,
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                f"TERM={term}",
                "HOME=/root",
                "LANG=C.UTF-8",
                f"LIFSEA_OPS_SESSION={session_id}",
                f"LIFSEA_OPS_ACCESS={access.value}",  # the shell's greeting says what it may do
            ],
            "cwd": "/root",
            # Ambient too, so that the read-only shell's uid keeps its one capability across exec.
            "capabilities": {kind: caps for kind in ("bounding", "effective", "permitted", "inheritable", "ambient")},
            "noNewPrivileges": True,
        },
        "root": {"path": str(image_root), "readonly": True},
        # No "hostname": the container shares the node's uts namespace, and setting one would rename the node.
        "mounts": [
            *BASE_MOUNTS,
            # Owned by the shell's user: runc gives a tmpfs the mode of the directory it covers.
            _mount("/tmp", "tmpfs", "tmpfs", "nosuid", "nodev", "mode=1777", "size=256m", *owned),
            _mount("/root", "tmpfs", "tmpfs", "nosuid", "nodev", "mode=700", "size=64m", *owned),
            *user_mounts,
            *host_mounts,
        ],
        "linux": {
            "namespaces": [
                {"type": "pid", "path": str(namespaces / "pid")},
                {"type": "network", "path": str(namespaces / "net")},
                {"type": "ipc", "path": str(namespaces / "ipc")},
                {"type": "uts", "path": str(namespaces / "uts")},
                {"type": "mount"},
            ],
            "cgroupsPath": cgroup,
            "seccomp": seccomp(access),
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }


def host_mounts(access: OpsAccess, host_root: Path, booted: Path | None, var: Path | None) -> list[dict[str, Any]]:
    """The node's root at /host: its booted deployment, its /usr always read-only, its /var."""
    mode = "rw" if access == OpsAccess.writable else "rro"
    if booted is None:
        return [_mount("/host", "bind", str(host_root), "rbind", mode)]
    mounts = [
        _mount("/host", "bind", str(booted), "rbind", mode),
        _mount("/host/usr", "bind", str(booted / "usr"), "rbind", "rro"),
    ]
    if var is not None:
        mounts.append(_mount("/host/var", "bind", str(var), "rbind", mode))
    return mounts
