"""The fleet filter as an on-call engineer types it: words match the row, `key=value` a label (the
agent's or the inventory's), all of them at once; a filter that matches nothing says so."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable

from lifsea_tui.tui.app import LifseaApp
from tests.frozen import FrozenFleet


@pytest.fixture(autouse=True)
def own_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFSEA_TUI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LIFSEA_TUI_CONFIG_DIR", str(tmp_path / "config"))


async def test_label_filters_words_and_nothing_matching() -> None:
    app = LifseaApp(FrozenFleet(), refresh_interval=3600)
    async with app.run_test(size=(120, 32)) as pilot:
        await pilot.pause(0.4)
        table = app.screen.query_one("#nodes", DataTable)

        async def filtered(text: str) -> list[str]:
            await pilot.press("escape")  # clears any filter
            await pilot.press("slash", *text)
            await pilot.pause(0.3)
            return sorted(str(key.value) for key in table.rows)

        assert await filtered("zone=a") == ["edge-1", "edge-3"]  # FrozenFleet: zones a, b, a, b
        assert await filtered("zone=b 1.0") == ["edge-2"]  # a label and a word of the row, both
        assert await filtered("zone=b timeout") == ["edge-4"]  # a node that is down keeps its labels
        assert await filtered("zone=c") == []
        assert "no node matches 'zone=c'" in app.screen.sub_title
        assert await filtered("edge") == ["edge-1", "edge-2", "edge-3", "edge-4"]
        assert "no node matches" not in app.screen.sub_title


async def test_rows_group_by_a_label_with_each_group_named_once() -> None:
    app = LifseaApp(FrozenFleet(), refresh_interval=3600)
    async with app.run_test(size=(120, 32)) as pilot:
        await pilot.pause(0.4)
        table = app.screen.query_one("#nodes", DataTable)
        await pilot.press("g")
        await pilot.pause(0.3)
        assert "grouped by zone" in app.screen.sub_title
        order = [str(row.key.value) for row in table.ordered_rows]
        assert order == ["edge-1", "edge-3", "edge-2", "edge-4"]
        labels = [row.label.plain if row.label is not None else "" for row in table.ordered_rows]
        assert labels == ["zone=a", "", "zone=b", ""]
        await pilot.press("g")  # zone was the only key: back to no grouping
        await pilot.pause(0.3)
        assert "grouped" not in app.screen.sub_title
        assert [str(row.key.value) for row in table.ordered_rows] == ["edge-1", "edge-2", "edge-3", "edge-4"]
