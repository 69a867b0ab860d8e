"""lifsea-tui: the ops console, and its commands for scripts, in one argparse tree.

The tree is built from this module alone (argparse and a few paths): each command's code is imported only
when that command runs, so `lifsea-tui shell` or `lifsea-tui get` does not load the console's screens, and
shell completion (`lifsea-tui completion bash`) sees every command and option.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lifsea_tui import __version__
from lifsea_tui.tui import locations

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STORE = 0, 1, 2, 3
EXIT_CODES = """\
exit codes (every command):
  0  done; for get, every node answered
  1  refused or found wanting: a node refused the request, a recording failed its seal check, play
     --findings found something, audit status flagged a node; for get, some node did not answer
     (the nodes that did are still printed)
  2  bad usage: an unknown option, node or context, an unreadable inventory
  3  the fleet store (etcd) did not answer (rollout, audit)
  shell exits with the remote shell's exit code, 255 when the session could not be used (as ssh does)
"""
ACCESS_LEVELS = ("read-only", "debug", "writable")  # lifsea_tui.api.OpsAccess, not imported for a parser
ROLES = ("reader", "operator", "admin", "auditor")
SPAN = re.compile(r"(\d+)([smhd])")
# What shell completion offers for a path argument (shtab's FILE, spelled out so that building the parser
# does not need shtab; only `completion` does).
FILE = {"bash": "_shtab_compgen_files", "zsh": "_files", "tcsh": "f"}
DIRECTORY = {"bash": "_shtab_compgen_dirs", "zsh": "_files -/", "tcsh": "d"}

Handler = Callable[[argparse.Namespace], int]


def ttl(text: str) -> int:
    """Seconds, or a number with s, m or h."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if text and text[-1] in units:
            return int(text[:-1]) * units[text[-1]]
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 900, 15m or 1h") from None


def moment(text: str) -> datetime:
    """An ISO 8601 time, or a span before now (30s, 15m, 2h, 7d)."""
    if found := SPAN.fullmatch(text.strip()):
        seconds = int(found.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[found.group(2)]
        return datetime.now(UTC) - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time (2026-12-02T18:00Z) or a span (15m, 2h)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _path(parser: argparse.ArgumentParser, *flags: str, directory: bool = False, **kwargs: Any) -> None:
    action = parser.add_argument(*flags, type=Path, **kwargs)
    action.complete = DIRECTORY if directory else FILE  # type: ignore[attr-defined]


def add_inventory_options(parser: argparse.ArgumentParser) -> None:
    _path(
        parser,
        "--inventory",
        help="TOML file of nodes ([[nodes]] name, url, ca_file, token_file or token_env; [defaults], "
        f"[contexts.NAME]); default: {locations.config_file()}, else the running lab",
    )
    parser.add_argument(
        "--context",
        help="which of the inventory's [contexts.NAME] (default: $LIFSEA_CONTEXT, else its current_context)",
    )
    _path(parser, "--lab-dir", directory=True, help="the lab to use when no inventory is given")
    parser.add_argument(
        "--lab-role",
        default="admin",
        choices=ROLES,
        help="which of the lab's tokens to use (default admin, so the lab shows every feature)",
    )


def add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--etcd", help="the fleet store's etcd members, host:port[,...] (default: the lab's)")
    _path(parser, "--etcd-ca", help="CA of the members' certificates")
    _path(parser, "--etcd-cert", help="your client certificate for etcd")
    _path(parser, "--etcd-key", help="its key")
    parser.add_argument("--etcd-server-name", help="the name in the members' certificates, if not the address")


def lazy(module: str, function: str = "main") -> Handler:
    """A command's handler, imported when it runs."""

    def run(args: argparse.Namespace) -> int:
        handler: Handler = getattr(importlib.import_module(module), function)
        return handler(args)

    return run


def _console_options(parser: argparse.ArgumentParser) -> None:
    # No defaults here: a flag left out takes config.toml's [console] setting, else the built-in default.
    parser.add_argument(
        "--read-only",
        action=argparse.BooleanOptionalAction,
        help="hide every action that changes a node ([console] read_only; default off)",
    )
    parser.add_argument("--refresh", type=float, help="seconds between fleet refreshes ([console] refresh; default 5)")
    parser.add_argument(
        "--events-limit",
        type=int,
        help="follow every node's event stream up to this many nodes; larger fleets are polled only "
        "([console] events_limit; default 200)",
    )
    add_inventory_options(parser)
    add_store_options(parser)


