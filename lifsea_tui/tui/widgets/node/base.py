"""What every tab of the node screen shares: its node and client, when it loads again, how it fails."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, cast

from rich.table import Table
from textual import on
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Static
from textual.worker import Worker

from lifsea_tui.api import EventKind
from lifsea_tui.client.node import NodeClient
from lifsea_tui.tui.plain import plain
from lifsea_tui.tui.screens.base import Console, report_worker_failure


class NodeChanged(Message):
    """Something changed on the node: an event of `kind`, or everything (None: a lagged stream, polling,
    an action just taken, a new theme). Queued behind one of its kind, the newer replaces the older, so a
    burst of events makes one load."""

    def __init__(self, kind: EventKind | None = None) -> None:
        super().__init__()
        self.kind = kind

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, NodeChanged) and (message.kind is None or message.kind == self.kind)


class NodeTab(Vertical):
    """A tab: loads on mount, and again on the NodeChanged kinds it reacts to."""

    REACTS_TO: ClassVar[frozenset[EventKind]] = frozenset()

    def __init__(self, node: str, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.node = node

    @property
    def lifsea(self) -> Console:
        return cast(Console, self.app)

    @property
    def client(self) -> NodeClient:
        return self.lifsea.fleet.client(self.node)

    def on_mount(self) -> None:
        self.load()

    def load(self) -> object:
        """Start reading the tab's data (a worker, in each tab)."""
        raise NotImplementedError

    @on(NodeChanged)
    def _changed(self, message: NodeChanged) -> None:
        if message.kind is None or message.kind in self.REACTS_TO:
            self.load()

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        """A tab's worker that fails says so, once, where the person looks; the other tabs go on."""
        report_worker_failure(self, event)

    def problem(self, widget_id: str, error: BaseException) -> None:
        self.query_one(widget_id, Static).update(plain(f"✗ {error}", self.lifsea.colour("node-down")))


def short(checksum: str | None) -> str:
    return checksum[:12] if checksum else "?"


def label_grid() -> Table:
    """Two columns: a bold label and its value."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    return table


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "?"
