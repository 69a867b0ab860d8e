"""Rollouts and reboot slots in etcd: the one key layout the controller, the console and the CLI share.

    rollouts/<id>/spec          immutable RolloutSpec
    rollouts/<id>/status        RolloutStatus (written by the leading controller only)
    rollouts/<id>/nodes/<node>  NodeRollout (written by the leading controller once the node moves;
                                absent, the node is pending in its batch)
    rollouts/<id>/log/<seq>     LogEntry, append-only; rollouts/<id>/logseq holds the last seq
    rollouts/guard              bumped by every new rollout, so two starts cannot both pass the overlap check
    slots/<group>/<holder>      a reboot slot: who holds it, since when, for what
    slots/<group>.guard         bumped by every take and release, so a count cannot be raced past its limit
    leader                      the leading controller's id, bound to its lease

Consoles write only new rollouts and intents (log entries of kind "intent"); everything else is the
controller's, and every write of the controller's is a transaction that also checks it still leads.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import json
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from lifsea_tui.api.models import LABEL_KEY, ActionRequest
from lifsea_tui.api.rollouts import (
    FINISHED,
    Intent,
    LogEntry,
    NodeRollout,
    Phase,
    Rollout,
    RolloutSpec,
    RolloutStatus,
    spread,
)
from lifsea_tui.client.etcd import KV, Store
from lifsea_tui.client.node import NodeClient, NodeError

LEADER = "leader"
ROLLOUTS = "rollouts/"
LOG_SEQ_WIDTH = 10
APPEND_RETRIES = 20


class RolloutRefused(Exception):
    """A start or an intent that cannot be taken, and why."""


def spec_key(rollout_id: str) -> str:
    return f"{ROLLOUTS}{rollout_id}/spec"


def status_key(rollout_id: str) -> str:
    return f"{ROLLOUTS}{rollout_id}/status"


def node_key(rollout_id: str, node: str) -> str:
    return f"{ROLLOUTS}{rollout_id}/nodes/{node}"


def log_key(rollout_id: str, seq: int) -> str:
    return f"{ROLLOUTS}{rollout_id}/log/{seq:0{LOG_SEQ_WIDTH}d}"


def logseq_key(rollout_id: str) -> str:
    return f"{ROLLOUTS}{rollout_id}/logseq"


def who() -> str:
    """The person behind a console or a script, as the rollout's log names them."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def parse_max_unavailable(text: str, total: int) -> int:
    """A count (3) or a percentage of `total` (10%), at least one node; ValueError says what is wrong."""
    text = text.strip()
    try:
        value = int(text[:-1]) * total // 100 if text.endswith("%") else int(text)
    except ValueError:
        raise ValueError(f"max unavailable {text!r}: a count (3) or a percentage (10%)") from None
    if text.endswith("%") and int(text[:-1]) > 0:
        value = max(1, value)  # 10% of 5 nodes is one node at a time, not none
    if value < 1:
        raise ValueError(f"max unavailable {text!r} lets no node move: it must be at least 1")
    return value


def parse_group_limit(text: str) -> tuple[str, str]:
    """`zone=1` or `zone=25%`: a label key and a limit for each of its values; ValueError says why."""
    key, sign, limit = text.partition("=")
    if not sign or not LABEL_KEY.fullmatch(key.strip()) or not limit.strip():
        raise ValueError(f"a per-group limit is LABEL=N or LABEL=P% (zone=1, zone=25%); not {text!r}")
    return key.strip(), limit.strip()


def grouped(
    nodes: list[str], labels: dict[str, dict[str, str]], group_by: str, limit: str
) -> tuple[list[str], dict[str, str], dict[str, int]]:
    """The nodes spread across the values of `group_by` (a node without the label is in group ""), each
    node's group, and each group's limit (a percentage of that group's size)."""
    groups = {name: labels.get(name, {}).get(group_by, "") for name in nodes}
    sizes: dict[str, int] = {}
    for group in groups.values():
        sizes[group] = sizes.get(group, 0) + 1
    group_max = {group: parse_max_unavailable(limit, size) for group, size in sizes.items()}
    return spread(nodes, groups), groups, group_max


