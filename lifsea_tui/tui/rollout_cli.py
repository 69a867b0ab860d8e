"""`lifsea-tui rollout ...`: start, watch and steer fleet rollouts from a script. It only reads and
writes etcd; the controller does the rest, so this command can exit (or die) at any point.

Exit codes: 0 done; 1 refused (the text says why); 2 bad arguments or no inventory; 3 the store did
not answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime

from pydantic import ValidationError

from lifsea_tui.api.rollouts import Intent, OnFailure, Rollout, RolloutSpec, Window, parse_selector, selects
from lifsea_tui.client import inventory, runbook
from lifsea_tui.client import rollouts as store_keys
from lifsea_tui.client.etcd import EtcdTarget, Store, StoreUnavailable
from lifsea_tui.client.fleet import Fleet
from lifsea_tui.client.node import NodeTarget
from lifsea_tui.client.rollouts import parse_group_limit
from lifsea_tui.tui.plain import visible
from lifsea_tui.tui.sources import fleet_source

EXIT_REFUSED, EXIT_USAGE, EXIT_STORE = 1, 2, 3


class Usage(Exception):
    pass


def etcd_target(args: argparse.Namespace) -> EtcdTarget:
    store = fleet_source(args).store
    if store is None:
        raise Usage("no fleet store: give --etcd (and --etcd-ca, --etcd-cert, --etcd-key), or run the lab")
    return store


async def labels_of(targets: list[NodeTarget]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Each node's labels (the agent's, the inventory's over them) and, for nodes that did not answer, why:
    for those only the inventory's labels are known."""
    fleet = Fleet(targets)
    try:
        await fleet.refresh(force=True)
    finally:
        await fleet.aclose()
    snapshots = fleet.snapshots.values()
    return {s.name: s.labels for s in snapshots}, {s.name: s.problem for s in snapshots if s.problem}


async def plan(args: argparse.Namespace) -> RolloutSpec:
    targets = fleet_source(args, store=False).targets
    known = [target.name for target in targets]
    nodes = [name for name in (args.nodes or "").split(",") if name] if args.nodes is not None else known
    unknown = [name for name in nodes if name not in known]
    if unknown:
        raise Usage(f"unknown nodes: {', '.join(unknown)} (known: {', '.join(known)})")
    try:
        selector = parse_selector(args.selector) if args.selector else None
        group_by, group_limit = parse_group_limit(args.max_unavailable_per) if args.max_unavailable_per else (None, "")
    except ValueError as error:
        raise Usage(str(error)) from None
    labels: dict[str, dict[str, str]] = {}
    if selector is not None or group_by is not None:
        labels, problems = await labels_of([target for target in targets if target.name in nodes])
        if selector is not None:
            left_out = [name for name in nodes if name in problems and not selects(selector, labels[name])]
            nodes = [name for name in nodes if selects(selector, labels[name])]
            for name in left_out:  # its own labels are unknown: say so rather than guess
                why = visible(f"lifsea-tui rollout: left out {name}: its labels are unknown ({problems[name]})")
                print(why, file=sys.stderr)
    if not nodes:
        raise Usage(f"no nodes to roll out to{f' (none has {args.selector})' if selector is not None else ''}")
    groups: dict[str, str] = {}
    group_max: dict[str, int] = {}
    if group_by is not None:
        try:
            nodes, groups, group_max = store_keys.grouped(nodes, labels, group_by, group_limit)
        except ValueError as error:
            raise Usage(f"--max-unavailable-per: {error}") from None
    try:
        windows = [Window.parse(text) for text in args.window or []]
    except ValueError as error:
        raise Usage(f"--window: {error}") from None
    gate = [name for name in (args.runbook_gate or "").split(",") if name]
    if gate:
        shipped = sorted(book.id for book in runbook.load([runbook.SHIPPED])[0])
        gate = shipped if gate == ["all"] else gate
        if unknown_books := [name for name in gate if name not in shipped]:
            raise Usage(f"--runbook-gate: unknown runbooks {', '.join(unknown_books)} (known: {', '.join(shipped)})")
    try:
        return RolloutSpec(
            id=args.id or store_keys.new_id(),
            target_version=args.version,
            nodes=nodes,
            canary=min(args.canary, len(nodes)),
            max_unavailable=store_keys.parse_max_unavailable(args.max_unavailable, len(nodes)),
            soak=args.soak,
            node_deadline=args.node_deadline,
            error_budget=args.error_budget,
            on_failure=OnFailure(args.on_failure),
            windows=windows,
            selector=args.selector,
            group_by=group_by,
            groups=groups,
            group_max=group_max,
            pre_hook=args.pre_hook,
            post_hook=args.post_hook,
            hook_timeout=args.hook_timeout,
            probe=args.probe,
            runbooks=gate,
            reason=args.reason,
            created_by=store_keys.who(),
            created_at=datetime.now(UTC),
        )
    except ValidationError as error:
        problem = error.errors()[0]
        raise Usage(f"{'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}") from None


