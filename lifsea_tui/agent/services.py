"""Services on the node: systemd units read, started, stopped and restarted, each change audited and
every unit state change pushed to /v1/events as systemd signals it."""

from __future__ import annotations

import re
from typing import Any

from lifsea_tui.agent.audit import AuditLog, AuditUnavailable
from lifsea_tui.agent.auth import Identity
from lifsea_tui.agent.errors import ApiError
from lifsea_tui.agent.events import EventHub
from lifsea_tui.agent.systemd import SystemdBackend
from lifsea_tui.api import EventKind, UnitActionResult

# What a unit name may be: systemd's own characters (escapes like \x2d included), a known type suffix.
# No slash, no space, no shell punctuation: a name is never a path and never reaches a shell anyway.
UNIT_NAME = re.compile(
    r"^[A-Za-z0-9:_.@\\-]{1,240}\.(service|socket|timer|target|mount|automount|path|slice|scope|swap|device)$"
)
ACTIONS = ("start", "stop", "restart")


def check_unit_name(name: str) -> str:
    if not UNIT_NAME.match(name):
        raise ApiError("bad_request", f"{name[:80]!r} is not a unit name (like cron.service)")
    return name


class Services:
    def __init__(self, systemd: SystemdBackend, audit: AuditLog, events: EventHub) -> None:
        self.systemd = systemd
        self.audit = audit
        self.events = events
        self.failed: set[str] | None = None  # None until the watch has the node's units

    def failed_units(self, limit: int = 50) -> list[str] | None:
        if self.failed is None or self.systemd.unavailable_reason() is not None:
            return None
        return sorted(self.failed)[:limit]

    async def act(self, who: Identity, unit: str, action: str, reason: str) -> UnitActionResult:
        if action not in ACTIONS:
            raise ApiError("not_found", f"no action {action[:20]!r} (one of {', '.join(ACTIONS)})")
        check_unit_name(unit)
        params: dict[str, Any] = {"unit": unit}
        try:
            started = self.audit.append(
                actor=who.actor, role=who.role, action=f"service.{action}", reason=reason, params=params,
                outcome="started",
            )  # fmt: skip
        except AuditUnavailable as error:
            raise ApiError("audit_unavailable", f"{error}; nothing was done") from error
        try:
            job = await self.systemd.unit_action(unit, action)
        except ApiError as error:
            self._finish(who, action, reason, params, f"failed: {error.detail}")
            error.audited = True
            raise
        self._finish(who, action, reason, {**params, "job": job}, "ok")
        return UnitActionResult(unit=unit, action=action, job=job, audit_seq=started.seq)

    def _finish(self, who: Identity, action: str, reason: str, params: dict[str, Any], outcome: str) -> None:
        try:
            self.audit.append(
                actor=who.actor, role=who.role, action=f"service.{action}", reason=reason, params=params,
                outcome=outcome,
            )  # fmt: skip
        except AuditUnavailable:
            pass  # the start record is on disk; the outcome is lost with the disk

    async def watch(self) -> None:
        """Push every unit state change systemd signals to /v1/events (runs until cancelled)."""

        def subscribed(units: list[Any]) -> None:
            self.failed = {u.name for u in units if u.active_state == "failed"}

        def changed(unit: str, values: dict[str, Any]) -> None:
            if self.failed is not None and "ActiveState" in values:
                if values["ActiveState"] == "failed":
                    self.failed.add(unit)
                else:
                    self.failed.discard(unit)
            data = {"unit": unit}
            for key, field in (("ActiveState", "active_state"), ("SubState", "sub_state"), ("Result", "result")):
                if key in values:
                    data[field] = values[key]
            self.events.publish(EventKind.services, data)

        await self.systemd.watch_units(changed, subscribed)
