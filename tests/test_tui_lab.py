"""The console against real lab nodes, driven from the keyboard with Pilot."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Static, TabbedContent

from lifsea_tui.client.fleet import Fleet
from lifsea_tui.client.node import NodeTarget
from lifsea_tui.lab.layout import Layout
from lifsea_tui.tui.app import LifseaApp
from lifsea_tui.tui.screens.node import NodeScreen
from tests.conftest import lab

pytestmark = pytest.mark.lab


def targets(status: dict, role: str = "operator") -> list[NodeTarget]:
    return [
        NodeTarget(name=n["name"], url=n["url"], token=n["tokens"][role], ca_file=Path(n["ca_file"]))
        for n in status["nodes"]
    ]


async def until(pilot: Pilot, what: str, condition: Callable[[], bool], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, (
            f"timed out waiting for {what}; "
            + "; ".join(n.message for n in pilot.app._notifications)
            + f"; {pilot.app.screen}"
        )
        await pilot.pause(0.1)


def row(app: LifseaApp, node: str) -> list[str]:
    table = app.screen.query_one("#nodes", DataTable)
    return [str(getattr(cell, "plain", cell)) for cell in table.get_row(node)]


async def open_node(pilot: Pilot, app: LifseaApp, node: str, tab: str | None = None) -> NodeScreen:
    """From the fleet table: wait for `node` to answer, open it, and show `tab` if given."""
    await until(pilot, f"{node} answered", lambda: app.fleet.snapshots[node].reachable)
    table = app.screen.query_one("#nodes", DataTable)
    table.move_cursor(row=table.get_row_index(node))
    await pilot.press("enter")
    await until(pilot, "node screen", lambda: isinstance(app.screen, NodeScreen))
    screen = app.screen
    assert isinstance(screen, NodeScreen)
    if tab is not None:
        screen.query_one("#tabs", TabbedContent).active = tab
    return screen


async def act(pilot: Pilot, key: str, reason: str) -> None:
    await pilot.press(key)
    await pilot.pause(0.2)
    await pilot.press(*reason)
    await pilot.press("enter")


@pytest.fixture(autouse=True)
def own_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFSEA_TUI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LIFSEA_TUI_CONFIG_DIR", str(tmp_path / "config"))


async def test_fleet_shows_each_nodes_booted_version(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    status, _, _ = fleet
    app = LifseaApp(Fleet(targets(status)), refresh_interval=1.0)
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, "every node answered", lambda: all(s.reachable for s in app.fleet.snapshots.values()))
        await pilot.pause(0.3)
        for snapshot in app.fleet.snapshots.values():
            cells = row(app, snapshot.name)
            assert cells[1] == snapshot.name and "ok" in cells[2]
            assert cells[3] == snapshot.booted_version and cells[3] not in ("", "?")


async def test_upgrade_and_rollback_from_the_keyboard(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    status, env, _ = fleet
    node = "node2"
    published = lab(["publish", "--version", "7.0", "--subject", "LifseaOS 7.0: from the console"], env)
    assert published.returncode == 0, published.stderr
    app = LifseaApp(Fleet(targets(status)), refresh_interval=1.0)
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, "node2 answered", lambda: app.fleet.snapshots[node].reachable)
        original = app.fleet.snapshots[node].booted_version
        table = app.screen.query_one("#nodes", DataTable)
        table.move_cursor(row=table.get_row_index(node))
        await pilot.press("enter")
        await until(pilot, "node screen", lambda: isinstance(app.screen, NodeScreen))
        screen = app.screen

        await act(pilot, "c", "CHG-42 look for 7.0")
        await until(
            pilot,
            "7.0 available",
            lambda: (
                (update := app.fleet.snapshots[node].update) is not None
                and update.state == "available"
                and update.targets[0].version == "7.0"
            ),
        )
        await act(pilot, "s", "CHG-42 stage 7.0")
        await until(
            pilot,
            "7.0 pending",
            lambda: any(d.pending and d.version == "7.0" for d in app.fleet.snapshots[node].deployments),
        )
        await act(pilot, "r", "CHG-42 reboot into 7.0")
        await pilot.press("escape")
        await until(pilot, "booted 7.0", lambda: app.fleet.snapshots[node].booted_version == "7.0")
        await pilot.pause(0.5)
        assert row(app, node)[3] == "7.0"

        await pilot.press("enter")
        await until(pilot, "node screen", lambda: isinstance(app.screen, NodeScreen))
        await act(pilot, "b", "CHG-42 roll back")
        await until(
            pilot,
            "rollback pending",
            lambda: any(d.pending and d.version == original for d in app.fleet.snapshots[node].deployments),
            timeout=30,
        )
        await act(pilot, "r", "CHG-42 reboot into the old version")
        await pilot.press("escape")
        await until(pilot, f"booted {original}", lambda: app.fleet.snapshots[node].booted_version == original)

        await pilot.press("enter")
        await until(pilot, "node screen", lambda: isinstance(app.screen, NodeScreen))
        screen = app.screen
        screen.query_one("#tabs").active = "tab-audit"
        audit = screen.query_one("#audit-table", DataTable)
        await until(pilot, "audit rows", lambda: audit.row_count > 0)
        reasons = {str(audit.get_row_at(i)[5]) for i in range(audit.row_count)}
        for reason in (
            "CHG-42 look for 7.0",
            "CHG-42 stage 7.0",
            "CHG-42 reboot into 7.0",
            "CHG-42 roll back",
            "CHG-42 reboot into the old version",
        ):
            assert reason in reasons
        await pilot.press("v")
        await until(pilot, "chain verified", lambda: "verified" in str(screen.query_one("#verify", Static).content))


async def test_read_only_hides_actions(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    status, _, _ = fleet
    app = LifseaApp(Fleet(targets(status, role="reader")), read_only=True)
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, "nodes answered", lambda: all(s.reachable for s in app.fleet.snapshots.values()))
        await pilot.press("c")
        await pilot.pause(0.3)
        assert not app.screen.is_modal  # no confirmation: the action does not exist in read-only mode
        shown = {key for key, active in app.active_bindings.items() if active.binding.show and active.enabled}
        assert shown.isdisjoint({"c", "s", "b", "r"})


async def test_fleet_follows_node_events(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    """A change made elsewhere (here, straight through the API) reaches the fleet table from the node's event
    stream: polling is set to once an hour, so only the stream can bring it."""
    status, env, _ = fleet
    node = status["nodes"][0]
    published = lab(["publish", "--version", "8.0", "--subject", "LifseaOS 8.0: seen live"], env)
    assert published.returncode == 0, published.stderr
    app = LifseaApp(Fleet(targets(status)), refresh_interval=3600)
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, "nodes answered", lambda: all(s.reachable for s in app.fleet.snapshots.values()))
        await pilot.pause(1.0)  # the event streams are open
        context = ssl.create_default_context(cafile=node["ca_file"])
        async with httpx.AsyncClient(
            base_url=node["url"],
            verify=context,
            timeout=120,
            headers={"Authorization": f"Bearer {node['tokens']['operator']}"},
        ) as http:
            response = await http.post("/v1/upgrades/check", json={"reason": "checked outside the console"})
            assert response.status_code == 200, response.text
        started = time.monotonic()
        await until(pilot, "8.0 in the fleet table", lambda: "8.0" in row(app, node["name"])[5], timeout=10)
        assert time.monotonic() - started < 5
