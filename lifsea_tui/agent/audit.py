"""The node's audit log: append-only JSON lines, each record chained to the one before by SHA-256.

A record's hash covers its canonical encoding (sorted keys, no spaces, UTF-8) without the hash field,
and that encoding includes the previous record's hash, so changing, removing or reordering any record
breaks every link after it. A record is stored exactly as its canonical encoding: verification checks
the stored bytes, so a line re-encoded or given a second value for a key is named too. Every write is
flushed to disk before the caller goes on: a mutating request is written here before it acts, and if
it cannot be written the request does not act.

A crash can leave the last line torn (written in part, never acknowledged). At start the log is cut to
its last complete line, the cut bytes are kept beside it, and a record says so. While the agent runs it
keeps an index of where each record starts (and of the few records it asks for by action), so a page of
records or the node's history is read from where it lies instead of parsing the whole log. A log
changed behind the agent's back (a root shell on the node) is noticed by its size and inode and indexed
again; verification compares the file with the head this agent holds in memory, and re-hashes every
sealed recording.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lifsea_tui.agent.recording import cast_path, file_seal
from lifsea_tui.api import AuditRecord, AuditVerify, BadRecording
from lifsea_tui.api.chain import GENESIS, SESSION_END, canonical, iso, record_hash

LOG_NAME = "audit.jsonl"
RECORDING_ID = re.compile(r"^[0-9a-f]{16}$")
SURROGATE = re.compile("[\ud800-\udfff]")

# Outcomes that open and close a long operation; an operation left open by a crash is found at start.
STARTED = "started"


class AuditUnavailable(Exception):
    """The log cannot be written (full disk, read-only, permissions): nothing may act."""


def now_iso() -> str:
    return iso(datetime.now(UTC))


def _plain(value: Any) -> Any:
    """Strings that UTF-8 can hold: a lone surrogate (which JSON can carry) becomes U+FFFD."""
    if isinstance(value, str):
        return value if value.isascii() else SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass
class Head:
    seq: int
    hash: str


@dataclass(frozen=True)
class SealedRecording:
    recording: str
    sha256: str
    size: int | None
    seq: int


def repair_torn_tail(path: Path) -> dict[str, Any] | None:
    """Cut the log back to its last complete line; keep the cut bytes in a file beside it.

    A line without its newline was never acknowledged (the write that made it did not finish), and an
    append after it would glue the next record onto it. Returns what was cut, for the record saying so.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size == 0:
        return None
    with path.open("rb") as handle:
        end = size
        keep = 0
        while end > 0:
            start = max(0, end - 65536)
            handle.seek(start)
            chunk = handle.read(end - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        if keep == size:
            return None
        handle.seek(keep)
        torn = handle.read()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    kept = path.with_name(f"{path.name}.torn-{stamp}")
    with kept.open("wb") as side:
        side.write(torn)
        side.flush()
        os.fsync(side.fileno())
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, keep)
        os.fsync(fd)
    finally:
        os.close(fd)
    return {"cut_bytes": len(torn), "at_offset": keep, "sha256": hashlib.sha256(torn).hexdigest(), "kept_in": kept.name}


@dataclass
class _Index:
    """Where each record starts, by position in the file; what the agent looks up without reading it all."""

    tracked: frozenset[str]
    offsets: array[int] = field(default_factory=lambda: array("q"))
    seqs: array[int] = field(default_factory=lambda: array("q"))
    by_action: dict[str, list[int]] = field(default_factory=dict)  # tracked actions: positions
    open_ops: dict[str, int] = field(default_factory=dict)  # operation id: position of its `started` record
    seals: dict[str, SealedRecording] = field(default_factory=dict)
    last: Head | None = None
    size: int = 0
    inode: int = -1

    @classmethod
    def build(cls, path: Path, tracked: frozenset[str]) -> _Index:
        index = cls(tracked)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            return index
        with handle:
            index.inode = os.fstat(handle.fileno()).st_ino
            offset = 0
            for line in handle:
                try:
                    fields = json.loads(line)
                except ValueError:
                    fields = None
                if isinstance(fields, dict) and isinstance(fields.get("seq"), int):
                    index.add(offset, fields)
                offset += len(line)
            index.size = offset
        return index

    def matches(self, stat: os.stat_result) -> bool:
        return stat.st_ino == self.inode and stat.st_size == self.size

    def add(self, offset: int, fields: dict[str, Any]) -> None:
        position = len(self.offsets)
        self.offsets.append(offset)
        self.seqs.append(fields["seq"])
        self.last = Head(fields["seq"], str(fields.get("hash", GENESIS)))
        action = fields.get("action")
        given = fields.get("params")
        params: dict[str, Any] = given if isinstance(given, dict) else {}
        if action in self.tracked:
            self.by_action.setdefault(action, []).append(position)
        op = params.get("op")
        if isinstance(op, str):
            if fields.get("outcome") == STARTED:
                self.open_ops[op] = position
            else:
                self.open_ops.pop(op, None)
        if action == SESSION_END:
            recording, digest, size = params.get("recording"), params.get("sha256"), params.get("size")
            if isinstance(recording, str) and isinstance(digest, str):
                self.seals[recording] = SealedRecording(
                    recording, digest, size if isinstance(size, int) else None, fields["seq"]
                )


