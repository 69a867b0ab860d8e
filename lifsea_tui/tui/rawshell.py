"""`lifsea-tui shell`: the real terminal, raw, bridged to an ops session's websocket.

Full fidelity (whatever the local terminal can show, the remote shell can draw) and scripting: with a
pipe on stdin the input is sent as it comes and ends with an end-of-file, and the command exits with
the remote shell's exit code (255 when the session could not be used, as ssh does). Interactively,
`~.` at the start of a line ends the session, as in ssh.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import termios
import tty
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from lifsea_tui.api import ACCESS_TEXT, EndRequest, OpsAccess, OpsSessionRequest
from lifsea_tui.client.netloop import new_event_loop
from lifsea_tui.client.node import NodeClient, NodeError, NodeTarget
from lifsea_tui.client.ops import Closed, Exit, Expiring, Hello, OpsShell, Output, Reconnecting
from lifsea_tui.tui.plain import visible

FAILED = 255
ESCAPE = b"~."


@dataclass
class Options:
    reason: str
    ticket: str | None = None
    ttl_seconds: int | None = None
    session: str | None = None  # attach to this session instead of starting one
    access: OpsAccess = OpsAccess.read_only


def _size(fd: int) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 80, 24
    return size.columns, size.lines


class EscapeWatcher:
    """Finds `~.` typed at the start of a line; everything else passes through unchanged."""

    def __init__(self) -> None:
        self.line_start = True
        self.tilde = False

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        out = bytearray()
        for byte in data:
            char = bytes([byte])
            if self.tilde:
                self.tilde = False
                if char == b".":
                    return bytes(out), True
                out += b"~"
            if self.line_start and char == b"~":
                self.tilde = True
                continue
            out += char
            self.line_start = char in (b"\r", b"\n")
        return bytes(out), False


def _note(text: str, interactive: bool) -> None:
    """A line of the console's own between the shell's output; what the node said in it made visible."""
    if interactive:
        os.write(sys.stderr.fileno(), f"\r\n[lifsea: {visible(text, keep_newlines=False)}]\r\n".encode())


async def run(target: NodeTarget, options: Options) -> int:
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    interactive = os.isatty(stdin)
    client = NodeClient(target)
    try:
        if options.session is None:
            session = await client.ops_start(
                OpsSessionRequest(
                    reason=options.reason, ticket=options.ticket, ttl_seconds=options.ttl_seconds, access=options.access
                )
            )
        else:
            session = await client.ops_session(options.session)
    except NodeError as error:
        print(visible(f"lifsea-tui shell: {target.name}: {error}"), file=sys.stderr)
        await client.aclose()
        return FAILED
    cols, rows = _size(stdout if os.isatty(stdout) else stdin)
    shell = OpsShell(target, session.id, cols=cols, rows=rows)
    _note(
        f"ops session {session.id} on {target.name}: RECORDED; {ACCESS_TEXT[session.access]}; "
        f"ends {session.expires_at:%H:%M:%S} UTC; "
        "`~.` at the start of a line ends it",
        interactive,
    )
    loop = asyncio.get_running_loop()
    saved = termios.tcgetattr(stdin) if interactive else None
    escape = EscapeWatcher()
    ended_by_user = asyncio.Event()
    pending: set[asyncio.Task[object]] = set()

    def later(coroutine: Coroutine[Any, Any, object]) -> None:
        task = asyncio.ensure_future(coroutine)
        pending.add(task)
        task.add_done_callback(pending.discard)

    def on_input() -> None:
        try:
            data = os.read(stdin, 65536)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(stdin)
            later(shell.eof())
            return
        if interactive:
            data, leave = escape.feed(data)
            if leave:
                ended_by_user.set()
        if data:
            later(shell.send(data))

    code = FAILED
    attached = False
    try:
        if saved is not None:
            tty.setraw(stdin)
            loop.add_signal_handler(signal.SIGWINCH, lambda: later(shell.resize(*_size(stdin))))

        async def watch_escape() -> None:
            await ended_by_user.wait()
            with contextlib.suppress(NodeError):
                await client.ops_end(
                    session.id, EndRequest(reason=f"ended with ~. from lifsea-tui shell ({options.reason})"[:480])
                )

        watcher = asyncio.create_task(watch_escape())
        async for event in shell.events():
            if isinstance(event, Output):
                await _write_all(stdout, event.data)
            elif isinstance(event, Hello):
                if not attached:
                    attached = True
                    try:
                        loop.add_reader(stdin, on_input)
                    except PermissionError:  # a regular file: epoll cannot watch it, and it never blocks
                        later(_send_file(shell, stdin))
                elif event.reattached:
                    _note("re-attached", interactive)
            elif isinstance(event, Expiring):
                _note(f"the session ends in {event.seconds_left} s (TTL)", interactive)
            elif isinstance(event, Reconnecting):
                _note(f"connection lost ({event.error}); re-attaching", interactive)
            elif isinstance(event, Exit):
                code = event.code if event.code is not None else FAILED
                if event.reason != "exited":
                    _note(f"session ended: {event.reason}", interactive)
                break
            elif isinstance(event, Closed):
                print("\r\n" + visible(f"lifsea-tui shell: {target.name}: {event.reason}"), file=sys.stderr)
                break
        watcher.cancel()
    finally:
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(stdin)
        # An event loop may leave the terminal non-blocking, which breaks the shell that runs next.
        for fd in (stdin, stdout):
            with contextlib.suppress(OSError):
                os.set_blocking(fd, True)
        if saved is not None:
            loop.remove_signal_handler(signal.SIGWINCH)
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        await shell.close()
        for task in pending:
            task.cancel()
        await client.aclose()
    return code


async def _send_file(shell: OpsShell, fd: int) -> None:
    while data := os.read(fd, 65536):
        await shell.send(data)
    await shell.eof()


async def _write_all(fd: int, data: bytes) -> None:
    """Write everything, waiting while the terminal is full (the loop may have made it non-blocking)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            loop = asyncio.get_running_loop()
            ready = loop.create_future()
            loop.add_writer(fd, _resolve, ready)
            try:
                await ready
            finally:
                loop.remove_writer(fd)


def _resolve(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


def main(args: argparse.Namespace) -> int:
    """`lifsea-tui shell NODE --reason TEXT`."""
    from lifsea_tui.client import inventory
    from lifsea_tui.tui.sources import targets_from

    try:
        targets = {target.name: target for target in targets_from(args)}
    except inventory.InventoryError as error:
        print(f"lifsea-tui shell: {error}", file=sys.stderr)
        return 2
    if args.node not in targets:
        known = ", ".join(sorted(targets)) or "none"
        print(visible(f"lifsea-tui shell: no node {args.node!r} (known: {known})"), file=sys.stderr)
        return 2
    options = Options(
        reason=args.reason,
        ticket=args.ticket,
        ttl_seconds=args.ttl,
        session=args.session,
        access=OpsAccess(args.access),
    )
    with asyncio.Runner(loop_factory=new_event_loop) as runner:  # each keystroke crosses it twice
        return runner.run(run(targets[args.node], options))
