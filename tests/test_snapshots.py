"""Pictures of each screen and of the fleet in every shipped theme (pytest-textual-snapshot; update with
`pytest tests/test_snapshots.py --snapshot-update` after a deliberate change, and look at the diff)."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot

from lifsea_tui.tui.app import LifseaApp
from lifsea_tui.tui.locations import SHIPPED_THEMES
from tests.frozen import FrozenFleet

SIZE = (120, 32)


@pytest.fixture(autouse=True)
def own_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFSEA_TUI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LIFSEA_TUI_CONFIG_DIR", str(tmp_path / "config"))


def app() -> LifseaApp:
    return LifseaApp(FrozenFleet(), refresh_interval=3600)


async def settle(pilot: Pilot) -> None:
    await pilot.pause(0.4)


@pytest.mark.parametrize("theme", sorted(path.stem for path in SHIPPED_THEMES.glob("*.toml")))
def test_fleet_in_each_theme(snap_compare, theme: str) -> None:
    async def choose(pilot: Pilot) -> None:
        pilot.app.theme = theme
        await settle(pilot)

    assert snap_compare(app(), terminal_size=SIZE, run_before=choose)


def test_fleet_with_selection_and_filter(snap_compare) -> None:
    assert snap_compare(
        app(), terminal_size=SIZE, press=["space", "down", "space", "slash", "e", "d"], run_before=settle
    )


@pytest.mark.parametrize(
    "tab", ["tab-overview", "tab-deployments", "tab-upgrades", "tab-services", "tab-ops", "tab-audit"]
)
def test_node_tabs(snap_compare, tab: str) -> None:
    async def open_node(pilot: Pilot) -> None:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        pilot.app.screen.query_one("#tabs").active = tab
        await settle(pilot)

    assert snap_compare(app(), terminal_size=SIZE, run_before=open_node)


def test_reason_modal(snap_compare) -> None:
    async def open_modal(pilot: Pilot) -> None:
        await settle(pilot)
        await pilot.press("space", "down", "space", "s")
        await settle(pilot)
        await pilot.press("enter")  # an empty reason is refused, and says so
        await settle(pilot)

    assert snap_compare(app(), terminal_size=SIZE, run_before=open_modal)
