"""lifsea-fleetd: run the fleet controller (and its FleetLock server) against an etcd and a set of nodes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lifsea_tui import __version__
from lifsea_tui.client import inventory
from lifsea_tui.client.etcd import EtcdTarget, Store
from lifsea_tui.client.node import NodeTarget
from lifsea_tui.client.trail import DirectoryTrail
from lifsea_tui.fleetd.controller import LEASE_TTL, TICK, Controller
from lifsea_tui.lab import targets

log = logging.getLogger("lifsea.fleetd")
USER = "lifsea-fleetd"


SERVER_EXTRA = "FleetLock needs the controller's server packages: pip install 'lifsea-tui[fleetd]'"


def fleetlock_server(store: Store, listen: str, slots: int) -> Any:
    """The FleetLock server, run inside the controller's loop: the controller, not uvicorn, handles
    SIGTERM. Its packages are imported here, so a controller without FleetLock needs none of them."""
    try:
        import uvicorn

        from lifsea_tui.fleetd import fleetlock
    except ModuleNotFoundError as error:
        raise SystemExit(f"lifsea-fleetd: {SERVER_EXTRA} (missing: {error.name})") from None

    class QuietServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    host, _, port = listen.rpartition(":")
    config = uvicorn.Config(fleetlock.app(store, {}, slots), host=host, port=int(port), log_level="warning")
    return QuietServer(config)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="lifsea-fleetd",
        description="The fleet controller: drives rollouts through the node API, keeps its state in etcd, "
        "serves FleetLock on the same reboot slots. Several may run; one leads.",
    )
    top.add_argument("--version", action="version", version=f"lifsea-fleetd {__version__}")
    where = top.add_argument_group("nodes and store (default: the running lab's)")
    where.add_argument("--lab-dir", type=Path, help="the lab whose nodes, etcd and controller token to use")
    where.add_argument("--inventory", type=Path, help="the nodes (TOML, as the console's), with operator tokens")
    where.add_argument("--etcd", help="etcd members, host:port[,host:port...]")
    where.add_argument("--etcd-ca", type=Path, help="CA of the members' certificates")
    where.add_argument("--etcd-cert", type=Path, help="this controller's client certificate")
    where.add_argument("--etcd-key", type=Path, help="its key")
    where.add_argument("--etcd-server-name", help="the name in the members' certificates, if not the address")
    top.add_argument("--id", help="this controller's name (default the host's); a random suffix makes it unique")
    top.add_argument("--lease-ttl", type=int, default=LEASE_TTL, help="seconds; a successor leads within it")
    top.add_argument("--tick", type=float, default=TICK, help="seconds between looks at etcd")
    top.add_argument("--fleetlock", metavar="HOST:PORT", help="serve FleetLock here (plain HTTP: loopback only)")
    top.add_argument("--fleetlock-slots", type=int, default=1, help="slots per FleetLock group, default 1")
    top.add_argument(
        "--proven-writers",
        action="store_true",
        help="act only on rollout intents whose writer etcd's authentication proves (needs etcd auth on, "
        "each user allowed to write only its own writers/USER/ keys; see README)",
    )
    top.add_argument(
        "--trail",
        type=Path,
        metavar="DIR",
        help="collect every node's audit log and recordings off the node into DIR (state in etcd under audit/)",
    )
    top.add_argument(
        "--trail-inventory",
        type=Path,
        help="the nodes with tokens that may read recordings (auditor) for --trail (default: the lab's auditor "
        "tokens, else --inventory's)",
    )
    top.add_argument(
        "--trail-keep",
        type=days,
        metavar="DAYS",
        help="let go of collected records and recordings older than this (default: keep everything; a flagged "
        "node's copy is always kept)",
    )
    top.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return top


def days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days above 0")
    return value


def resolve(
    args: argparse.Namespace,
) -> tuple[EtcdTarget, dict[str, NodeTarget], dict[str, NodeTarget] | None]:
    """The store, the nodes (with the controller's operator tokens), and the nodes with the tokens the
    audit collector reads with (auditor: recordings too), when they differ."""
    lab = None if (args.inventory and args.etcd) else targets.lab_status(args.lab_dir)
    if args.inventory:
        nodes = inventory.from_file(args.inventory)
    else:
        assert lab is not None
        nodes = targets.from_lab("controller", status=lab)
    if args.etcd:
        target = EtcdTarget.from_flags(args.etcd, args.etcd_ca, args.etcd_cert, args.etcd_key, args.etcd_server_name)
    else:
        assert lab is not None
        target = EtcdTarget.from_json(lab["etcd"], USER)
    readers = None
    if args.trail_inventory:
        readers = inventory.from_file(args.trail_inventory)
    elif lab is not None and not args.inventory:
        readers = targets.from_lab("auditor", status=lab)
    return target, {node.name: node for node in nodes}, {node.name: node for node in readers} if readers else None


async def serve(args: argparse.Namespace) -> None:
    try:
        target, nodes, readers = resolve(args)
    except inventory.InventoryError as error:
        raise SystemExit(f"lifsea-fleetd: {error}") from None
    store = Store(target)
    controller = Controller(
        store,
        nodes,
        ident=args.id,
        lease_ttl=args.lease_ttl,
        tick=args.tick,
        proven_writers=args.proven_writers,
        trail=DirectoryTrail(args.trail) if args.trail else None,
        trail_nodes=readers,
        trail_keep=args.trail_keep * 86400 if args.trail_keep is not None else None,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = fleetlock_server(store, args.fleetlock, args.fleetlock_slots) if args.fleetlock else None
    tasks = [asyncio.create_task(controller.run(stop))]
    if server is not None:
        tasks.append(asyncio.create_task(server.serve()))
    log.info("%s: %d nodes, etcd %s", controller.ident, len(nodes), target.describe())
    await stop.wait()
    if server is not None:
        server.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)
    await store.aclose()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per node request would drown the decisions
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
