"""`lifsea-tui get nodes|deployments|services|audit [NODE...] -o table|wide|json|yaml`: the fleet for scripts.

Every node is asked at once (a bounded number at a time), each within its own timeout, so one dead node
costs its timeout and no more. What a node answered is printed; what a node did not is said on stderr and
makes the exit code 1. Tables show node text made plain (no escape sequence reaches the terminal); json and
yaml carry the node API's own objects, each with the node it came from (json and yaml escape control
characters themselves).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lifsea_tui.api.rollouts import parse_selector, selects
from lifsea_tui.client import inventory
from lifsea_tui.client.node import NodeClient, NodeError, NodeTarget
from lifsea_tui.tui.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from lifsea_tui.tui.plain import visible
from lifsea_tui.tui.sources import targets_from

AT_ONCE = 64  # nodes asked at the same time
Row = dict[str, Any]


@dataclass
class Answers:
    """Per node, in the inventory's order: its rows, or why there are none."""

    rows: list[Row] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Kind:
    """One `get` kind: how to ask a node, and the columns of its table (wide adds the second set)."""

    ask: Callable[[NodeClient, argparse.Namespace], Awaitable[list[Row]]] | None  # None: the summary is the row
    columns: tuple[tuple[str, str], ...]  # (heading, key in the row's table view)
    wide: tuple[tuple[str, str], ...]
    table: Callable[[Row], dict[str, str]]


def _when(value: Any) -> str:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else "-"


def _node_table(row: Row) -> dict[str, str]:
    summary = row.get("summary")
    if summary is None:
        return {"status": "Unreachable", "problem": row.get("problem") or ""}
    deployments = summary["deployments"]["deployments"]
    booted = next((d for d in deployments if d["booted"]), None)
    pending = next((d for d in deployments if d["pending"]), None)
    failed = summary["failed_units"]
    update = summary["update"]
    return {
        "status": "Ready" if not failed else "Degraded",
        "version": (booted["version"] or booted["checksum"][:12]) if booted else "?",
        "pending": (pending["version"] or pending["checksum"][:12]) if pending else "-",
        "update": update["state"] + (f" ({update['operation']})" if update.get("operation") else ""),
        "failed": "?" if failed is None else str(len(failed)),
        "sessions": str(summary["ops_sessions"]),
        "checksum": booted["checksum"][:12] if booted else "?",
        "audit": f"{summary['audit_head_seq']}:{(summary['audit_head_hash'] or '-')[:12]}",
        "labels": ",".join(f"{k}={v}" for k, v in sorted(row["labels"].items())) or "-",
        "url": row["url"],
        "problem": "",
    }


async def _deployments(client: NodeClient, args: argparse.Namespace) -> list[Row]:
    listing = await client.deployments()
    return [{"deployment": d.model_dump(mode="json")} for d in listing.deployments]


def _deployment_table(row: Row) -> dict[str, str]:
    d = row["deployment"]
    marks = [name for name in ("booted", "pending", "rollback", "pinned") if d[name]]
    return {
        "index": str(d["index"]),
        "version": d["version"] or "-",
        "checksum": d["checksum"][:12],
        "state": ",".join(marks) or "-",
        "full": d["checksum"],
        "time": _when(d["timestamp"]),
        "subject": d["subject"] or "",
    }


async def _services(client: NodeClient, args: argparse.Namespace) -> list[Row]:
    listing = await client.services(state=args.state)
    return [{"unit": u.model_dump(mode="json")} for u in listing.units]


def _service_table(row: Row) -> dict[str, str]:
    u = row["unit"]
    return {
        "unit": u["name"],
        "active": u["active_state"],
        "sub": u["sub_state"],
        "description": u["description"],
        "restarts": "-" if u["restarts"] is None else str(u["restarts"]),
        "since": _when(u["since"]),
        "result": u["result"] or "-",
    }


async def _audit(client: NodeClient, args: argparse.Namespace) -> list[Row]:
    page = await client.audit(limit=max(1, min(args.limit, 500)))
    return [{"record": r.model_dump(mode="json")} for r in sorted(page.records, key=lambda r: r.seq)]


def _audit_table(row: Row) -> dict[str, str]:
    r = row["record"]
    return {
        "seq": str(r["seq"]),
        "time": _when(r["time"]),
        "actor": r["actor"],
        "action": r["action"],
        "outcome": r["outcome"],
        "reason": r["reason"] or "",
        "hash": r["hash"][:12],
    }


