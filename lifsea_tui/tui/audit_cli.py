"""`lifsea-tui audit ...`: the audit trail the fleet controller collected off the nodes.

    lifsea-tui audit status [--json]         each node: its head, what was collected, whether its log
                                             still holds it, and the first record that differs if not
    lifsea-tui audit export NODE [--trail DIR] > NODE.jsonl
                                             the collected records as the node stored them; verify
                                             them with `lifsea-agent verify-audit NODE.jsonl`

Exit codes: 0 every node's log holds what was collected; 1 a node is flagged, or went quiet while a
break-glass session was open (status), or has nothing collected (export); 2 bad arguments; 3 the store
did not answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from lifsea_tui.api.trail import NodeTrail
from lifsea_tui.client import inventory
from lifsea_tui.client.etcd import Store, StoreUnavailable
from lifsea_tui.client.trail import DirectoryTrail, read_states
from lifsea_tui.tui.plain import visible
from lifsea_tui.tui.sources import add_inventory_options, add_store_options, sources

EXIT_FLAGGED, EXIT_USAGE, EXIT_STORE = 1, 2, 3


async def collected(args: argparse.Namespace) -> list[NodeTrail]:
    targets, target = sources(args)
    if target is None:
        raise SystemExit("lifsea-tui audit: no fleet store: give --etcd (and its certificates), or run the lab")
    store = Store(target)
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
    status = inventory.lab_status(args.lab_dir)
    return Path(status["controller"]["trail"])


def main(argv: list[str]) -> int:
    top = argparse.ArgumentParser(prog="lifsea-tui audit", description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    add_inventory_options(common)
    add_store_options(common)
    actions = top.add_subparsers(dest="action", required=True)
    status = actions.add_parser("status", parents=[common], help="each node's collection, and any node flagged")
    status.add_argument("--json", action="store_true")
    export = actions.add_parser("export", parents=[common], help="a node's collected records, as JSON lines")
    export.add_argument("node")
    export.add_argument("--trail", help="the controller's trail directory (default: the lab's)")
    args = top.parse_args(argv)
    try:
        if args.action == "status":
            states = asyncio.run(collected(args))
            if args.json:
                print(json.dumps([summary(state) for state in states], indent=2))
            else:
                now = time.time()
                for state in states:
                    print(line(state, now))
            return EXIT_FLAGGED if any(not state.ok or state.silent_during for state in states) else 0
        trail = DirectoryTrail(trail_dir(args))
        written = 0
        for record in trail.lines(args.node):
            sys.stdout.buffer.write(record)
            written += 1
        if not written:
            print(f"lifsea-tui audit: nothing collected from {args.node}", file=sys.stderr)
            return EXIT_FLAGGED
        return 0
    except StoreUnavailable as error:
        print(f"lifsea-tui audit: {error}", file=sys.stderr)
        return EXIT_STORE
    except (inventory.InventoryError, ValueError, KeyError) as error:
        print(f"lifsea-tui audit: {error}", file=sys.stderr)
        return EXIT_USAGE
