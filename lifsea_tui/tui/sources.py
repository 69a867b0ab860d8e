"""Where the console's nodes and its fleet store come from: flags, the user's config file, or the running
lab. Shared by the console and its commands (their flags: lifsea_tui.tui.cli)."""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifsea_tui.client import inventory
from lifsea_tui.client.node import NodeTarget
from lifsea_tui.lab import targets
from lifsea_tui.tui import locations

if TYPE_CHECKING:
    from lifsea_tui.client.etcd import EtcdTarget


Found = tuple[Path, dict[str, Any]] | None  # the inventory file and its contents; None: the lab


@dataclass(frozen=True)
class Source:
    """Where the console's nodes come from, read once: the nodes, the fleet store (etcd) when there is
    one, what the title calls them, and which fleet this is (for what the console remembers of it)."""

    targets: list[NodeTarget]
    store: EtcdTarget | None
    label: str
    scope: str


def targets_from(args: argparse.Namespace) -> list[NodeTarget]:
    """The nodes alone: no fleet store, so the etcd client (gRPC, a fifth of a shell's start) is not loaded."""
    return fleet_source(args, store=False).targets


def inventory_file(args: argparse.Namespace) -> Found:
    """The inventory the nodes come from and its contents: --inventory, else the config file when it
    lists nodes (it may hold only the console's settings); None for the lab."""
    if args.inventory is not None:
        return args.inventory, inventory.read(args.inventory)
    config = locations.config_file()
    if config.exists():
        data = inventory.read(config)
        if "nodes" in data or "contexts" in data:
            return config, data
    return None


def fleet_source(args: argparse.Namespace, *, store: bool = True) -> Source:
    """The nodes, and the fleet store: --etcd, else the lab's when the nodes are the lab's (only when
    `store`: the etcd client is not loaded otherwise)."""
    if store:
        from lifsea_tui.client.etcd import EtcdTarget
    target = None
    if store and getattr(args, "etcd", None):
        target = EtcdTarget.from_flags(args.etcd, args.etcd_ca, args.etcd_cert, args.etcd_key, args.etcd_server_name)
    context = getattr(args, "context", None)
    found = inventory_file(args)
    if found is not None:
        path, data = found
        nodes = inventory.parse(data, str(path), path.parent, context)
    elif context:
        where = locations.config_file()
        raise inventory.InventoryError(f"--context {context}: no inventory to take it from (--inventory, or {where})")
    else:
        status = targets.lab_status(args.lab_dir)
        if store and target is None and "etcd" in status:
            target = EtcdTarget.from_json(status["etcd"], "console")
        nodes = targets.from_lab(role=args.lab_role, status=status)
    return Source(nodes, target, context_label(found, context), fleet_scope(found, context, nodes))


def context_label(found: Found, context: str | None) -> str:
    """What the console's title says it is looking at: the inventory's context (else its file), or the lab."""
    if found is None:
        return "lab"
    path, data = found
    return str(inventory.context_name(data, context) or path.name)


def fleet_scope(found: Found, context: str | None, nodes: list[NodeTarget]) -> str:
    """Which fleet this is, for what the console remembers of its nodes: the inventory file and its
    context, or the lab by its CA (a lab made again has a new CA, and new nodes by the same names)."""
    if found is not None:
        path, data = found
        return f"{path.resolve()}#{inventory.context_name(data, context) or ''}"
    ca = nodes[0].ca_file if nodes else None
    try:
        return "lab:" + hashlib.sha256(ca.read_bytes()).hexdigest()[:16] if ca is not None else "lab"
    except OSError:
        return "lab"
