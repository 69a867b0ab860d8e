"""Where the fleet controller keeps what it collected off the nodes: each node's audit records, exactly as
the node stored them, so the copy verifies by the same rules as the node's own log (api/chain.py).

`Trail` is what the collector needs; `DirectoryTrail` keeps one append-only file per node under a
directory (fsync'd before the collected head moves on), and each recording beside it: whole once its
bytes match their seal (`ID.cast`), or as copied live while its session goes (`ID.live`). An object
store can implement the same methods.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Protocol

from lifsea_tui.api.chain import GENESIS
from lifsea_tui.api.models import AuditRecord
from lifsea_tui.api.trail import NodeTrail
from lifsea_tui.client.etcd import Store

NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
RECORDING_ID = re.compile(r"[0-9a-f]{16}")
LOG_NAME = "audit.jsonl"


RECENT_PREFIX = "audit-records/"


def state_key(name: str) -> str:
    """Where etcd holds one node's collection (the controller writes it, fenced)."""
    return f"audit/{name}"


def chunk_key(name: str, first_seq: int) -> str:
    """Where etcd holds a chunk of one node's recent records (JSON lines, as stored), by its first seq."""
    return f"{RECENT_PREFIX}{name}/{first_seq:012d}"


def parse_chunk_key(key: str) -> tuple[str, int] | None:
    name, _, first = key.removeprefix(RECENT_PREFIX).rpartition("/")
    return (name, int(first)) if name and first.isdigit() else None


async def read_states(store: Store) -> dict[str, NodeTrail]:
    """Every node's collection as etcd holds it, by node."""
    states = (NodeTrail.model_validate_json(kv.value) for kv in await store.range("audit/"))
    return {state.name: state for state in states}


def _chunk(value: bytes) -> list[AuditRecord]:
    """A chunk's records; none if it does not parse (a reader shows what it can)."""
    try:
        return [AuditRecord.model_validate_json(line) for line in value.splitlines() if line]
    except ValueError:
        return []


async def read_recent(store: Store, node: str | None = None) -> dict[str, list[AuditRecord]]:
    """The recent records etcd holds (the whole copy is in the controller's trail), by node, oldest first."""
    found: dict[str, list[AuditRecord]] = {}
    for kv in await store.range(RECENT_PREFIX + (f"{node}/" if node else "")):
        if (where := parse_chunk_key(kv.key)) is not None:
            found.setdefault(where[0], []).extend(_chunk(kv.value))
    return found


class RecentFollower:
    """New chunks of recent records as the controller writes them (a chunk is written once, never changed):
    each call lists the keys and reads only the chunks not seen before."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.seen: set[str] = set()

    async def new(self) -> dict[str, list[AuditRecord]]:
        keys = [kv.key for kv in await self.store.range(RECENT_PREFIX, keys_only=True)]
        found: dict[str, list[AuditRecord]] = {}
        for key in keys:
            where = parse_chunk_key(key)
            if key in self.seen or where is None:
                continue
            got = await self.store.get(key)
            if got is not None:
                found.setdefault(where[0], []).extend(_chunk(got.value))
        self.seen = set(keys)
        return found


class Trail(Protocol):
    def head(self, node: str) -> tuple[int, str]:
        """The newest collected record's seq and hash; (-1, GENESIS) before the first."""
        ...

    def first(self, node: str) -> int:
        """The oldest record still kept (0 until records older than the retention were let go)."""
        ...

    def prune(self, node: str, before: float) -> int:
        """Let go of records written before `before` (a time), never the newest; how many went."""
        ...

    def prune_recordings(self, node: str, before: float) -> int:
        """Let go of kept recordings older than `before`; how many went."""
        ...

    def hash_at(self, node: str, seq: int) -> str | None: ...

    def append(self, node: str, lines: list[bytes]) -> None:
        """Records that follow the head, as stored lines; on disk when this returns."""
        ...

    def lines(self, node: str) -> Iterator[bytes]: ...

    def has_recording(self, node: str, recording_id: str) -> bool: ...

    def put_recording(self, node: str, recording_id: str, data: bytes) -> None:
        """A recording's bytes, whole, once they matched their seal; on disk when this returns."""
        ...

    def live_size(self, node: str, recording_id: str) -> int:
        """How many bytes of a recording were copied live (as the session went) so far."""
        ...

    def append_live(self, node: str, recording_id: str, data: bytes) -> None:
        """The next bytes of a recording copied live; on disk when this returns."""
        ...

    def keep_live(self, node: str, recording_id: str, sha256: str) -> bool:
        """The live copy becomes the recording if its bytes hash to the seal; if not (it missed some), it
        stays aside and False is returned."""
        ...


