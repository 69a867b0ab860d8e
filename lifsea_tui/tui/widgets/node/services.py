"""The node's services, what needs eyes first on top; the unit under the cursor is what the unit keys
and the logs key act on."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from lifsea_tui.api import EventKind, UnitInfo
from lifsea_tui.client.node import NodeError
from lifsea_tui.tui.keys import hints
from lifsea_tui.tui.plain import plain
from lifsea_tui.tui.tables import PlainTable
from lifsea_tui.tui.widgets.node.base import NodeTab, when

# What needs eyes first: failed, then changing, then running, then stopped.
ORDER = {"failed": 0, "activating": 1, "deactivating": 1, "reloading": 1, "active": 2}
STATE_COLOUR = {"failed": "node-down", "active": "node-ok", "activating": "pending", "deactivating": "pending",
                "reloading": "pending"}  # fmt: skip


class ServicesTab(NodeTab):
    REACTS_TO = frozenset({EventKind.services})  # units change often (a crash loop): only this tab reloads

    def __init__(self, node: str, **kwargs: str) -> None:
        super().__init__(node, **kwargs)
        self.summary: str | None = None  # what the note says of the units, without its keys

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static("loading…", id="services-note", classes="note")
            units = PlainTable(id="services", cursor_type="row")
            for label in ("Unit", "State", "Since", "Restarts", "PID", "Memory", "Description"):
                units.add_column(label, key=label)
            yield units

    @property
    def table(self) -> PlainTable:
        return self.query_one("#services", PlainTable)

    def cursor_unit(self) -> str | None:
        """The unit under the cursor, if any."""
        table = self.table
        if not table.row_count:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001 - no cursor row
            return None

    @work(exclusive=True, group="node-services", exit_on_error=False)
    async def load(self) -> None:
        try:
            listing = await self.lifsea.net.run(self.client.services(kind="service"))
        except NodeError as error:
            self.problem("#services-note", error)
            self.table.clear()
            return
        self._show(listing.units)

    def _show(self, units: list[UnitInfo]) -> None:
        table = self.table
        cursor = self.cursor_unit()
        table.clear()
        colour = {state: self.lifsea.colour(variable) for state, variable in STATE_COLOUR.items()}
        # Units that are only referenced (not-found) are left out and counted.
        missing = sum(1 for u in units if u.load_state == "not-found")
        units = sorted(
            (u for u in units if u.load_state != "not-found"), key=lambda u: (ORDER.get(u.active_state, 3), u.name)
        )
        for unit in units:
            state = Text(f"{unit.active_state}/{unit.sub_state}", style=colour.get(unit.active_state, "dim"))
            memory = f"{unit.memory_bytes / 2**20:.1f} MiB" if unit.memory_bytes is not None else ""
            restarts = Text(str(unit.restarts or 0), style=colour["failed"] if unit.restarts else "")
            table.add_row(
                unit.name, state, when(unit.since), restarts, str(unit.main_pid or ""), memory, unit.description,
                key=unit.name,
            )  # fmt: skip
        if cursor is not None and cursor in table.rows:
            table.move_cursor(row=table.get_row_index(cursor))
        failed = sum(1 for u in units if u.active_state == "failed")
        self.summary = f"{len(units)} services, {failed} failed (failed first)" + (
            f", {missing} referenced but not installed (hidden)" if missing else ""
        )
        self._note()

    def on_show(self) -> None:
        self._note()  # the unit keys are live only while this tab is shown: say them now

    def _note(self) -> None:
        if self.summary is None:
            return
        keys = hints(self, "node-logs", "unit-restart", "unit-start", "unit-stop")
        self.query_one("#services-note", Static).update(plain(self.summary + (f" · {keys}" if keys else "")))
