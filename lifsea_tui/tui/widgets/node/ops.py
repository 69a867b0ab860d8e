"""The node's open ops sessions (enter re-attaches your own) and its recordings (enter plays one)."""

from __future__ import annotations

import asyncio

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from lifsea_tui.api import EventKind, OpsSession, OpsSessionList, RecordingList
from lifsea_tui.client.node import NodeError
from lifsea_tui.tui.cast import parse
from lifsea_tui.tui.tables import PlainTable
from lifsea_tui.tui.widgets.node.base import NodeTab, when


class OpsTab(NodeTab):
    REACTS_TO = frozenset({EventKind.ops})

    def __init__(self, node: str, **kwargs: str) -> None:
        super().__init__(node, **kwargs)
        self.open_sessions: dict[str, OpsSession] = {}

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static("Open ops sessions (enter re-attaches your own)", classes="note")
            sessions = PlainTable(id="ops-sessions", cursor_type="row")
            for label in ("Session", "Who", "Access", "State", "Reason", "Ticket", "Ends"):
                sessions.add_column(label, key=label)
            yield sessions
            yield Static("Recordings (enter plays; each viewing is audited on the node)", classes="note")
            recordings = PlainTable(id="recordings", cursor_type="row")
            for label in ("Recording", "Who", "Started", "Size", "Sealed", "Ended because", "Reason"):
                recordings.add_column(label, key=label)
            yield recordings

    @work(exclusive=True, group="node-ops", exit_on_error=False)
    async def load(self) -> None:
        client = self.client

        async def fetch() -> tuple[OpsSessionList | BaseException, RecordingList | BaseException]:
            return await asyncio.gather(client.ops_sessions(), client.recordings(), return_exceptions=True)

        sessions, recordings = await self.lifsea.net.run(fetch())
        table = self.query_one("#ops-sessions", PlainTable)
        table.clear()
        if not isinstance(sessions, OpsSessionList):
            table.add_row("", "", "", "", f"cannot list: {sessions}", "", "")
        else:
            self.open_sessions = {s.id: s for s in sessions.sessions}
            for session in sessions.sessions:
                table.add_row(
                    session.id, session.actor, session.access.value, session.state.value, session.reason,
                    session.ticket or "", when(session.expires_at), key=session.id,
                )  # fmt: skip
        table = self.query_one("#recordings", PlainTable)
        table.clear()
        if not isinstance(recordings, RecordingList):
            why = "needs the admin or auditor role" if getattr(recordings, "status", None) == 403 else str(recordings)
            table.add_row("", "", "", "", "", f"recordings: {why}", "")
            return
        for item in recordings.recordings:
            sealed = Text("yes", style="") if item.sha256 else Text("open", style=self.lifsea.colour("pending"))
            ended = item.end_reason or ""
            alarming = ended.startswith(("interrupted", "recording", "failed"))
            ended_text = Text(ended, style=self.lifsea.colour("node-down") if alarming else "")
            table.add_row(
                item.id, item.actor, when(item.started), f"{item.size:,}", sealed, ended_text, item.reason, key=item.id
            )  # fmt: skip

    @on(DataTable.RowSelected, "#recordings")
    def _play(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.play(event.row_key.value)

    @work(group="node-play", exit_on_error=False)
    async def play(self, recording_id: str) -> None:
        try:
            data = await self.lifsea.net.run(self.client.recording(recording_id))
        except NodeError as error:
            self.notify(f"Recording {recording_id}: {error}", severity="error", timeout=10)
            return
        self.lifsea.open_player(parse(data), f"{self.node}/{recording_id}")

    @on(DataTable.RowSelected, "#ops-sessions")
    def _reattach(self, event: DataTable.RowSelected) -> None:
        session = self.open_sessions.get(event.row_key.value or "")
        if session is None:
            return
        if self.lifsea.read_only:
            self.notify("read-only console: no ops shells, not even re-attaching", severity="warning")
            return
        self.lifsea.open_shell(self.node, session)
