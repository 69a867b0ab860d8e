"""Read-only looks at the node for guided debugging: how full /var is, the clock, DNS, and /etc changed.

Everything here reads; nothing changes the node. Each look is bounded in time and size, because it is
asked for at 3 a.m. on a node that is already in trouble: a /var with millions of files must not make
the answer hang, and a nameserver that never answers must not either.
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import os
import random
import socket
import stat
import struct
import threading
import time
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path

from lifsea_tui.agent.errors import ApiError
from lifsea_tui.api import ClockStatus, DiskUsage, DnsProbe, DnsStatus, EtcChange, EtcChanges, PathSize

DISK_PATHS = ("var", "etc")
WALK_BUDGET = 2.0  # seconds for the size walk below /var
LARGEST = 10
ETC_LIMIT = 5000  # files compared at most
DNS_TIMEOUT = 1.0
MAX_NAMESERVERS = 3  # as many as the C library uses
CLONE_NEWNET = 0x40000000


def within(host_root: Path, node_path: str) -> Path:
    """A path as the node sees it, found under host_root: absolute symlinks resolve inside the node."""
    path = host_root
    for _ in range(40):
        candidate = path / node_path.lstrip("/")
        try:
            target = os.readlink(candidate)
        except OSError:
            return candidate
        node_path = target if target.startswith("/") else str(Path(node_path).parent / target)
    raise ApiError("bad_request", f"{node_path}: too many symbolic links")


# -- disk -------------------------------------------------------------------------------------------


def disk(host_root: Path, which: str, budget: float = WALK_BUDGET) -> DiskUsage:
    if which not in DISK_PATHS:
        raise ApiError("bad_request", f"path must be one of {', '.join(DISK_PATHS)}")
    top = host_root / which
    try:
        stats = os.statvfs(top)
        device = os.lstat(top).st_dev
    except OSError as error:
        raise ApiError("unavailable", f"cannot read /{which}: {error.strerror}") from error
    total = stats.f_blocks * stats.f_frsize
    free = stats.f_bavail * stats.f_frsize
    used = total - stats.f_bfree * stats.f_frsize
    sizes, complete = _sizes(top, device, time.monotonic() + budget)
    largest = heapq.nlargest(LARGEST, sizes.items(), key=lambda item: item[1])
    return DiskUsage(
        path=f"/{which}",
        total_bytes=total,
        free_bytes=free,
        used_bytes=used,
        used_percent=round(100.0 * used / total, 1) if total else 0.0,
        largest=[PathSize(path=f"/{which}/{rel}", bytes=size) for rel, size in largest if size > 0],
        complete=complete,
    )


def _sizes(top: Path, device: int, deadline: float) -> tuple[dict[str, int], bool]:
    """Allocated bytes of every file and directory (summed) down to depth 3, on top's filesystem only.

    Like `du -x`: allocated blocks, not apparent sizes, so a sparse file counts for what it takes. Files
    below depth 3 count towards their depth-3 ancestor.
    """
    sizes: dict[str, int] = {}
    stack: list[tuple[str, int]] = [("", 0)]
    visited = 0
    while stack:
        rel, depth = stack.pop()
        try:
            entries = list(os.scandir(top / rel))
        except OSError:
            continue
        for entry in entries:
            visited += 1
            if visited % 256 == 0 and time.monotonic() > deadline:
                return sizes, False
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if info.st_dev != device:
                continue
            child = f"{rel}/{entry.name}" if rel else entry.name
            size = info.st_blocks * 512
            # Count the entry at each ancestor up to depth 3, and itself when it is that shallow.
            parts = child.split("/")
            for level in range(1, min(len(parts), 3) + 1):
                key = "/".join(parts[:level])
                sizes[key] = sizes.get(key, 0) + size
            if stat.S_ISDIR(info.st_mode):
                stack.append((child, depth + 1))
    return sizes, True


# -- clock ------------------------------------------------------------------------------------------


class _Timex(ctypes.Structure):
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("padding", ctypes.c_int * 11),
    ]


TIME_ERROR = 5  # adjtimex's answer when the clock is not synchronized
STA_UNSYNC = 0x0040


def clock(host_root: Path) -> ClockStatus:
    """The node's time and whether the kernel says its clock is synchronized (what timedatectl shows)."""
    synchronized: bool | None = None
    detail = None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        timex = _Timex()
        state = libc.adjtimex(ctypes.byref(timex))
        if state < 0:
            detail = f"adjtimex: {os.strerror(ctypes.get_errno())}"
        else:
            synchronized = state != TIME_ERROR and not timex.status & STA_UNSYNC
    except (OSError, AttributeError) as error:
        detail = f"adjtimex: {error}"
    zone = None
    try:
        target = os.readlink(host_root / "etc" / "localtime")
        zone = target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else target
    except OSError:
        try:
            zone = (host_root / "etc" / "timezone").read_text().strip() or None
        except OSError:
            pass
    return ClockStatus(node_time=datetime.now(UTC), ntp_synchronized=synchronized, timezone=zone, detail=detail)


# -- DNS --------------------------------------------------------------------------------------------


def nameservers(resolv_conf: str) -> list[str]:
    servers = []
    for line in resolv_conf.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            servers.append(fields[1])
    return servers[:MAX_NAMESERVERS]


def _query(name: str, ident: int) -> bytes:
    labels = b"".join(bytes([len(part)]) + part.encode("idna") for part in name.rstrip(".").split(".") if part)
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", 1, 1)


