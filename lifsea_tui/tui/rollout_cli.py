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

from lifsea_tui.api.rollouts import Intent, OnFailure, Rollout, RolloutSpec
from lifsea_tui.client import inventory
from lifsea_tui.client import rollouts as store_keys
from lifsea_tui.client.etcd import EtcdTarget, Store, StoreUnavailable
from lifsea_tui.tui.plain import visible
from lifsea_tui.tui.sources import add_inventory_options, add_store_options, sources

EXIT_REFUSED, EXIT_USAGE, EXIT_STORE = 1, 2, 3


class Usage(Exception):
    pass


def etcd_target(args: argparse.Namespace) -> EtcdTarget:
    _, store = sources(args)
    if store is None:
        raise Usage("no fleet store: give --etcd (and --etcd-ca, --etcd-cert, --etcd-key), or run the lab")
    return store


def plan(args: argparse.Namespace) -> RolloutSpec:
    known = [target.name for target in sources(args)[0]]
    nodes = [name for name in (args.nodes or "").split(",") if name] if args.nodes is not None else known
    if not nodes:
        raise Usage("no nodes to roll out to")
    unknown = [name for name in nodes if name not in known]
    if unknown:
        raise Usage(f"unknown nodes: {', '.join(unknown)} (known: {', '.join(known)})")
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
            pre_hook=args.pre_hook,
            post_hook=args.post_hook,
            hook_timeout=args.hook_timeout,
            probe=args.probe,
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
            spec = plan(args)
            rollout = await store_keys.start(store, spec)
            print(json.dumps({"id": rollout.spec.id}) if args.json else rollout.spec.id)
            return 0
        if args.action == "list":
            rollouts = await store_keys.read_all(store)
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
        print(f"lifsea-tui rollout: refused: {error}", file=sys.stderr)
        return EXIT_REFUSED
    except StoreUnavailable as error:
        print(f"lifsea-tui rollout: {error}", file=sys.stderr)
        return EXIT_STORE
    finally:
        await store.aclose()


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="lifsea-tui rollout",
        description="Rolling upgrades and rollbacks of the fleet, run by lifsea-fleetd from etcd. "
        "Exit codes: 0 done, 1 refused, 2 bad arguments, 3 the store did not answer.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    add_inventory_options(common)
    add_store_options(common)
    actions = top.add_subparsers(dest="action", required=True)
    start = actions.add_parser("start", parents=[common], help="start a rollout; prints its id")
    start.add_argument("--version", required=True, help="the target version")
    start.add_argument("--max-unavailable", default="1", help="nodes moving at once: a count or a percentage")
    start.add_argument("--canary", type=int, default=1, help="nodes to move first, alone (default 1)")
    start.add_argument("--soak", type=float, default=0.0, help="seconds of health after each batch")
    start.add_argument("--node-deadline", type=float, default=900.0, help="seconds a node may take (default 900)")
    start.add_argument("--error-budget", type=int, default=0, help="failed nodes tolerated (default 0)")
    start.add_argument("--on-failure", choices=["pause", "rollback"], default="pause")
    start.add_argument("--nodes", help="comma-separated node names (default: every node)")
    start.add_argument("--pre-hook", help="command before a node is touched, {node} is its name")
    start.add_argument("--post-hook", help="command after a node passed its gates")
    start.add_argument("--hook-timeout", type=float, default=300.0, help="seconds a hook may run (default 300)")
    start.add_argument("--probe", help="URL template ({node}) that must answer 2xx after a reboot")
    start.add_argument("--id", help="the rollout's id (default r-DATE-TIME-XXXX)")
    start.add_argument("--reason", required=True, help="why (goes into the log and each node's audit log)")
    actions.add_parser("list", parents=[common], help="every rollout")
    status = actions.add_parser("status", parents=[common], help="one rollout, node by node")
    status.add_argument("id")
    for action in ("pause", "resume", "abort", "rollback"):
        steer = actions.add_parser(action, parents=[common], help=f"ask the controller to {action}")
        steer.add_argument("id")
        steer.add_argument("--reason", required=True)
    return top


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        return asyncio.run(run(args))
    except (Usage, inventory.InventoryError, KeyError, ValueError) as error:
        print(f"lifsea-tui rollout: {error}", file=sys.stderr)
        return EXIT_USAGE