KINDS = {
    "nodes": Kind(
        None,
        (
            ("NAME", "node"),
            ("STATUS", "status"),
            ("VERSION", "version"),
            ("PENDING", "pending"),
            ("UPDATE", "update"),
            ("FAILED", "failed"),
            ("SESSIONS", "sessions"),
        ),
        (("CHECKSUM", "checksum"), ("AUDIT", "audit"), ("LABELS", "labels"), ("URL", "url"), ("PROBLEM", "problem")),
        _node_table,
    ),
    "deployments": Kind(
        _deployments,
        (("NODE", "node"), ("INDEX", "index"), ("VERSION", "version"), ("CHECKSUM", "checksum"), ("STATE", "state")),
        (("TIME", "time"), ("SUBJECT", "subject"), ("FULL CHECKSUM", "full")),
        _deployment_table,
    ),
    "services": Kind(
        _services,
        (("NODE", "node"), ("UNIT", "unit"), ("ACTIVE", "active"), ("SUB", "sub"), ("DESCRIPTION", "description")),
        (("RESTARTS", "restarts"), ("SINCE", "since"), ("RESULT", "result")),
        _service_table,
    ),
    "audit": Kind(
        _audit,
        (
            ("NODE", "node"),
            ("SEQ", "seq"),
            ("TIME", "time"),
            ("ACTOR", "actor"),
            ("ACTION", "action"),
            ("OUTCOME", "outcome"),
        ),
        (("REASON", "reason"), ("HASH", "hash")),
        _audit_table,
    ),
}


async def gather(kind: str, targets: list[NodeTarget], args: argparse.Namespace) -> Answers:
    """Ask every node; rows in the inventory's order whatever order the answers came in."""
    selector = parse_selector(args.selector) if args.selector else None
    gate = asyncio.Semaphore(AT_ONCE)
    per_node: dict[str, list[Row]] = {}
    answers = Answers()

    async def one(target: NodeTarget) -> None:
        async with gate:
            client = NodeClient(target)
            base: Row = {"node": target.name, "url": target.url, "labels": dict(target.labels)}
            ask = KINDS[kind].ask
            try:
                if selector is not None or ask is None:
                    summary = await client.summary()
                    base["labels"] = summary.labels | target.labels  # the inventory's over the agent's
                    if selector is not None and not selects(selector, base["labels"]):
                        return
                if ask is None:
                    per_node[target.name] = [{**base, "summary": summary.model_dump(mode="json"), "problem": None}]
                else:
                    per_node[target.name] = [{**base, **row} for row in await ask(client, args)]
            except NodeError as error:
                if selector is not None and all(key in target.labels for key, _, _ in selector):
                    if not selects(selector, target.labels):  # the inventory's labels alone leave it out
                        return
                answers.problems[target.name] = str(error)
                if ask is None:  # a node that does not answer is still a row of `get nodes`
                    per_node[target.name] = [{**base, "summary": None, "problem": str(error)}]
            finally:
                await client.aclose()

    await asyncio.gather(*(one(target) for target in targets))
    for target in targets:
        answers.rows += per_node.get(target.name, [])
    return answers


def render_table(kind: str, rows: list[Row], wide: bool) -> str:
    spec = KINDS[kind]
    columns = spec.columns + (spec.wide if wide else ())
    cells = []
    for row in rows:
        view = {"node": row["node"], **spec.table(row)}
        # Node text, made plain: a tab or an escape sequence in a unit's description cannot move the columns
        # or reach the terminal.
        cells.append([visible(str(view.get(key, "")), keep_newlines=False) for _, key in columns])
    widths = [max([len(heading)] + [len(line[i]) for line in cells]) for i, (heading, _) in enumerate(columns)]
    lines = [[heading for heading, _ in columns], *cells]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def render(kind: str, rows: list[Row], output: str) -> str:
    if output in ("table", "wide"):
        return render_table(kind, rows, output == "wide")
    if output == "json":
        return json.dumps(rows, indent=2)
    import yaml

    return str(yaml.safe_dump(rows, sort_keys=False, allow_unicode=False)).rstrip()


def main(args: argparse.Namespace) -> int:
    """`lifsea-tui get ...` (the arguments: lifsea_tui.tui.cli)."""
    try:
        targets = targets_from(args)
        if args.selector:
            parse_selector(args.selector)
    except (inventory.InventoryError, ValueError) as error:
        print(visible(f"lifsea-tui get: {error}", keep_newlines=False), file=sys.stderr)
        return EXIT_USAGE
    if args.node:
        known = {target.name for target in targets}
        unknown = [name for name in args.node if name not in known]
        if unknown:
            listed = ", ".join(sorted(known)) or "none"
            print(visible(f"lifsea-tui get: no node {', '.join(unknown)} (known: {listed})"), file=sys.stderr)
            return EXIT_USAGE
        targets = [target for target in targets if target.name in args.node]
    answers = asyncio.run(gather(args.kind, targets, args))
    if answers.rows or args.output in ("json", "yaml"):
        print(render(args.kind, answers.rows, args.output))
    for target in targets:  # in the inventory's order, as the rows are
        if (problem := answers.problems.get(target.name)) is not None:
            print(visible(f"lifsea-tui get: {target.name}: {problem}", keep_newlines=False), file=sys.stderr)
    return EXIT_FAILED if answers.problems else EXIT_OK