def _socket_in(netns: Path | None, family: int) -> socket.socket:
    """A UDP socket in the node's network namespace (a socket keeps the namespace it was made in).

    setns applies to the calling thread only, so a thread of its own switches, makes the socket and ends.
    """
    if netns is None or not netns.exists():
        return socket.socket(family, socket.SOCK_DGRAM)
    result: Future[socket.socket] = Future()

    def make() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(netns, "rb") as target:
                if libc.setns(target.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {netns}: {os.strerror(ctypes.get_errno())}")
            result.set_result(socket.socket(family, socket.SOCK_DGRAM))
        except BaseException as error:  # noqa: BLE001 - handed to the waiting caller
            result.set_exception(error)

    thread = threading.Thread(target=make, name="netns-socket")
    thread.start()
    thread.join()
    return result.result()


def probe(server: str, name: str, netns: Path | None, timeout: float = DNS_TIMEOUT) -> DnsProbe:
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    ident = random.randrange(1 << 16)
    started = time.monotonic()
    try:
        with _socket_in(netns, family) as sock:
            sock.settimeout(timeout)
            sock.connect((server, 53))
            sock.send(_query(name, ident))
            while True:
                reply = sock.recv(4096)
                if len(reply) >= 12 and struct.unpack("!H", reply[:2])[0] == ident:
                    break
    except TimeoutError:
        return DnsProbe(
            server=server, ok=False, rcode=None, answers=0, millis=None, error=f"no answer in {timeout:g} s"
        )
    except (OSError, UnicodeError) as error:
        why = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        return DnsProbe(server=server, ok=False, rcode=None, answers=0, millis=None, error=why)
    flags, _qd, answers = struct.unpack("!HHH", reply[2:8])
    rcode = flags & 0xF
    return DnsProbe(
        server=server,
        ok=rcode == 0 and answers > 0,
        rcode=rcode,
        answers=answers,
        millis=round((time.monotonic() - started) * 1000, 2),
        error=None if rcode == 0 and answers > 0 else ("no address in the answer" if rcode == 0 else None),
    )


def dns(host_root: Path, netns: Path | None, name: str | None) -> DnsStatus:
    try:
        text = within(host_root, "/etc/resolv.conf").read_text(errors="replace")[:4096]
    except OSError as error:
        text = f"# cannot read /etc/resolv.conf: {error.strerror}\n"
    if not name:
        name = "localhost"
        # The node's /etc/hostname when it has one (its resolver answers for its own name). Not its /proc:
        # a read of /proc/sys/kernel/hostname answers with the reader's UTS namespace, not the node's.
        with contextlib.suppress(OSError):
            name = (host_root / "etc" / "hostname").read_text().strip() or name
    servers = nameservers(text)
    return DnsStatus(
        resolv_conf=text, nameservers=servers, name=name, probes=[probe(server, name, netns) for server in servers]
    )


# -- /etc against the image -------------------------------------------------------------------------

# Files every node writes for itself at boot: different from the image by design, never a finding.
ETC_NOISE = {"machine-id", "hostname", "resolv.conf", "mtab", "ld.so.cache", ".pwd.lock", "adjtime", ".updated"}


def _entries(top: Path, limit: int) -> tuple[dict[str, os.stat_result], bool]:
    found: dict[str, os.stat_result] = {}
    for directory, subdirs, files in os.walk(top):
        for name in [*files, *(d for d in subdirs if os.path.islink(os.path.join(directory, d)))]:
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, top)
            try:
                found[rel] = os.lstat(path)
            except OSError:
                continue
            if len(found) >= limit:
                return found, False
    return found, True


def _same(a: Path, a_stat: os.stat_result, b: Path, b_stat: os.stat_result) -> bool:
    if stat.S_IFMT(a_stat.st_mode) != stat.S_IFMT(b_stat.st_mode):
        return False
    try:
        if stat.S_ISLNK(a_stat.st_mode):
            return os.readlink(a) == os.readlink(b)
        if a_stat.st_size != b_stat.st_size:
            return False
        return a.read_bytes() == b.read_bytes() if a_stat.st_size <= 1 << 20 else True
    except OSError:
        return True


def etc_changes(host_root: Path, since: datetime | None = None) -> EtcChanges:
    etc, defaults = host_root / "etc", host_root / "usr" / "etc"
    if not defaults.is_dir():
        raise ApiError("unavailable", "the image has no /usr/etc to compare /etc with (not an ostree node?)")
    current, complete_now = _entries(etc, ETC_LIMIT)
    image, complete_image = _entries(defaults, ETC_LIMIT)
    changes = []
    for rel, info in current.items():
        if rel in ETC_NOISE:
            continue
        when = datetime.fromtimestamp(info.st_mtime, UTC)
        if rel not in image:
            changes.append(EtcChange(path=f"/etc/{rel}", change="added", mtime=when))
        elif not _same(etc / rel, info, defaults / rel, image[rel]):
            changes.append(EtcChange(path=f"/etc/{rel}", change="modified", mtime=when))
    if complete_now:
        changes.extend(
            EtcChange(path=f"/etc/{rel}", change="removed", mtime=None)
            for rel in image
            if rel not in current and rel not in ETC_NOISE
        )
    if since is not None:
        changes = [c for c in changes if c.mtime is not None and c.mtime >= since]
    epoch = datetime.fromtimestamp(0, UTC)
    changes.sort(key=lambda c: c.mtime or epoch, reverse=True)
    return EtcChanges(changes=changes, complete=complete_now and complete_image)
