"""Themes as data: one TOML file per theme, validated, turned into Textual themes.

A theme names Textual's base colours and the console's own variables (node-ok, node-down, pending,
booted, recorded, ...). Files that do not parse or name colours that do not exist are reported, never
fatal: the console starts with the themes that are good.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from textual.color import Color, ColorParseError
from textual.theme import Theme

BASE_COLOURS = (
    "primary",
    "secondary",
    "warning",
    "error",
    "success",
    "accent",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
)
# The console's own colour variables and their defaults, so a minimal theme still parses.
CONSOLE_VARIABLES = {
    "node-ok": "#4caf50",
    "node-down": "#e5534b",
    "node-unknown": "#8892a0",
    "pending": "#f0ad4e",
    "booted": "#5fa8d3",
    "recorded": "#e5534b",
}


def _colour(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a colour string")
    try:
        Color.parse(value)
    except ColorParseError as error:
        raise ValueError(f"{where}: {value!r} is not a colour") from error
    return value


def load_theme(path: Path) -> Theme:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ValueError(str(error)) from error
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("needs a name")
    if "primary" not in data:
        raise ValueError("needs a primary colour")
    # Any: Theme's keyword arguments are of several types; these are all of its colour ones (str).
    colours: dict[str, Any] = {key: _colour(data[key], key) for key in BASE_COLOURS if key in data}
    unknown = set(data) - set(BASE_COLOURS) - {"name", "dark", "ansi", "variables"}
    if unknown:
        raise ValueError(f"unknown keys: {', '.join(sorted(unknown))}")
    variables = data.get("variables", {})
    if not isinstance(variables, dict):
        raise ValueError("[variables] must be a table")
    checked = {str(key): _colour(value, f"variables.{key}") for key, value in variables.items()}
    return Theme(
        name=name, dark=bool(data.get("dark", True)), ansi=bool(data.get("ansi", False)), variables=checked, **colours
    )


def load_themes(*directories: Path) -> tuple[list[Theme], list[str]]:
    """Every theme in the directories (later ones override by name), and a line per file that failed."""
    themes: dict[str, Theme] = {}
    problems = []
    for directory in directories:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.toml")):
            try:
                theme = load_theme(path)
            except ValueError as error:
                problems.append(f"{path.name}: {error}")
                continue
            themes[theme.name] = theme
    return list(themes.values()), problems
