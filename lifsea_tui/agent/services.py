"""Services on the node: systemd units read, started, stopped and restarted, each change audited and
every unit state change pushed to /v1/events as systemd signals it."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

from lifsea_tui.agent import audited
from lifsea_tui.agent.audit import AuditLog
from lifsea_tui.agent.auth import Identity
from lifsea_tui.agent.config import ServicesConfig
from lifsea_tui.agent.errors import ApiError, BackendError
from lifsea_tui.agent.events import EventHub
from lifsea_tui.agent.systemd import SystemdBackend
from lifsea_tui.api import UnitActionResult, UnitChanged

# What a unit name may be: systemd's own characters (escapes like \x2d included), a known type suffix.
# No slash, no space, no shell punctuation: a name is never a path and never reaches a shell anyway.
UNIT_NAME = re.compile(
    r"^[A-Za-z0-9:_.@\\-]{1,240}\.(service|socket|timer|target|mount|automount|path|slice|scope|swap|device)$"
)
ACTIONS = ("start", "stop", "restart")
MAX_TRACKED = 500  # units whose restarts are counted

# Units no caller may start, stop or restart through the API: they power the node off or reboot it
# outside the audited reboot, drop it into a rescue shell on its console, open a root shell nobody
# records, take every service down at once, or cut the agent off from the node (its bus). Patterns as
# fnmatch; checked against every name the unit goes by (runlevel0.target is poweroff.target).
DEFAULT_DENY = (
    "poweroff.target", "reboot.target", "halt.target", "kexec.target", "soft-reboot.target", "shutdown.target",
    "final.target", "umount.target", "exit.target", "ctrl-alt-del.target", "runlevel[0-6].target",
    "rescue.target", "emergency.target", "sleep.target", "suspend*.target", "hibernate.target", "hybrid-sleep.target",
    "initrd*.target", "initrd-*.service",
    "systemd-poweroff.service", "systemd-reboot.service", "systemd-halt.service", "systemd-kexec.service",
    "systemd-soft-reboot.service", "systemd-exit.service", "systemd-suspend*.service", "systemd-hibernate*.service",
    "systemd-hybrid-sleep.service", "rescue.service", "emergency.service", "debug-shell.service",
    "default.target", "multi-user.target", "graphical.target", "basic.target", "sysinit.target",
    "dbus.service", "dbus.socket", "dbus-broker.service",
)  # fmt: skip


@dataclass(frozen=True)
class UnitPolicy:
    """Which units the API may act on: never a denied one; only an allowed one when an allow list is set."""

    deny: tuple[str, ...]
    allow: tuple[str, ...] | None = None

    @classmethod
    def from_config(cls, config: ServicesConfig) -> UnitPolicy:
        allow = tuple(config.allow) if config.allow is not None else None
        return cls(deny=(*DEFAULT_DENY, *config.agent_units, *config.deny), allow=allow)

    def refusal(self, asked: str, names: list[str]) -> str | None:
        """Why `asked` (known to systemd by `names`) may not be acted on, or None."""
        for name in dict.fromkeys([asked, *names]):
            pattern = next((p for p in self.deny if fnmatch.fnmatchcase(name, p)), None)
            if pattern is not None:
                alias = f" (an alias of {name})" if name != asked else ""
                return f"{asked}{alias} is on this node's deny list ({pattern}): no one acts on it through the API"
        if self.allow is not None and not any(fnmatch.fnmatchcase(n, p) for n in [asked, *names] for p in self.allow):
            return f"{asked} is not on this node's allow list for services"
        return None


def check_unit_name(name: str) -> str:
    if not UNIT_NAME.match(name):
        raise ApiError("bad_request", f"{name[:80]!r} is not a unit name (like cron.service)")
    return name


class Services:
    def __init__(self, systemd: SystemdBackend, audit: AuditLog, events: EventHub, policy: UnitPolicy) -> None:
        self.systemd = systemd
        self.policy = policy
        self.audit = audit
        self.events = events
        self.failed: set[str] | None = None  # None until the watch has the node's units
        # Automatic restarts seen since the watch began, by unit (/metrics): a crash loop climbs here
        # even though its unit is never "failed". At most MAX_TRACKED units.
        self.restarts: dict[str, int] | None = None

    def failed_units(self, limit: int = 50) -> list[str] | None:
        if self.failed is None or self.systemd.unavailable_reason() is not None:
            return None
        return sorted(self.failed)[:limit]

    async def act(self, who: Identity, unit: str, action: str, reason: str) -> UnitActionResult:
        if action not in ACTIONS:
            raise ApiError("not_found", f"no action {action[:20]!r} (one of {', '.join(ACTIONS)})")
        check_unit_name(unit)
        params: dict[str, Any] = {"unit": unit}
        what = f"service.{action}"
        try:
            names = await self.systemd.unit_names(unit)
        except BackendError:
            names = []  # no bus to ask: the action itself will fail and say why
        refusal = self.policy.refusal(unit, names)
        if refusal is not None:
            params["names"] = names[:8]
            raise audited.refuse(self.audit, who, what, "forbidden", refusal, reason=reason, params=params)
        async with audited.operation(self.audit, who, what, reason, params) as started:
            job = await self.systemd.unit_action(unit, action)
            started.result = {"job": job}
        return UnitActionResult(unit=unit, action=action, job=job, audit_seq=started.seq)

    async def watch(self) -> None:
        """Push every unit state change systemd signals to /v1/events (runs until cancelled)."""

        def subscribed(units: list[Any]) -> None:
            self.failed = {u.name for u in units if u.active_state == "failed"}
            if self.restarts is None:
                self.restarts = {}

        def changed(unit: str, values: dict[str, Any]) -> None:
            if self.failed is not None and "ActiveState" in values:
                if values["ActiveState"] == "failed":
                    self.failed.add(unit)
                else:
                    self.failed.discard(unit)
            if self.restarts is not None and values.get("SubState") == "auto-restart":
                if unit in self.restarts or len(self.restarts) < MAX_TRACKED:
                    self.restarts[unit] = self.restarts.get(unit, 0) + 1
            self.events.publish(
                UnitChanged(
                    unit=unit,
                    active_state=values.get("ActiveState"),
                    sub_state=values.get("SubState"),
                    result=values.get("Result"),
                )
            )

        await self.systemd.watch_units(changed, subscribed)
