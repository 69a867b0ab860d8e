"""Where the fleet controller keeps what it collected off the nodes: each node's audit records, exactly as
the node stored them, so the copy verifies by the same rules as the node's own log (api/chain.py).

`Trail` is what the collector needs; `DirectoryTrail` keeps one append-only file per node under a
directory (fsync'd before the collected head moves on). An object store can implement the same four
methods.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from lifsea_tui.api.chain import GENESIS
from lifsea_tui.api.trail import NodeTrail
from lifsea_tui.client.etcd import Store

NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
RECORDING_ID = re.compile(r"[0-9a-f]{16}")
LOG_NAME = "audit.jsonl"


def state_key(name: str) -> str:
    """Where etcd holds one node's collection (the controller writes it, fenced)."""
    return f"audit/{name}"


async def read_states(store: Store) -> dict[str, NodeTrail]:
    """Every node's collection as etcd holds it, by node."""
    states = (NodeTrail.model_validate_json(kv.value) for kv in await store.range("audit/"))
    return {state.name: state for state in states}


class Trail(Protocol):
    def head(self, node: str) -> tuple[int, str]:
        """The newest collected record's seq and hash; (-1, GENESIS) before the first."""
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


class DirectoryTrail:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._hashes: dict[str, list[str]] = {}  # per node, the hash of every collected record, by seq

    def path(self, node: str) -> Path:
        if not NODE_NAME.fullmatch(node):
            raise ValueError(f"not a node name: {node!r}")
        return self.root / node / LOG_NAME

    def _load(self, node: str) -> list[str]:
        if node in self._hashes:
            return self._hashes[node]
        path, hashes = self.path(node), []
        if path.exists():
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):  # a write cut short by a crash: never acknowledged
                data = data[: data.rfind(b"\n") + 1]
                with path.open("r+b") as handle:
                    handle.truncate(len(data))
            hashes = [json.loads(line)["hash"] for line in data.splitlines()]
        self._hashes[node] = hashes
        return hashes

    def head(self, node: str) -> tuple[int, str]:
        hashes = self._load(node)
        return len(hashes) - 1, hashes[-1] if hashes else GENESIS

    def hash_at(self, node: str, seq: int) -> str | None:
        hashes = self._load(node)
        return hashes[seq] if 0 <= seq < len(hashes) else None

    def append(self, node: str, lines: list[bytes]) -> None:
        hashes = self._load(node)
        path = self.path(node)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            data = memoryview(b"".join(lines))
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        hashes.extend(json.loads(line)["hash"] for line in lines)

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
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, path)