def describe(rollout: Rollout) -> str:
    spec, status = rollout.spec, rollout.status
    lines = [
        f"{spec.id}  {status.phase.value}  -> {spec.target_version}  batch {status.batch + 1}/{len(spec.batches())}"
        f"  max unavailable {spec.max_unavailable}",
        f"  {status.message}",
    ]
    for node in rollout.nodes:
        lines.append(f"  {node.name:16} {node.state.value:10} {node.booted_version or '-':10} {node.reason}")
    # Reasons carry node text (an agent's error detail): every control character shown, none sent raw.
    return "\n".join(visible(line, keep_newlines=False) for line in lines)


async def run(args: argparse.Namespace) -> int:
    store = Store(etcd_target(args))
    try:
        if args.action == "start":
            spec = await plan(args)
            rollout = await store_keys.start(store, spec)
            print(json.dumps({"id": rollout.spec.id}) if args.json else rollout.spec.id)
            return 0
        if args.action == "list":
            unreadable: dict[str, str] = {}
            rollouts = await store_keys.read_all(store, unreadable=unreadable)
            for rollout_id, why in unreadable.items():
                print(visible(f"lifsea-tui rollout: {rollout_id} cannot be read: {why}"), file=sys.stderr)
            if args.json:
                print(json.dumps([r.summary() for r in rollouts], indent=2))
            else:
                for rollout in rollouts:
                    print(describe(rollout).splitlines()[0])
            return 0
        found = await store_keys.read(store, args.id)
        if found is None:
            print(f"lifsea-tui rollout: no rollout {args.id}", file=sys.stderr)
            return EXIT_REFUSED
        if args.action == "status":
            print(json.dumps(found.summary(), indent=2) if args.json else describe(found))
            return 0
        try:
            intent = Intent(action=args.action, reason=args.reason)
        except ValidationError:
            raise Usage("--reason must say why (it goes into the rollout's log and each node's audit log)") from None
        seq = await store_keys.ask(store, args.id, intent, store_keys.who())
        print(json.dumps({"id": args.id, "intent": args.action, "seq": seq}) if args.json else f"{args.action}: asked")
        return 0
    except store_keys.RolloutRefused as error:
        print(visible(f"lifsea-tui rollout: refused: {error}"), file=sys.stderr)
        return EXIT_REFUSED
    except store_keys.RolloutUnreadable as error:
        print(visible(f"lifsea-tui rollout: {error}"), file=sys.stderr)
        return EXIT_REFUSED
    except StoreUnavailable as error:
        print(f"lifsea-tui rollout: {error}", file=sys.stderr)
        return EXIT_STORE
    finally:
        await store.aclose()


def main(args: argparse.Namespace) -> int:
    """`lifsea-tui rollout ACTION ...` (the arguments: lifsea_tui.tui.cli)."""
    try:
        return asyncio.run(run(args))
    except (Usage, inventory.InventoryError, KeyError, ValueError) as error:
        print(f"lifsea-tui rollout: {error}", file=sys.stderr)
        return EXIT_USAGE
