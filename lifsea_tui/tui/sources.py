"""Where the console's nodes and its fleet store come from: flags, the user's config file, or the running
lab. Shared by the console, `lifsea-tui shell` and `lifsea-tui rollout`."""

from __future__ import annotations

import argparse
from pathlib import Path

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
        return inventory.from_file(config, context), store
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
        return str(inventory.context_name(inventory.read(path), context) or path.name)
    except inventory.InventoryError:
        return path.name


def add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--etcd", help="the fleet store's etcd members, host:port[,...] (default: the lab's)")
    parser.add_argument("--etcd-ca", type=Path, help="CA of the members' certificates")
    parser.add_argument("--etcd-cert", type=Path, help="your client certificate for etcd")
    parser.add_argument("--etcd-key", type=Path, help="its key")
    parser.add_argument("--etcd-server-name", help="the name in the members' certificates, if not the address")


def add_inventory_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--inventory",
        type=Path,
        help="TOML file of nodes ([[nodes]] name, url, ca_file, token_file "
        f"or token_env); default: {locations.config_file()}, else the running lab",
    )
    parser.add_argument(
        "--context",
        help=f"which of the inventory's [contexts.NAME] (default: ${inventory.CONTEXT_ENV}, else its current_context)",
    )
    parser.add_argument("--lab-dir", type=Path, help="the lab to use when no inventory is given")
    parser.add_argument(
        "--lab-role",
        default="admin",
        choices=["reader", "operator", "admin", "auditor"],
        help="which of the lab's tokens to use (default admin, so the lab shows every feature)",
    )
