"""Upgrades, rollback and reboot: one operation at a time, each audited before it acts and after.

The update state is kept in memory only as far as the disk cannot say it: a pending deployment on disk
means `staged` whatever the agent remembers, so a restarted agent recomputes its state from the sysroot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from lifsea_tui.agent import audited
from lifsea_tui.agent.audit import AuditLog
from lifsea_tui.agent.audited import Started
from lifsea_tui.agent.auth import Identity
from lifsea_tui.agent.errors import ApiError, BackendError
from lifsea_tui.agent.events import EventHub
from lifsea_tui.agent.ostree import HISTORY_DEPTH, OstreeBackend, PullFigures
from lifsea_tui.agent.systemd import SystemdBackend
from lifsea_tui.api import Deployment, UpdateProgress, UpdateState, UpdateStatus, UpdateTarget

INTERRUPTED = "interrupted: the agent stopped before the operation finished"
PROGRESS_EVENT_EVERY = 1.0  # seconds between update events while a staging pull runs

# Words in ostree's pull errors that mean the update server could not be reached at all.
UNREACHABLE_HINTS = (
    "could not connect",
    "connection refused",
    "couldn't connect",
    "timed out",
    "timeout",
    "could not resolve",
    "no route",
    "network is unreachable",
)


def _now() -> datetime:
    return datetime.now(UTC)


class UpdateManager:
    def __init__(
        self, ostree: OstreeBackend, systemd: SystemdBackend, audit: AuditLog, events: EventHub, pull_timeout: float
    ) -> None:
        self.ostree = ostree
        self.systemd = systemd
        self.audit = audit
        self.events = events
        self.pull_timeout = pull_timeout
        self._state = UpdateState.idle
        self._targets: list[UpdateTarget] = []
        self._refspec: str | None = None
        self._last_error: str | None = None
        self._last_checked: datetime | None = None
        self._changed_at = _now()
        self._operation: str | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._progress: UpdateProgress | None = None  # while checking or staging
        self._progress_published = 0.0  # monotonic time of the last progress event

    # -- state ----------------------------------------------------------------------------------------

    async def status(self) -> UpdateStatus:
        deployments, _ = await self.ostree.deployments()
        booted = next((d for d in deployments if d.booted), None)
        pending = next((d for d in deployments if d.pending), None)
        state = self._state
        if self._operation == "check":
            state = UpdateState.checking
        elif self._operation == "stage":
            state = UpdateState.staging
        elif pending is not None and state != UpdateState.failed:
            state = UpdateState.staged
        elif state == UpdateState.staged:
            state = UpdateState.idle  # staged and booted since, or cancelled behind our back
        targets = [t for t in self._targets if booted is None or t.checksum != booted.checksum]
        if state == UpdateState.available and not targets:
            state = UpdateState.idle
        origin = booted or (deployments[0] if deployments else None)
        return UpdateStatus(
            state=state,
            refspec=self._refspec or (origin.origin_refspec if origin else None),
            booted_checksum=booted.checksum if booted else None,
            targets=targets,
            operation=self._operation,
            last_error=self._last_error,
            last_checked=self._last_checked,
            changed_at=self._changed_at,
            progress=self._progress if self._operation in ("check", "stage") else None,
        )

    def _set(self, state: UpdateState, error: str | None = None) -> None:
        self._state = state
        self._last_error = error
        self._changed_at = _now()

    async def publish(self) -> UpdateStatus:
        status = await self.status()
        self.events.publish(status)
        return status

    async def _pulled(self, figures: PullFigures) -> None:
        """A pull's progress: kept for /v1/upgrades, and an update event at most every
        PROGRESS_EVENT_EVERY seconds (a fleet of watchers refreshes on each)."""
        started = self._progress.started_at if self._progress is not None else _now()
        elapsed = (_now() - started).total_seconds()
        self._progress = UpdateProgress(
            phase="pulling",
            fetched=figures.fetched,
            requested=figures.requested,
            scanned_metadata=figures.scanned_metadata,
            bytes_transferred=figures.bytes_transferred,
            started_at=started,
            bytes_per_second=figures.bytes_transferred / elapsed if elapsed > 0.5 else None,
        )
        if figures.done or time.monotonic() - self._progress_published >= PROGRESS_EVENT_EVERY:
            self._progress_published = time.monotonic()
            await self.publish()

    # -- operations -------------------------------------------------------------------------------------

    def _begin(self, who: Identity, action: str, reason: str, params: dict[str, Any]) -> Started:
        """Take the operation slot and write the record that says the operation starts."""
        if self._operation is not None:
            busy = f"{self._operation} is in progress; one operation at a time"
            raise audited.refuse(self.audit, who, action, "busy", busy, reason=reason, params=params)
        started = audited.begin(self.audit, who, action, reason, params)
        self._operation = action.removeprefix("upgrade.")
        return started

    async def _run(self, started: Started, work: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        """Do the work, free the slot, audit the outcome, tell subscribers the new state."""
        try:
            async with audited.outcome(self.audit, started):
                started.result = await work()
        except ApiError:
            self._operation = None
            await self.publish()
            raise
        finally:
            self._operation = None
            self._progress = None
        await self.publish()

    @staticmethod
    def _origin(deployments: list[Deployment]) -> str | None:
        origin = next((d for d in deployments if d.booted), None) or (deployments[0] if deployments else None)
        return origin.origin_refspec if origin else None

    async def check(self, who: Identity, reason: str) -> tuple[UpdateStatus, int]:
        action = "upgrade.check"
        deployments, _ = await self.ostree.deployments()
        refspec = self._origin(deployments)
        self._guard(
            who,
            action,
            reason,
            {"refspec": refspec},
            None if refspec else "no deployment with an origin to update from",
        )
        assert refspec is not None
        started = self._begin(who, action, reason, {"refspec": refspec})
        await self.publish()

        async def work() -> dict[str, Any]:
            self._refspec = refspec
            booted = next((d for d in deployments if d.booted), None)
            stop_at = booted.checksum if booted else None
            try:
                await self.ostree.pull_watched(refspec, self.pull_timeout, self._pulled)
                newest = await self.ostree.resolve(refspec)
                chain = await self.ostree.chain(newest, stop_at)
                if chain and chain[-1].parent not in (None, stop_at):
                    # More than one release since the booted one: fetch the older commits' metadata too.
                    await self.ostree.pull(refspec, self.pull_timeout, metadata_depth=HISTORY_DEPTH)
                    chain = await self.ostree.chain(newest, stop_at)
            except BackendError as error:
                self._set(UpdateState.failed, error.detail)
                lowered = error.detail.lower()
                if any(hint in lowered for hint in UNREACHABLE_HINTS):
                    raise BackendError(
                        "update_server_unavailable", f"update server unreachable: {error.detail}"
                    ) from error
                raise
            targets = [
                UpdateTarget(
                    checksum=c.checksum, version=c.version, timestamp=c.timestamp, subject=c.subject, diff=None
                )
                for c in chain
            ]
            if targets and stop_at:
                targets[0].diff = await self.ostree.diff(stop_at, targets[0].checksum)
            self._targets = targets
            self._last_checked = _now()
            self._set(UpdateState.available if targets else UpdateState.idle)
            return {"refspec": refspec, "newest": newest, "versions": [t.version for t in targets]}

        # Shielded: a client that hangs up does not abandon a pull halfway; the outcome is audited anyway.
        task = asyncio.ensure_future(self._run(started, work))
        await asyncio.shield(task)
        return await self.status(), started.seq

    def _guard(self, who: Identity, action: str, reason: str, params: dict[str, Any], problem: str | None) -> None:
        """Refuse (and audit the refusal) when another operation runs or the node is in the wrong state."""
        if self._operation is not None:
            busy = f"{self._operation} is in progress; one operation at a time"
            raise audited.refuse(self.audit, who, action, "busy", busy, reason=reason, params=params)
        if problem is not None:
            raise audited.refuse(self.audit, who, action, "wrong_state", problem, reason=reason, params=params)

    async def stage(self, who: Identity, reason: str, checksum: str | None) -> tuple[UpdateStatus, int]:
        action = "upgrade.stage"
        status = await self.status()
        target = next((t for t in status.targets if checksum in (None, t.checksum)), None)
        problem = None
        if status.state == UpdateState.staged:
            problem = "an update is already staged; cancel it first"
        elif not status.targets:
            problem = "no update available; check first"
        elif target is None or status.refspec is None:
            problem = f"{checksum} is not an available update"
        self._guard(who, action, reason, {"checksum": checksum}, problem)
        assert target is not None and status.refspec is not None
        refspec = status.refspec
        params = {"checksum": target.checksum, "version": target.version}
        started = self._begin(who, action, reason, params)

        async def work() -> dict[str, Any]:
            try:
                if not await self.ostree.has_tree(target.checksum):  # a check fetched only its metadata
                    remote = refspec.rpartition(":")[0]
                    await self.ostree.pull_watched(f"{remote}:{target.checksum}", self.pull_timeout, self._pulled)
                pulled = self._progress or UpdateProgress(
                    phase="pulling", fetched=0, requested=0, bytes_transferred=0, started_at=_now()
                )
                self._progress = pulled.model_copy(update={"phase": "deploying"})  # checking out the tree
                await self.publish()
                await self.ostree.deploy(target.checksum, refspec, self.pull_timeout)
            except BackendError as error:
                self._set(UpdateState.failed, error.detail)
                raise
            self._set(UpdateState.staged)
            return params

        task = asyncio.create_task(self._run(started, work))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # outcome is audited; no log noise
        return await self.publish(), started.seq

    async def _quick(
        self,
        who: Identity,
        action: str,
        reason: str,
        params: dict[str, Any],
        work: Callable[[], Awaitable[dict[str, Any]]],
    ) -> tuple[UpdateStatus, int]:
        started = self._begin(who, action, reason, params)
        await self._run(started, work)
        return await self.status(), started.seq

    async def cancel(self, who: Identity, reason: str) -> tuple[UpdateStatus, int]:
        deployments, _ = await self.ostree.deployments()
        pending = next((d for d in deployments if d.pending), None)
        params = {"checksum": pending.checksum if pending else None}
        self._guard(
            who, "upgrade.cancel", reason, params, None if pending else "there is no pending deployment to cancel"
        )

        async def work() -> dict[str, Any]:
            removed = await self.ostree.undeploy_pending()
            self._set(UpdateState.available if self._targets else UpdateState.idle)
            return {"checksum": removed.checksum, "version": removed.version}

        return await self._quick(who, "upgrade.cancel", reason, params, work)

    async def rollback(self, who: Identity, reason: str) -> tuple[UpdateStatus, int]:
        deployments, booted_known = await self.ostree.deployments()
        target = next((d for d in deployments if d.rollback), None)
        params = {"checksum": target.checksum if target else None, "version": target.version if target else None}
        self._guard(
            who, "rollback", reason, params, None if target and booted_known else "there is no rollback deployment"
        )

        async def work() -> dict[str, Any]:
            chosen = await self.ostree.rollback()
            return {"checksum": chosen.checksum, "version": chosen.version}

        return await self._quick(who, "rollback", reason, params, work)

    async def reboot(self, who: Identity, reason: str) -> tuple[UpdateStatus, int]:
        deployments, _ = await self.ostree.deployments()
        default = deployments[0] if deployments else None
        params = {"checksum": default.checksum if default else None, "version": default.version if default else None}

        async def work() -> dict[str, Any]:
            await self.systemd.reboot()
            return params

        return await self._quick(who, "reboot", reason, params, work)

    # -- start and stop ----------------------------------------------------------------------------------

    async def recover(self) -> None:
        """Close operations a previous agent left open (it died mid-way) and tidy the sysroot after them."""
        interrupted = self.audit.open_operations()
        for record in interrupted:
            if record.action == "upgrade.stage" and self.ostree.unavailable_reason() is None:
                try:
                    await self.ostree.cleanup()
                except BackendError:
                    pass  # the record below still says the operation did not finish
            audited.note(
                self.audit, audited.AGENT, record.action, INTERRUPTED,
                reason=record.reason, params={**record.params, "started_seq": record.seq},
            )  # fmt: skip

    async def shutdown(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
