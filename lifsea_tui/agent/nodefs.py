"""The node's files, opened as the node would see them: its root is `/`, whatever its symlinks say.

The agent reads the node through a directory (production: /host; lab: /proc/LEADER/root). A symlink on
the node means something on the node: /etc/resolv.conf -> ../run/x or -> /run/x must resolve inside that
directory, never on the agent's own host, where the agent keeps its TLS key. openat2 with
RESOLVE_IN_ROOT does exactly that in the kernel (`..` stops at the node's root, absolute links start
there, /proc magic links are refused), with no window between checking a path and opening it. Only
regular files are read, opened without blocking (a FIFO is refused, not waited on), and never more
than asked for.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from pathlib import Path

SYS_OPENAT2 = 437  # the same number on every architecture (added after the syscall tables were unified)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
MAX_LINKS = 40


class NotAFile(OSError):
    """The path is there but is not a regular file (a FIFO, a device, a directory)."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_openat2_works: bool | None = None


def _openat2(root_fd: int, path: str, flags: int) -> int:
    how = _OpenHow(flags=flags | os.O_CLOEXEC, mode=0, resolve=RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    fd = int(_libc.syscall(SYS_OPENAT2, root_fd, path.encode(), ctypes.byref(how), ctypes.sizeof(how)))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return fd


def _resolve(root_fd: int, path: str) -> str:
    """Where openat2 is missing (kernels before 5.6): the same resolution, one component at a time."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = "/".join([*done, part])
        try:
            target = os.readlink(candidate, dir_fd=root_fd)
        except OSError as error:
            if error.errno not in (errno.EINVAL, errno.ENOENT):
                raise
            done.append(part)
            continue
        links += 1
        if links > MAX_LINKS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
        if target.startswith("/"):
            done = []
        parts = [p for p in target.split("/") if p not in ("", ".")] + parts
    return "/".join(done) or "."


def open_in(root: Path, path: str, *, directory: bool = False) -> int:
    """An O_PATH descriptor for `path` on the node whose root is `root` (close it yourself).

    O_PATH opens nothing: a device or FIFO at the end of a link is not touched (opening some devices
    acts), and the caller decides from fstat whether to read it."""
    global _openat2_works
    flags = os.O_PATH | (os.O_DIRECTORY if directory else 0)
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _openat2_works is not False:
            try:
                fd = _openat2(root_fd, path.lstrip("/") or ".", flags)
                _openat2_works = True
                return fd
            except OSError as error:
                if error.errno != errno.ENOSYS:
                    raise
                _openat2_works = False
        relative = _resolve(root_fd, path)
        return os.open(relative, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root_fd)
    finally:
        os.close(root_fd)


def read_file(root: Path, path: str, limit: int = 64 * 1024) -> bytes:
    """At most `limit` bytes of the node's regular file `path`."""
    handle = open_in(root, path)
    try:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            raise NotAFile(errno.EINVAL, "not a regular file", path)
        fd = os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    finally:
        os.close(handle)
    try:
        chunks = []
        left = limit
        while left > 0:
            chunk = os.read(fd, min(left, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(root: Path, path: str, limit: int = 64 * 1024) -> str:
    return read_file(root, path, limit).decode(errors="replace")


def read_link(root: Path, path: str) -> str:
    """The text of the node's symlink `path` (what it says, not where it leads on this host)."""
    parent, _, name = path.rstrip("/").rpartition("/")
    fd = open_in(root, parent or "/", directory=True)
    try:
        return os.readlink(name, dir_fd=fd)
    finally:
        os.close(fd)