def _shell(commands: Any) -> None:
    shell = commands.add_parser(
        "shell",
        help="a break-glass shell on NODE in this terminal",
        description="Open an audited, recorded break-glass shell in a temporary ops container on NODE. "
        "Exits with the remote shell's exit code (255 if the session could not be used). "
        "Type ~. at the start of a line to end the session.",
    )
    shell.add_argument("node", help="the node's name in the inventory")
    shell.add_argument("--reason", required=True, help="why (goes into the node's audit log)")
    shell.add_argument("--ticket", help="incident or change ticket")
    shell.add_argument("--ttl", type=ttl, help="how long the session may live: 900, 15m, 1h (capped by the node)")
    shell.add_argument("--session", help="re-attach to this open session instead of starting one")
    shell.add_argument(
        "--access",
        choices=ACCESS_LEVELS,
        default="read-only",
        help="read-only (default: nothing the shell does can change the node), debug (strace, kill, ip: can "
        "change the node's processes and network) or writable (/etc and /var writable at /host); the node's "
        "config says which it allows",
    )
    add_inventory_options(shell)
    shell.set_defaults(run=lazy("lifsea_tui.tui.rawshell"))


def _get(commands: Any) -> None:
    get = commands.add_parser(
        "get",
        help="nodes, deployments, services or audit records, for scripts",
        description="Ask every node (or NODE) at once and print what they answered. A node that does not answer "
        "is said on stderr, the others are still printed, and the exit code is 1.",
        epilog="json and yaml print the node API's own objects, each with the node it came from: the same "
        "fields as /v1/summary, /v1/deployments, /v1/services and /v1/audit.",
    )
    get.add_argument("kind", choices=("nodes", "deployments", "services", "audit"), help="what to list")
    get.add_argument("node", nargs="*", help="only these nodes (default: every node)")
    get.add_argument("-o", "--output", choices=("table", "wide", "json", "yaml"), default="table")
    get.add_argument("-l", "--selector", help="only nodes with these labels: zone=a,pool!=edge,gpu")
    get.add_argument("--state", help="services: only units in this state (failed, active, ...)")
    get.add_argument("--limit", type=int, default=20, help="audit: the newest N records of each node (default 20)")
    add_inventory_options(get)
    get.set_defaults(run=lazy("lifsea_tui.tui.get_cli"))


def _play(commands: Any) -> None:
    play = commands.add_parser(
        "play",
        help="play a session recording, from a file or from a node",
        description="Play an ops session recording (asciicast v2 or v3) safely: a file, or NODE RECORDING_ID "
        "(from the node while it matches the seal in its audit log, else from the copy the fleet controller "
        "collected, checked against the seal the copy holds). A recording that matches no seal is refused.",
    )
    play.add_argument("source", help="the .cast file, or the node's name").complete = FILE
    play.add_argument("recording", nargs="?", help="with a node: the recording's id (the session's)")
    play.add_argument("--findings", action="store_true", help="print what the recording does and exit (1: found)")
    play.add_argument("--json", action="store_true", help="with --findings: one JSON object for scripts")
    _path(play, "--trail", directory=True, help="the controller's trail directory (default: the lab's)")
    add_inventory_options(play)
    play.set_defaults(run=lazy("lifsea_tui.tui.player", "play_main"))