def new_id(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return f"r-{stamp}-{secrets.token_hex(2)}"


Parsed = dict[str, tuple[int, Any]]  # a reader's cache: key -> (mod revision, what it holds, parsed)


@dataclass(frozen=True)
class Unreadable:
    """A key of a rollout that does not parse: written by hand, or by a newer version with fields this one
    does not know. Its rollout is set aside and named (never guessed at, never a reason to stop)."""

    key: str
    why: str


def writer_key(user: str, rollout_id: str, seq: int) -> str:
    """Where the etcd user who wrote a log entry leaves its SHA-256. With etcd's auth on, each user may
    write only under writers/USER/, so the key proves who wrote the entry and the hash that it is unchanged."""
    return f"writers/{user}/{rollout_id}/{seq:08d}"


def entry_ops(store: Store, rollout_id: str, entry: LogEntry) -> list[Any]:
    """A log entry as this store's user writes it: the entry (naming the user) and its writer's mark."""
    user = store.target.user
    raw = json.dumps(entry.model_copy(update={"writer": user}).model_dump(mode="json")).encode()
    ops = [store.put_bytes_op(log_key(rollout_id, entry.seq), raw)]
    if user is not None:
        ops.append(
            store.put_bytes_op(writer_key(user, rollout_id, entry.seq), hashlib.sha256(raw).hexdigest().encode())
        )
    return ops


async def proven(store: Store, rollout_id: str, entry: LogEntry) -> bool:
    """Whether the writer the entry names left its mark for these very bytes (meaningful with auth on)."""
    if entry.writer is None or entry.digest is None:
        return False
    mark = await store.get(writer_key(entry.writer, rollout_id, entry.seq))
    return mark is not None and mark.value.decode() == entry.digest


def _parse(rest: str, kv: KV) -> Any:
    model: type[BaseModel] | None = None
    if rest == "spec":
        model = RolloutSpec
    elif rest == "status":
        model = RolloutStatus
    elif rest.startswith("nodes/"):
        model = NodeRollout
    elif rest.startswith("log/"):
        model = LogEntry
    try:
        parsed = model.model_validate_json(kv.value) if model is not None else kv.json()
        if isinstance(parsed, LogEntry):
            parsed._digest = hashlib.sha256(kv.value).hexdigest()
        return parsed
    except ValueError as error:  # ValidationError, or JSON that is not JSON
        if isinstance(error, ValidationError):
            problem = error.errors()[0]
            why = f"{'.'.join(str(p) for p in problem['loc']) or 'value'}: {problem['msg']}"
        else:
            why = str(error)
        return Unreadable(rest, why[:300])


def _assemble(items: dict[str, Any]) -> Rollout | Unreadable | None:
    bad = next((value for value in items.values() if isinstance(value, Unreadable)), None)
    if bad is not None:
        return bad
    spec, status = items.get("spec"), items.get("status")
    if not isinstance(spec, RolloutSpec) or not isinstance(status, RolloutStatus):
        return None
    # A node has a record once something happened to it; until then it is pending in its batch (derived
    # from the spec, so a rollout of any size is written in one transaction).
    nodes = [
        items.get(f"nodes/{name}") or NodeRollout(name=name, batch=index)
        for index, batch in enumerate(spec.batches())
        for name in batch
    ]
    log = [value for key, value in sorted(items.items()) if key.startswith("log/")]
    return Rollout(spec=spec, status=status, nodes=nodes, log=log)


def _grouped(kvs: list[KV], cache: Parsed | None) -> dict[str, dict[str, Any]]:
    """Each rollout's keys, parsed; with a cache, a key whose revision did not change is not parsed again
    (a 1,000-node rollout read every second parses the few nodes that moved). Parsed models are never
    changed in place by their readers (changes are copies), so sharing them is safe."""
    grouped: dict[str, dict[str, Any]] = {}
    for kv in kvs:
        rollout_id, _, rest = kv.key[len(ROLLOUTS) :].partition("/")
        if not rest:
            continue
        known = cache.get(kv.key) if cache is not None else None
        if known is not None and known[0] == kv.mod_revision:
            value = known[1]
        else:
            value = _parse(rest, kv)
            if cache is not None:
                cache[kv.key] = (kv.mod_revision, value)
        grouped.setdefault(rollout_id, {})[rest] = value
    return grouped


class RolloutUnreadable(Exception):
    pass


async def read(store: Store, rollout_id: str, cache: Parsed | None = None) -> Rollout | None:
    items = _grouped(await store.range(f"{ROLLOUTS}{rollout_id}/"), cache)
    found = _assemble(items.get(rollout_id, {}))
    if isinstance(found, Unreadable):
        raise RolloutUnreadable(f"rollout {rollout_id} cannot be read: {found.key}: {found.why}")
    return found


async def read_all(
    store: Store, cache: Parsed | None = None, unreadable: dict[str, str] | None = None
) -> list[Rollout]:
    """Every rollout, oldest first; those that cannot be read are left out, and named in `unreadable`."""
    kvs = await store.range(ROLLOUTS)
    if cache is not None:  # keys gone from etcd leave the cache too
        live = {kv.key for kv in kvs}
        for key in [key for key in cache if key not in live]:
            del cache[key]
    found = []
    for rollout_id, items in _grouped(kvs, cache).items():
        rollout = _assemble(items)
        if isinstance(rollout, Unreadable):
            if unreadable is not None:
                unreadable[rollout_id] = f"{rollout.key}: {rollout.why}"
        elif rollout is not None:
            found.append(rollout)
    return sorted(found, key=lambda rollout: rollout.spec.created_at)


def active(rollouts: list[Rollout]) -> list[Rollout]:
    return [rollout for rollout in rollouts if rollout.status.phase not in FINISHED]


def spec_json(spec: RolloutSpec) -> dict[str, Any]:
    """The spec as written to etcd, without the options it does not use (None, [] or {}): a rollout that
    uses no newer option stays readable by an older controller, which refuses one it cannot honour."""
    return {key: value for key, value in spec.model_dump(mode="json").items() if value not in (None, [], {})}


async def start(store: Store, spec: RolloutSpec) -> Rollout:
    """Write a new rollout (planned), refusing one whose nodes overlap a rollout that has not finished."""
    for _ in range(APPEND_RETRIES):
        guard = await store.get(f"{ROLLOUTS}guard")
        busy = {
            node: rollout.spec.id
            for rollout in active(await read_all(store))
            for node in rollout.spec.nodes
            if node in spec.nodes
        }
        if busy:
            names = ", ".join(f"{node} ({rid})" for node, rid in sorted(busy.items()))
            raise RolloutRefused(f"these nodes are in a rollout that has not finished: {names}")
        now = time.time()
        status = RolloutStatus(phase=Phase.planned, message="waiting for a controller to pick it up", updated_at=now)
        entry = LogEntry(
            seq=1,
            time=now,
            who=spec.created_by,
            kind="intent",
            action="start",
            reason=spec.reason,
            writer=store.target.user,
        )
        batches = spec.batches()
        nodes = [NodeRollout(name=name, batch=index) for index, batch in enumerate(batches) for name in batch]
        compare = [
            store.ops.create(store.key(spec_key(spec.id))) == 0,
            store.ops.mod(store.key(f"{ROLLOUTS}guard")) == (guard.mod_revision if guard else 0),
        ]
        writes = [
            store.put_op(spec_key(spec.id), spec_json(spec)),
            store.put_op(status_key(spec.id), status.model_dump(mode="json")),
            *entry_ops(store, spec.id, entry),
            store.put_op(logseq_key(spec.id), 1),
            store.put_op(f"{ROLLOUTS}guard", spec.id),
        ]
        if await store.txn(compare, writes):
            return Rollout(spec=spec, status=status, nodes=nodes, log=[entry])
        if await store.get(spec_key(spec.id)) is not None:
            raise RolloutRefused(f"a rollout named {spec.id} exists already")
    raise RolloutRefused("the store was too busy to take the rollout; try again")


async def append(
    store: Store,
    rollout_id: str,
    entry: LogEntry,
    *,
    guard: list[Any] | None = None,
    also: list[Any] | None = None,
) -> int | None:
    """Append a log entry (its seq is assigned here) with `also` in the same transaction.

    Returns the seq, or None when a `guard` compare failed (for the controller: it no longer leads).
    """
    for _ in range(APPEND_RETRIES):
        last = await store.get(logseq_key(rollout_id))
        if last is None:
            raise RolloutRefused(f"no rollout {rollout_id}")
        seq = int(last.json()) + 1
        compare = [store.ops.mod(store.key(logseq_key(rollout_id))) == last.mod_revision, *(guard or [])]
        writes = [
            store.put_op(logseq_key(rollout_id), seq),
            *entry_ops(store, rollout_id, entry.model_copy(update={"seq": seq})),
            *(also or []),
        ]
        if await store.txn(compare, writes):
            return seq
        if guard:
            again = await store.get(logseq_key(rollout_id))
            if again is not None and again.mod_revision == last.mod_revision:
                return None  # the log did not move: the guard is what failed
    raise RolloutRefused("the store was too busy to take the entry; try again")


async def ask(store: Store, rollout_id: str, intent: Intent, who: str) -> int:
    """A person's intent (pause, resume, abort, rollback), for the controller to act on."""
    rollout = await read(store, rollout_id)
    if rollout is None:
        raise RolloutRefused(f"no rollout {rollout_id}")
    phase = rollout.status.phase
    allowed = {
        "pause": phase not in FINISHED and phase is not Phase.paused,
        "resume": phase is Phase.paused,
        "abort": phase not in FINISHED,
        "rollback": phase not in (Phase.rolling_back, Phase.rolled_back, Phase.aborted),
    }
    if not allowed[intent.action]:
        raise RolloutRefused(f"cannot {intent.action} rollout {rollout_id}: it is {phase.value}")
    entry = LogEntry(seq=0, time=time.time(), who=who, kind="intent", action=intent.action, reason=intent.reason)
    seq = await append(store, rollout_id, entry)
    assert seq is not None
    return seq


# -- reboot slots -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    group: str
    holder: str
    since: float
    what: str


def _slot_key(group: str, holder: str) -> str:
    return f"slots/{group}/{holder}"


def _guard_key(group: str) -> str:
    return f"slots/{group}.guard"


async def slots(store: Store, group: str | None = None) -> list[Slot]:
    found = []
    for kv in await store.range(f"slots/{group}/" if group else "slots/"):
        if kv.key.endswith(".guard"):
            continue
        value = kv.json()
        found.append(Slot(value["group"], value["holder"], value["since"], value.get("what", "")))
    return sorted(found, key=lambda slot: (slot.group, slot.since))


TXN_HOLDERS = 60  # etcd takes at most 128 operations in a transaction (--max-txn-ops); two a holder


async def take_slots(
    store: Store,
    group: str,
    holders: list[str],
    limit: int,
    what: str,
    *,
    guard: list[Any] | None = None,
    lease: Any = None,
    also: dict[str, list[Any]] | None = None,
) -> list[str]:
    """Take slots of the group for as many of `holders`, in order, as its `limit` leaves room for; the ones
    that hold a slot now (already held counts). One transaction for them all (with what `also` names for
    each), so a batch starts in one round trip and nothing can slip past the limit in between.
    With a lease, a slot goes when the lease does (a holder that may die without letting go)."""
    also = also or {}
    for _ in range(APPEND_RETRIES):
        stamp = await store.get(_guard_key(group))
        held = {slot.holder for slot in await slots(store, group)}
        mine = [holder for holder in holders if holder in held]
        room = max(0, limit - len(held))
        new = [holder for holder in holders if holder not in held][: min(room, TXN_HOLDERS)]
        if not new:
            if mine and any(also.get(holder) for holder in mine):
                if not await store.txn(list(guard or []), [op for h in mine for op in also.get(h, [])]):
                    return []
            return mine
        compare = [store.ops.mod(store.key(_guard_key(group))) == (stamp.mod_revision if stamp else 0), *(guard or [])]
        now = time.time()
        writes = [store.put_op(_guard_key(group), new[-1])]
        for holder in new:
            value = {"group": group, "holder": holder, "since": now, "what": what}
            writes += [store.put_op(_slot_key(group, holder), value, lease=lease), *also.get(holder, [])]
        for holder in mine:
            writes += also.get(holder, [])
        if await store.txn(compare, writes):
            return [holder for holder in holders if holder in held or holder in new]
        if guard:
            again = await store.get(_guard_key(group))
            if (again.mod_revision if again else 0) == (stamp.mod_revision if stamp else 0):
                return []  # the guard failed, not the race
    return []


async def take_slot(
    store: Store,
    group: str,
    holder: str,
    limit: int,
    what: str,
    *,
    guard: list[Any] | None = None,
    lease: Any = None,
    also: list[Any] | None = None,
) -> bool:
    """Hold one of the group's `limit` slots (True), or find them all held (False). Taking one held is True."""
    extra = {holder: also} if also else None
    return holder in await take_slots(store, group, [holder], limit, what, guard=guard, lease=lease, also=extra)


def free_slot_ops(store: Store, group: str, holder: str) -> list[Any]:
    """The writes that let go of a slot, for a transaction that does more. The guard is not bumped: a
    taker racing a release can only have counted one slot too many, which costs it a retry, not the limit."""
    return [store.delete_op(_slot_key(group, holder))]


async def free_slot(store: Store, group: str, holder: str, *, guard: list[Any] | None = None) -> bool:
    """Let go of a slot (True also when it was not held); False when a guard failed."""
    return await store.txn(list(guard or []), free_slot_ops(store, group, holder))


REBOOT_BACK = 600.0  # seconds a node may take to answer again after its reboot


async def reboot_in_slot(client: NodeClient, store: Store | None, reason: str, slots: int) -> None:
    """Reboot a node from the console in a slot of the default group, `slots` wide (the slots rollouts and
    FleetLock clients take): take one (waiting while all are held), reboot, wait until the node has booted
    again, free it. The slot is bound to a lease, so a console that dies meanwhile does not hold it for ever.
    With no store there are no slots: the reboot and the wait alone."""
    name = client.target.name
    lease = None
    if store is not None:
        lease = await store.lease(int(REBOOT_BACK))
        what = f"console reboot by {who()}"
        while not await take_slot(store, "default", name, slots, what, lease=lease):
            await asyncio.sleep(2)
    try:
        sent = time.time()
        await client.action("reboot", ActionRequest(reason=reason))
        deadline = time.monotonic() + REBOOT_BACK
        while True:
            await asyncio.sleep(2)
            try:
                info = await client.node()
            except NodeError:
                info = None  # going down, or not up yet
            if info is not None and info.booted_after(sent, time.time()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not answer within {REBOOT_BACK:.0f} s of its reboot")
    finally:
        if store is not None:
            await free_slot(store, "default", name)
            await store.revoke(lease)
