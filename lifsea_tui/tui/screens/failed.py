"""Failed units across the fleet: every node's failed systemd units in one list, from what the fleet
refresh already knows (no extra requests). enter opens the node on its Services tab."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from lifsea_tui.tui.plain import plain
from lifsea_tui.tui.screens.base import ConsoleScreen
from lifsea_tui.tui.tables import PlainTable


class FailedUnitsScreen(ConsoleScreen[None]):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back", id="failed-back")]
    DEFAULT_CSS = """
    FailedUnitsScreen {
        #failed-note { height: auto; padding: 0 1; background: $panel; }
    }
    """

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="failed-note")
        table = PlainTable(id="failed", cursor_type="row")
        table.add_column("Node", key="node")
        table.add_column("Failed unit", key="unit")
        yield table
        yield Footer()

    def on_mount(self) -> None:
        self.title = "failed units"
        self._shown: list[tuple[str, str]] = []
        self._fill()
        self.set_interval(1.0, self._fill)

    def _fill(self) -> None:
        rows, unknown = [], []
        for snapshot in sorted(self.lifsea.fleet.snapshots.values(), key=lambda s: s.name):
            if snapshot.failed_units is None:
                unknown.append(snapshot.name)
            for unit in snapshot.failed_units or []:
                rows.append((snapshot.name, unit))
        nodes = len({node for node, _ in rows})
        note = f"{len(rows)} failed units on {nodes} nodes"
        if unknown:
            note += f" · {len(unknown)} nodes cannot say (unreachable or no bus): {', '.join(unknown[:8])}"
        self.query_one("#failed-note", Static).update(plain(note + " · enter opens the node's services"))
        if rows == self._shown:
            return
        self._shown = rows
        table = self.query_one("#failed", DataTable)
        table.clear()
        for node, unit in rows:
            table.add_row(node, unit, key=f"{node}/{unit}")

    @on(DataTable.RowSelected, "#failed")
    def _open(self, event: DataTable.RowSelected) -> None:
        node = (event.row_key.value or "").split("/", 1)[0]
        if node in self.lifsea.fleet.snapshots:
            self.lifsea.open_node(node, tab="tab-services")
