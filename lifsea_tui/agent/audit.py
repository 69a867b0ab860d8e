"""The node's audit log: append-only JSON lines, each record chained to the one before by SHA-256.

A record's hash covers its canonical encoding (sorted keys, no spaces, UTF-8) without the hash field,
and that encoding includes the previous record's hash, so changing, removing or reordering any record
breaks every link after it. Every write is flushed to disk before the caller goes on: a mutating
request is written here before it acts, and if it cannot be written the request does not act.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lifsea_tui.api import AuditRecord, AuditVerify

GENESIS = "0" * 64
LOG_NAME = "audit.jsonl"

# Outcomes that open and close a long operation; an operation left open by a crash is found at start.
STARTED = "started"


class AuditUnavailable(Exception):
    """The log cannot be written (full disk, read-only, permissions): nothing may act."""


def canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in fields.items() if k != "hash"})).hexdigest()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class Head:
    seq: int
    hash: str


class AuditLog:
    def __init__(self, directory: Path, node: str) -> None:
        self.directory = directory
        self.node = node
        self.path = directory / LOG_NAME
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        self.head = Head(-1, GENESIS)
        for record in self._read_raw():
            if isinstance(record, dict) and isinstance(record.get("seq"), int):
                self.head = Head(record["seq"], str(record.get("hash", GENESIS)))

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
            fields: dict[str, Any] = {
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
                finally:
                    os.close(fd)
            except OSError as error:
                raise AuditUnavailable(f"cannot write the audit log {self.path}: {error.strerror or error}") from error
            self.head = Head(fields["seq"], fields["hash"])
            return AuditRecord.model_validate(fields)

    def _read_raw(self) -> Iterator[Any]:
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return
        with handle:
            for line in handle:
                try:
                    yield json.loads(line)
                except ValueError:
                    yield None

    def records(self) -> Iterator[AuditRecord]:
        """Every well-formed record, oldest first; use verify() to learn whether the chain holds."""
        for raw in self._read_raw():
            try:
                yield AuditRecord.model_validate(raw)
            except ValueError:
                continue

    def page(self, *, before: int | None, after: int | None, limit: int) -> list[AuditRecord]:
        """Up to `limit` records: the first ones after `after`, or else the last ones before `before`."""
        if after is not None:
            out = []
            for record in self.records():
                if record.seq > after:
                    out.append(record)
                    if len(out) == limit:
                        break
            return out
        window: list[AuditRecord] = []
        for record in self.records():
            if before is not None and record.seq >= before:
                break
            window.append(record)
            if len(window) > limit:
                window.pop(0)
        return window

    def open_operations(self) -> list[AuditRecord]:
        """Records of operations that started and never recorded an outcome (the agent died)."""
        started: dict[str, AuditRecord] = {}
        for record in self.records():
            op = record.params.get("op")
            if not isinstance(op, str):
                continue
            if record.outcome == STARTED:
                started[op] = record
            else:
                started.pop(op, None)
        return list(started.values())


def verify(path: Path) -> AuditVerify:
    """Walk the chain and name the first record that is not what the chain says it must be."""
    prev = GENESIS
    count = 0
    head_seq, head_hash = -1, None
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return AuditVerify(ok=True, records=0, head_seq=-1, head_hash=None, first_bad_seq=None, problem=None)

    def bad(where: int, problem: str) -> AuditVerify:
        return AuditVerify(
            ok=False, records=count, head_seq=head_seq, head_hash=head_hash, first_bad_seq=where, problem=problem
        )

    with handle:
        for line_number, line in enumerate(handle, start=1):
            expected_seq = head_seq + 1
            try:
                fields = json.loads(line)
            except ValueError:
                return bad(expected_seq, f"line {line_number} is not JSON")
            if not isinstance(fields, dict) or not isinstance(fields.get("seq"), int):
                return bad(expected_seq, f"line {line_number} is not an audit record")
            seq = fields["seq"]
            if fields.get("hash") != record_hash(fields):
                return bad(seq, f"record {seq} (line {line_number}) was changed: its hash does not match")
            if seq != expected_seq:
                what = "removed" if seq > expected_seq else "reordered or repeated"
                return bad(seq, f"record {seq} (line {line_number}) follows {head_seq}: records {what}")
            if fields.get("prev") != prev:
                return bad(seq, f"record {seq} (line {line_number}) does not chain to the record before it")
            prev = fields["hash"]
            head_seq, head_hash = seq, prev
            count += 1
    return AuditVerify(ok=True, records=count, head_seq=head_seq, head_hash=head_hash, first_bad_seq=None, problem=None)
