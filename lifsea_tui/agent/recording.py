"""Session recordings: asciicast v2, written by the agent as the session goes, sealed with a SHA-256.

One file per session, `<id>.cast`, with a sidecar `<id>.json` saying who, why, when and (once sealed)
the size and SHA-256 that also go into the audit log. Writes go straight to the file (os.write, no
user-space buffer), so an agent that is killed loses nothing it had recorded; fsync runs at markers,
every few seconds while output flows, and at the seal. Strict: any write that fails raises
RecordingError, and the session that owns the recording ends.

The seal is the hash of what the agent wrote, kept as it writes, not of the file at the end: a writable
shell can reach its own recording on disk, and an edit made during the session then shows as a file
that no longer matches its seal (the seal says so too). The newest bytes written are also kept in memory
(LIVE_BYTES), for the fleet controller to copy off the node as the session goes (`live`): bytes the
shell cannot have changed.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LIVE_BYTES = 2 << 20  # the newest bytes of a recording kept in memory for `live` readers


class RecordingError(Exception):
    pass


@dataclass
class Seal:
    sha256: str
    size: int
    on_disk: str | None = None  # the file's SHA-256 when it differs from what was written (changed since)


def cast_path(directory: Path, recording_id: str) -> Path:
    return directory / f"{recording_id}.cast"


def meta_path(directory: Path, recording_id: str) -> Path:
    return directory / f"{recording_id}.json"


def write_meta(directory: Path, recording_id: str, meta: dict[str, Any]) -> None:
    path = meta_path(directory, recording_id)
    tmp = path.with_suffix(".json.tmp")
    try:
        tmp.write_text(json.dumps(meta, sort_keys=True))
        os.replace(tmp, path)
    except OSError as error:
        raise RecordingError(f"cannot write {path}: {error.strerror or error}") from error


def read_meta(directory: Path, recording_id: str) -> dict[str, Any] | None:
    try:
        value = json.loads(meta_path(directory, recording_id).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def file_seal(path: Path) -> Seal:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return Seal(digest.hexdigest(), size)


class Recorder:
    """Appends asciicast v2 events to a new file; `seal()` ends it and returns its size and hash."""

    def __init__(self, directory: Path, recording_id: str, meta: dict[str, Any]) -> None:
        self.directory = directory
        self.id = recording_id
        self.path = cast_path(directory, recording_id)
        self.meta = dict(meta)
        self.started = time.monotonic()
        self._digest = hashlib.sha256()
        self._size = 0
        self._dirty = False
        self._torn = False  # a write failed partway: the file may hold bytes the digest does not
        self._tail = bytearray()  # the newest bytes written, from offset _tail_start
        self._tail_start = 0
        self.sealed: Seal | None = None
        self.followers: set[str] = set()  # who has read it live (audited once each)
        self._decoders = {kind: codecs.getincrementaldecoder("utf-8")("replace") for kind in ("o", "i")}
        self._fd: int | None = None

    def open(self, cols: int, rows: int, env: dict[str, str], title: str) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o640)
        except OSError as error:
            raise RecordingError(f"cannot create {self.path}: {error.strerror or error}") from error
        header = {
            "version": 2,
            "width": cols,
            "height": rows,
            "timestamp": int(time.time()),
            "env": env,
            "title": title,
        }
        self._line(header)
        self.marker("session start")
        write_meta(self.directory, self.id, {**self.meta, "started": _now(), "sealed": False})

    def _line(self, value: Any) -> None:
        if self._fd is None:
            raise RecordingError("the recording is closed")
        line = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        try:
            view = memoryview(line)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as error:
            self._torn = True
            raise RecordingError(f"cannot write the recording {self.path}: {error.strerror or error}") from error
        self._digest.update(line)
        self._size += len(line)
        self._dirty = True
        self._tail += line
        if len(self._tail) > LIVE_BYTES:
            dropped = len(self._tail) - LIVE_BYTES
            del self._tail[:dropped]
            self._tail_start += dropped

    @property
    def size(self) -> int:
        return self._size

    def live(self, offset: int, limit: int) -> bytes | None:
        """Up to `limit` bytes from `offset`, as they were written (from memory), or None when `offset` is
        no longer held (older than the newest LIVE_BYTES, or released)."""
        if not self._tail_start <= offset <= self._size:
            return None
        start = offset - self._tail_start
        return bytes(self._tail[start : start + limit])

    def release(self) -> None:
        """Give the memory back (a while after the seal); `live` then answers None."""
        self._tail = bytearray()
        self._tail_start = self._size

    def _event(self, kind: str, text: str) -> None:
        self._line([round(time.monotonic() - self.started, 6), kind, text])

    def output(self, data: bytes) -> None:
        text = self._decoders["o"].decode(data)
        if text:
            self._event("o", text)

    def input(self, data: bytes) -> None:
        text = self._decoders["i"].decode(data)
        if text:
            self._event("i", text)

    def resize(self, cols: int, rows: int) -> None:
        self._event("r", f"{cols}x{rows}")

    def marker(self, label: str) -> None:
        self._event("m", label)
        self.sync()

    def sync(self) -> None:
        if self._fd is not None and self._dirty:
            try:
                os.fsync(self._fd)
            except OSError as error:
                raise RecordingError(f"cannot sync the recording {self.path}: {error.strerror or error}") from error
            self._dirty = False

    def seal(self, end_reason: str) -> Seal:
        """Write the end marker and close. A recording that cannot take the marker is sealed as it is."""
        if self._fd is None:
            return self.sealed or Seal(self._digest.hexdigest(), self._size)
        problem = None
        try:
            self.marker(f"session end: {end_reason}")
        except RecordingError as error:
            problem = str(error)
        os.close(self._fd)
        self._fd = None
        seal = Seal(self._digest.hexdigest(), self._size)
        try:
            on_disk = file_seal(self.path)
        except OSError as error:
            on_disk, problem = None, f"the file is gone: {error.strerror or error}"
        if self._torn and on_disk is not None:
            seal = on_disk  # a write cut short (disk full) left bytes of its own: sealed as the file is
        elif on_disk is None or on_disk != seal:
            seal.on_disk = on_disk.sha256 if on_disk else "none"
            problem = problem or "the file was changed during the session; the seal is of what was recorded"
        self.sealed = seal
        try:
            write_meta(
                self.directory,
                self.id,
                {**self.meta, **(read_meta(self.directory, self.id) or {}), "ended": _now(), "sealed": True,
                 "sha256": seal.sha256, "size": seal.size, "end_reason": end_reason, "problem": problem},
            )  # fmt: skip
        except RecordingError:
            pass  # the audit log holds the seal; the sidecar is a convenience for listing
        return seal


def seal_interrupted(directory: Path, recording_id: str, why: str) -> Seal | None:
    """Seal a recording its agent left open (it was killed): mark it interrupted, hash it."""
    path = cast_path(directory, recording_id)
    if not path.exists():
        return None
    try:
        with path.open("ab") as handle:
            # A crash can leave a torn last line; start the marker on a line of its own.
            size = path.stat().st_size
            if size:
                with path.open("rb") as reader:
                    reader.seek(size - 1)
                    if reader.read(1) != b"\n":
                        handle.write(b"\n")
            marker = [_last_time(path), "m", f"session end: interrupted: {why}"]
            handle.write(json.dumps(marker).encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError:
        pass  # sealed as it is
    seal = file_seal(path)
    meta = read_meta(directory, recording_id) or {}
    try:
        write_meta(
            directory,
            recording_id,
            {**meta, "ended": _now(), "sealed": True, "sha256": seal.sha256, "size": seal.size,
             "end_reason": f"interrupted: {why}"},
        )  # fmt: skip
    except RecordingError:
        pass
    return seal


def _last_time(path: Path) -> float:
    """The time of the last whole event in the file, so a marker added after it keeps times in order."""
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 65536))
        for line in reversed(handle.read().splitlines()):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, list) and event and isinstance(event[0], int | float):
                return float(event[0])
    return 0.0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
