"""lifsea-tui: the ops console. Nodes come from --inventory, the user's config file, or the running lab."""

from __future__ import annotations

import argparse
import gc
import resource
import sys

from lifsea_tui import __version__
from lifsea_tui.api import OpsAccess
from lifsea_tui.client import inventory
from lifsea_tui.client.fleet import Fleet
from lifsea_tui.client.heads import AuditHeads
from lifsea_tui.tui import locations
from lifsea_tui.tui.sources import add_inventory_options, add_store_options, context_label, sources, targets_from


def raise_open_file_limit() -> None:
    """A keep-alive connection per node: a large fleet needs more descriptors than the usual 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def ttl(text: str) -> int:
    """Seconds, or a number with s, m or h."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if text and text[-1] in units:
            return int(text[:-1]) * units[text[-1]]
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 900, 15m or 1h") from None


def shell_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lifsea-tui shell",
        description="Open an audited, recorded break-glass shell in a temporary ops container on NODE. "
        "Exits with the remote shell's exit code (255 if the session could not be used). "
        "Type ~. at the start of a line to end the session.",
    )
    parser.add_argument("node", help="the node's name in the inventory")
    parser.add_argument("--reason", required=True, help="why (goes into the node's audit log)")
    parser.add_argument("--ticket", help="incident or change ticket")
    parser.add_argument("--ttl", type=ttl, help="how long the session may live: 900, 15m, 1h (capped by the node)")
    parser.add_argument("--session", help="re-attach to this open session instead of starting one")
    parser.add_argument(
        "--access",
        choices=[level.value for level in OpsAccess],
        default=OpsAccess.read_only.value,
        help="read-only (default: nothing the shell does can change the node), debug (strace, kill, ip: can "
        "change the node's processes and network) or writable (/etc and /var writable at /host); the node's "
        "config says which it allows",
    )
    add_inventory_options(parser)
    args = parser.parse_args(argv)
    try:
        targets = {target.name: target for target in targets_from(args)}
    except inventory.InventoryError as error:
        print(f"lifsea-tui shell: {error}", file=sys.stderr)
        return 2
    if args.node not in targets:
        print(
            f"lifsea-tui shell: no node {args.node!r} (known: {', '.join(sorted(targets)) or 'none'})", file=sys.stderr
        )
        return 2
    import asyncio

    from lifsea_tui.tui import rawshell

    options = rawshell.Options(
        reason=args.reason,
        ticket=args.ticket,
        ttl_seconds=args.ttl,
        session=args.session,
        access=OpsAccess(args.access),
    )
    try:
        import uvloop  # every keystroke crosses this loop twice: the faster loop halves its share
    except ImportError:
        return asyncio.run(rawshell.run(targets[args.node], options))
    return uvloop.run(rawshell.run(targets[args.node], options))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["shell"]:
        return shell_main(argv[1:])
    if argv[:1] == ["rollout"]:
        from lifsea_tui.tui.rollout_cli import main as rollout_main

        return rollout_main(argv[1:])
    if argv[:1] == ["audit"]:
        from lifsea_tui.tui.audit_cli import main as audit_main

        return audit_main(argv[1:])
    if argv[:1] == ["play"]:
        from lifsea_tui.tui.player import play_main

        return play_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="lifsea-tui",
        description="Ops console for fleets of ostree-based, container-optimized Linux nodes. "
        "Also: `lifsea-tui shell NODE --reason TEXT` (break-glass shell in this terminal), "
        "`lifsea-tui play FILE` or `play NODE RECORDING_ID` (play a session recording), "
        "`lifsea-tui rollout start|status|list|pause|resume|abort|rollback` (fleet rollouts), "
        "`lifsea-tui audit status|log|export` (the audit trail collected off the nodes).",
    )
    parser.add_argument("--version", action="version", version=f"lifsea-tui {__version__}")
    parser.add_argument("--read-only", action="store_true", help="hide every action that changes a node")
    parser.add_argument("--refresh", type=float, default=5.0, help="seconds between fleet refreshes (default 5)")
    parser.add_argument(
        "--events-limit",
        type=int,
        default=200,
        help="follow every node's event stream up to this many nodes; larger fleets are polled only (default 200)",
    )
    add_inventory_options(parser)
    add_store_options(parser)
    args = parser.parse_args(argv)
    try:
        targets, store = sources(args)
    except inventory.InventoryError as error:
        print(f"lifsea-tui: {error}", file=sys.stderr)
        return 2
    from lifsea_tui.tui.app import LifseaApp

    locations.start_console_log()  # what fails behind the screen goes there, never onto it
    raise_open_file_limit()
    # Everything built so far lives as long as the console: keep the collector from walking it again, and
    # collect less often. Measured on a 1,000-node fleet: key-to-screen p99 348 ms before, 122 ms after.
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    LifseaApp(
        Fleet(targets, heads=AuditHeads(locations.audit_heads_file())),
        read_only=args.read_only,
        refresh_interval=args.refresh,
        events_limit=args.events_limit,
        rollout_store=store,
        context=context_label(args),
    ).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
