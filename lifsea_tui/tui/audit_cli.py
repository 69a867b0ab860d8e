"""`lifsea-tui audit ...`: the audit trail the fleet controller collected off the nodes.

    lifsea-tui audit status [--json]         each node: its head, what was collected, whether its log
                                             still holds it, and the first record that differs if not
    lifsea-tui audit log [--node N] [--actor A] [--action PREFIX] [--since T] [--until T] [-f] [--json]
                                             records, fleet-wide, oldest first: the recent ones etcd
                                             holds, or with --trail DIR the controller's whole copy;
                                             -f keeps printing them as they are collected
    lifsea-tui audit export NODE [--since T] [--until T] [--trail DIR] > NODE.jsonl
                                             the collected records as the node stored them; verify
                                             them with `lifsea-agent verify-audit NODE.jsonl` (a time
                                             range: with the --after SEQ:HASH it prints)

T is an ISO 8601 time (2026-12-02T18:00Z) or a span before now (30s, 15m, 2h, 7d).

Exit codes: 0 every node's log holds what was collected (status), or something was printed; 1 a node is
flagged, or went quiet while a break-glass session was open (status), or nothing matched (export);
2 bad arguments; 3 the store did not answer.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC
from pathlib import Path

from lifsea_tui.api.chain import SESSION_END
from lifsea_tui.api.models import AuditRecord
from lifsea_tui.api.trail import NodeTrail
from lifsea_tui.client import inventory
from lifsea_tui.client.etcd import EtcdTarget, Store, StoreUnavailable
from lifsea_tui.client.node import NodeClient, NodeError
from lifsea_tui.client.trail import DirectoryTrail, RecentFollower, read_states
from lifsea_tui.lab import targets
from lifsea_tui.tui.plain import visible
from lifsea_tui.tui.sources import Source, fleet_source

EXIT_FLAGGED, EXIT_USAGE, EXIT_STORE = 1, 2, 3
FOLLOW_EVERY = 1.0  # seconds between looks for newly collected records


def store_target(source: Source) -> EtcdTarget:
    target = source.store
    if target is None:
        raise SystemExit("lifsea-tui audit: no fleet store: give --etcd (and its certificates), or run the lab")
    return target


async def collected(args: argparse.Namespace) -> list[NodeTrail]:
    source = fleet_source(args)
    targets, store = source.targets, Store(store_target(source))
    try:
        found = await read_states(store)
    finally:
        await store.aclose()
    return [found.get(node.name) or NodeTrail(name=node.name) for node in targets]


def summary(state: NodeTrail) -> dict[str, object]:
    """The shape `audit status --json` prints (stable: scripts read it)."""
    return {
        "name": state.name,
        "node_seq": state.node_seq,
        "collected_seq": state.collected_seq,
        "ok": state.ok,
        "problem": state.problem.what if state.problem else None,
        "first_bad_seq": state.problem.first_bad_seq if state.problem else None,
        "lag_seconds": state.lag,
        "checked_at": state.checked_at,
        "unreachable": state.unreachable,
        "silent_during_sessions": state.silent_during,
    }


def line(state: NodeTrail, now: float) -> str:
    if state.problem is not None:
        verdict = f"FLAGGED from record {state.problem.first_bad_seq}: {state.problem.what}"
    elif state.checked_at is None:
        verdict = "not collected yet"
    else:
        verdict = f"ok, asked {now - state.checked_at:.0f} s ago" + (
            f", lag {state.lag:.1f} s" if state.lag is not None else ""
        )
    if state.unreachable:
        verdict += f"; not answering: {state.unreachable}"
    if state.silent_during:
        verdict += f"; ALERT: it went quiet with break-glass session(s) open: {', '.join(state.silent_during)}"
    node = "-" if state.node_seq is None else str(state.node_seq)
    return visible(
        f"{state.name:16} node {node:>7}  collected {state.collected_seq:>7}  {verdict}", keep_newlines=False
    )


def trail_dir(args: argparse.Namespace) -> Path:
    if args.trail is not None:
        return Path(args.trail)
    status = targets.lab_status(args.lab_dir)
    return Path(status["controller"]["trail"])


# -- records ----------------------------------------------------------------------------------------------


def wanted(record: AuditRecord, args: argparse.Namespace) -> bool:
    return (
        (args.actor is None or record.actor == args.actor)
        and (args.action_prefix is None or record.action.startswith(args.action_prefix))
        and (args.since is None or record.time >= args.since)
        and (args.until is None or record.time < args.until)
    )


def record_line(node: str, record: AuditRecord) -> str:
    role = f"({record.role})" if record.role else ""
    text = (
        f"{record.time.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z {node:12} #{record.seq:<6} {record.actor}{role} "
        f"{record.action} {record.outcome}" + (f" · {record.reason}" if record.reason else "")
    )
    return visible(text, keep_newlines=False)


def show(found: Iterable[tuple[str, AuditRecord]], as_json: bool) -> int:
    shown = 0
    for node, record in sorted(found, key=lambda pair: (pair[1].time, pair[0], pair[1].seq)):
        if as_json:
            print(json.dumps({"node": node, **record.model_dump(mode="json")}, ensure_ascii=True))
        else:
            print(record_line(node, record))
        shown += 1
    sys.stdout.flush()
    return shown


def from_trail(trail: DirectoryTrail, nodes: list[str]) -> Iterator[tuple[str, AuditRecord]]:
    for node in nodes:
        for stored in trail.lines(node):
            yield node, AuditRecord.model_validate_json(stored)


async def log_main(args: argparse.Namespace) -> int:
    source = fleet_source(args, store=args.trail is None)
    nodes = args.node or [target.name for target in source.targets]
    if args.trail is not None:
        shown = show(
            ((n, r) for n, r in from_trail(DirectoryTrail(Path(args.trail)), nodes) if wanted(r, args)), args.json
        )
        return 0 if shown else EXIT_FLAGGED
    store = Store(store_target(source))
    follower = RecentFollower(store)
    printed: dict[str, int] = {}  # node -> newest seq printed
    shown = 0
    try:
        while True:
            fresh = [
                (node, record)
                for node, records in (await follower.new()).items()
                if node in nodes
                for record in records
                if record.seq > printed.get(node, -1) and wanted(record, args)
            ]
            shown += show(fresh, args.json)
            for node, record in fresh:
                printed[node] = max(printed.get(node, -1), record.seq)
            if not args.follow:
                return 0 if shown else EXIT_FLAGGED
            await asyncio.sleep(FOLLOW_EVERY)
    finally:
        await store.aclose()


def export_main(args: argparse.Namespace) -> int:
    """The node's collected records; with --since/--until the slice from the first record at or after
    `since` up to the first at or after `until` (whole: nothing in between is left out). A copy that does
    not start at record 0 (a slice, or records past the retention let go) says which record it follows."""
    trail = DirectoryTrail(trail_dir(args))
    ranged = args.since is not None or args.until is not None
    count, first = 0, None
    for stored in trail.lines(args.node):
        if ranged or first is None:
            record = AuditRecord.model_validate_json(stored)
            if args.since is not None and count == 0 and record.time < args.since:
                continue
            if args.until is not None and record.time >= args.until:
                break
            if first is None:
                first = record
        sys.stdout.buffer.write(stored)
        count += 1
    sys.stdout.buffer.flush()
    if first is None:
        print(f"lifsea-tui audit: nothing collected from {args.node} in that range", file=sys.stderr)
        return EXIT_FLAGGED
    if first.seq > 0:
        print(
            f"lifsea-tui audit: {count} records of {args.node} from record {first.seq}; they follow record "
            f"{first.seq - 1}: verify with `lifsea-agent verify-audit FILE --after {first.seq - 1}:{first.prev}`",
            file=sys.stderr,
        )
    return 0


# -- a recording, from the node or from the collected copy -------------------------------------------------


def collected_seal(trail: DirectoryTrail, node: str, recording_id: str) -> str | None:
    """The SHA-256 the collected copy's records sealed the recording with."""
    seal = None
    for stored in trail.lines(node):
        if b'"ops.session.end"' in stored:
            record = AuditRecord.model_validate_json(stored)
            if record.action == SESSION_END and record.params.get("recording") == recording_id:
                seal = record.params.get("sha256")
    return seal if isinstance(seal, str) else None


