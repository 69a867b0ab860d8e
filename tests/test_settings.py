"""The console's settings and keymap from config.toml, and its palette: found, applied, or refused by name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from lifsea_tui.tui import settings
from lifsea_tui.tui.app import LifseaApp, binding_ids
from lifsea_tui.tui.screens.fleet import FleetScreen
from lifsea_tui.tui.screens.node import NodeScreen
from tests.frozen import FrozenFleet


def test_settings_are_read_and_every_mistake_is_named(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    assert settings.load(path, binding_ids) == settings.Settings()  # no file: the defaults
    path.write_text('[console]\nrefresh = 2\nread_only = true\ntheme = "terminal"\n[keys]\nfleet-filter = "f, slash"\n')
    loaded = settings.load(path, binding_ids)
    assert (loaded.refresh, loaded.read_only, loaded.theme) == (2.0, True, "terminal")
    assert loaded.keymap == {"fleet-filter": "f,slash"}
    for text, said in (
        ('[keys]\nfleet-filtr = "f"\n', "no binding has the id 'fleet-filtr'"),
        ('[keys]\nnode-check = "ctrl+ k;"\n', "is not a key or keys"),
        ("[keys]\nnode-check = 3\n", "is not a key or keys"),
        ("[console]\nrefresh = 0\n", "refresh must be a number of seconds above 0"),
        ('[console]\nread_only = "yes"\n', "read_only must be true or false"),
        ("[console]\nrefesh = 3\n", "unknown keys refesh"),
        ("[console]\nevents_limit = 2.5\n", "events_limit must be a whole number"),
        ("[console\n", str(path)),
    ):
        path.write_text(text)
        with pytest.raises(settings.SettingsError, match=None) as raised:
            settings.load(path, binding_ids)
        assert said in str(raised.value), (text, str(raised.value))
    assert {"node-check", "fleet-filter", "fleet-group", "palette"} <= binding_ids()


def run_console(config_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LIFSEA_TUI_CONFIG_DIR": str(config_dir), "LIFSEA_LAB_DIR": str(config_dir / "no-lab")}
    return subprocess.run(
        [sys.executable, "-m", "lifsea_tui.tui.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def test_the_console_refuses_a_keymap_naming_an_unknown_binding(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[keys]\nnode-chek = "C"\n')
    refused = run_console(tmp_path)
    assert refused.returncode == 2 and "no binding has the id 'node-chek'" in refused.stderr, refused.stderr
    # Settings alone are not an inventory: the nodes still come from the lab (none runs here).
    (tmp_path / "config.toml").write_text("[console]\nrefresh = 2\n")
    no_lab = run_console(tmp_path)
    assert no_lab.returncode == 2 and "no running lab" in no_lab.stderr, no_lab.stderr


async def test_a_keymap_rebinds_and_the_palette_jumps_to_a_node() -> None:
    app = LifseaApp(FrozenFleet(), refresh_interval=3600, keymap={"fleet-filter": "f"})
    async with app.run_test(size=(120, 32)) as pilot:
        await pilot.pause(0.5)
        await pilot.press("f")
        await pilot.pause(0.2)
        assert app.screen.query_one("#filter", Input).has_focus  # the new key opens the filter
        await pilot.press("escape")
        await palette(pilot, "node edge-3")
        assert isinstance(app.screen, NodeScreen) and app.screen.node_name == "edge-3"
        await palette(pilot, "Fleet")
        assert isinstance(app.screen, FleetScreen)
        await palette(pilot, "Sort")  # the screen's own actions are commands too
        assert app.screen.sort_index == 1


async def palette(pilot: Pilot[None], command: str) -> None:
    """Open the palette with `:`, type `command`, take the first hit."""
    await pilot.press("colon")
    await pilot.pause(0.3)
    await pilot.press(*command)
    await pilot.pause(0.5)
    await pilot.press("enter")
    await pilot.pause(0.5)
