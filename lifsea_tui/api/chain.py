"""The audit chain's encoding, shared by the node that writes it and whoever checks a copy of it.

A record is stored as its canonical encoding (sorted keys, no spaces, UTF-8) followed by a newline; its
hash is the SHA-256 of that encoding without the hash field, and it names the previous record's hash
(GENESIS for the first). A copy of a node's log kept anywhere else verifies with the same rules.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from lifsea_tui.api.models import AuditRecord

GENESIS = "0" * 64
SESSION_START = "ops.session.start"  # outcome "started" when a break-glass session opened
SESSION_END = "ops.session.end"  # its params name the recording and the SHA-256 it was sealed with


def canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in fields.items() if k != "hash"})).hexdigest()


def iso(when: datetime) -> str:
    """A record's time as the node writes it: UTC, microseconds, a Z."""
    return when.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def stored(record: AuditRecord) -> tuple[bytes, str]:
    """The line the node stored for `record`, rebuilt from the API's answer, and the hash its content has
    (equal to `record.hash` unless the record was changed after it was written)."""
    fields = record.model_dump(mode="json")
    fields["time"] = iso(record.time)
    claimed = fields.pop("hash")
    content = hashlib.sha256(canonical(fields)).hexdigest()
    fields["hash"] = claimed
    return canonical(fields) + b"\n", content
