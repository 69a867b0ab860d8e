"""The newest audit record the console has seen on each node, remembered across runs.

A node's audit log is a hash chain: if the record the console once saw as the head, by sequence number
and hash, is no longer in the chain (the log is shorter, or that record's hash changed), the log was
truncated or rewritten since, and the console says so. The remembered head is not moved past a broken
chain, so the warning stays until someone looks into it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lifsea_tui.client.node import NodeClient, NodeError, NodeTarget


class AuditHeads:
    """`scope` says which fleet the names belong to (an inventory and its context, or one lab): node1 of
    a lab made again, or of the staging context, is not node1 of the one seen before."""

    def __init__(self, path: Path | None, scope: str = "") -> None:
        self.path = path
        self.scope = scope
        self._heads: dict[str, tuple[int, str]] = {}
        self._dirty = False
        if path is not None:
            try:
                raw = json.loads(path.read_text())
            except (OSError, ValueError):
                raw = {}
            if isinstance(raw, dict):
                for key, value in raw.items():
                    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], int):
                        self._heads[str(key)] = (value[0], str(value[1]))

    def _key(self, target: NodeTarget) -> str:
        # Names are unique in an inventory; a node's address may change, its log may not.
        return f"{self.scope}/{target.name}" if self.scope else target.name

    def remembered(self, target: NodeTarget) -> tuple[int, str] | None:
        return self._heads.get(self._key(target))

    async def check(self, client: NodeClient, seq: int, digest: str | None) -> str | None:
        """None when the node's chain still holds the remembered head (which then moves to the new one);
        otherwise what is wrong, in words for the fleet table."""
        if digest is None or seq < 0:
            known = self.remembered(client.target)
            return None if known is None else f"audit log is empty now; record {known[0]} was seen before"
        known = self.remembered(client.target)
        if known is not None and known != (seq, digest):
            old_seq, old_hash = known
            if seq < old_seq:
                return f"audit log shrank: head {seq}, but record {old_seq} was seen before (truncated or rewritten)"
            if seq == old_seq:
                return f"audit record {old_seq} changed since it was seen (rewritten)"
            try:
                page = await client.audit(after=old_seq - 1, limit=1)
            except NodeError:
                return None  # cannot tell now; the next refresh asks again
            record = page.records[0] if page.records else None
            if record is None or record.seq != old_seq or record.hash != old_hash:
                return f"audit record {old_seq} is not the one seen before (rewritten)"
        if known != (seq, digest):
            self._heads[self._key(client.target)] = (seq, digest)
            self._dirty = True
        return None

    def save(self) -> None:
        if not self._dirty or self.path is None:
            return
        self._dirty = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({key: list(value) for key, value in sorted(self._heads.items())}))
            os.replace(tmp, self.path)
        except OSError:
            self._dirty = True  # try again next time
