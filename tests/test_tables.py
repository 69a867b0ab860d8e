"""The console's table: cells updated in a batch are drawn again, the others are not, and node text in
them stays plain."""

from __future__ import annotations

from rich.text import Text
from textual.app import App, ComposeResult

from lifsea_tui.tui.tables import PlainTable


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        table = PlainTable(id="t")
        table.add_column("Node", key="name", width=10)
        table.add_column("State", key="state", width=12)
        table.add_column("Seen", key="seen", width=8)
        for n in range(3):
            table.add_row(f"node{n}", "ok", "0s", key=f"node{n}")
        yield table


def screen_text(table: PlainTable) -> str:
    return "\n".join(table.render_line(y).text for y in range(table.size.height))


async def test_a_batch_update_draws_the_changed_cells_and_keeps_the_rest() -> None:
    """The table's render caches survive a batch (that is its point): what it draws after one must be
    the new values, never a kept rendering of the old; a row or column that is not there is skipped."""
    app = TableApp()
    async with app.run_test(size=(40, 8)) as pilot:
        table = app.query_one(PlainTable)
        await pilot.pause()
        before = screen_text(table)
        assert "ok" in before and "down" not in before
        kept = table._update_count  # rows, their order and their offsets are still what was counted
        table.update_cells(
            [
                ("node1", "state", Text("✗ down")),
                ("node2", "seen", "9s"),
                ("gone", "state", "x"),
                ("node0", "nope", "x"),
            ]
        )
        await pilot.pause()
        after = screen_text(table)
        lines = {line.split()[0]: line for line in after.splitlines() if line.strip().startswith("node")}
        assert "✗ down" in lines["node1"] and "ok" not in lines["node1"]
        assert "9s" in lines["node2"] and "0s" not in lines["node2"]
        assert "ok" in lines["node0"] and "0s" in lines["node0"]
        assert table._update_count == kept
        table.update_cells([("node0", "state", "\x1b]52;c;aGk=\x07[link=x]y")])  # node text: made plain
        await pilot.pause()
        shown = screen_text(table)
        assert "\x1b" not in shown and "␛" in shown
