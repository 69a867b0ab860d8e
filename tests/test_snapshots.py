"""Pictures of each screen and of the fleet in every shipped theme (pytest-textual-snapshot; update with
`pytest tests/test_snapshots.py --snapshot-update` after a deliberate change, and look at the diff)."""

from __future__ import annotations

from pathlib import Path

import pytest
import uvicorn
from textual.pilot import Pilot
from textual.widgets import Input

from lifsea_tui.api import OpsSessionRequest
from lifsea_tui.client.fleet import Fleet
from lifsea_tui.client.node import NodeTarget
from lifsea_tui.tui.app import LifseaApp
from lifsea_tui.tui.cast import parse
from lifsea_tui.tui.locations import SHIPPED_THEMES
from tests.attach import attach_node
from tests.frozen import FrozenFleet
from tests.helpers import issue_pki, serve

SIZE = (120, 32)


@pytest.fixture(autouse=True)
def own_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFSEA_TUI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LIFSEA_TUI_CONFIG_DIR", str(tmp_path / "config"))


def app() -> LifseaApp:
    return LifseaApp(FrozenFleet(), refresh_interval=3600)


async def settle(pilot: Pilot) -> None:
    """Let the screen draw, then stop every input's cursor blinking (shown steadily): a slow machine
    would otherwise catch the cursor in either phase and the picture would differ run to run."""
    await pilot.pause(0.4)
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    await pilot.pause()


@pytest.mark.parametrize("theme", sorted(path.stem for path in SHIPPED_THEMES.glob("*.toml")))
def test_fleet_in_each_theme(snap_compare, theme: str) -> None:
    async def choose(pilot: Pilot) -> None:
        pilot.app.theme = theme
        await settle(pilot)

    assert snap_compare(app(), terminal_size=SIZE, run_before=choose)


def test_fleet_with_selection_and_filter(snap_compare) -> None:
    async def select_and_filter(pilot: Pilot) -> None:
        await settle(pilot)
        await pilot.press("space", "down", "space", "slash", "e", "d")
        await settle(pilot)

    assert snap_compare(app(), terminal_size=SIZE, run_before=select_and_filter)


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


def test_ops_modal(snap_compare) -> None:
    async def open_modal(pilot: Pilot) -> None:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("o")
        await settle(pilot)
        await pilot.press(*"INC-7 disk full")
        await settle(pilot)

    assert snap_compare(app(), terminal_size=SIZE, run_before=open_modal)


def test_logs_screen(snap_compare) -> None:
    async def open_logs(pilot: Pilot) -> None:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("l")
        await settle(pilot)

    assert snap_compare(app(), terminal_size=SIZE, run_before=open_logs)


def test_debug_screen(snap_compare) -> None:
    async def open_debug(pilot: Pilot) -> None:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("d")
        await pilot.pause(1.0)

    assert snap_compare(app(), terminal_size=SIZE, run_before=open_debug)


def test_player(snap_compare) -> None:
    recording = b"\n".join(
        [
            b'{"version": 2, "width": 60, "height": 10, "title": "edge-1: INC-7 disk full"}',
            b'[0.1, "m", "session start"]',
            b'[0.2, "o", "$ df -h /host/var\\r\\nFilesystem  Size  Used Avail Use%\\r\\n"]',
            b'[0.25, "o", "/dev/loop0  2.0G  1.8G  200M  90%\\r\\n"]',
            b'[0.3, "o", "\\u001b]0;title\\u0007$ exit\\r\\n"]',
            b'[0.4, "m", "session end: exited"]',
        ]
    )

    async def play(pilot: Pilot) -> None:
        await settle(pilot)
        pilot.app.open_player(parse(recording), "edge-1/0123456789abcdef")  # type: ignore[attr-defined]
        await pilot.pause(1.0)

    assert snap_compare(app(), terminal_size=SIZE, run_before=play)


def test_shell_screen_after_the_session_ended(snap_compare, tmp_path: Path) -> None:
    """The one screen that needs a live websocket: a real one on loopback, that prints and ends at once."""
    ca, cert, key = issue_pki(tmp_path / "pki", "shell")
    screen = b"$ df -h /host/var\r\n/dev/loop0  2.0G  1.8G  200M  90%\r\n$ exit 3\r\n"
    served = serve(
        uvicorn.Config(
            attach_node([], screen=screen, exit_code=3),
            ssl_certfile=str(cert), ssl_keyfile=str(key), log_level="critical", lifespan="off", ws="websockets-sansio",
        )
    )  # fmt: skip
    fleet = Fleet([NodeTarget(name="edge-1", url=served.url, token="t", ca_file=ca)])

    async def shell(pilot: Pilot) -> None:
        pilot.app.open_shell("edge-1", OpsSessionRequest(reason="INC-7 disk full"))  # type: ignore[attr-defined]
        await pilot.pause(1.5)

    try:
        assert snap_compare(LifseaApp(fleet, refresh_interval=3600), terminal_size=SIZE, run_before=shell)
    finally:
        served.stop()


def test_failed_units(snap_compare) -> None:
    async def open_failed(pilot: Pilot) -> None:
        await settle(pilot)
        await pilot.press("F")
        await settle(pilot)

    assert snap_compare(app(), terminal_size=SIZE, run_before=open_failed)
