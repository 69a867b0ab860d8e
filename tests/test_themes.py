"""Themes as data: shipped themes load, bad files are reported and skipped, the choice persists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lifsea_tui.tui.app import LifseaApp
from lifsea_tui.tui.locations import SHIPPED_THEMES
from lifsea_tui.tui.themes import CONSOLE_VARIABLES, load_themes
from tests.frozen import FrozenFleet


def test_shipped_themes_load_with_console_variables() -> None:
    themes, problems = load_themes(SHIPPED_THEMES)
    assert not problems
    names = {theme.name for theme in themes}
    assert {"lifsea-dark", "lifsea-light", "terminal"} <= names
    assert next(t for t in themes if t.name == "terminal").ansi
    for theme in themes:
        assert set(CONSOLE_VARIABLES) <= set(theme.variables), theme.name


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("name = 'x'\n", "primary"),
        ("primary = '#fff'\n", "name"),
        ("name = 'x'\nprimary = 'not-a-colour'\n", "not a colour"),
        ("name = 'x'\nprimary = '#fff'\n[variables]\nnode-ok = 'mauve-ish'\n", "variables.node-ok"),
        ("name = 'x'\nprimary = '#fff'\nsparkle = true\n", "unknown keys"),
        ("name = [\n", "Invalid value"),
    ],
)
def test_bad_theme_files_are_reported(tmp_path: Path, content: str, words: str) -> None:
    (tmp_path / "bad.toml").write_text(content)
    (tmp_path / "good.toml").write_text("name = 'mine'\nprimary = '#336699'\n")
    themes, problems = load_themes(tmp_path)
    assert [t.name for t in themes] == ["mine"]
    assert len(problems) == 1 and problems[0].startswith("bad.toml") and words in problems[0]


async def test_user_theme_is_offered_and_the_choice_persists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFSEA_TUI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LIFSEA_TUI_CONFIG_DIR", str(tmp_path / "config"))
    themes = tmp_path / "config" / "themes"
    themes.mkdir(parents=True)
    (themes / "night-shift.toml").write_text("name = 'night-shift'\nprimary = '#aa3333'\n")
    (themes / "broken.toml").write_text("name = 'broken'\n")
    app = LifseaApp(FrozenFleet(), refresh_interval=3600)
    async with app.run_test() as pilot:
        await pilot.pause(0.2)
        assert app.theme == "lifsea-dark" and "night-shift" in app.available_themes
        assert any("broken.toml" in n.message for n in app._notifications)
        app.theme = "night-shift"
        await pilot.pause(0.1)
    saved = json.loads((tmp_path / "state" / "settings.json").read_text())
    assert saved["theme"] == "night-shift"
    again = LifseaApp(FrozenFleet(), refresh_interval=3600)
    async with again.run_test() as pilot:
        await pilot.pause(0.2)
        assert again.theme == "night-shift"
        assert again.colour("node-down") == CONSOLE_VARIABLES["node-down"]  # default for a minimal theme
