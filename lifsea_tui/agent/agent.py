"""The agent: everything one agent process holds (backends, audit log, events, limits, counters), and
what it does on its own (noticing boots and deployment changes)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from lifsea_tui.agent import audited
from lifsea_tui.agent.audit import AuditLog
from lifsea_tui.agent.auth import Authenticator
from lifsea_tui.agent.config import AgentConfig, ConfigError
from lifsea_tui.agent.errors import ApiError
from lifsea_tui.agent.events import EventHub
from lifsea_tui.agent.limits import RefusalTally, StreamLimits
from lifsea_tui.agent.logs import Journal
from lifsea_tui.agent.metrics import Metrics
from lifsea_tui.agent.node import HISTORY_EVENTS
from lifsea_tui.agent.ops import OpsManager
from lifsea_tui.agent.ostree import OstreeBackend
from lifsea_tui.agent.services import Services, UnitPolicy
from lifsea_tui.agent.systemd import SystemdBackend
from lifsea_tui.agent.updates import UpdateManager
from lifsea_tui.api import Deployment, DeploymentsChanged

log = logging.getLogger("lifsea.agent")


class Agent:
    """Everything one agent process holds: its backends, audit log, events and counters."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self._sources_seen: list[tuple[int, int, int] | None] = []
        self.audit = AuditLog(config.audit_dir, config.node_name, tracked=HISTORY_EVENTS)
        self.events = EventHub()
        self.ostree = OstreeBackend(config.sysroot, config.host_root, config.osname)
        self.systemd = SystemdBackend(config.system_bus)
        self.updates = UpdateManager(self.ostree, self.systemd, self.audit, self.events, config.pull_timeout)
        self.ops = OpsManager(config, self.audit, self.events, self.ostree)
        self.services = Services(self.systemd, self.audit, self.events, UnitPolicy.from_config(config.services))
        self.journal = Journal(config.journal_dirs)
        self.authn = Authenticator(config.tokens, config.clients)
        self.refusals = RefusalTally(self.audit)
        self.follows = StreamLimits("log follows", config.limits.follows_per_caller, config.limits.follows)
        self.event_streams = StreamLimits(
            "event streams", config.limits.event_streams_per_caller, config.limits.event_streams
        )
        self.started = time.monotonic()
        self.metrics = Metrics(self)
        self._last_deployments: list[Deployment] | None = None
        self._last_booted: str | None = None

    def reload(self, read: Callable[[], AgentConfig]) -> None:
        """Take the tokens and client mappings of the config file again (SIGHUP): open sessions and
        streams go on; a caller's next request is judged by the new set. A file that does not load
        changes nothing, and says why."""
        self._sources_seen = self._sources_signature()  # what this reload reads: a watcher need not again
        try:
            config = read()
        except Exception as error:  # noqa: BLE001 - whatever the file did, the agent keeps what it had
            why = str(error) if isinstance(error, ConfigError) else f"{type(error).__name__}: {error}"
            log.error("reload refused, the tokens and clients stay as they were: %s", why)
            audited.note(self.audit, audited.SYSTEM, "agent.reload", f"failed: {why}"[:500])
            return
        self.authn = Authenticator(config.tokens, config.clients)
        self.config.tokens, self.config.clients = config.tokens, config.clients
        self.config.sources = config.sources
        names = sorted(entry.name for entry in config.tokens)
        clients = sorted(entry.name for entry in config.clients)
        log.info("reloaded: tokens %s; clients %s", ", ".join(names) or "none", ", ".join(clients) or "none")
        params = {"tokens": names, "clients": clients}
        audited.note(self.audit, audited.SYSTEM, "agent.reload", "ok", params=params)

    def _sources_signature(self) -> list[tuple[int, int, int] | None]:
        found: list[tuple[int, int, int] | None] = []
        for path in self.config.sources:
            try:
                info = path.stat()
                found.append((info.st_ino, info.st_size, info.st_mtime_ns))
            except OSError:
                found.append(None)
        return found

    async def watch_sources(self, read: Callable[[], AgentConfig], interval: float) -> None:
        """Reload when a file the config came from changes (a Kubernetes Secret is updated in place, by
        a symlink swap, and an agent sharing the host's pid namespace is not easy to signal)."""
        self._sources_seen = self._sources_signature()
        while True:
            await asyncio.sleep(interval)
            if self._sources_signature() != self._sources_seen:
                log.info("a config file changed; reloading")
                self.reload(read)

    async def start(self) -> None:
        await self.ops.start()
        await self.updates.recover()
        for record in self.audit.of_actions(["node.booted"]):
            if isinstance(record.params.get("checksum"), str):
                self._last_booted = record.params["checksum"]

    async def watch(self) -> None:
        """Notice what changes on disk and in the node (reboots) and tell subscribers; audit new boots."""
        while True:
            try:
                await self.observe()
            except ApiError:
                pass  # the sysroot is unreadable for now; the capability says why
            except Exception:
                log.exception("watch failed")
            await asyncio.sleep(self.config.watch_interval)

    async def observe(self) -> None:
        if self.ostree.unavailable_reason() is not None:
            return
        deployments, _ = await self.ostree.deployments()
        self.note_boot(deployments)
        if deployments == self._last_deployments:
            return
        self._last_deployments = deployments
        self.events.publish(DeploymentsChanged(deployments=deployments))
        await self.updates.publish()

    def note_boot(self, deployments: list[Deployment]) -> None:
        """Audit a boot into a different deployment the first time anything sees it.

        Called by the watcher and by every request that reads deployments, so a short-lived boot is
        recorded even when it falls between two watcher ticks.
        """
        booted = next((d for d in deployments if d.booted), None)
        if booted is None or booted.checksum == self._last_booted:
            return
        self._last_booted = booted.checksum
        audited.note(
            self.audit,
            audited.SYSTEM,
            "node.booted",
            "ok",
            params={"checksum": booted.checksum, "version": booted.version},
        )
