"""/metrics for Prometheus: what a pager needs from a node, through prometheus-client.

prometheus-client gives the exposition format (label values escaped: a unit name or a version string
cannot break a line), the process metrics (CPU, memory, open files) and histograms. Each agent has its
own registry, so two agents in one process (the tests) never share a series.

The node's state is read when scraped, the way /v1/summary reads it (it is as cheap), and handed to a
collector. The audit chain is the exception: walking it costs time in proportion to its length, so it is
verified in a thread at most every AUDIT_EVERY seconds, and its figures carry the time of that walk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from lifsea_tui import __version__
from lifsea_tui.agent import resources
from lifsea_tui.agent.audit import AuditLog
from lifsea_tui.agent.config import AgentConfig
from lifsea_tui.agent.errors import ApiError
from lifsea_tui.agent.events import EventHub
from lifsea_tui.agent.ops import OpsManager
from lifsea_tui.agent.ostree import OstreeBackend
from lifsea_tui.agent.services import Services
from lifsea_tui.agent.systemd import SystemdBackend
from lifsea_tui.agent.updates import UpdateManager
from lifsea_tui.api import AuditVerify, Deployment, NodeResources, UpdateState, UpdateStatus

PREFIX = "lifsea_agent"
AUDIT_EVERY = 300.0  # seconds between walks of the audit chain for /metrics
MAX_UNIT_SERIES = 200  # units named in per-unit series at most (a node gone wrong can fail many)
# Request latency: the agent answers most reads in milliseconds; a stage or a verify can take seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Observed(Protocol):
    """What /metrics reads of the agent that holds it (the Agent is one; this module need not know it)."""

    @property
    def started(self) -> float: ...
    @property
    def config(self) -> AgentConfig: ...
    @property
    def audit(self) -> AuditLog: ...
    @property
    def events(self) -> EventHub: ...
    @property
    def ostree(self) -> OstreeBackend: ...
    @property
    def systemd(self) -> SystemdBackend: ...
    @property
    def updates(self) -> UpdateManager: ...
    @property
    def ops(self) -> OpsManager: ...
    @property
    def services(self) -> Services: ...


@dataclass
class Scrape:
    """What one scrape read from the node; None where the node could not say."""

    deployments: list[Deployment] | None = None
    update: UpdateStatus | None = None
    failed_units: list[str] | None = None
    resources: NodeResources | None = None
    ops_sessions: int = 0
    audit_head: int = -1


@dataclass
class AuditCheck:
    verdict: AuditVerify | None = None
    finished: float | None = None  # wall-clock time the last walk finished
    running: asyncio.Task[None] | None = field(default=None, repr=False)


class NodeCollector(Collector):
    def __init__(self, agent: Observed) -> None:
        self.agent = agent
        self.scrape = Scrape()
        self.audit = AuditCheck()

    def collect(self) -> Iterator[Metric]:
        s, agent = self.scrape, self.agent
        yield _gauge("up_seconds", "Seconds since the agent started.", time.monotonic() - agent.started)
        info = InfoMetricFamily(f"{PREFIX}_build", "The agent's version and node name.", labels=["version", "node"])
        info.add_metric([__version__, agent.config.node_name], {})
        yield info
        if s.deployments is not None:
            for role in ("booted", "pending", "rollback"):
                found = next((d for d in s.deployments if getattr(d, role)), None)
                family = InfoMetricFamily(
                    f"{PREFIX}_{role}", f"The {role} deployment (absent when there is none).", labels=[]
                )
                if found is not None:
                    family.add_metric([], {"version": found.version or "", "checksum": found.checksum})
                yield family
            yield _gauge(
                "pending_deployment",
                "1 when a deployment is staged for the next boot.",
                any(d.pending for d in s.deployments),
            )
        if s.update is not None:
            state = GaugeMetricFamily(
                f"{PREFIX}_update_state", "The update state: 1 for the current one.", labels=["state"]
            )
            for value in UpdateState:
                state.add_metric([value.value], float(s.update.state is value))
            yield state
            yield _gauge("update_targets", "Updates the node was offered at its last check.", len(s.update.targets))
        if s.failed_units is not None:
            yield _gauge("units_failed", "Units in the failed state.", len(s.failed_units))
            failed = GaugeMetricFamily(f"{PREFIX}_unit_failed", "1 for each unit in the failed state.", labels=["unit"])
            for unit in s.failed_units[:MAX_UNIT_SERIES]:
                failed.add_metric([unit], 1.0)
            yield failed
        restarts = agent.services.restarts
        if restarts is not None:
            seen = CounterMetricFamily(
                f"{PREFIX}_unit_restarts",
                "Automatic restarts of each unit that systemd restarted since the agent started (a crash loop climbs).",
                labels=["unit"],
            )
            for unit, count in sorted(restarts.items())[:MAX_UNIT_SERIES]:
                seen.add_metric([unit], float(count))
            yield seen
        yield _gauge("ops_sessions", "Break-glass sessions open on the node.", s.ops_sessions)
        yield _gauge("audit_head_seq", "Sequence number of the newest audit record.", s.audit_head)
        yield _gauge("event_subscribers", "Open /v1/events connections.", agent.events.subscribers)
        r = s.resources
        if r is not None:
            if r.var_used_ratio is not None:
                yield _gauge("var_used_ratio", "Used share of the node's /var (0 to 1).", r.var_used_ratio)
            if r.var_free_bytes is not None:
                yield _gauge("var_free_bytes", "Bytes an unprivileged writer may still put in /var.", r.var_free_bytes)
            if r.memory_used_ratio is not None:
                yield _gauge(
                    "memory_used_ratio", "Share of memory not available without swap (0 to 1).", r.memory_used_ratio
                )
            if r.load is not None:
                load = GaugeMetricFamily(f"{PREFIX}_load", "Load averages.", labels=["minutes"])
                for minutes, average in zip(("1", "5", "15"), r.load, strict=True):
                    load.add_metric([minutes], average)
                yield load
            if r.uptime_seconds is not None:
                yield _gauge("node_uptime_seconds", "Seconds since the node's systemd started.", r.uptime_seconds)
        verdict = self.audit.verdict
        if verdict is not None and self.audit.finished is not None:
            yield _gauge("audit_chain_ok", "1 when the audit chain held at its last check.", verdict.ok)
            yield _gauge("audit_chain_checked_seq", "The head the last chain check reached.", verdict.head_seq)
            yield _gauge(
                "audit_chain_checked_timestamp_seconds",
                "When the chain was last checked (Unix time).",
                self.audit.finished,
            )


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", text, value=float(value))


class Metrics:
    """The agent's registry: request counts and latency by route template, the node, the process."""

    def __init__(self, agent: Observed) -> None:
        self.agent = agent
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            f"{PREFIX}_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time to answer HTTP requests, by method and route template.",
            ["method", "route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        ProcessCollector(namespace=PREFIX, registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.node = NodeCollector(agent)
        self.registry.register(self.node)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    async def render(self) -> bytes:
        await self._read_node()
        return generate_latest(self.registry)

    async def _read_node(self) -> None:
        agent = self.agent
        scrape = Scrape(ops_sessions=len(agent.ops.sessions), audit_head=agent.audit.head.seq)
        try:
            scrape.deployments, _ = await agent.ostree.deployments()
            scrape.update = await agent.updates.status()
        except ApiError:
            pass  # no sysroot to read: those series are absent, and /v1/node says why
        scrape.failed_units = agent.services.failed_units(limit=MAX_UNIT_SERIES)
        scrape.resources = await resources.read(agent.config.host_root, agent.systemd)
        self.node.scrape = scrape
        check = self.node.audit
        due = check.finished is None or time.time() - check.finished > AUDIT_EVERY
        if due and (check.running is None or check.running.done()):
            check.running = asyncio.create_task(self._check_audit())
            if check.verdict is None:  # the first scrape waits for it a little, so it is not absent for long
                await asyncio.wait({check.running}, timeout=2.0)

    async def _check_audit(self) -> None:
        check = self.node.audit
        check.verdict = await asyncio.to_thread(self.agent.audit.verify)
        check.finished = time.time()
