"""lifsea-agent: serve node API v1 for one node, verify an audit log offline, hash a token."""

from __future__ import annotations

import argparse
import logging
import re
import secrets
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lifsea_tui import __version__
from lifsea_tui.agent.audit import LOG_NAME, Head, verify
from lifsea_tui.agent.config import ConfigError, hash_token, load, token_entry
from lifsea_tui.api import Role

SERVE_FLAGS = {
    # flag: (config key, help)
    "--node-name": ("node_name", "the node's name, as the console shows it and the audit log records it"),
    "--host-root": (
        "host_root",
        "the node's root filesystem as the agent sees it (production: /host; lab: the "
        "booted deployment, through /proc/LEADER/root)",
    ),
    "--sysroot": ("sysroot", "the node's ostree sysroot (production: /host/sysroot)"),
    "--osname": ("osname", "the ostree stateroot (os) name, default lifsea"),
    "--system-bus": (
        "system_bus",
        "path of the node's D-Bus system bus socket (production: /host/run/dbus/system_bus_socket)",
    ),
    "--audit-dir": ("audit_dir", "directory for the audit log (keep it on the node's /var, which survives upgrades)"),
    "--listen": ("listen_host", "address to listen on, default 127.0.0.1"),
    "--port": ("listen_port", "TCP port, default 7443"),
    "--tls-cert": (
        "tls_cert",
        "PEM certificate served to clients (with --tls-key); without it the agent serves plain HTTP, for loopback only",
    ),
    "--tls-key": ("tls_key", "PEM private key of --tls-cert"),
    "--tls-client-ca": (
        "tls_client_ca",
        "CA bundle for client certificates: every client must then present one it signed (mTLS); a "
        "token, when sent, still names the caller, and [[clients]] map certificates to a name and role",
    ),
}


def anchor(text: str) -> Head:
    """SEQ:HASH, the record a slice of a log follows."""
    found = re.fullmatch(r"(\d+):([0-9a-f]{64})", text.strip())
    if found is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not SEQ:HASH (a record's seq and its 64-digit SHA-256)")
    return Head(int(found.group(1)), found.group(2))


def lifetime(text: str) -> timedelta:
    found = re.fullmatch(r"(\d+)([hd])", text.strip())
    if found is None or int(found.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a span such as 12h or 30d")
    return timedelta(hours=int(found.group(1)) * (24 if found.group(2) == "d" else 1))


def new_token(name: str, role: Role, expires: timedelta | None = None) -> str:
    """A new token on the first line, then its config entry (the token itself is not in it, only its hash)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}", name):
        raise SystemExit(f"lifsea-agent: {name!r} is not a name (letters, digits, _ . @ -)")
    token = secrets.token_urlsafe(32)
    entry = token_entry(name, role, token, datetime.now(UTC) + expires if expires is not None else None)
    return f"{token}\n\n# for the agent's config file (the token above is not stored anywhere):\n{entry}"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="lifsea-agent",
        description="The node agent of lifsea-tui: node API v1 over HTTPS for one node of an ostree-based fleet.",
    )
    top.add_argument("--version", action="version", version=f"lifsea-agent {__version__}")
    commands = top.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve the node API",
        description="Serve node API v1. Settings come from --config (TOML) and the flags "
        "below, which take precedence. See README.md for the config file.",
    )
    serve.add_argument("--config", type=Path, help="TOML config file (paths, listen, tls, audit, tokens)")
    for flag, (_, text) in SERVE_FLAGS.items():
        serve.add_argument(flag, help=text, type=int if flag == "--port" else str)
    serve.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    audit = commands.add_parser("verify-audit", help="verify an audit log offline; exit 1 naming the first bad record")
    audit.add_argument("path", type=Path, help=f"audit directory (holding {LOG_NAME}) or the log file itself")
    audit.add_argument(
        "--recordings", type=Path, help="the recordings directory: hash every sealed recording again and compare"
    )
    audit.add_argument(
        "--after",
        type=anchor,
        metavar="SEQ:HASH",
        help="the file is a slice of a log (an export of a time range): it starts after record SEQ, whose hash is HASH",
    )
    audit.add_argument("--json", action="store_true", help="print the verdict as JSON (the fields of /v1/audit/verify)")
    token = commands.add_parser("token", help="make a token for the config file")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    made = token_commands.add_parser(
        "new",
        help="print a new token (once: it is stored nowhere) and its [[tokens]] entry for the config file; "
        "then `kill -HUP` the agent (or restart it)",
    )
    made.add_argument("--name", required=True, help="who holds it (the audit log's actor)")
    made.add_argument("--role", required=True, choices=[role.value for role in Role])
    made.add_argument("--expires", type=lifetime, metavar="SPAN", help="refused after this long: 12h, 30d")
    commands.add_parser("hash-token", help="read a token on standard input, print the sha256 for the config file")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "verify-audit":
        path = args.path / LOG_NAME if args.path.is_dir() else args.path
        if not path.exists():
            print(f"lifsea-agent: no audit log at {path}", file=sys.stderr)
            return 2
        result = verify(path, recordings=args.recordings, after=args.after)
        if args.json:
            print(result.model_dump_json(indent=2))
            return 0 if result.ok else 1
        checked = f", {result.recordings_checked} sealed recordings match" if args.recordings else ""
        if result.ok:
            print(f"ok: {result.records} records, head seq {result.head_seq} hash {result.head_hash}{checked}")
            return 0
        if not result.bad_recordings or result.first_bad_seq is not None:
            print(f"BAD: {result.problem} (first bad record: {result.first_bad_seq}; {result.records} good before it)")
        for bad in result.bad_recordings:
            print(f"BAD: recording {bad.id} (sealed in record {bad.audit_seq}): {bad.problem}")
        return 1
    if args.command == "token":
        print(new_token(args.name, Role(args.role), args.expires))
        return 0
    if args.command == "hash-token":
        token = sys.stdin.readline().strip()
        if not token:
            print("lifsea-agent: no token on standard input", file=sys.stderr)
            return 2
        print(hash_token(token))
        return 0
    return serve(args)


def serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from lifsea_tui.agent.app import create_app
        from lifsea_tui.agent.serving import uvicorn_config
    except ModuleNotFoundError as error:
        extra = "pip install 'lifsea-tui[agent]'"
        print(f"lifsea-agent: serving needs the agent's packages: {extra} (missing: {error.name})", file=sys.stderr)
        return 2

    overrides = {key: getattr(args, flag[2:].replace("-", "_")) for flag, (key, _) in SERVE_FLAGS.items()}
    try:
        config = load(args.config, overrides)
    except ConfigError as error:
        print(f"lifsea-agent: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = create_app(config, reload=(lambda: load(args.config, overrides)) if args.config else None)
    uvicorn.Server(uvicorn_config(app, config, log_level=args.log_level)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
