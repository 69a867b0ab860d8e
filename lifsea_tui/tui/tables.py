"""The console's one kind of table: node text in it is never markup (see plain.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey

from lifsea_tui.tui.plain import CELL_LIMIT, plain, sanitized


class PlainTable(DataTable[Any]):
    """A DataTable whose cells are never markup: str cells become plain Text, Text cells are sanitized.

    Every table of the console is one, so a cell added without thought is still safe."""

    @staticmethod
    def _cell(value: Any) -> Any:
        if isinstance(value, Text):
            return sanitized(value, limit=CELL_LIMIT)
        if isinstance(value, str):
            return plain(value, limit=CELL_LIMIT)
        return value

    def add_row(self, *cells: Any, height: int | None = 1, key: str | None = None, label: Any = None) -> Any:
        return super().add_row(*(self._cell(cell) for cell in cells), height=height, key=key, label=label)

    def update_cell(self, row_key: Any, column_key: Any, value: Any, *, update_width: bool = False) -> None:
        super().update_cell(row_key, column_key, self._cell(value), update_width=update_width)

    def update_cell_at(self, coordinate: Any, value: Any, *, update_width: bool = False) -> None:
        super().update_cell_at(coordinate, self._cell(value), update_width=update_width)

    def update_cells(self, changes: Iterable[tuple[str, str, Any]]) -> None:
        """Several cells at once, (row key, column key, value), drawing again only the cells that changed.

        DataTable.update_cell counts each update as a change of the whole table (its render caches are
        keyed by one update count), so on a refreshing fleet every flush drew every visible cell again,
        most of the UI's time, with key presses waiting behind it. Here the changed cells' cached
        renders, and their rows', are dropped instead; rows keep their order and height, so what is
        keyed by the count (offsets, order) stays right. Unknown rows or columns are skipped."""
        cells: set[tuple[Any, Any]] = set()
        for row, column, value in changes:
            row_key, column_key = RowKey(row), ColumnKey(column)
            if row_key not in self._row_locations or column_key not in self._column_locations:
                continue
            self._data[row_key][column_key] = self._cell(value)
            cells.add((row_key, column_key))
        if not cells:
            return
        rows = {row for row, _ in cells}
        indices = {self._row_locations.get(row) for row in rows}
        for renderables in [key for key in self._row_renderable_cache.keys() if key[1] in indices]:
            self._row_renderable_cache.discard(renderables)  # (count, row index): the row's cells as renderables
        for cell in [key for key in self._cell_render_cache.keys() if (key[0], key[1]) in cells]:
            self._cell_render_cache.discard(cell)
        for rendered in [key for key in self._row_render_cache.keys() if key[0] in rows]:
            self._row_render_cache.discard(rendered)
        self._line_cache.clear()
        self.refresh()