def _rollout(commands: Any) -> None:
    top = commands.add_parser(
        "rollout",
        help="rolling upgrades and rollbacks of the fleet",
        description="Rolling upgrades and rollbacks of the fleet, run by lifsea-fleetd from etcd.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    add_inventory_options(common)
    add_store_options(common)
    actions = top.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = actions.add_parser("start", parents=[common], help="start a rollout; prints its id")
    start.add_argument("--version", required=True, help="the target version")
    start.add_argument("--max-unavailable", default="1", help="nodes moving at once: a count or a percentage")
    start.add_argument("--canary", type=int, default=1, help="nodes to move first, alone (default 1)")
    start.add_argument("--soak", type=float, default=0.0, help="seconds of health after each batch")
    start.add_argument("--node-deadline", type=float, default=900.0, help="seconds a node may take (default 900)")
    start.add_argument("--error-budget", type=int, default=0, help="failed nodes tolerated (default 0)")
    start.add_argument("--on-failure", choices=["pause", "rollback"], default="pause")
    start.add_argument("--nodes", help="comma-separated node names (default: every node)")
    start.add_argument("--selector", help="only nodes with these labels: zone=a,pool!=edge,gpu")
    start.add_argument(
        "--max-unavailable-per",
        metavar="LABEL=N|P%",
        help="also at most N (or P%%) of each value of LABEL at once, e.g. zone=1; batches take the values in turn",
    )
    start.add_argument(
        "--window",
        action="append",
        metavar="'DAYS HH:MM LENGTH [ZONE]'",
        help="when nodes may start, e.g. 'mon-fri 02:00 4h Europe/Berlin'; repeat for more (default: any time)",
    )
    start.add_argument("--pre-hook", help="command before a node is touched, {node} is its name")
    start.add_argument("--post-hook", help="command after a node passed its gates")
    start.add_argument("--hook-timeout", type=float, default=300.0, help="seconds a hook may run (default 300)")
    start.add_argument("--probe", help="URL template ({node}) that must answer 2xx after a reboot")
    start.add_argument(
        "--runbook-gate",
        metavar="all|ID,...",
        help="runbooks whose first checks must stay clean after each reboot (unless they fired before)",
    )
    start.add_argument("--id", help="the rollout's id (default r-DATE-TIME-XXXX)")
    start.add_argument("--reason", required=True, help="why (goes into the log and each node's audit log)")
    actions.add_parser("list", parents=[common], help="every rollout")
    status = actions.add_parser("status", parents=[common], help="one rollout, node by node")
    status.add_argument("id")
    for action in ("pause", "resume", "abort", "rollback"):
        steer = actions.add_parser(action, parents=[common], help=f"ask the controller to {action}")
        steer.add_argument("id")
        steer.add_argument("--reason", required=True)
    top.set_defaults(run=lazy("lifsea_tui.tui.rollout_cli"))


def _audit(commands: Any) -> None:
    top = commands.add_parser(
        "audit",
        help="the audit trail collected off the nodes",
        description="The audit trail the fleet controller collected off the nodes. T is an ISO 8601 time "
        "(2026-12-02T18:00Z) or a span before now (30s, 15m, 2h, 7d).",
    )
    common = argparse.ArgumentParser(add_help=False)
    add_inventory_options(common)
    add_store_options(common)
    ranged = argparse.ArgumentParser(add_help=False)
    ranged.add_argument("--since", type=moment, help="from this time: ISO 8601, or a span before now (15m, 2h, 7d)")
    ranged.add_argument("--until", type=moment, help="before this time")
    actions = top.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser(
        "status",
        parents=[common],
        help="each node's collection, and any node flagged (exit 1 when one is)",
        description="Each node: its head, what was collected, whether its log still holds it, and the first "
        "record that differs if not.",
    )
    status.add_argument("--json", action="store_true")
    log = actions.add_parser(
        "log",
        parents=[common, ranged],
        help="collected records, fleet-wide, filtered",
        description="Records, fleet-wide, oldest first: the recent ones etcd holds, or with --trail DIR the "
        "controller's whole copy; -f keeps printing them as they are collected.",
    )
    log.add_argument("--node", action="append", help="only this node (again for more)")
    log.add_argument("--actor", help="only this actor's records")
    log.add_argument("--action", dest="action_prefix", help="only actions that start with this (ops.session)")
    log.add_argument("-f", "--follow", action="store_true", help="go on printing records as they are collected")
    log.add_argument("--json", action="store_true", help="JSON lines: each record with its node")
    _path(log, "--trail", directory=True, help="read the controller's whole trail instead of etcd's recent records")
    export = actions.add_parser(
        "export",
        parents=[common, ranged],
        help="a node's collected records, as JSON lines (exit 1 when none matched)",
        description="The collected records as the node stored them; verify them with `lifsea-agent verify-audit "
        "NODE.jsonl` (a time range: with the --after SEQ:HASH it prints).",
    )
    export.add_argument("node")
    _path(export, "--trail", directory=True, help="the controller's trail directory (default: the lab's)")
    top.set_defaults(run=lazy("lifsea_tui.tui.audit_cli"))


def _serve(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="the console in a browser (textual-serve), on loopback unless told",
        description="Serve the console to a browser: each tab runs a console of its own with these options. "
        "It prints the address to open, with a key every page and websocket needs. On loopback unless --host "
        "says otherwise, and then it says who can reach it; plain HTTP, so off loopback put a TLS proxy in front.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--public-url", help="the address browsers use, when not http://HOST:PORT (a TLS proxy's)")
    _console_options(serve)
    serve.set_defaults(run=lazy("lifsea_tui.tui.serve"))


def _completion(commands: Any) -> None:
    completion = commands.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print the completion script for SHELL, e.g. `lifsea-tui completion bash > "
        "/etc/bash_completion.d/lifsea-tui`, or `source <(lifsea-tui completion bash)` in ~/.bashrc.",
    )
    completion.add_argument("shell", choices=("bash", "zsh", "tcsh"))
    completion.set_defaults(run=print_completion)


def print_completion(args: argparse.Namespace) -> int:
    import shtab

    print(shtab.complete(build_parser(), shell=args.shell))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lifsea-tui",
        description="Ops console for fleets of ostree-based, container-optimized Linux nodes. With no command "
        "it opens the console on the nodes of --inventory, your config file, or the running lab.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lifsea-tui {__version__}")
    _console_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_shell, _get, _play, _rollout, _audit, _serve, _completion):
        add(commands)
    parser.set_defaults(run=lazy("lifsea_tui.tui.app", "console_main"))
    return parser


def main(argv: list[str] | None = None) -> int:
    # httpx imports its own command line (click, rich, pygments: a sixth of `shell`'s start) whenever
    # those are installed; nothing here runs it, so it is marked as absent and httpx goes without.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    run: Handler = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
