"""The Shell screen: a break-glass shell on a node, in an embedded terminal, with a banner that never lies.

The session's websocket lives on the network loop. Output is handed to the UI thread in batches (one
hand-over scheduled at a time, however much arrives meanwhile), and when the UI falls behind by more
than OUTPUT_HIGH_WATER bytes the network side stops reading, so the node's terminal slows down instead
of the console's memory growing. Every key goes to the shell except ctrl+], which leaves (and ends the
session: nothing is left running behind a console that went away).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Static

from lifsea_tui.api import EndRequest, OpsAccess, OpsSession, OpsSessionRequest
from lifsea_tui.client.node import NodeClient, NodeError
from lifsea_tui.client.ops import Closed, Exit, Expiring, Hello, OpsShell, Output, Reconnecting, ShellEvent
from lifsea_tui.tui.keys import key_of
from lifsea_tui.tui.plain import plain
from lifsea_tui.tui.screens.base import ConsoleScreen, ShellClosed
from lifsea_tui.tui.terminal import TerminalView, key_bytes

LEAVE_KEY = "ctrl+right_square_bracket"


@dataclass(frozen=True)
class Resize:
    """The terminal's new size, queued in order with the keys."""

    cols: int
    rows: int


def access_label(access: OpsAccess) -> str:
    """What the banner says the shell may do: every level but read-only can change the node."""
    return "READ-ONLY" if access == OpsAccess.read_only else f"{access.value.upper()}: CAN CHANGE THE NODE"


# The emulator takes about 1 MB/s of scrolling output: a turn of the UI loop feeds it FEED_CHUNK (tens
# of milliseconds), and past OUTPUT_HIGH_WATER waiting bytes the network side stops reading.
FEED_CHUNK = 48 * 1024
OUTPUT_HIGH_WATER = 1024 * 1024