async def recording(args: argparse.Namespace) -> tuple[bytes, str]:
    """A recording's bytes and where they came from: the node's, served while they match the seal in its
    audit log; else the collected copy, checked against the seal the copy's records hold."""
    target = next((t for t in fleet_source(args, store=False).targets if t.name == args.node), None)
    why = f"no node {args.node!r} in the inventory"
    if target is not None:
        client = NodeClient(target)
        try:
            return await client.recording(args.recording), f"from {args.node}"
        except NodeError as error:
            why = str(error)
        finally:
            await client.aclose()
    try:
        trail = DirectoryTrail(trail_dir(args))
        data = trail.recording_path(args.node, args.recording).read_bytes()
    except (OSError, KeyError, inventory.InventoryError) as error:
        raise LookupError(f"not from the node ({why}), and no collected copy: {error}") from error
    seal, whose = collected_seal(trail, args.node, args.recording), "the collected records'"
    if seal is None:  # copied live, its end never collected (the node was flagged first)
        seal, whose = trail.live_seal(args.node, args.recording), "the agent's, given live"
    if seal is None or hashlib.sha256(data).hexdigest() != seal:
        raise LookupError(f"the collected copy of {args.recording} does not match a seal the copy holds")
    return data, f"the collected copy (the node's: {why}), matching {whose} seal"


def main(args: argparse.Namespace) -> int:
    """`lifsea-tui audit ACTION ...` (the arguments: lifsea_tui.tui.cli)."""
    try:
        if args.action == "log":
            try:
                return asyncio.run(log_main(args))
            except KeyboardInterrupt:
                return 0
        if args.action == "status":
            states = asyncio.run(collected(args))
            if args.json:
                print(json.dumps([summary(state) for state in states], indent=2))
            else:
                now = time.time()
                for state in states:
                    print(line(state, now))
            return EXIT_FLAGGED if any(not state.ok or state.silent_during for state in states) else 0
        return export_main(args)
    except StoreUnavailable as error:
        print(f"lifsea-tui audit: {error}", file=sys.stderr)
        return EXIT_STORE
    except (inventory.InventoryError, ValueError, KeyError) as error:
        print(f"lifsea-tui audit: {error}", file=sys.stderr)
        return EXIT_USAGE
