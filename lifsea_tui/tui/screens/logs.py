"""The logs pane: a node's journal (one unit's, or all of it), followed live.

Keys: f follow on/off (off keeps the view still while reading), w wrap, t timestamps, p priority filter
(all, warning, error, critical), / search (matches highlighted), ctrl+s save what is shown to a file,
esc back. The stream resumes from the last entry's cursor after a drop, so nothing is lost or shown
twice. At most MAX_ENTRIES are kept; older ones fall off the top (and the header says how many).
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Input, Static

from lifsea_tui.api import LogEntry
from lifsea_tui.client.node import NodeError
from lifsea_tui.tui.logview import LogView
from lifsea_tui.tui.plain import file_part, plain, visible
from lifsea_tui.tui.screens.base import ConsoleScreen

MAX_ENTRIES = 20_000
PRIORITIES = [(None, "all"), (4, "warning and worse"), (3, "error and worse"), (2, "critical and worse")]
PRIORITY_NAMES = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]
RETRY_SECONDS = 2.0
BATCH_SECONDS = 0.1


class LogsScreen(ConsoleScreen[None]):
    BINDINGS = [
        Binding("escape", "back", "Back", id="logs-back"),
        Binding("f", "toggle_follow", "Follow", id="logs-follow"),
        Binding("w", "toggle_wrap", "Wrap", id="logs-wrap"),
        Binding("t", "toggle_time", "Timestamps", id="logs-time"),
        Binding("p", "priority", "Priority", id="logs-priority"),
        Binding("slash", "search", "Search", key_display="/", id="logs-search"),
        Binding("ctrl+s", "save", "Save", id="logs-save"),
    ]
    DEFAULT_CSS = """
    LogsScreen {
        #logs-status { height: 1; padding: 0 1; background: $panel; }
        #logs { height: 1fr; }
        #logs-search { dock: bottom; display: none; }
        #logs-search.shown { display: block; }
    }
    """

    def __init__(self, node: str, unit: str | None = None) -> None:
        super().__init__()
        self.node_name = node
        self.unit = unit
        self.entries: deque[LogEntry] = deque(maxlen=MAX_ENTRIES)
        self.dropped_oldest = 0
        self.follow = True
        self.wrap = False
        self.timestamps = True
        self.priority_index = 0
        self.search = ""
        self.state = "connecting"
        self._cursor: str | None = None
        self._incoming: list[LogEntry] = []

    def compose(self) -> ComposeResult:
        yield Static("", id="logs-status")
        yield LogView(self.entries, self._line, id="logs")
        yield Input(placeholder="search (a regular expression; enter keeps it, empty clears)", id="logs-search")
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"logs · {self.node_name}" + (f" · {self.unit}" if self.unit else "")
        self.set_interval(BATCH_SECONDS, self._flush)
        self.stream()
        self._show_status()

    # -- the stream ------------------------------------------------------------------------------------

    @work(exclusive=True, group="logs-stream", exit_on_error=False)
    async def stream(self) -> None:
        """Follow the node's journal; after a drop, resume after the last entry seen."""
        client = self.lifsea.fleet.client(self.node_name)
        ui_loop = asyncio.get_running_loop()
        priority = PRIORITIES[self.priority_index][0]

        def arrived(batch: list[LogEntry]) -> None:
            self._incoming.extend(batch)

        async def follow(after: str | None) -> None:  # runs on the network loop
            async for batch in client.follow_logs(unit=self.unit, priority=priority, after_cursor=after, backlog=500):
                ui_loop.call_soon_threadsafe(arrived, batch)

        while True:
            self.state = "following"
            self._show_status()
            try:
                await self.lifsea.net.run(follow(self._cursor))
                problem = "the node closed the stream"
            except NodeError as error:
                problem = str(error)
            self.state = f"reconnecting ({problem})"
            self._show_status()
            await asyncio.sleep(RETRY_SECONDS)

    def _flush(self) -> None:
        """Take what arrived since the last turn; the view draws only what is on screen."""
        if not self._incoming:
            return
        batch, self._incoming = self._incoming, []
        dropped = max(0, len(self.entries) + len(batch) - MAX_ENTRIES)
        self.dropped_oldest += dropped
        self.entries.extend(batch)
        self._cursor = batch[-1].cursor
        view = self.query_one("#logs", LogView)
        if len(batch) >= MAX_ENTRIES:
            view.redraw()  # every entry is new
        else:
            view.appended(len(batch), dropped)
        self._show_status()

    def _line(self, entry: LogEntry) -> Text:
        text = Text()
        if self.timestamps:
            text.append(entry.time.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3] + " ", style="dim")
        style = (
            self.lifsea.colour("node-down")
            if entry.priority <= 3
            else self.lifsea.colour("pending")
            if entry.priority == 4
            else ""
        )
        text.append(
            visible(f"{entry.identifier or entry.unit or '?'}[{entry.pid or ''}]: ", keep_newlines=False), style="bold"
        )
        text.append(visible(entry.message), style=style)  # control characters shown, never sent to the terminal
        if entry.cut:
            text.append(" [cut]", style="dim")
        if entry.binary:
            text.append(" [binary]", style="dim")
        if self.search:
            try:
                text.highlight_regex(self.search, style="reverse")
            except re.error:
                pass
        return text

    def _redraw(self) -> None:
        view = self.query_one("#logs", LogView)
        view.wrap = self.wrap
        view.follow = self.follow
        view.redraw()

    def _show_status(self) -> None:
        text = Text()
        text.append_text(plain(f"{self.node_name} · {self.unit or 'all units'} · ", "bold"))
        text.append(f"{len(self.entries):,} lines")
        if self.dropped_oldest:
            text.append(f" ({self.dropped_oldest:,} oldest dropped from view)")
        text.append(f" · priority: {PRIORITIES[self.priority_index][1]}")
        text.append(f" · {'following' if self.follow else 'paused'}")
        if self.search:
            text.append_text(plain(f" · search /{self.search}/"))
        if self.state != "following":
            text.append_text(plain(f" · {self.state}", self.lifsea.colour("pending")))
        self.query_one("#logs-status", Static).update(text)

    # -- keys ------------------------------------------------------------------------------------------

    def action_back(self) -> None:
        search = self.query_one("#logs-search", Input)
        if search.has_class("shown"):
            search.remove_class("shown")
            self.query_one("#logs", LogView).focus()
            return
        self.app.pop_screen()

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow
        view = self.query_one("#logs", LogView)
        view.follow = self.follow
        if self.follow:
            view.scroll_end(animate=False)
        self._show_status()

    def action_toggle_wrap(self) -> None:
        self.wrap = not self.wrap
        self._redraw()

    def action_toggle_time(self) -> None:
        self.timestamps = not self.timestamps
        self._redraw()

    def action_priority(self) -> None:
        self.priority_index = (self.priority_index + 1) % len(PRIORITIES)
        self.entries.clear()
        self.dropped_oldest = 0
        self._cursor = None
        self._incoming = []
        self.query_one("#logs", LogView).redraw()
        self.stream()  # a new stream with the new filter (the old one is cancelled)

    def action_search(self) -> None:
        search = self.query_one("#logs-search", Input)
        search.add_class("shown")
        search.value = self.search
        search.focus()

    @on(Input.Submitted, "#logs-search")
    def _searched(self, event: Input.Submitted) -> None:
        pattern = event.value
        try:
            re.compile(pattern)
        except re.error as error:
            self.notify(f"Not a regular expression: {error}", severity="error")
            return
        self.search = pattern
        event.input.remove_class("shown")
        self.query_one("#logs", LogView).focus()
        self._redraw()
        self._show_status()

    def action_save(self) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        name = f"lifsea-logs-{file_part(self.node_name)}-{file_part(self.unit or 'all')}-{stamp}.log"
        path = Path.cwd() / name
        try:
            with path.open("w") as handle:
                for entry in self.entries:
                    when = entry.time.astimezone(UTC).isoformat()
                    priority = PRIORITY_NAMES[entry.priority] if 0 <= entry.priority < 8 else str(entry.priority)
                    handle.write(f"{when} {priority} {entry.identifier or entry.unit}[{entry.pid or ''}]: ")
                    handle.write(entry.message + "\n")
        except OSError as error:
            self.notify(f"Could not save: {error}", severity="error")
            return
        self.notify(f"Saved {len(self.entries):,} lines to {path}", timeout=8)