class ShellTerminal(TerminalView):
    """The terminal of a live shell: keys and pastes become bytes for the node."""

    BINDINGS = [
        # ctrl+q quits a Textual app from anywhere (a priority binding); in a shell it is the shell's key.
        Binding("ctrl+q", "forward('ctrl+q')", show=False, priority=True),
    ]

    def __init__(self, screen: ShellScreen, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shell_screen = screen

    def action_forward(self, key: str) -> None:
        data = key_bytes(key, None)
        if data:
            self.shell_screen.send(data)

    def on_key(self, event: events.Key) -> None:
        if event.key == LEAVE_KEY or self.shell_screen.exit is not None:
            return  # the screen's binding, or the session is over and esc goes back
        event.stop()
        event.prevent_default()
        data = key_bytes(event.key, event.character, app_cursor=self.app_cursor)
        if data:
            self.shell_screen.send(data)

    def on_paste(self, event: events.Paste) -> None:
        event.stop()
        data = event.text.replace("\r\n", "\r").replace("\n", "\r").encode()
        if self.bracketed_paste:
            data = b"\x1b[200~" + data + b"\x1b[201~"
        self.shell_screen.send(data)

    def on_resize(self, event: events.Resize) -> None:
        cols, rows = max(event.size.width, 2), max(event.size.height, 2)
        self.resize_screen(cols, rows)
        self.shell_screen.resized(cols, rows)


class ShellScreen(ConsoleScreen[ShellClosed]):
    BINDINGS = [
        Binding(LEAVE_KEY, "leave", "Leave (ends the session)", key_display="ctrl+]", priority=True, id="shell-leave"),
        Binding("escape", "back", "Back", show=False, id="shell-back"),
    ]
    DEFAULT_CSS = """
    ShellScreen {
        #banner { height: 1; padding: 0 1; background: $error; color: $text; text-style: bold; }
        #banner.reconnecting { background: $warning; }
        #banner.ended { background: $panel; color: $text-muted; }
        ShellTerminal { height: 1fr; width: 1fr; }
        #shell-body { height: 1fr; }
        #hints { width: 44; height: 1fr; padding: 0 1; border-left: solid $primary; }
        #hint { height: 1; padding: 0 1; background: $panel; color: $text-muted; }
    }
    """

    def __init__(
        self,
        node: str,
        client: NodeClient,
        session: OpsSession | OpsSessionRequest,
        *,
        hints: list[str] | None = None,
        hint_title: str = "",
    ) -> None:
        """Attach to `session`, or start one from `request` first: the screen opens at once either way,
        so keys typed while the node starts the container reach the shell (in order) and not the screen
        behind. `hints` are commands shown beside the shell (a runbook's suggestions), never typed."""
        super().__init__()
        self.hints = hints or []
        self.hint_title = hint_title
        self.node_name = node
        self.client = client
        self.request = session if isinstance(session, OpsSessionRequest) else None
        self.session: OpsSession | None = session if isinstance(session, OpsSession) else None
        self.state = "starting the ops container" if self.session is None else "connecting"
        self._leaving = False
        self._terminal_size = (80, 24)  # the terminal's, taken on the UI thread when the network side starts
        self.exit: Exit | Closed | None = None
        self.reconnects = 0  # connection drops survived
        self._shell: OpsShell | None = None
        self._outbox: asyncio.Queue[bytes | Resize] | None = None  # lives on the network loop
        self._early: list[bytes | Resize] = []  # keys typed (and sizes set) before the network side started
        self._early_lock = threading.Lock()
        self._pending = bytearray()
        self._pending_lock = threading.Lock()
        self._drain_scheduled = False
        self._drained: asyncio.Event | None = None  # on the network loop
        self._ui_loop: asyncio.AbstractEventLoop | None = None
        self._network_task: Any = None

    def compose(self) -> ComposeResult:
        yield Static("", id="banner")
        if self.hints:
            with Horizontal(id="shell-body"):
                yield ShellTerminal(self, id="terminal")
                text = plain(f"{self.hint_title}\n\n" if self.hint_title else "", "bold", multiline=True)
                text.append("Suggested by the runbook (not typed for you):\n\n", style="italic")
                for command in self.hints:
                    text.append_text(plain(f"$ {command}"))
                    text.append("\n\n")
                yield Static(text, id="hints")
        else:
            yield ShellTerminal(self, id="terminal")
        yield Static("", id="hint")

    @property
    def terminal(self) -> ShellTerminal:
        return self.query_one(ShellTerminal)

    def on_mount(self) -> None:
        leave = key_of(self, "shell-leave") or "?"
        self.query_one("#hint", Static).update(
            plain(f"every key goes to the shell · {leave} leaves and ends the session · the node records everything")
        )
        self._ui_loop = asyncio.get_running_loop()
        self.terminal.focus()
        self._update_banner()
        self.set_interval(1.0, self._update_banner)
        self.call_after_refresh(self._start)

    # -- the network side (coroutines run on the network loop) ----------------------------------------

    def _start(self) -> None:
        self._terminal_size = (self.terminal.cols, self.terminal.rows)
        self._network_task = asyncio.ensure_future(self.lifsea.net.run(self._network()))

    async def _network(self) -> None:
        if self.session is None:
            assert self.request is not None
            request = self.request
            try:
                session = await self.client.ops_start(request)
            except NodeError as error:
                self._post(Closed(error.status, f"the node refused the ops shell: {error}"))
                return
            self._post_session(session)
            if self._leaving:  # left while it was being started: end it now
                await self.client.ops_end(session.id, EndRequest(reason=f"left the shell: {request.reason}"[:480]))
                return
        else:
            session = self.session
        cols, rows = self._terminal_size
        shell = self._shell = OpsShell(self.client.target, session.id, cols=cols, rows=rows)
        outbox: asyncio.Queue[bytes | Resize] = asyncio.Queue()
        with self._early_lock:
            for data in self._early:  # typed while the session was being attached: in order, first
                outbox.put_nowait(data)
            self._early.clear()
            self._outbox = outbox
        self._drained = asyncio.Event()
        attached = asyncio.Event()
        sender = asyncio.create_task(self._send_loop(shell, outbox, attached))
        try:
            async for event in shell.events():
                if isinstance(event, Output):
                    await self._hand_over(event.data)
                    continue
                if isinstance(event, Hello):
                    attached.set()
                elif isinstance(event, Reconnecting):
                    # Keys typed blind into a root shell are not replayed later: dropped, and said so.
                    attached.clear()
                    dropped = 0
                    while not outbox.empty():
                        item = outbox.get_nowait()
                        dropped += len(item) if isinstance(item, bytes) else 0
                    if dropped:
                        self._post_note(f"{dropped} bytes typed while reconnecting were not sent")
                self._post(event)
                if isinstance(event, Exit | Closed):
                    break
        finally:
            sender.cancel()
            await shell.close()

    async def _send_loop(self, shell: OpsShell, outbox: asyncio.Queue[bytes | Resize], attached: asyncio.Event) -> None:
        """Keys and sizes to the node, in the order they happened, whenever the session is attached."""
        while True:
            await attached.wait()
            item = await outbox.get()
            if isinstance(item, Resize):
                await shell.resize(item.cols, item.rows)
            else:
                await shell.send(item)

    async def _hand_over(self, data: bytes) -> None:
        assert self._ui_loop is not None and self._drained is not None
        with self._pending_lock:
            self._pending += data
            backlog = len(self._pending)
            schedule = not self._drain_scheduled
            self._drain_scheduled = True
        if schedule:
            self._ui_loop.call_soon_threadsafe(self._drain)
        if backlog > OUTPUT_HIGH_WATER:
            self._drained.clear()
            await self._drained.wait()

    def _post(self, event: ShellEvent) -> None:
        assert self._ui_loop is not None
        self._ui_loop.call_soon_threadsafe(self._on_shell_event, event)

    def _post_session(self, session: OpsSession) -> None:
        def arrived() -> None:
            self.session = session
            self.state = "connecting"
            self._update_banner()

        assert self._ui_loop is not None
        self._ui_loop.call_soon_threadsafe(arrived)
        self.session = session  # the network side needs it now; the UI repaints on its turn

    def _post_note(self, text: str) -> None:
        assert self._ui_loop is not None
        self._ui_loop.call_soon_threadsafe(lambda: self.notify(text, severity="warning", timeout=8))

    # -- the UI side ------------------------------------------------------------------------------------

    def _drain(self, everything: bool = False) -> None:
        """Feed the emulator at most FEED_CHUNK a turn of the UI loop, so keys (ctrl+c) still get in
        while a command floods the terminal; the rest waits for the next turn."""
        with self._pending_lock:
            size = len(self._pending) if everything else min(len(self._pending), FEED_CHUNK)
            data = bytes(self._pending[:size])
            del self._pending[:size]
            left = len(self._pending)
            self._drain_scheduled = left > 0
        if data:
            self.terminal.feed(data)
        if left:
            asyncio.get_running_loop().call_soon(self._drain)
        drained = self._drained
        if drained is not None and left < OUTPUT_HIGH_WATER // 2:
            self.lifsea.net.loop.call_soon_threadsafe(drained.set)

    def _on_shell_event(self, event: ShellEvent) -> None:
        if isinstance(event, Hello):
            self.state = "attached"
            if self.session is not None:
                self.session = self.session.model_copy(update={"expires_at": event.expires_at})
            if event.reattached:
                self.notify("Re-attached: the screen was replayed from the node", timeout=4)
        elif isinstance(event, Reconnecting):
            self.reconnects += 1
            self.state = f"reconnecting (attempt {event.attempt}: {event.error})"
        elif isinstance(event, Expiring):
            self.notify(f"The ops session ends in {event.seconds_left} s (TTL)", severity="warning", timeout=10)
        elif isinstance(event, Exit | Closed):
            if self.session is None:
                self.notify(f"Ops shell on {self.node_name}: {event.reason}", severity="error", timeout=15)
            self._drain(everything=True)
            self.exit = event
            self.state = "ended"
        self._update_banner()

    def send(self, data: bytes | Resize) -> None:
        if self.exit is not None:
            return
        with self._early_lock:
            outbox = self._outbox
            if outbox is None:
                self._early.append(data)  # the network side takes these first when it starts
                return
        self.lifsea.net.loop.call_soon_threadsafe(outbox.put_nowait, data)

    def resized(self, cols: int, rows: int) -> None:
        self.send(Resize(cols, rows))  # its own item: no bytes a person types or pastes can look like it

    def _update_banner(self) -> None:
        banner = self.query_one("#banner", Static)
        banner.set_class(self.state.startswith("reconnecting"), "reconnecting")
        banner.set_class(self.exit is not None, "ended")
        text = Text()
        session = self.session
        if isinstance(self.exit, Exit):
            code = "?" if self.exit.code is None else self.exit.code
            text.append_text(plain(f"SESSION ENDED · exit {code} · {self.exit.reason} · ", "bold"))
            recording = f" · recording {session.recording}" if session else ""
            text.append_text(plain(f"{self.node_name}{recording} · esc back"))
        elif isinstance(self.exit, Closed):
            text.append_text(plain(f"{'DISCONNECTED' if session else 'NOT STARTED'} · {self.exit.reason} · esc back"))
        elif session is None:
            assert self.request is not None
            text.append(f"● RECORDED · {access_label(self.request.access)} · ", style="bold")
            text.append_text(plain(f"{self.node_name} · {self.request.reason} · "))
            text.append("STARTING THE OPS CONTAINER…", style="bold")
        else:
            left = max(0, int((session.expires_at - datetime.now(UTC)).total_seconds()))
            text.append(f"● RECORDED · {access_label(session.access)} · ", style="bold")
            text.append_text(plain(f"{self.node_name} · {session.reason} · {left // 60}:{left % 60:02d} left"))
            if self.state != "attached":
                text.append_text(plain(f" · {self.state.upper()}", "bold"))
        banner.update(text)

    def outcome(self) -> ShellClosed:
        return ShellClosed(self.session.id if self.session else None, self.state)

    def action_back(self) -> None:
        if self.exit is not None:  # while the shell lives, escape is the shell's key
            self.dismiss(self.outcome())

    async def action_leave(self) -> None:
        self._leaving = True
        session = self.session
        if self.exit is None and session is not None:
            try:
                await self.lifsea.net.run(
                    self.client.ops_end(session.id, EndRequest(reason=f"left the shell: {session.reason}"[:480]))
                )
            except NodeError as error:
                if error.status != 404:
                    self.notify(f"Could not end the session: {error}", severity="error", timeout=10)
        if self._shell is not None:
            shell = self._shell
            await self.lifsea.net.run(shell.close())
        self.dismiss(self.outcome())
