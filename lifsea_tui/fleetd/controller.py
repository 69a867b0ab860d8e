"""The fleet controller: leads through an etcd lease, and drives every rollout from what etcd holds.

Level-triggered: each tick reads every rollout from etcd and decides afresh, so a controller that
starts (or restarts, or takes over) goes on from where the rollout is. Nothing about a rollout lives
in this process's memory except tasks talking to nodes. Every write it makes is a transaction that
also checks the leader key still holds its id (fencing): a controller that lost its lease, or was
paused past it, cannot write, and does not ask a node for anything it has not first written.

What the phases decide from a rollout alone is in policy.py and one node's next step in steps.py; this
module keeps the rest together (leadership, fenced writes, node tasks and the phase transitions that
write), which is why it is a little over 500 lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

from lifsea_tui.api import ActionRequest
from lifsea_tui.api.rollouts import (
    FINISHED,
    IN_FLIGHT,
    SETTLED,
    LogEntry,
    NodeRollout,
    NodeState,
    OnFailure,
    Phase,
    Rollout,
    RolloutSpec,
    window_open,
)
from lifsea_tui.client import rollouts as keys
from lifsea_tui.client.etcd import Store, StoreUnavailable
from lifsea_tui.client.node import NodeClient, NodeError, NodeTarget
from lifsea_tui.client.trail import Trail
from lifsea_tui.fleetd import collector, policy, steps

log = logging.getLogger("lifsea.fleetd")

LEASE_TTL = 5
TICK = 1.0
NODE_POLL = 0.25  # seconds between looks at a node that is staging or rebooting


class Controller:
    def __init__(
        self,
        store: Store,
        nodes: Mapping[str, NodeTarget],
        *,
        ident: str | None = None,
        lease_ttl: int = LEASE_TTL,
        tick: float = TICK,
        proven_writers: bool = False,
        trail: Trail | None = None,
        trail_nodes: Mapping[str, NodeTarget] | None = None,
        trail_keep: float | None = None,
    ) -> None:
        self.store = store
        # Act only on intents whose writer etcd's authentication proves (see rollouts.writer_key); for a
        # store with auth on, where each user may write only its own writers/USER/ keys.
        self.proven_writers = proven_writers
        self.targets = dict(nodes)
        # Unique to this process even when a successor is given the same name: a restarted controller must
        # not mistake its dead predecessor's leader key (still bound to a live lease) for its own.
        self.ident = f"{ident or socket.gethostname()}-{secrets.token_hex(3)}"
        self.lease_ttl = lease_ttl
        self.tick = tick
        self.lease: Any = None
        self.leading = False
        self.problem: str | None = None  # why it cannot act now (the store), for its log and its status
        self.clients: dict[str, NodeClient] = {}
        self.tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.unreadable: dict[str, str] = {}  # rollout -> why it cannot be read (said once in the log)
        self.parsed: keys.Parsed = {}  # etcd keys already parsed, by revision (see rollouts.read_all)
        self.collector = (
            collector.Collector(store, trail, trail_nodes or self.targets, self._commit_fenced, keep=trail_keep)
            if trail is not None
            else None
        )  # audit records copied off the nodes; None: not collected
        self.wake = asyncio.Event()  # a node settled, or the controller is asked to stop: look again now

    # -- leadership --------------------------------------------------------------------------------------

    @property
    def fence(self) -> list[Any]:
        return [self.store.ops.value(self.store.key(keys.LEADER)) == self.ident.encode()]

    async def campaign(self) -> bool:
        """Lead, or keep leading: one lease, refreshed every tick; the leader key is bound to it."""
        if self.lease is not None and await self.store.refresh(self.lease) <= 0:
            self.lease = None
        if self.lease is None:
            self.lease = await self.store.lease(self.lease_ttl)
        leader = self.store.key(keys.LEADER)
        won = await self.store.txn(
            [self.store.ops.create(leader) == 0],
            [self.store.ops.put(leader, self.ident.encode(), lease=self.lease)],
        )
        if not won:
            current = await self.store.get(keys.LEADER)
            won = current is not None and current.value == self.ident.encode()
        if won != self.leading:
            log.info("%s %s", self.ident, "leads" if won else "does not lead")
        self.leading = won
        return won

    async def resign(self) -> None:
        if self.lease is not None:
            with contextlib.suppress(StoreUnavailable):
                await self.store.revoke(self.lease)
        self.lease = None
        self.leading = False

    # -- the loop ----------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        collecting = asyncio.create_task(self.collect(stop)) if self.collector is not None else None
        while not stop.is_set():
            try:
                if await self.campaign():
                    await self.reconcile()
                if self.problem is not None:
                    log.info("store is back")
                self.problem = None
            except StoreUnavailable as error:
                if self.problem != str(error):
                    log.warning("not dispatching: %s", error)
                self.problem = str(error)
                self.leading = False
                self.lease = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.tick)
            self.wake.clear()
        if collecting is not None and self.collector is not None:
            collecting.cancel()
            await asyncio.gather(collecting, return_exceptions=True)
            await self.collector.aclose()
        await self.shutdown()

    async def collect(self, stop: asyncio.Event) -> None:
        """Copy the nodes' audit logs off them while this controller leads (collector.py)."""
        assert self.collector is not None
        loaded = False  # what etcd holds is read again whenever this controller (again) leads
        while not stop.is_set():
            if not self.leading:
                loaded = False
            else:
                try:
                    if not loaded:
                        await self.collector.load()
                        loaded = True
                    await self.collector.tick()
                except StoreUnavailable as error:
                    log.warning("audit collection paused: %s", error)
                    loaded = False
                except Exception:  # a bug must not stop collection for every node, silently
                    log.exception("audit collection pass failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), collector.EVERY)

    async def _commit_fenced(self, ops: list[Any]) -> bool:
        return await self.store.txn(self.fence, ops)

    async def shutdown(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self.tasks.clear()
        await self.resign()
        for client in self.clients.values():
            await client.aclose()
        self.clients.clear()

    def client(self, name: str) -> NodeClient | None:
        if name not in self.clients:
            target = self.targets.get(name)
            if target is None:
                return None
            self.clients[name] = NodeClient(target)
        return self.clients[name]

    async def reconcile(self) -> None:
        unreadable: dict[str, str] = {}
        rollouts = await keys.read_all(self.store, self.parsed, unreadable)
        for rollout_id, why in unreadable.items():
            if self.unreadable.get(rollout_id) != why:
                log.warning("rollout %s cannot be read, so it is left alone: %s", rollout_id, why)
        self.unreadable = unreadable
        for rollout in rollouts:
            busy = any(node.state in IN_FLIGHT for node in rollout.nodes)
            asked = any(e.kind == "intent" and e.seq > rollout.status.applied for e in rollout.log)
            if rollout.status.phase in FINISHED and not busy and not asked:
                continue
            await self.drive(rollout)

    # -- writes, all fenced ------------------------------------------------------------------------------

    async def write(
        self,
        rollout: Rollout,
        *,
        nodes: Sequence[NodeRollout] = (),
        status: dict[str, Any] | None = None,
        decision: tuple[str, str] | None = None,
        also: Sequence[Any] = (),
    ) -> bool:
        spec_id = rollout.spec.id
        writes = [self.store.put_op(keys.node_key(spec_id, node.name), node.model_dump(mode="json")) for node in nodes]
        writes += also
        # etcd takes at most 128 operations a transaction: many nodes at once (an abort, a rollback of a
        # thousand) go in fenced chunks first, the status and the decision with the last. A controller that
        # dies in between redoes it all: each of these changes is the same when made twice.
        while len(writes) > 2 * keys.TXN_HOLDERS:
            chunk, writes = writes[: 2 * keys.TXN_HOLDERS], writes[2 * keys.TXN_HOLDERS :]
            if not await self.store.txn(self.fence, chunk):
                self.leading = False
                return False
        if status is not None:
            new = rollout.status.model_copy(update={**status, "updated_at": time.time()})
            writes.append(self.store.put_op(keys.status_key(spec_id), new.model_dump(mode="json")))
            rollout.status = new
        if decision is not None:
            action, why = decision
            entry = LogEntry(seq=0, time=time.time(), who=self.ident, kind="decision", action=action, reason=why)
            ok = await keys.append(self.store, spec_id, entry, guard=self.fence, also=writes) is not None
        else:
            ok = await self.store.txn(self.fence, writes)
        if not ok:
            self.leading = False
            log.warning("lost the lead while writing rollout %s; not acting", spec_id)
        return ok

    # -- one rollout -------------------------------------------------------------------------------------

    async def drive(self, rollout: Rollout) -> None:
        if not await self.apply_intents(rollout):
            return
        phase = rollout.status.phase
        if phase is Phase.planned:
            await self.preflight(rollout)
            return
        for node in rollout.nodes:
            if node.state in IN_FLIGHT:
                self.spawn(rollout, node)
        if phase is Phase.waiting:
            if window_open(rollout.spec.windows, time.time()):
                resume = Phase.canary if rollout.status.batch == 0 and rollout.spec.canary else Phase.progressing
                await self.write(
                    rollout,
                    status={"phase": resume, "message": "its maintenance window is open"},
                    decision=("window-open", f"window open: {resume.value}"),
                )
            return
        if phase in (Phase.canary, Phase.progressing):
            await self.progress(rollout)
        elif phase is Phase.soaking:
            await self.soak(rollout)
        elif phase is Phase.rolling_back:
            await self.roll_back(rollout)
        # paused and aborted: in-flight nodes finish (spawned above); nothing new starts

    async def apply_intents(self, rollout: Rollout) -> bool:
        for entry in rollout.log:
            if entry.seq <= rollout.status.applied or entry.kind != "intent":
                continue
            if not await self.apply(rollout, entry):
                return False
        return True

    async def apply(self, rollout: Rollout, entry: LogEntry) -> bool:
        who = f"{entry.who}: {entry.reason}"
        change: dict[str, Any] = {"applied": entry.seq}
        if self.proven_writers:
            if not await keys.proven(self.store, rollout.spec.id, entry):
                why = (
                    f"{entry.action} by {entry.who} not taken: etcd does not prove who wrote it "
                    f"(it names {entry.writer or 'no etcd user'}; written without that user's credentials, "
                    "or changed since)"
                )
                if entry.action != "start":
                    return await self.write(rollout, status=change, decision=("ignored", why))
                return await self.refuse(rollout, why, change)
            who = f"{entry.who} (etcd user {entry.writer}): {entry.reason}"
        if entry.action == "start":
            return await self.write(rollout, status=change)
        effect = policy.intent(rollout, entry.action, who)
        if effect is None:
            return await self.write(rollout, status=change, decision=("ignored", f"{entry.action}: nothing to do"))
        status, nodes = effect
        decision = (entry.action, f"{entry.action} by {who}")
        ok = await self.write(rollout, nodes=nodes, status=change | status, decision=decision)
        if ok:
            rollout.nodes = [next((n for n in nodes if n.name == node.name), node) for node in rollout.nodes]
        return ok

    async def refuse(self, rollout: Rollout, why: str, change: dict[str, Any] | None = None) -> bool:
        """The rollout is refused before any node moved: aborted, its nodes skipped, and why in its log."""
        return await self.write(
            rollout,
            status=(change or {}) | {"phase": Phase.aborted, "message": why},
            nodes=policy.skip_pending(rollout, "the rollout was refused"),
            decision=("refused", why),
        )

    async def preflight(self, rollout: Rollout) -> None:
        """Find the target's checksum from a node's update server, or refuse the version."""
        spec, offered = rollout.spec, set()
        unknown = [name for name in spec.nodes if name not in self.targets]
        if unknown:
            await self.refuse(rollout, f"unknown nodes: {', '.join(unknown)} (not in the controller's inventory)")
            return
        books = steps.gate_runbooks()
        unknown = [name for name in spec.runbooks if name not in books]
        if unknown:
            books_known = ", ".join(sorted(books))
            await self.refuse(
                rollout, f"unknown gate runbooks: {', '.join(unknown)} (this controller has: {books_known})"
            )
            return
        problems = []
        for name in spec.nodes:
            client = self.client(name)
            assert client is not None
            try:
                summary = await client.summary()
                found = {d.version: d.checksum for d in summary.deployments.deployments if d.version}
                if spec.target_version not in found:
                    reason = f"rollout {spec.id}: preflight, looking for {spec.target_version} ({spec.reason})"
                    result = await client.action("check", ActionRequest(reason=reason[:500]))
                    found |= {t.version: t.checksum for t in result.status.targets if t.version}
            except NodeError as error:
                problems.append(f"{name}: {error}")
                continue
            offered |= set(found)
            if spec.target_version in found:
                first = Phase.canary if spec.canary else Phase.progressing
                checksum = found[spec.target_version]
                message = f"target {spec.target_version} is {checksum[:12]}"
                if not window_open(spec.windows, time.time()):
                    first = Phase.waiting
                    message += f"; outside its maintenance windows{policy.closed_until(spec.windows, time.time())}"
                await self.write(
                    rollout,
                    status={
                        "phase": first,
                        "target_checksum": checksum,
                        "message": message,
                    },
                    decision=("planned", f"{len(spec.batches())} batches; target {checksum[:12]}"),
                )
                self.wake.set()
                return
            break  # one update server answered: the version is not on it
        if offered:
            await self.refuse(
                rollout, f"unknown version {spec.target_version}: the update server offers {', '.join(sorted(offered))}"
            )
        elif rollout.status.message != (why := f"no node answered: {'; '.join(problems)[:400]}"):
            await self.write(rollout, status={"message": why})

    def spawn(self, rollout: Rollout, node: NodeRollout) -> None:
        key = (rollout.spec.id, node.name)
        if key in self.tasks and not self.tasks[key].done():
            return
        self.tasks[key] = asyncio.create_task(self.drive_node(rollout, node), name=f"{key}")

    async def drive_node(self, rollout: Rollout, node: NodeRollout) -> None:
        """One node, step after step, until it settles: each step written (fenced) before its action is
        asked of the node, and waits (staging, the reboot) polled every NODE_POLL seconds."""
        spec = rollout.spec
        client = self.client(node.name)
        try:
            while True:
                if client is None:
                    result: steps.Step | None = steps.Step(
                        node.model_copy(update={"state": NodeState.failed, "reason": "not in the inventory"}),
                        decision=f"{node.name} failed: not in the controller's inventory",
                    )
                else:
                    result = await steps.step(spec, rollout.status.target_checksum or "", node, client, time.time())
                if result is None:
                    await asyncio.sleep(NODE_POLL)
                    continue
                if result.hook is not None:
                    result = await self._hook(spec, node, result)
                settled = result.node.state in SETTLED
                also = keys.free_slot_ops(self.store, spec.group, node.name) if settled else []
                # The log keeps decisions worth a person's reading: a node that failed, not each node done.
                failed = result.node.state is NodeState.failed
                decision = ("node", result.decision) if result.decision and failed else None
                if not await self.write(rollout, nodes=[result.node], decision=decision, also=also):
                    return
                node = result.node
                if result.action is not None and client is not None:
                    name, request = result.action
                    try:
                        await client.action(name, request)
                    except NodeError as error:
                        undo: dict[str, Any] = {"reason": f"{name} refused: {error}"}
                        if name == "reboot":
                            undo["reboot_at"] = None
                        node = node.model_copy(update=undo)
                        if not await self.write(rollout, nodes=[node]):
                            return
                        await asyncio.sleep(NODE_POLL)
                if settled:
                    self.wake.set()  # the batch may be complete: look again now, not at the next tick
                    client = self.clients.pop(node.name, None)
                    if client is not None:  # a thousand settled nodes need no open connections
                        await client.aclose()
                    return
        except StoreUnavailable as error:
            log.warning("%s/%s: %s", spec.id, node.name, error)
        except Exception:
            log.exception("%s/%s: step failed", spec.id, node.name)

    async def _hook(self, spec: RolloutSpec, node: NodeRollout, result: steps.Step) -> steps.Step:
        assert result.hook is not None
        why = await steps.run_hook(result.hook, node.name, spec.hook_timeout)
        if why is None:
            return result
        which = "pre" if result.hook == spec.pre_hook and node.state is NodeState.staging else "post"
        failed = node.model_copy(
            update={"state": NodeState.failed, "reason": f"{which} hook: {why}", "finished_at": time.time()}
        )
        return steps.Step(failed, decision=f"{node.name} failed: {which} hook: {why}")

    # -- phases ------------------------------------------------------------------------------------------

    async def _on_failure(self, rollout: Rollout, why: str) -> None:
        if rollout.spec.on_failure is OnFailure.rollback:
            nodes = policy.turn_back(rollout, why)
            await self.write(
                rollout, nodes=nodes, status={"phase": Phase.rolling_back, "message": why}, decision=("rollback", why)
            )
        else:
            await self.write(
                rollout,
                status={"phase": Phase.paused, "paused_from": rollout.status.phase, "message": why},
                decision=("pause", why),
            )

    async def progress(self, rollout: Rollout) -> None:
        spec, status = rollout.spec, rollout.status
        why = policy.budget_exceeded(rollout)
        if why is not None:
            if not any(n.state in IN_FLIGHT for n in rollout.nodes):
                await self._on_failure(rollout, why)
            return
        batch = [n for n in rollout.nodes if n.batch == status.batch]
        if all(n.state in SETTLED for n in batch):
            await self.next_batch(rollout)
            return
        pending = [n for n in batch if n.state is NodeState.pending]
        if not pending:
            return
        if not window_open(spec.windows, time.time()):
            if not any(n.state in IN_FLIGHT for n in rollout.nodes):
                why = f"outside its maintenance windows{policy.closed_until(spec.windows, time.time())}"
                await self.write(
                    rollout,
                    status={"phase": Phase.waiting, "message": why},
                    decision=("window-closed", f"{why}: nothing new starts"),
                )
            return
        await self.start_nodes(rollout, pending, "forward")

    async def start_nodes(self, rollout: Rollout, pending: list[NodeRollout], direction: str) -> None:
        """Start what the reboot slots allow: the nodes' slots and their new states in one fenced transaction.
        A grouped rollout (say, by zone) starts no more of a group than its limit, whatever the slots say."""
        spec, now = rollout.spec, time.time()
        pending, held_back = policy.within_groups(rollout, pending)
        if held_back:
            await self.write(rollout, nodes=held_back[: keys.TXN_HOLDERS])
        if not pending:
            return
        moving = {node.name: steps.started(node, spec, now, direction) for node in pending}
        also = {
            name: [self.store.put_op(keys.node_key(spec.id, name), node.model_dump(mode="json"))]
            for name, node in moving.items()
        }
        taken = await keys.take_slots(
            self.store,
            spec.group,
            list(moving),
            spec.max_unavailable,
            f"rollout {spec.id}",
            guard=self.fence,
            also=also,
        )
        for name in taken:
            self.spawn(rollout, moving[name])
        waiting = [node for node in pending if node.name not in taken]
        if waiting:
            held = await keys.slots(self.store, spec.group)
            why = f"waiting for a reboot slot ({len(held)} of {spec.max_unavailable} held)"
            changed = [node.model_copy(update={"reason": why}) for node in waiting if node.reason != why]
            if changed:
                await self.write(rollout, nodes=changed[: keys.TXN_HOLDERS])

    async def next_batch(self, rollout: Rollout) -> None:
        spec, status = rollout.spec, rollout.status
        last = len(spec.batches()) - 1
        if spec.soak and rollout.status.phase is not Phase.soaking:
            until = time.time() + spec.soak
            await self.write(
                rollout,
                status={
                    "phase": Phase.soaking,
                    "soak_until": until,
                    "message": f"batch {status.batch + 1} soaking for {spec.soak:.0f} s",
                },
                decision=("soak", f"batch {status.batch + 1} done; soaking {spec.soak:.0f} s"),
            )
            return
        if status.batch >= last:
            moved = sum(1 for n in rollout.nodes if n.state is NodeState.done)
            await self.write(
                rollout,
                status={
                    "phase": Phase.completed,
                    "soak_until": None,
                    "message": f"{moved} of {len(rollout.nodes)} nodes on {spec.target_version}",
                },
                decision=("completed", f"{moved} nodes on {spec.target_version}"),
            )
            return
        moved_on = await self.write(
            rollout,
            status={
                "phase": Phase.progressing,
                "batch": status.batch + 1,
                "soak_until": None,
                "message": f"batch {status.batch + 2} of {last + 1}",
            },
            decision=("batch", f"batch {status.batch + 2} of {last + 1} starts"),
        )
        if moved_on:  # start the next batch now (write() has its new status), not after another read of etcd
            await self.progress(rollout)

    async def soak(self, rollout: Rollout) -> None:
        status = rollout.status
        target = status.target_checksum or ""
        for node in rollout.nodes:
            if node.batch != status.batch or node.state is not NodeState.done:
                continue
            client = self.client(node.name)
            if client is None:
                continue
            try:
                why = await steps.gates(rollout.spec, node, client, target)
            except NodeError as error:
                why = f"unreachable while soaking: {error}"
            except steps.NotYet:
                continue  # a gate could not look this time; the soak asks again on the next tick
            if why is not None:
                failed = node.model_copy(update={"state": NodeState.failed, "reason": f"while soaking: {why}"})
                await self.write(rollout, nodes=[failed], decision=("node", f"{node.name} failed while soaking: {why}"))
                rollout.nodes = [failed if n.name == node.name else n for n in rollout.nodes]
        why = policy.budget_exceeded(rollout)
        if why is not None:
            await self._on_failure(rollout, why)
        elif status.soak_until is not None and time.time() >= status.soak_until:
            await self.next_batch(rollout)

    async def roll_back(self, rollout: Rollout) -> None:
        turned = policy.turn_back(rollout)
        if turned:
            await self.write(rollout, nodes=turned)
            return
        back = [n for n in rollout.nodes if n.direction == "back"]
        pending = [n for n in back if n.state is NodeState.pending]
        if pending:
            await self.start_nodes(rollout, pending, "back")
            return
        if all(n.state in SETTLED for n in rollout.nodes):
            reverted = sum(1 for n in back if n.state is NodeState.reverted)
            failed = [n.name for n in back if n.state is NodeState.failed]
            why = f"{reverted} node{'' if reverted == 1 else 's'} back where they were" + (
                f"; could not go back: {', '.join(failed)}" if failed else ""
            )
            await self.write(
                rollout, status={"phase": Phase.rolled_back, "message": why}, decision=("rolled-back", why)
            )
