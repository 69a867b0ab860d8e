"""The console's one kind of table: node text in it is never markup (see plain.py)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable

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
