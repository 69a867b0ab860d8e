"""Where the console's nodes and its fleet store come from: flags, the user's config file, or the running
lab. Shared by the console and its commands (their flags: lifsea_tui.tui.cli)."""

from __future__ import annotations

import argparse

from lifsea_tui.client import inventory
from lifsea_tui.client.etcd import EtcdTarget
from lifsea_tui.client.node import NodeTarget
from lifsea_tui.tui import locations


def targets_from(args: argparse.Namespace) -> list[NodeTarget]:
    return sources(args)[0]


def sources(args: argparse.Namespace) -> tuple[list[NodeTarget], EtcdTarget | None]:
    """The nodes, and the fleet store (etcd) when there is one: --etcd, else the lab's when the nodes are."""
    store = None
    if getattr(args, "etcd", None):
        store = EtcdTarget.from_flags(args.etcd, args.etcd_ca, args.etcd_cert, args.etcd_key, args.etcd_server_name)
    context = getattr(args, "context", None)
    if args.inventory is not None:
        return inventory.from_file(args.inventory, context), store
    config = locations.config_file()
    if config.exists():
        data = inventory.read(config)
        if "nodes" in data or "contexts" in data:  # else it holds only the console's settings
            return inventory.parse(data, str(config), config.parent, context), store
    if context:
        raise inventory.InventoryError(f"--context {context}: no inventory to take it from (--inventory, or {config})")
    status = inventory.lab_status(args.lab_dir)
    if store is None and "etcd" in status:
        store = EtcdTarget.from_json(status["etcd"], "console")
    return inventory.from_lab(role=args.lab_role, status=status), store


def context_label(args: argparse.Namespace) -> str:
    """What the console's title says it is looking at: the inventory's context, or the lab."""
    context = getattr(args, "context", None)
    path = args.inventory if args.inventory is not None else locations.config_file()
    if args.inventory is None and not path.exists():
        return "lab"
    try:
        data = inventory.read(path)
    except inventory.InventoryError:
        return path.name
    if args.inventory is None and "nodes" not in data and "contexts" not in data:
        return "lab"
    return str(inventory.context_name(data, context) or path.name)