class AuditLog:
    def __init__(self, directory: Path, node: str, *, tracked: Iterable[str] = ()) -> None:
        """The log in `directory`; `tracked` actions are indexed so they can be read without a scan."""
        self.directory = directory
        self.node = node
        self.path = directory / LOG_NAME
        self._tracked = frozenset(tracked)
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        self.repaired = repair_torn_tail(self.path)
        self._index = _Index.build(self.path, self._tracked)
        self.head = self._index.last or Head(-1, GENESIS)
        if self.repaired is not None:
            try:
                self.append(
                    actor="agent",
                    role=None,
                    action="audit.repaired",
                    params=self.repaired,
                    outcome=f"ok: a torn last line ({self.repaired['cut_bytes']} bytes, never acknowledged) was cut "
                    f"at start; kept in {self.repaired['kept_in']}",
                )
            except AuditUnavailable:
                pass  # the cut bytes are kept; every action will be refused until the log can be written

    def append(
        self,
        *,
        actor: str,
        role: str | None,
        action: str,
        outcome: str,
        reason: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> AuditRecord:
        with self._lock:
            fields: dict[str, Any] = _plain(
                {
                    "seq": self.head.seq + 1,
                    "time": now_iso(),
                    "node": self.node,
                    "actor": actor,
                    "role": role,
                    "action": action,
                    "reason": reason,
                    "params": params or {},
                    "outcome": outcome,
                    "prev": self.head.hash,
                }
            )
            fields["hash"] = record_hash(fields)
            line = canonical(fields) + b"\n"
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    written = os.write(fd, line)
                    if written != len(line):
                        # A short write leaves a torn line; cut it off so the chain stays readable.
                        os.ftruncate(fd, os.fstat(fd).st_size - written)
                        raise OSError("short write to the audit log")
                    os.fsync(fd)
                    stat = os.fstat(fd)
                finally:
                    os.close(fd)
            except OSError as error:
                raise AuditUnavailable(f"cannot write the audit log {self.path}: {error.strerror or error}") from error
            index = self._index
            start = stat.st_size - len(line)
            if index.inode in (-1, stat.st_ino) and index.size == start:
                index.inode, index.size = stat.st_ino, stat.st_size
                index.add(start, fields)
            else:
                index.size = -1  # written behind this agent's back: indexed again on the next read
            self.head = Head(fields["seq"], fields["hash"])
            return AuditRecord.model_validate(fields)

    # -- reading --------------------------------------------------------------------------------------

    def _current(self) -> _Index:
        """The index, built again when the file is not what this agent last wrote (call off the event loop)."""
        for _ in range(3):
            with self._lock:
                index = self._index
                try:
                    stat = self.path.stat()
                except FileNotFoundError:
                    stat = None
                if (stat is None and index.size == 0) or (stat is not None and index.matches(stat)):
                    return index
            fresh = _Index.build(self.path, self._tracked)
            with self._lock:
                if self._index is index:
                    self._index = fresh
        return self._index

    def _read(self, offsets: list[int]) -> list[AuditRecord]:
        out = []
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return []
        with handle:
            for offset in offsets:
                handle.seek(offset)
                try:
                    out.append(AuditRecord.model_validate_json(handle.readline()))
                except ValueError:
                    continue  # changed under us since it was indexed
        return out

    def page(self, *, before: int | None, after: int | None, limit: int) -> list[AuditRecord]:
        """Up to `limit` records: the first ones after `after`, or else the last ones before `before`."""
        index = self._current()
        with self._lock:
            seqs = index.seqs
            if after is not None:
                first = bisect_right(seqs, after)
                wanted = index.offsets[first : first + limit]
            else:
                end = bisect_left(seqs, before) if before is not None else len(seqs)
                wanted = index.offsets[max(0, end - limit) : end]
        return self._read(list(wanted))

    def of_actions(self, actions: Iterable[str]) -> list[AuditRecord]:
        """Every record of these tracked actions, oldest first."""
        index = self._current()
        with self._lock:
            positions = sorted(p for action in actions for p in index.by_action.get(action, []))
            wanted = [index.offsets[p] for p in positions]
        return self._read(wanted)

    def open_operations(self) -> list[AuditRecord]:
        """Records of operations that started and never recorded an outcome (the agent died)."""
        index = self._current()
        with self._lock:
            wanted = [index.offsets[p] for p in sorted(index.open_ops.values())]
        return self._read(wanted)

    def sealed_recording(self, recording: str) -> SealedRecording | None:
        index = self._current()
        with self._lock:
            return index.seals.get(recording)

    def verify(self, recordings: Path | None = None) -> AuditVerify:
        """The chain, the head this agent holds, and every sealed recording in `recordings`."""
        return verify(self.path, held=lambda: self.head, recordings=recordings)


def verify(
    path: Path,
    *,
    held: Callable[[], Head] | None = None,
    recordings: Path | None = None,
    after: Head | None = None,
) -> AuditVerify:
    """Walk the chain and name the first record that is not what the chain says it must be.

    `held` gives the head the writing agent holds in memory: the file must contain it (asked before the
    walk, so records appended meanwhile are no alarm) and end no further than it (asked after). With
    `recordings`, every recording a record sealed is hashed again and compared. With `after`, the file is a
    slice of a log (an export of a time range): it must start with the record after that one and chain
    to its hash.
    """
    prev = after.hash if after is not None else GENESIS
    count = 0
    head_seq, head_hash = (after.seq, after.hash) if after is not None else (-1, None)
    seals: dict[str, SealedRecording] = {}
    expected = held() if held is not None else None
    problem: tuple[int | None, str] | None = None
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        handle = None
    if handle is not None:
        with handle:
            for line_number, line in enumerate(handle, start=1):
                problem = _check_line(line, line_number, head_seq, prev)
                if problem is not None:
                    break
                fields = json.loads(line)
                seq = fields["seq"]
                if expected is not None and seq == expected.seq and fields["hash"] != expected.hash:
                    problem = (
                        seq,
                        f"record {seq} is not the one this agent wrote (hash {expected.hash[:16]}…): "
                        "the log was rewritten from there or earlier",
                    )
                    break
                prev = fields["hash"]
                head_seq, head_hash = seq, prev
                count += 1
                if fields.get("action") == SESSION_END:
                    params = fields.get("params") or {}
                    if isinstance(params.get("recording"), str) and isinstance(params.get("sha256"), str):
                        size = params.get("size")
                        seals[params["recording"]] = SealedRecording(
                            params["recording"], params["sha256"], size if isinstance(size, int) else None, seq
                        )
    if problem is None and expected is not None and head_seq < expected.seq:
        gone = f"record {head_seq + 1}" if head_seq + 1 == expected.seq else f"records {head_seq + 1}–{expected.seq}"
        problem = (
            head_seq + 1,
            f"the log ends at record {head_seq}, but this agent wrote up to {expected.seq}: {gone} were removed",
        )
    if problem is None and held is not None and head_seq > held().seq:
        problem = (held().seq + 1, f"records after {held().seq} were not written by this agent")
    bad = _check_recordings(recordings, seals) if recordings is not None else []
    if problem is None and bad:
        problem = (None, f"recording {bad[0].id}: {bad[0].problem}")
    return AuditVerify(
        ok=problem is None,
        records=count,
        head_seq=head_seq,
        head_hash=head_hash,
        first_bad_seq=problem[0] if problem else None,
        problem=problem[1] if problem else None,
        recordings_checked=len(seals) if recordings is not None else 0,
        bad_recordings=bad,
    )


def _check_line(line: bytes, line_number: int, head_seq: int, prev: str) -> tuple[int, str] | None:
    """What is wrong with one stored line, given the record before it; None when it is the next link."""
    expected_seq = head_seq + 1
    if not line.endswith(b"\n"):
        return expected_seq, f"line {line_number} is torn (no newline): a write that never finished"
    try:
        fields = json.loads(line)
    except ValueError:
        return expected_seq, f"line {line_number} is not JSON"
    if not isinstance(fields, dict) or not isinstance(fields.get("seq"), int):
        return expected_seq, f"line {line_number} is not an audit record"
    seq = fields["seq"]
    if fields.get("hash") != record_hash(fields):
        return seq, f"record {seq} (line {line_number}) was changed: its hash does not match"
    if canonical(fields) + b"\n" != line:
        return seq, (
            f"record {seq} (line {line_number}) is not stored as it was written: its bytes are not its "
            "canonical encoding (re-encoded, or a key given twice)"
        )
    if seq != expected_seq:
        what = "removed" if seq > expected_seq else "reordered or repeated"
        return seq, f"record {seq} (line {line_number}) follows {head_seq}: records {what}"
    if fields.get("prev") != prev:
        return seq, f"record {seq} (line {line_number}) does not chain to the record before it"
    return None


def _check_recordings(directory: Path, seals: dict[str, SealedRecording]) -> list[BadRecording]:
    bad = []
    for seal in seals.values():
        if not RECORDING_ID.match(seal.recording):
            bad.append(BadRecording(id=seal.recording[:32], audit_seq=seal.seq, problem="not a recording id"))
            continue
        path = cast_path(directory, seal.recording)
        try:
            now = file_seal(path)
        except FileNotFoundError:
            bad.append(BadRecording(id=seal.recording, audit_seq=seal.seq, problem="missing: removed since sealed"))
            continue
        except OSError as error:
            bad.append(BadRecording(id=seal.recording, audit_seq=seal.seq, problem=f"unreadable: {error.strerror}"))
            continue
        if now.sha256 != seal.sha256:
            bad.append(
                BadRecording(
                    id=seal.recording,
                    audit_seq=seal.seq,
                    problem=f"changed since sealed: SHA-256 now {now.sha256[:16]}…, sealed {seal.sha256[:16]}… "
                    f"(size now {now.size}, sealed {seal.size})",
                )
            )
    return bad
