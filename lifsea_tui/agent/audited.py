"""Audited side effects, done one way: the record that an operation starts is written before it acts,
its outcome after; a refusal is recorded with its reason; nothing acts when the log cannot be written.

Every change the agent makes to a node goes through here (upgrades, rollback, reboot, services, ops
sessions, debug records, recording views), so the order and the failure rules cannot drift apart:

- `begin` writes the `started` record (with an operation id, so a start left open by a crash is found
  at the next start) or refuses with `audit_unavailable`: nothing was done.
- `finish` writes the outcome; if the log fails now, the `started` record stays and the operation is
  marked interrupted when the log can be written again.
- `outcome` finishes a begun operation around the work that does it: `ok`, or `failed: ...` with the
  error; `operation` is `begin` and `outcome` together.
- `refuse` records why a request was refused and gives the error to raise.
- `record` writes one record that must exist before the agent goes on (a recording view, a debug step).
- `note` writes what the agent observed (a boot, an attach); the log failing must not stop it.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from lifsea_tui.agent.audit import STARTED, AuditLog, AuditUnavailable
from lifsea_tui.agent.auth import Identity
from lifsea_tui.agent.errors import ApiError
from lifsea_tui.api import AuditRecord

SYSTEM = Identity("system", None)  # what the node did (a boot)
AGENT = Identity("agent", None)  # what the agent did on its own (a repair, a summary)


@dataclass
class Started:
    """An operation whose start is on record; `result` goes into the outcome record's params."""

    who: Identity
    action: str
    reason: str | None
    params: dict[str, Any]
    op: str
    seq: int
    result: dict[str, Any] = field(default_factory=dict)


def record(
    audit: AuditLog,
    who: Identity,
    action: str,
    outcome: str,
    *,
    reason: str | None = None,
    params: dict[str, Any] | None = None,
    otherwise: str = "nothing was done",
) -> AuditRecord:
    """One record the agent may not go on without; `audit_unavailable` (saying `otherwise`) if it fails."""
    try:
        return audit.append(
            actor=who.actor, role=who.role, action=action, reason=reason, params=params or {}, outcome=outcome
        )
    except AuditUnavailable as error:
        raise ApiError("audit_unavailable", f"{error}; {otherwise}") from error


def note(
    audit: AuditLog,
    who: Identity,
    action: str,
    outcome: str,
    *,
    reason: str | None = None,
    params: dict[str, Any] | None = None,
) -> bool:
    """A record of what happened anyway; false when the log could not take it."""
    try:
        record(audit, who, action, outcome, reason=reason, params=params)
    except ApiError:
        return False
    return True


def refuse(
    audit: AuditLog,
    who: Identity,
    action: str,
    code: str,
    detail: str,
    *,
    reason: str | None = None,
    params: dict[str, Any] | None = None,
    otherwise: str = "nothing was done",
) -> ApiError:
    """Record a refusal and return the error to raise (`audit_unavailable` if even that cannot be written)."""
    record(audit, who, action, f"refused: {detail}"[:500], reason=reason, params=params, otherwise=otherwise)
    return ApiError(code, detail, audited=True)


def begin(audit: AuditLog, who: Identity, action: str, reason: str | None, params: dict[str, Any]) -> Started:
    op = secrets.token_hex(8)
    started = record(audit, who, action, STARTED, reason=reason, params={**params, "op": op})
    return Started(who, action, reason, params, op, started.seq)


def finish(audit: AuditLog, started: Started, outcome: str) -> None:
    # If the log fails now, the start record is on disk; the next start marks the operation interrupted.
    note(
        audit, started.who, started.action, outcome, reason=started.reason,
        params={**started.params, **started.result, "op": started.op},
    )  # fmt: skip


@contextlib.asynccontextmanager
async def outcome(audit: AuditLog, started: Started) -> AsyncIterator[Started]:
    """Finish `started` with `ok`, or with the error that left the block (then marked as audited)."""
    try:
        yield started
    except ApiError as error:
        finish(audit, started, f"failed: {error.detail}")
        error.audited = True
        raise
    except BaseException as error:
        finish(audit, started, f"failed: {type(error).__name__}: {error}")
        raise
    finish(audit, started, "ok")


@contextlib.asynccontextmanager
async def operation(
    audit: AuditLog, who: Identity, action: str, reason: str | None, params: dict[str, Any]
) -> AsyncIterator[Started]:
    """Begin, let the caller act, finish with `ok` or with the error."""
    async with outcome(audit, begin(audit, who, action, reason, params)) as started:
        yield started
