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

from lifsea_tui.agent import nodefs
from lifsea_tui.agent.errors import ApiError
from lifsea_tui.api import ClockStatus, DiskUsage, DnsProbe, DnsStatus, EtcChange, EtcChanges, PathSize

DISK_PATHS = ("var", "etc")
WALK_BUDGET = 2.0  # seconds for the size walk below /var
LARGEST = 10
ETC_LIMIT = 5000  # files compared at most
ETC_BUDGET = 2.0  # seconds for walking and comparing /etc
COMPARE_LIMIT = 1 << 20  # bigger files are compared by size only
DNS_TIMEOUT = 1.0
MAX_NAMESERVERS = 3  # as many as the C library uses
CLONE_NEWNET = 0x40000000


# -- disk -------------------------------------------------------------------------------------------


def disk(host_root: Path, which: str, budget: float = WALK_BUDGET) -> DiskUsage:
    if which not in DISK_PATHS:
        raise ApiError("bad_request", f"path must be one of {', '.join(DISK_PATHS)}")
    try:
        top = nodefs.open_in(host_root, f"/{which}", directory=True)
    except OSError as error:
        raise ApiError("unavailable", f"cannot read /{which}: {error.strerror}") from error
    try:
        stats = os.fstatvfs(top)
        device = os.fstat(top).st_dev
        sizes, complete = _sizes(top, device, time.monotonic() + budget)
    except OSError as error:
        raise ApiError("unavailable", f"cannot read /{which}: {error.strerror}") from error
    finally:
        os.close(top)
    total = stats.f_blocks * stats.f_frsize
    free = stats.f_bavail * stats.f_frsize
    used = total - stats.f_bfree * stats.f_frsize
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


def _sizes(top: int, device: int, deadline: float) -> tuple[dict[str, int], bool]:
    """Allocated bytes of every file and directory (summed) down to depth 3, on top's filesystem only.

    Like `du -x`: allocated blocks, not apparent sizes, so a sparse file counts for what it takes. Files
    below depth 3 count towards their depth-3 ancestor. Walked by directory descriptors from `top`
    (os.fwalk), never by path, so a link swapped in mid-walk does not lead off the node.
    """
    sizes: dict[str, int] = {}
    visited = 0
    for path, dirnames, filenames, dirfd in os.fwalk(".", dir_fd=top):
        rel = "" if path == "." else path[2:]
        descend = []
        for name in [*dirnames, *filenames]:
            visited += 1
            if visited % 256 == 0 and time.monotonic() > deadline:
                return sizes, False
            try:
                info = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            except OSError:
                continue
            if info.st_dev != device:
                continue
            child = f"{rel}/{name}" if rel else name
            size = info.st_blocks * 512
            # Count the entry at each ancestor up to depth 3, and itself when it is that shallow.
            parts = child.split("/")
            for level in range(1, min(len(parts), 3) + 1):
                key = "/".join(parts[:level])
                sizes[key] = sizes.get(key, 0) + size
            if stat.S_ISDIR(info.st_mode):
                descend.append(name)
        keep = set(descend)
        dirnames[:] = [name for name in dirnames if name in keep]
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
        target = nodefs.read_link(host_root, "/etc/localtime")
        zone = target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else target
    except OSError:
        try:
            zone = nodefs.read_text(host_root, "/etc/timezone", 256).strip() or None
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
        text = nodefs.read_text(host_root, "/etc/resolv.conf", 4096)
    except OSError as error:
        text = f"# cannot read /etc/resolv.conf: {error.strerror}\n"
    if not name:
        name = "localhost"
        # The node's /etc/hostname when it has one (its resolver answers for its own name). Not its /proc:
        # a read of /proc/sys/kernel/hostname answers with the reader's UTS namespace, not the node's.
        with contextlib.suppress(OSError, ValueError):
            name = nodefs.read_text(host_root, "/etc/hostname", 256).strip() or name
    servers = nameservers(text)
    return DnsStatus(
        resolv_conf=text, nameservers=servers, name=name, probes=[probe(server, name, netns) for server in servers]
    )


# -- /etc against the image -------------------------------------------------------------------------

# Files every node writes for itself at boot: different from the image by design, never a finding.
ETC_NOISE = {"machine-id", "hostname", "resolv.conf", "mtab", "ld.so.cache", ".pwd.lock", "adjtime", ".updated"}


def _entries(top: int, limit: int, deadline: float) -> tuple[dict[str, os.stat_result], bool]:
    """Every non-directory below the directory `top` (and links to directories), by descriptor."""
    found: dict[str, os.stat_result] = {}
    for path, dirnames, filenames, dirfd in os.fwalk(".", dir_fd=top):
        rel = "" if path == "." else path[2:]
        for name in [*filenames, *dirnames]:
            try:
                info = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode):
                continue
            found[f"{rel}/{name}" if rel else name] = info
            if len(found) >= limit or time.monotonic() > deadline:
                return found, False
    return found, True


def _read_regular(top: int, rel: str, limit: int) -> bytes | None:
    """A regular file's bytes below `top` (never following a link, never waiting on a FIFO)."""
    try:
        fd = os.open(rel, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=top)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read(limit)
    finally:
        os.close(fd)


def _same(etc: int, defaults: int, rel: str, a_stat: os.stat_result, b_stat: os.stat_result) -> bool:
    if stat.S_IFMT(a_stat.st_mode) != stat.S_IFMT(b_stat.st_mode):
        return False
    try:
        if stat.S_ISLNK(a_stat.st_mode):
            return os.readlink(rel, dir_fd=etc) == os.readlink(rel, dir_fd=defaults)
    except OSError:
        return True
    if not stat.S_ISREG(a_stat.st_mode):
        return True  # a FIFO, socket or device: the same kind is all there is to compare
    if a_stat.st_size != b_stat.st_size:
        return False
    if a_stat.st_size > COMPARE_LIMIT:
        return True
    a, b = _read_regular(etc, rel, COMPARE_LIMIT), _read_regular(defaults, rel, COMPARE_LIMIT)
    return a is None or b is None or a == b


def etc_changes(host_root: Path, since: datetime | None = None, budget: float = ETC_BUDGET) -> EtcChanges:
    deadline = time.monotonic() + budget
    try:
        defaults = nodefs.open_in(host_root, "/usr/etc", directory=True)
    except OSError as error:
        raise ApiError("unavailable", "the image has no /usr/etc to compare /etc with (not an ostree node?)") from error
    try:
        etc = nodefs.open_in(host_root, "/etc", directory=True)
    except OSError as error:
        os.close(defaults)
        raise ApiError("unavailable", f"cannot read /etc: {error.strerror}") from error
    try:
        current, complete_now = _entries(etc, ETC_LIMIT, deadline)
        image, complete_image = _entries(defaults, ETC_LIMIT, deadline)
        changes = []
        compared_all = True
        for rel, info in current.items():
            if rel in ETC_NOISE:
                continue
            if time.monotonic() > deadline:
                compared_all = False
                break
            when = datetime.fromtimestamp(info.st_mtime, UTC)
            if rel not in image:
                changes.append(EtcChange(path=f"/etc/{rel}", change="added", mtime=when))
            elif not _same(etc, defaults, rel, info, image[rel]):
                changes.append(EtcChange(path=f"/etc/{rel}", change="modified", mtime=when))
    finally:
        os.close(etc)
        os.close(defaults)
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
    return EtcChanges(changes=changes, complete=complete_now and complete_image and compared_all)
