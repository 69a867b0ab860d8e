"""A failure inside the console surfaces once, where the user looks, and the console keeps running.

The frozen fleet stands in for the network: what is tested is the console's handling of a bug in its own
code path, which a real agent cannot be made to trigger.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from textual.widgets import DataTable

from lifsea_tui.tui import locations
from lifsea_tui.tui.app import LifseaApp
from lifsea_tui.tui.screens.node import NodeScreen
from tests.frozen import FrozenClient, FrozenFleet


class BrokenClient(FrozenClient):
    async def history(self) -> object:
        raise ZeroDivisionError("history blew up")

    async def audit_verify(self) -> object:
        raise ZeroDivisionError("verify blew up")


async def test_failures_are_shown_not_swallowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFSEA_TUI_STATE_DIR", str(tmp_path))
    fleet = FrozenFleet()
    fleet.clients["edge-1"] = BrokenClient("edge-1")  # type: ignore[assignment]
    app = LifseaApp(fleet, refresh_interval=3600)
    project = logging.getLogger("lifsea")  # given back as it was when the test ends
    for name in ("handlers", "propagate", "level"):
        monkeypatch.setattr(project, name, getattr(project, name) if name != "handlers" else [])
    assert locations.start_console_log() == tmp_path / "console.log"
    async with app.run_test(size=(120, 32)) as pilot:
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.5)
        assert isinstance(app.screen, NodeScreen)
        history = app.screen.query_one("#history", DataTable)
        assert "history blew up" in str(history.get_row_at(0))  # that tab says so; the others loaded
        assert app.screen.query_one("#deployments", DataTable).row_count == 2
        await pilot.press("v")  # a worker that raises: one notification, no traceback, still running
        await pilot.pause(0.5)
        messages = [n.message for n in app._notifications]
        assert any("ZeroDivisionError: verify blew up" in m for m in messages), messages
        logged = locations.console_log().read_text()  # and the console's own log has its traceback
        assert "worker " in logged and "Traceback" in logged and "ZeroDivisionError: verify blew up" in logged
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert app.is_running and not isinstance(app.screen, NodeScreen)
