"""Where the console's nodes and its fleet store come from: flags, the user's config file, or the running
lab. Shared by the console and its commands (their flags: lifsea_tui.tui.cli)."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifsea_tui.client import inventory
from lifsea_tui.client.node import NodeTarget
from lifsea_tui.lab import targets
from lifsea_tui.tui import locations

if TYPE_CHECKING:
    from lifsea_tui.client.etcd import EtcdTarget


def targets_from(args: argparse.Namespace) -> list[NodeTarget]:
    """The nodes alone: no fleet store, so the etcd client (gRPC, a fifth of a shell's start) is not loaded."""
    return sources(args, store=False)[0]


def inventory_file(args: argparse.Namespace) -> tuple[Path, dict[str, Any]] | None:
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


def sources(args: argparse.Namespace, *, store: bool = True) -> tuple[list[NodeTarget], EtcdTarget | None]:
    """The nodes, and the fleet store (etcd) when there is one: --etcd, else the lab's when the nodes are."""
    if store:
        from lifsea_tui.client.etcd import EtcdTarget
    target = None
    if store and getattr(args, "etcd", None):
        target = EtcdTarget.from_flags(args.etcd, args.etcd_ca, args.etcd_cert, args.etcd_key, args.etcd_server_name)
    context = getattr(args, "context", None)
    found = inventory_file(args)
    if found is not None:
        path, data = found
        return inventory.parse(data, str(path), path.parent, context), target
    if context:
        where = locations.config_file()
        raise inventory.InventoryError(f"--context {context}: no inventory to take it from (--inventory, or {where})")
    status = targets.lab_status(args.lab_dir)
    if store and target is None and "etcd" in status:
        target = EtcdTarget.from_json(status["etcd"], "console")
    return targets.from_lab(role=args.lab_role, status=status), target


def context_label(args: argparse.Namespace) -> str:
    """What the console's title says it is looking at: the inventory's context, or the lab."""
    try:
        found = inventory_file(args)
    except inventory.InventoryError:
        return args.inventory.name if args.inventory is not None else "?"
    if found is None:
        return "lab"
    path, data = found
    return str(inventory.context_name(data, getattr(args, "context", None)) or path.name)


def fleet_scope(args: argparse.Namespace, targets: list[NodeTarget]) -> str:
    """Which fleet this is, for what the console remembers of its nodes: the inventory file and its
    context, or the lab by its CA (a lab made again has a new CA, and new nodes by the same names)."""
    try:
        found = inventory_file(args)
    except inventory.InventoryError:
        found = None
    if found is not None:
        path, data = found
        return f"{path.resolve()}#{inventory.context_name(data, getattr(args, 'context', None)) or ''}"
    ca = targets[0].ca_file if targets else None
    try:
        return "lab:" + hashlib.sha256(ca.read_bytes()).hexdigest()[:16] if ca is not None else "lab"
    except OSError:
        return "lab"
