"""The console's settings and keymap, from config.toml beside the inventory:

    [console]
    refresh = 5            # seconds between fleet refreshes
    read_only = true       # start read-only (`--no-read-only` for one run)
    theme = "lifsea-light"
    events_limit = 200     # follow every node's event stream up to this many nodes

    [keys]                 # binding id = key(s), comma-separated, as Textual names them
    node-check = "C"
    fleet-filter = "slash,f"

A flag given on the command line wins over the file, the file over the built-in default. Anything the
file gets wrong (an unknown setting, a wrong type, a binding id no screen has) is an error naming it:
a console that silently ignored a typo in a keymap would leave someone pressing a key that does nothing.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_REFRESH = 5.0
DEFAULT_EVENTS_LIMIT = 200
CONSOLE_KEYS = ("refresh", "read_only", "theme", "events_limit")
KEY = re.compile(r"^[A-Za-z0-9_+\-]+$")  # one key as Textual names it: ctrl+k, f5, slash, C


class SettingsError(Exception):
    pass


@dataclass(frozen=True)
class Settings:
    refresh: float = DEFAULT_REFRESH
    read_only: bool = False
    theme: str | None = None
    events_limit: int = DEFAULT_EVENTS_LIMIT
    keymap: dict[str, str] = field(default_factory=dict)


def _number(table: dict[str, Any], key: str, where: str, default: float, *, whole: bool = False) -> float:
    value = table.get(key, default)
    wrong = isinstance(value, bool) or not isinstance(value, int | float)
    if wrong or (whole and not isinstance(value, int)) or value < 0 or (value == 0 and not whole):
        kind = "a whole number, 0 or more" if whole else "a number of seconds above 0"
        raise SettingsError(f"{where}: {key} must be {kind}, not {value!r}")
    return float(value)


def parse(data: dict[str, Any], where: str, binding_ids: Callable[[], set[str]]) -> Settings:
    """`binding_ids` gives the ids a keymap may name (asked only when the file has a [keys] table)."""
    console = data.get("console", {})
    if not isinstance(console, dict):
        raise SettingsError(f"{where}: [console] must be a table")
    unknown = sorted(set(console) - set(CONSOLE_KEYS))
    if unknown:
        raise SettingsError(
            f"{where}: [console]: unknown keys {', '.join(unknown)} (it may say {', '.join(CONSOLE_KEYS)})"
        )
    read_only = console.get("read_only", False)
    if not isinstance(read_only, bool):
        raise SettingsError(f"{where}: [console] read_only must be true or false, not {read_only!r}")
    theme = console.get("theme")
    if theme is not None and (not isinstance(theme, str) or not theme):
        raise SettingsError(f"{where}: [console] theme must be a theme's name")
    keys = data.get("keys", {})
    if not isinstance(keys, dict):
        raise SettingsError(f"{where}: [keys] must be a table of binding id = key(s)")
    known = binding_ids() if keys else set()
    keymap: dict[str, str] = {}
    for binding_id, value in keys.items():
        if binding_id not in known:
            raise SettingsError(
                f"{where}: [keys]: no binding has the id {binding_id!r} (the ids: {', '.join(sorted(known))})"
            )
        if not isinstance(value, str) or not all(KEY.match(key.strip()) for key in value.split(",")):
            raise SettingsError(f"{where}: [keys] {binding_id}: {value!r} is not a key or keys like 'ctrl+k,f5'")
        keymap[binding_id] = ",".join(key.strip() for key in value.split(","))
    return Settings(
        refresh=_number(console, "refresh", f"{where}: [console]", DEFAULT_REFRESH),
        read_only=read_only,
        theme=theme,
        events_limit=int(_number(console, "events_limit", f"{where}: [console]", DEFAULT_EVENTS_LIMIT, whole=True)),
        keymap=keymap,
    )


def load(path: Path, binding_ids: Callable[[], set[str]]) -> Settings:
    """The settings of `path`; the defaults when it does not exist."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return Settings()
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise SettingsError(f"{path}: {error}") from None
    return parse(data, str(path), binding_ids)
