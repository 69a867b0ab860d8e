"""Paths of the user's world: config (inventory, themes) and remembered settings, in XDG directories."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
from pathlib import Path
from typing import Any

from platformdirs import user_config_dir, user_state_dir

# Shipped themes: the project's top-level themes/ folder is their source; theme_files links to it, so the
# wheel carries them (setuptools copies what the link points at) and a checkout reads them in place.
SHIPPED_THEMES = Path(__file__).resolve().parent / "theme_files"


def config_dir() -> Path:
    return Path(os.environ.get("LIFSEA_TUI_CONFIG_DIR") or user_config_dir("lifsea-tui"))


def config_file() -> Path:
    return config_dir() / "config.toml"


def user_themes() -> Path:
    return config_dir() / "themes"


def state_dir() -> Path:
    return Path(os.environ.get("LIFSEA_TUI_STATE_DIR") or user_state_dir("lifsea-tui"))


def settings_file() -> Path:
    return state_dir() / "settings.json"


def audit_heads_file() -> Path:
    """The newest audit record seen on each node (seq, hash): see client/heads.py."""
    return state_dir() / "audit-heads.json"


def console_log() -> Path:
    """The console's own log (rotated): what failed behind the screen, with its traceback."""
    return state_dir() / "console.log"


LOG_BYTES, LOG_KEEP = 1024 * 1024, 3


def start_console_log() -> Path | None:
    """Send the project's loggers (lifsea.*) to console.log, never to the terminal the console draws
    on; None when the state directory cannot be written (the console runs without its log)."""
    path = console_log()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=LOG_BYTES, backupCount=LOG_KEEP)
    except OSError:
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("lifsea")
    for old in [h for h in root.handlers if getattr(h, "console_log", False)]:
        root.removeHandler(old)
        old.close()
    handler.console_log = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
    return path


def load_settings() -> dict[str, Any]:
    try:
        value = json.loads(settings_file().read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def save_settings(settings: dict[str, Any]) -> None:
    path = settings_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(settings, indent=2))
    os.replace(tmp, path)
