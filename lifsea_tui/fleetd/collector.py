"""The audit trail collected off the nodes: every node's audit records copied, checked and kept by the
fleet controller, so that what a person did with root on a node is known even if they rewrite the
node's log afterwards.

Each pass asks every node for its records from the last one collected on (one request a node, with the
node's head in the answer). That record must still be there and the same; the ones after it must chain
on and each hash must match its content; they are appended to the trail (client/trail.py) before the
head moves on. A record gone or changed (cut off, emptied, edited with every hash after it recomputed)
flags the node; every few passes a page of older records is looked at again, for a record edited in
place with its hash left alone. The first record that differs is found by halving (one record asked
each time), the node is collected no further, and the copy is the evidence. Each node's state lives in
etcd at `audit/NODE`, and its newest records (RECENT) in chunks at `audit-records/NODE/FIRST`, written in
the same transaction, for consoles that cannot read the trail.

Break-glass recordings are copied as their sessions go, from the agent's memory (a shell that edits its
own recording on disk cannot change that copy), kept once they hash to their seal, and then fetched once
from the node's disk: a file that changed is named.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from lifsea_tui.api.chain import SESSION_END, SESSION_START, stored
from lifsea_tui.api.models import AuditPage, AuditRecord
from lifsea_tui.api.trail import NodeTrail, Problem
from lifsea_tui.client.etcd import Store
from lifsea_tui.client.node import NodeClient, NodeError, NodeTarget
from lifsea_tui.client.trail import (
    RECENT_PREFIX,
    RECORDING_ID,
    Trail,
    chunk_key,
    parse_chunk_key,
    read_states,
    state_key,
)

log = logging.getLogger("lifsea.fleetd.audit")

EVERY = 2.0  # seconds between passes
PAGE = 500  # records asked per request
SWEEP_EVERY = 5  # every this many passes, a page of older records is looked at again
VERIFY_EVERY = 6  # every this many looks, the node hashes its collected recordings again (its own verify)
CONCURRENCY = 32
QUIET_WRITE = 30.0  # seconds: how stale "when it last answered" may get in etcd while nothing moves
RECENT = 512  # each node's newest records also kept in etcd, for consoles (the trail holds them all)
LIVE_PER_PASS = 8 << 20  # bytes of one recording copied live in one pass, at most
PRUNE_EVERY = 3600.0  # seconds between looks for records and recordings past the retention
CHUNK_BYTES = 512 * 1024  # at most this much of one pass's records goes to etcd (its requests stay small)


class Collector:
    def __init__(
        self,
        store: Store,
        trail: Trail,
        targets: Mapping[str, NodeTarget],
        commit: Callable[[list[Any]], Awaitable[bool]],
        recent: int = RECENT,
        keep: float | None = None,
    ) -> None:
        """`targets` carry a token that may read recordings (auditor): records need only a reader's.
        `commit` writes etcd operations in one transaction, fenced (only the leader collects)."""
        self.store = store
        self.trail = trail
        self.names = sorted(targets)
        # Clients of its own: the rollouts close theirs when a node settles, which must not cut a page short.
        self.clients = {name: NodeClient(target) for name, target in targets.items()}
        self.unfetched: dict[str, dict[str, tuple[str, int]]] = {}  # node -> recording -> (seal, record seq)
        self.sessions: dict[str, dict[str, str]] = {}  # node -> break-glass sessions open -> their recording
        self.live_done: set[tuple[str, str]] = set()  # (node, recording) no longer to be copied live
        self.unfetchable: dict[str, str] = {}  # node -> why its recordings could not be fetched (said once)
        self.commit = commit
        self.recent = recent
        self.keep = keep  # seconds records and recordings are kept in the trail; None: for ever
        self.pruned_at = 0.0
        self.chunks: dict[str, list[int]] = {}  # node -> first seq of each chunk of recent records in etcd
        self.unsent: dict[str, list[bytes]] = {}  # node -> records in the trail, not yet in etcd (it was down)
        self.known: dict[str, NodeTrail] = {}
        self.passes: dict[str, int] = {}
        self.cursors: dict[str, int] = {}  # where the next look at older records starts, per node

    async def load(self) -> None:
        """What etcd says of each node (a flagged node stays flagged across restarts)."""
        self.known = await read_states(self.store)
        self.chunks = {}
        for kv in await self.store.range(RECENT_PREFIX, keys_only=True):
            if (where := parse_chunk_key(kv.key)) is not None:
                self.chunks.setdefault(where[0], []).append(where[1])
        for firsts in self.chunks.values():
            firsts.sort()

    async def tick(self) -> None:
        semaphore = asyncio.Semaphore(CONCURRENCY)

        async def one(name: str) -> None:
            async with semaphore:
                await self.collect(name)

        await asyncio.gather(*(one(name) for name in self.names))
        if self.keep is not None and time.time() - self.pruned_at >= PRUNE_EVERY:
            await asyncio.to_thread(self.prune, time.time() - self.keep)

    def prune(self, before: float) -> None:
        """Let go of records and recordings older than the retention, except on flagged nodes: their copy
        is evidence, kept until someone has looked (and the node is collected again from a fresh start)."""
        self.pruned_at = time.time()
        for name in self.names:
            state = self.known.get(name)
            if state is not None and state.problem is not None:
                continue
            records, recordings = self.trail.prune(name, before), self.trail.prune_recordings(name, before)
            if records or recordings:
                log.info("%s: let go of %d records and %d recordings past the retention", name, records, recordings)

    async def collect(self, name: str) -> None:
        state = self.known.get(name) or NodeTrail(name=name)
        client = self.clients[name]
        if state.problem is not None:
            # Flagged: the collected copy is the evidence and no more records are taken from this node; what
            # an open session records is still copied, from the agent's memory.
            self._note_sessions(name, [])
            with contextlib.suppress(NodeError):
                await self._follow_live(name, client)
            return
        seq, head = self.trail.head(name)
        self.passes[name] = self.passes.get(name, 0) + 1
        try:
            # From the last collected record on: it must still be there, the same, for the rest to follow.
            page = await client.audit(after=max(seq - 1, -1), limit=PAGE)
            problem = self._diverged(seq, head, page)
            fresh = page.records[1:] if seq >= 0 else page.records
            good: list[bytes] = []
            newest: AuditRecord | None = None
            if problem is None:
                prev = head
                for record in fresh:
                    line, content = stored(record)
                    if record.seq != seq + 1 + len(good) or record.prev != prev or record.hash != content:
                        problem = f"record {record.seq} as the node sends it does not chain on or match its hash"
                        break
                    good.append(line)
                    prev, newest = record.hash, record
            if good:
                self.trail.append(name, good)
            self._note_sessions(name, fresh[: len(good)])
            first = None
            if problem is not None:
                first = await self._first_difference(name, client, self.trail.head(name)[0], page.head_seq)
            else:
                await self._follow_live(name, client)
                found = await self._fetch_recordings(name, client)
                # Second looks only once caught up: while a long log is still coming in, they would
                # slow its collection (and the node's verify) for nothing.
                caught_up = len(page.records) < PAGE
                if found is None and caught_up and self.passes[name] % SWEEP_EVERY == 0:
                    found = await self._sweep(name, client)
                    if found is None and self.passes[name] % (SWEEP_EVERY * VERIFY_EVERY) == 0:
                        found = await self._recordings_still_sealed(name, client)
                if found is not None:
                    problem, first = found
        except NodeError as error:
            # A node that goes quiet while someone has a root shell on it is worth a look either way.
            silent = sorted(self.sessions.get(name, ()))
            if state.unreachable != str(error) or state.silent_during != silent:
                await self._save(state.model_copy(update={"unreachable": str(error), "silent_during": silent}))
            return
        now = time.time()
        seq, head = self.trail.head(name)
        update: dict[str, Any] = {
            "collected_seq": seq,
            "collected_hash": head,
            "node_seq": page.head_seq,
            "node_hash": page.head_hash,
            "checked_at": now,
            "unreachable": None,
            "silent_during": [],
        }
        if newest is not None:
            update["lag"] = max(0.0, now - newest.time.timestamp())
        if problem is not None and first is not None:
            update["problem"] = Problem(first_bad_seq=first, what=problem, found_at=now)
            log.warning("%s: its audit log no longer holds what was collected: %s (first: %d)", name, problem, first)
        new = state.model_copy(update=update)
        # Nothing moved: etcd is told only now and then that the node still answers (a thousand nodes every
        # two seconds would be a write each for nothing).
        quiet = new.model_copy(update={"checked_at": state.checked_at, "lag": state.lag}) == state
        if good:
            # Kept until etcd has them: a pass whose write failed (etcd down) leaves no gap in etcd's records.
            unsent = self.unsent.setdefault(name, [])
            unsent[:] = [*unsent, *good][-self.recent :]
        if self.unsent.get(name):
            await self._save(new, self._recent_ops(name, self.unsent[name], seq))
        elif not quiet or state.checked_at is None or now - state.checked_at >= QUIET_WRITE:
            await self._save(new)

    @staticmethod
    def _diverged(seq: int, head: str, page: AuditPage) -> str | None:
        """Why the node's log no longer holds what was collected up to (seq, head), or None. `page` starts
        at record `seq` (the last collected) when anything was collected."""
        if page.head_seq < seq:
            return f"the node's log ends at record {page.head_seq}; {seq + 1} records were collected"
        if seq >= 0:
            first = page.records[0] if page.records else None
            if first is None or first.seq != seq:
                return f"record {seq} is gone from the node's log"
            if first.hash != head:
                return f"record {seq} on the node is not the one collected: the log was rewritten"
        return None

    def _note_sessions(self, name: str, records: list[AuditRecord]) -> None:
        """Break-glass sessions opened and not yet ended, and the recordings of those that ended (from the
        records just collected, or, the first time, from the whole copy)."""
        initial = name not in self.unfetched
        if initial:
            self.unfetched[name], self.sessions[name] = {}, {}
            records = [AuditRecord.model_validate_json(line) for line in self.trail.lines(name)] + records
        for record in records:
            session, recording = record.params.get("session"), record.params.get("recording")
            if not isinstance(session, str) or not isinstance(recording, str) or not RECORDING_ID.fullmatch(recording):
                continue
            if record.action == SESSION_START and record.outcome == "started":
                self.sessions[name][session] = recording
            elif record.action == SESSION_END:
                self.sessions[name].pop(session, None)
            seal = record.params.get("sha256")
            if record.action != SESSION_END or not isinstance(seal, str):
                continue
            # A recording kept from its live copy is still fetched once, to see that the node's file is the same.
            if initial and self.trail.has_recording(name, recording):
                continue
            self.unfetched[name][recording] = (seal, record.seq)

    async def _follow_live(self, name: str, client: NodeClient) -> None:
        """Copy what each open session records (and each sealed one not yet kept) from the agent's memory as
        it goes: bytes written to the file could be changed by the shell being recorded; these cannot. A
        copy that reaches the seal and hashes to it becomes the recording."""
        wanted = set(self.sessions[name].values()) | set(self.unfetched[name])
        for recording in sorted(wanted):
            if (name, recording) in self.live_done or self.trail.has_recording(name, recording):
                continue
            offset = self.trail.live_size(name, recording)
            # A pass takes at most LIVE_PER_PASS of one recording: a node that claims an endless size
            # cannot hold the pass (the agent itself keeps only its newest LIVE_BYTES, 2 MiB).
            budget = offset + LIVE_PER_PASS
            while True:
                try:
                    got = await client.recording_live(recording, offset)
                except NodeError as error:
                    if error.status != 404:
                        raise
                    if recording not in self.sessions[name].values():
                        self.live_done.add((name, recording))  # no longer held: the sealed file is fetched instead
                    break  # (a session still open is asked again next pass)
                if got.data:
                    self.trail.append_live(name, recording, got.data)
                    offset += len(got.data)
                    if offset < got.size and offset < budget:
                        continue
                if got.sealed is not None and offset >= got.size:
                    self.live_done.add((name, recording))
                    if self.trail.keep_live(name, recording, got.sealed):
                        log.info("%s: recording %s kept as it was recorded (copied live)", name, recording)
                break

    async def _fetch_recordings(self, name: str, client: NodeClient) -> tuple[str, int] | None:
        """Download each recording the copy's records sealed, and keep it once its bytes match the seal."""
        for recording, (seal, seq) in list(self.unfetched[name].items()):
            kept = self.trail.has_recording(name, recording)
            held = "; the copy taken live holds what was recorded" if kept else ""
            try:
                data = await client.recording(recording)
            except NodeError as error:
                if error.code == "recording_changed":
                    return f"recording {recording} changed on the node{held}: {error.detail}", seq
                if error.status == 404:
                    return f"recording {recording} (sealed in record {seq}) is gone from the node{held}", seq
                if self.unfetchable.get(name) != str(error):
                    log.warning("%s: recording %s not collected yet: %s", name, recording, error)
                self.unfetchable[name] = str(error)
                return None  # unreachable, or this token may not read recordings: the next pass tries again
            if hashlib.sha256(data).hexdigest() != seal:
                return f"recording {recording} as the node serves it does not match its seal (record {seq})", seq
            if not kept:
                self.trail.put_recording(name, recording, data)
            del self.unfetched[name][recording]
        self.unfetchable.pop(name, None)
        return None

    async def _recordings_still_sealed(self, name: str, client: NodeClient) -> tuple[str, int] | None:
        """The node hashes its recordings again (its own verify); one that was collected and has changed
        since is named (the collected copy keeps the sealed bytes)."""
        result = await client.audit_verify()
        for bad in result.bad_recordings:
            if self.trail.has_recording(name, bad.id):
                return f"recording {bad.id} changed on the node after it was collected: {bad.problem}", bad.audit_seq
        return None

    async def _sweep(self, name: str, client: NodeClient) -> tuple[str, int] | None:
        """Look again at a page of older records (a cursor goes round the whole copy): a record edited in
        place, its hash left alone, changes nothing the head shows, but its content no longer hashes to it."""
        collected, _ = self.trail.head(name)
        first = self.trail.first(name)
        cursor = max(self.cursors.get(name, first), first)
        if cursor > collected:
            cursor = first
        page = await client.audit(after=cursor - 1, limit=PAGE)
        expected = cursor
        for record in page.records:
            if record.seq > collected:
                break
            if record.seq != expected:
                return f"record {expected} is gone from the node's log", expected
            if record.hash != self.trail.hash_at(name, record.seq) or stored(record)[1] != record.hash:
                return f"record {record.seq} on the node differs from the collected copy", record.seq
            expected += 1
        self.cursors[name] = expected
        return None

    async def _first_difference(self, name: str, client: NodeClient, collected: int, node_head: int) -> int:
        """The first seq whose record on the node is not the collected one (halving; one record a step)."""

        async def same(seq: int) -> bool:
            page = await client.audit(after=seq - 1, limit=1)
            return (
                bool(page.records)
                and page.records[0].seq == seq
                and page.records[0].hash == self.trail.hash_at(name, seq)
            )

        first = self.trail.first(name)  # records older than the retention are no longer held to compare
        low, high = first, min(collected, node_head)  # the answer is in [low, high + 1]
        try:
            if high < first or not await same(first):
                return first
            while low < high:
                middle = (low + high + 1) // 2
                if await same(middle):
                    low = middle
                else:
                    high = middle - 1
        except NodeError:
            pass  # the node stopped answering: the first record known to differ is the best we have
        return low + 1

    async def aclose(self) -> None:
        await asyncio.gather(*(client.aclose() for client in self.clients.values()))

    def _recent_ops(self, name: str, lines: list[bytes], last: int) -> tuple[list[Any], int, list[int]]:
        """The chunk of `lines` (ending at record `last`) for etcd, as much of its newest end as fits, and
        the deletes of chunks now wholly older than the newest `recent` records."""
        taken: list[bytes] = []
        size = 0
        for line in reversed(lines[-self.recent :]):
            if size + len(line) > CHUNK_BYTES:
                break
            taken.append(line)
            size += len(line)
        if not taken:
            return [], -1, []
        first = last - len(taken) + 1
        firsts = [*self.chunks.get(name, []), first]
        window = last + 1 - self.recent
        dropped = [start for start, following in itertools.pairwise(firsts) if following <= window]
        ops = [self.store.put_bytes_op(chunk_key(name, first), b"".join(reversed(taken)))]
        ops += [self.store.delete_op(chunk_key(name, start)) for start in dropped]
        return ops, first, dropped

    async def _save(self, state: NodeTrail, recent: tuple[list[Any], int, list[int]] = ([], -1, [])) -> None:
        ops, first, dropped = recent
        if await self.commit([self.store.put_op(state_key(state.name), state.model_dump(mode="json")), *ops]):
            self.known[state.name] = state
            if ops:
                chunks = self.chunks.setdefault(state.name, [])
                chunks[:] = [start for start in chunks if start not in dropped] + [first]
                self.unsent.pop(state.name, None)
