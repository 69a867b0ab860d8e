"""Many nodes at once: concurrent refreshes with a bound, per-node timeouts, and backoff for dead nodes.

A node that does not answer never holds up the others: every node is refreshed in its own task, results
are handed back as each one completes, and a node that keeps failing is asked less often (up to once a
minute) until it answers again. A refresh is one request a node (/v1/summary) over a keep-alive
connection. Each node has its own small HTTP client: one shared pool for a thousand hosts costs far more
per request (its pool is searched linearly), measured at 20 s against 2 s for a 1,000-node refresh.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from lifsea_tui.api import Deployment, EventKind, NodeResources, UpdateStatus
from lifsea_tui.client.heads import AuditHeads
from lifsea_tui.client.node import NodeClient, NodeError, NodeTarget

T = TypeVar("T")

BACKOFF_START = 2.0
BACKOFF_MAX = 60.0
HISTORY = 60  # answers kept per node for the sparklines: 5 minutes at the default refresh


def backoff(failures: int) -> float:
    """Seconds before trying a node again after `failures` failures in a row: doubling from
    BACKOFF_START to BACKOFF_MAX, each step stretched by up to half again at random (never shortened,
    never past the maximum), so that a fleet that went away together (a partition, a switch) is not
    retried in lockstep when it comes back."""
    step: float = min(BACKOFF_MAX, BACKOFF_START * 2.0 ** min(max(failures, 1) - 1, 16))
    return min(BACKOFF_MAX, step * random.uniform(1.0, 1.5))


@dataclass
class NodeSnapshot:
    """What the console knows of one node: its last good answers, and why the last try failed if it did.

    Replaced whole on every refresh, never changed in place, so a reader on another thread always sees
    one consistent answer.
    """

    name: str
    url: str
    problem: str | None = None  # None when the last refresh succeeded
    deployments: list[Deployment] = field(default_factory=list)
    update: UpdateStatus | None = None
    audit_head: tuple[int, str | None] | None = None
    audit_warning: str | None = None  # the chain no longer holds a record the console saw (see heads.py)
    ops_sessions: int = 0  # open break-glass sessions
    failed_units: list[str] | None = None  # None: the node cannot say (its bus is down)
    labels: dict[str, str] = field(default_factory=dict)  # the agent's, with the inventory's over them
    latency_ms: float | None = None
    last_seen: float | None = None  # wall-clock time of the last good answer
    failures: int = 0
    resources: NodeResources | None = None  # None until it answers, or from an agent that does not say
    # The last HISTORY answers, oldest first: what the sparklines draw. Arrays of 4-byte floats, each
    # replaced whole: at 1,000 nodes ~1 MB, against ~4 MB as tuples of float objects.
    latency_history: array[float] = field(default_factory=lambda: array("f"))
    load_history: array[float] = field(default_factory=lambda: array("f"))

    @property
    def reachable(self) -> bool:
        return self.problem is None and self.last_seen is not None

    @property
    def booted(self) -> Deployment | None:
        return next((d for d in self.deployments if d.booted), None)

    @property
    def pending(self) -> Deployment | None:
        return next((d for d in self.deployments if d.pending), None)

    @property
    def booted_version(self) -> str | None:
        booted = self.booted
        return (booted.version or booted.checksum[:10]) if booted else None


def _appended(history: array[float], value: float) -> array[float]:
    """A new history: the last HISTORY - 1 values of `history`, then `value` (the old one is left as it was)."""
    new = history[-HISTORY + 1 :]
    new.append(value)
    return new


def version_drift(snapshots: Iterable[NodeSnapshot]) -> dict[str, int]:
    """How many nodes run each booted version ('unknown' for nodes not heard from), most common first."""
    counts: dict[str, int] = {}
    for snapshot in snapshots:
        version = snapshot.booted_version or "unknown"
        counts[version] = counts.get(version, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


class Fleet:
    def __init__(self, targets: list[NodeTarget], *, concurrency: int = 64, heads: AuditHeads | None = None) -> None:
        self.clients = {target.name: NodeClient(target) for target in targets}
        self.heads = heads or AuditHeads(None)
        self.targets = {target.name: target for target in targets}
        self.snapshots = {
            target.name: NodeSnapshot(target.name, target.url, labels=dict(target.labels)) for target in targets
        }
        self._semaphore = asyncio.Semaphore(concurrency)
        # Event streams being opened (see follow): a bound of their own, so that nodes hanging in their
        # handshake hold up other opens, never the refresh.
        self._opening = asyncio.Semaphore(max(1, concurrency // 2))
        self._next_try: dict[str, float] = {}

    def client(self, name: str) -> NodeClient:
        return self.clients[name]

    async def refresh_node(self, name: str) -> NodeSnapshot:
        old = self.snapshots[name]
        async with self._semaphore:
            started = time.perf_counter()
            try:
                summary = await self.clients[name].summary()
            except NodeError as error:
                failures = old.failures + 1
                self._next_try[name] = time.monotonic() + backoff(failures)
                new = dataclasses.replace(old, problem=str(error), failures=failures)
            else:
                self._next_try.pop(name, None)
                latency = (time.perf_counter() - started) * 1000
                warning = await self.heads.check(self.clients[name], summary.audit_head_seq, summary.audit_head_hash)
                resources = summary.resources
                load = resources.load[0] if resources is not None and resources.load else None
                new = dataclasses.replace(
                    old,
                    problem=None,
                    failures=0,
                    deployments=summary.deployments.deployments,
                    update=summary.update,
                    audit_head=(summary.audit_head_seq, summary.audit_head_hash),
                    audit_warning=warning,
                    ops_sessions=summary.ops_sessions,
                    failed_units=summary.failed_units,
                    labels=summary.labels | self.targets[name].labels,
                    latency_ms=latency,
                    last_seen=time.time(),
                    resources=resources,
                    latency_history=_appended(old.latency_history, latency),
                    load_history=_appended(old.load_history, load) if load is not None else old.load_history,
                )
        self.snapshots[name] = new
        return new

    async def refresh(
        self,
        names: Iterable[str] | None = None,
        *,
        force: bool = False,
        on_result: Callable[[NodeSnapshot], Awaitable[None] | None] | None = None,
    ) -> None:
        """Refresh nodes concurrently (all, or `names`), skipping nodes in backoff unless `force`."""
        now = time.monotonic()
        chosen = [
            name
            for name in (names if names is not None else self.snapshots)
            if force or self._next_try.get(name, 0) <= now
        ]

        async def one(name: str) -> None:
            snapshot = await self.refresh_node(name)
            if on_result is not None:
                result = on_result(snapshot)
                if result is not None:
                    await result

        await asyncio.gather(*(one(name) for name in chosen))
        self.heads.save()

    async def follow(self, on_change: Callable[[NodeSnapshot], None]) -> None:
        """Refresh a node as soon as it pushes a change on /v1/events; runs until cancelled.

        A node whose stream is down is retried with backoff; meanwhile the periodic refresh covers it.
        Streams are opened a bounded number at a time: handshakes all at once cost memory at their peak
        that the allocator keeps (~20 KB a stream, measured at 1,000) and the CPU the screen needs.
        """

        async def one(name: str) -> None:
            failures = 0
            while True:
                opening = True
                await self._opening.acquire()
                try:
                    async for event in self.clients[name].events():
                        if opening:  # open (its hello came): the bound is for opening only
                            opening = False
                            self._opening.release()
                        failures = 0
                        if event.kind != EventKind.hello:
                            on_change(await self.refresh_node(name))
                            self.heads.save()
                except NodeError:
                    failures += 1
                finally:
                    if opening:
                        self._opening.release()
                await asyncio.sleep(backoff(failures + 1))

        await asyncio.gather(*(one(name) for name in self.clients))

    async def each(
        self, names: Iterable[str], work: Callable[[NodeClient], Awaitable[T]]
    ) -> AsyncIterator[tuple[str, T]]:
        """`work` on every named node, at most the fleet's concurrency at once; (name, result) as each
        finishes. What is asked of a thousand nodes goes through the same bound as the refresh."""

        async def one(name: str) -> tuple[str, T]:
            async with self._semaphore:
                return name, await work(self.clients[name])

        for done in asyncio.as_completed([one(name) for name in names]):
            yield await done

    async def aclose(self) -> None:
        await asyncio.gather(*(client.aclose() for client in self.clients.values()))