class DirectoryTrail:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._hashes: dict[str, list[str]] = {}  # per node, the hash of every kept record, from its first
        self._first: dict[str, int] = {}  # per node, the seq of the first kept record

    def path(self, node: str) -> Path:
        if not NODE_NAME.fullmatch(node):
            raise ValueError(f"not a node name: {node!r}")
        return self.root / node / LOG_NAME

    def _load(self, node: str) -> list[str]:
        if node in self._hashes:
            return self._hashes[node]
        path, hashes, first = self.path(node), [], 0
        if path.exists():
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):  # a write cut short by a crash: never acknowledged
                data = data[: data.rfind(b"\n") + 1]
                with path.open("r+b") as handle:
                    handle.truncate(len(data))
            records = [json.loads(line) for line in data.splitlines()]
            hashes = [record["hash"] for record in records]
            first = records[0]["seq"] if records else 0  # after a prune, the copy starts later
        self._hashes[node], self._first[node] = hashes, first
        return hashes

    def head(self, node: str) -> tuple[int, str]:
        hashes = self._load(node)
        return self._first[node] + len(hashes) - 1, hashes[-1] if hashes else GENESIS

    def first(self, node: str) -> int:
        self._load(node)
        return self._first[node]

    def hash_at(self, node: str, seq: int) -> str | None:
        hashes = self._load(node)
        index = seq - self._first[node]
        return hashes[index] if 0 <= index < len(hashes) else None

    def append(self, node: str, lines: list[bytes]) -> None:
        hashes = self._load(node)
        path = self.path(node)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write(path, b"".join(lines), os.O_APPEND)
        hashes.extend(json.loads(line)["hash"] for line in lines)

    def prune(self, node: str, before: float) -> int:
        """The kept records are written whole to a new file that replaces the old one (a crash leaves one
        or the other); the first kept record names the hash of the last one let go, to verify from."""
        hashes = self._load(node)
        kept: list[bytes] = []
        gone = 0
        for line in self.lines(node):
            if not kept and gone < len(hashes) - 1 and _time(line) < before:
                gone += 1
            else:
                kept.append(line)
        if gone:
            partial = self.path(node).with_suffix(".pruned")
            _write(partial, b"".join(kept), os.O_TRUNC)
            os.replace(partial, self.path(node))
            del hashes[:gone]
            self._first[node] += gone
        return gone

    def prune_recordings(self, node: str, before: float) -> int:
        folder = self.recordings(node)
        gone = 0
        for path in sorted(folder.glob("*.cast")) if folder.is_dir() else []:
            if path.stat().st_mtime < before:
                path.unlink()
                self.live_seal_path(node, path.stem).unlink(missing_ok=True)
                gone += 1
        return gone

    def lines(self, node: str) -> Iterator[bytes]:
        path = self.path(node)
        if path.exists():
            with path.open("rb") as handle:
                yield from handle

    def recordings(self, node: str) -> Path:
        """The node's collected recordings, named as the node names them (ID.cast): `lifsea-agent
        verify-audit audit.jsonl --recordings` checks them against the copy's seals."""
        return self.path(node).parent / "recordings"

    def recording_path(self, node: str, recording_id: str) -> Path:
        if not RECORDING_ID.fullmatch(recording_id):
            raise ValueError(f"not a recording id: {recording_id!r}")
        return self.recordings(node) / f"{recording_id}.cast"

    def has_recording(self, node: str, recording_id: str) -> bool:
        return self.recording_path(node, recording_id).exists()

    def put_recording(self, node: str, recording_id: str, data: bytes) -> None:
        path = self.recording_path(node, recording_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        _write(partial, data, os.O_TRUNC)
        os.replace(partial, path)

    def live_path(self, node: str, recording_id: str) -> Path:
        return self.recording_path(node, recording_id).with_suffix(".live")

    def live_size(self, node: str, recording_id: str) -> int:
        try:
            return self.live_path(node, recording_id).stat().st_size
        except FileNotFoundError:
            return 0

    def append_live(self, node: str, recording_id: str, data: bytes) -> None:
        path = self.live_path(node, recording_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write(path, data, os.O_APPEND)

    def keep_live(self, node: str, recording_id: str, sha256: str) -> bool:
        path = self.live_path(node, recording_id)
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != sha256:
            return False
        # The seal the agent gave with the last live bytes: the node's record of it may never be collected
        # (a node flagged meanwhile is collected no further).
        _write(self.live_seal_path(node, recording_id), f"{sha256}\n".encode(), os.O_TRUNC)
        os.replace(path, self.recording_path(node, recording_id))
        return True

    def live_seal_path(self, node: str, recording_id: str) -> Path:
        return self.recording_path(node, recording_id).with_suffix(".sealed")

    def live_seal(self, node: str, recording_id: str) -> str | None:
        """The seal a recording kept from its live copy was checked against, as the agent gave it."""
        try:
            return self.live_seal_path(node, recording_id).read_text().strip() or None
        except FileNotFoundError:
            return None


def _time(line: bytes) -> float:
    """When a stored record was written, as a timestamp."""
    return datetime.fromisoformat(json.loads(line)["time"]).timestamp()


def _write(path: Path, data: bytes, mode: int) -> None:
    """All of `data`, then fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | mode, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
