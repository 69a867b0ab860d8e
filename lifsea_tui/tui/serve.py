"""`lifsea-tui serve`: the console in a browser, through textual-serve.

Each browser tab runs a console process of its own, with the flags `serve` was given, driven over a
websocket. Whoever reaches that websocket drives a console holding your tokens, so:

- it listens on loopback unless told otherwise, and when told, says which addresses can reach it;
- every page and websocket needs the key `serve` prints (in the URL once, then a SameSite=Strict,
  HttpOnly cookie), compared in constant time: another user of a shared jump host who can reach
  loopback still cannot drive it;
- a websocket whose Origin is not this server's is refused, so a web page elsewhere cannot drive it
  through your browser.

textual-serve speaks plain HTTP: off loopback, put it behind a TLS proxy (the key would otherwise cross
the network in the clear), and the warning says so.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import logging
import secrets
import shlex
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

COOKIE = "lifsea_serve_key"
PUBLIC = ("/static/",)  # the page's own scripts and styles: nothing of the console


def console_command(args: argparse.Namespace) -> str:
    """The console, with the flags given to `serve`, as textual-serve runs it (through a shell)."""
    argv = [sys.executable, "-m", "lifsea_tui.tui.cli"]
    for flag, value in (
        ("--inventory", args.inventory),
        ("--context", args.context),
        ("--lab-dir", args.lab_dir),
        ("--lab-role", args.lab_role),
        ("--refresh", args.refresh),
        ("--events-limit", args.events_limit),
        ("--etcd", args.etcd),
        ("--etcd-ca", args.etcd_ca),
        ("--etcd-cert", args.etcd_cert),
        ("--etcd-key", args.etcd_key),
        ("--etcd-server-name", args.etcd_server_name),
    ):
        if value is not None:
            argv += [flag, str(value)]
    if args.read_only is not None:
        argv.append("--read-only" if args.read_only else "--no-read-only")
    return shlex.join(argv)


def reachable_from(host: str) -> str | None:
    """Who can reach `host`, when that is more than this machine's own users; None on loopback."""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        if host == "localhost":
            return None
    if host in ("0.0.0.0", "::"):
        try:
            found = {str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None)}
        except OSError:
            found = set()
        addresses = ", ".join(sorted(a for a in found if not ipaddress.ip_address(a).is_loopback)) or "all of them"
        return f"every network this machine is on ({addresses})"
    return f"everyone who can reach {host}"


def guard(key: str, public_url: str) -> Any:
    """An aiohttp middleware: the key (query or cookie) on everything but the static files, and the
    websocket only from this server's own pages."""
    from aiohttp import web

    @web.middleware
    async def check(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        if request.path.startswith(PUBLIC):
            return await handler(request)
        given = request.query.get("key") or request.cookies.get(COOKIE) or ""
        if not hmac.compare_digest(given.encode(), key.encode()):
            return web.Response(status=403, text="lifsea-tui serve: open the address it printed, with its key\n")
        origin = request.headers.get("Origin")
        if request.path == "/ws" and origin is not None and origin.rstrip("/") != public_url.rstrip("/"):
            return web.Response(status=403, text=f"lifsea-tui serve: a page from {origin[:100]} may not drive it\n")
        response = await handler(request)
        if request.query.get("key"):
            response.set_cookie(COOKIE, key, httponly=True, samesite="Strict", path="/")
        return response

    return check


def main(args: argparse.Namespace) -> int:
    """`lifsea-tui serve` (the arguments: lifsea_tui.tui.cli)."""
    try:
        from textual_serve.server import Server
    except ImportError:
        print("lifsea-tui serve needs textual-serve: pip install 'lifsea-tui[serve]'", file=sys.stderr)
        return 2
    key = secrets.token_urlsafe(24)
    public_url = args.public_url or f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    if "://" not in public_url or public_url.rstrip("/").count("/") > 2:
        print(f"lifsea-tui serve: --public-url must be scheme://host[:port], not {public_url!r}", file=sys.stderr)
        return 2
    public_url = public_url.rstrip("/")
    who = reachable_from(args.host)
    if who is not None:
        print(
            f"lifsea-tui serve: listening on {args.host}:{args.port}: {who} can open this console, with your "
            "tokens, given its key. It speaks plain HTTP: put it behind a TLS proxy (--public-url https://...).",
            file=sys.stderr,
        )

    class ConsoleServer(Server):
        def initialize_logging(self) -> None:
            logging.basicConfig(level="WARNING", format="lifsea-tui serve: %(message)s")

        async def _make_app(self) -> Any:
            app = await super()._make_app()
            app.middlewares.append(guard(key, public_url))
            return app

        async def on_startup(self, app: Any) -> None:
            print(f"lifsea-tui serve: open {public_url}/?key={key}", flush=True)

    server = ConsoleServer(
        console_command(args), host=args.host, port=args.port, title="lifsea-tui", public_url=public_url
    )
    server.serve()
    return 0
