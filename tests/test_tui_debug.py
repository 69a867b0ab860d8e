"""Guided debugging end to end: each lab scenario broken on a real node, found by its runbook in the
console, and cleared by walking it from the keyboard (Pilot): checks, actions with reasons, shells."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, RichLog

from lifsea_tui.client.fleet import Fleet
from lifsea_tui.client.node import NodeClient
from lifsea_tui.client.runbook import Status
from lifsea_tui.lab.layout import Layout
from lifsea_tui.tui.app import LifseaApp
from lifsea_tui.tui.screens.debug import DebugScreen, FleetDebugScreen
from lifsea_tui.tui.screens.shell import ShellScreen
from tests.conftest import lab
from tests.helpers import lab_client
from tests.test_tui_lab import open_node, own_settings, targets, until

pytestmark = pytest.mark.lab
__all__ = ["own_settings"]
NODE = "node1"


def http(status: dict, node: str = NODE, role: str = "reader") -> httpx.Client:
    return lab_client(next(n for n in status["nodes"] if n["name"] == node), role)


async def debug(pilot: Pilot, app: LifseaApp, runbook: str) -> DebugScreen:
    """Open the node's Debug screen, see `runbook` proposed (its first check fires) and start walking it."""
    node_screen = await open_node(pilot, app, NODE)
    await pilot.press("d")
    await until(pilot, "debug screen", lambda: isinstance(app.screen, DebugScreen))
    screen = app.screen
    assert isinstance(screen, DebugScreen) and node_screen is not screen
    await until(pilot, "the first checks", lambda: bool(screen.proposals), timeout=30)
    proposed = {p.runbook.id: p for p in screen.proposals}
    if proposed[runbook].status != Status.problem:  # say what the node lists now, to tell why next time
        listing = NodeClient(app.fleet.targets[NODE])
        try:
            rows = [
                f"{u.name} {u.active_state}/{u.sub_state} restarts={u.restarts} since={u.since}"
                for u in (await listing.services(kind="service")).units
                if u.restarts or u.name.startswith("lifsea-")
            ]
        finally:
            await listing.aclose()
        raise AssertionError(f"{runbook}: {proposed[runbook].summary}; the node lists now: {rows}")
    table = screen.query_one("#debug-runbooks", DataTable)
    table.move_cursor(row=table.get_row_index(runbook))
    await pilot.press("enter")
    await until(pilot, "the walk started", lambda: screen.walk is not None)
    return screen


async def waiting(pilot: Pilot, screen: DebugScreen, kind: str | None, timeout: float = 60.0) -> None:
    """Until the walk waits for the person at a step of `kind` (None: until it has ended)."""

    def arrived() -> bool:
        walk = screen.walk
        if walk is None or screen.busy:
            return False
        return walk.step is None if kind is None else walk.step is not None and walk.step.kind == kind

    def shown() -> str:
        return "\n".join(str(line.text) for line in screen.query_one("#debug-walk", RichLog).lines[-12:])

    await until(pilot, f"the walk at a {kind or 'end'} step; it shows:\n{shown()}", arrived, timeout=timeout)


async def take(pilot: Pilot, reason: str) -> None:
    await pilot.press("enter")
    await pilot.pause(0.2)
    await pilot.press(*reason)
    await pilot.press("enter")


async def shell(pilot: Pilot, app: LifseaApp, command: str) -> None:
    """Open the step's break-glass shell, run `command` as the person would, and leave."""
    await take(pilot, "INC-42 runbook shell")
    await until(pilot, "shell screen", lambda: isinstance(app.screen, ShellScreen))
    screen = app.screen
    assert isinstance(screen, ShellScreen)
    await until(pilot, "a prompt", lambda: "OPS" in screen.terminal.text(), timeout=30)
    hints = str(screen.query_one("#hints").content)
    assert "not typed for you" in hints
    assert "WRITABLE: the node" in screen.terminal.text()  # the runbook asked for it; the shell says so
    await pilot.press(*[{" ": "space"}.get(c, c) for c in command], "enter")
    await until(pilot, "the command ran", lambda: screen.terminal.text().count("OPS") >= 2, timeout=15)
    await pilot.press("ctrl+right_square_bracket")
    await until(pilot, "back from the shell", lambda: isinstance(app.screen, DebugScreen))


def trail(status: dict, screen: DebugScreen) -> list[dict]:
    """The walk's records in the node's audit log."""
    walk = screen.walk
    assert walk is not None and walk.unrecorded == 0
    first = min(e.audit_seq for e in walk.entries if e.audit_seq is not None)
    with http(status) as client:
        records = client.get("/v1/audit", params={"after": first - 1, "limit": 500}).json()["records"]
    return [r for r in records if r["action"].startswith("debug.") and r["params"].get("walk") == walk.id]


async def finished(pilot: Pilot, status: dict, screen: DebugScreen, tmp_path: Path) -> str:
    """The walk ended resolved, every step is on the node's audit log, and its export (ctrl+s) says so."""
    await pilot.press("ctrl+s")
    await pilot.pause(0.3)
    walk = screen.walk
    assert walk is not None and walk.resolved is True, [e.summary for e in walk.entries] if walk else None
    records = trail(status, screen)
    assert [r["action"] for r in records] == [f"debug.{e.event}" for e in walk.entries]
    assert records[0]["action"] == "debug.start" and records[-1]["action"] == "debug.end"
    exported = sorted(tmp_path.glob(f"lifsea-debug-{NODE}-{walk.runbook.id}-*.md"))
    assert exported, "ctrl+s wrote no file"
    text = exported[-1].read_text()
    assert "Outcome: resolved" in text and walk.id in text
    return text


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # where ctrl+s writes the Markdown
    return tmp_path


async def test_node_not_ready_restarts_the_stopped_service(
    fleet: tuple[dict, dict[str, str], Layout], in_tmp: Path
) -> None:
    status, env, _ = fleet
    # A broken runbook of the user's own: reported on the screen, and the others still work.
    user_books = Path(os.environ["LIFSEA_TUI_CONFIG_DIR"]) / "runbooks"
    user_books.mkdir(parents=True)
    (user_books / "mine.toml").write_text('id = "mine"\n[steps.x]\ncheck = "unit"\n')
    assert lab(["break", NODE, "--scenario", "stopped-service"], env).returncode == 0
    try:
        app = LifseaApp(Fleet(targets(status, role="operator")), refresh_interval=5.0)
        async with app.run_test(size=(150, 45)) as pilot:
            screen = await debug(pilot, app, "node-not-ready")
            lines = screen.query_one("#debug-walk", RichLog).lines
            shown = "".join(str(line.text) for line in lines).replace("\n", "")  # wrapped lines joined
            await waiting(pilot, screen, "action")
            walk = screen.walk
            assert walk is not None and walk.facts["unit"] == "nginx.service"
            assert walk.describe_action(walk.step) == "Restart nginx.service"  # type: ignore[arg-type]
            await take(pilot, "INC-42 nginx stopped by hand")
            await waiting(pilot, screen, None)
            await finished(pilot, status, screen, in_tmp)
            assert [e.path.name for e in screen.load_errors] == ["mine.toml"]
            assert f"runbook file not loaded: {screen.load_errors[0]}" in shown, shown
            assert "must be" in screen.load_errors[0].problem
        with http(status) as client:
            assert client.get("/v1/services/nginx.service").json()["active_state"] == "active"
            restart = [r for r in client.get("/v1/audit", params={"limit": 50}).json()["records"]
                       if r["action"] == "service.restart"][-1]  # fmt: skip
            assert "INC-42 nginx stopped by hand (runbook node-not-ready, walk" in restart["reason"]
    finally:
        lab(["fix", NODE, "--scenario", "stopped-service"], env)


async def test_a_broken_config_is_undone_in_the_shell_then_started(
    fleet: tuple[dict, dict[str, str], Layout], in_tmp: Path
) -> None:
    """nginx failed after a bad file landed in /etc: the runbook shows nginx's own error and the file,
    opens a shell with /etc writable where the person removes it, then starts nginx again."""
    status, env, _ = fleet
    assert lab(["break", NODE, "--scenario", "broken-config"], env).returncode == 0
    try:
        app = LifseaApp(Fleet(targets(status, role="admin")), refresh_interval=5.0)
        async with app.run_test(size=(150, 45)) as pilot:
            screen = await debug(pilot, app, "node-not-ready")
            await waiting(pilot, screen, "shell")
            walk = screen.walk
            assert walk is not None and walk.facts["changed"] == "/etc/nginx/sites-enabled/lifsea-broken"
            evidence = "\n".join(line for e in walk.entries for line in e.evidence)
            assert 'unexpected "}" in /etc/nginx/sites-enabled/lifsea-broken' in evidence
            await shell(pilot, app, "rm /host/etc/nginx/sites-enabled/lifsea-broken")
            await waiting(pilot, screen, "action")
            await take(pilot, "INC-47 typo removed")
            await waiting(pilot, screen, None)
            await finished(pilot, status, screen, in_tmp)
        with http(status) as client:
            assert client.get("/v1/services/nginx.service").json()["active_state"] == "active"
    finally:
        lab(["fix", NODE, "--scenario", "broken-config"], env)


async def test_crash_loop_is_found_and_stopped(fleet: tuple[dict, dict[str, str], Layout], in_tmp: Path) -> None:
    status, env, _ = fleet
    assert lab(["break", NODE, "--scenario", "crash-loop"], env).returncode == 0
    try:
        with http(status) as client:
            unit = "/v1/services/lifsea-app.service"
            await_restarts = 0
            for _ in range(100):
                await_restarts = client.get(unit).json().get("restarts") or 0
                if await_restarts >= 3:
                    break
                time.sleep(0.3)
            assert await_restarts >= 3
        app = LifseaApp(Fleet(targets(status, role="operator")), refresh_interval=5.0)
        async with app.run_test(size=(150, 45)) as pilot:
            screen = await debug(pilot, app, "crash-loop")
            await waiting(pilot, screen, "action")
            walk = screen.walk
            assert walk is not None and walk.facts["unit"] == "lifsea-app.service"
            # The evidence names the cause: the unit's own words, and the unit file new in /etc.
            evidence = "\n".join(line for e in walk.entries for line in e.evidence)
            assert "cannot parse /etc/lifsea-app.conf" in evidence
            assert "/etc/systemd/system/lifsea-app.service" in evidence
            await take(pilot, "INC-43 stop the loop")
            await waiting(pilot, screen, None)
            await finished(pilot, status, screen, in_tmp)
            # The stop says where the unit ended up (stopped, then unloaded: its 404 is that, not an error).
            (stopped,) = [e.summary for e in walk.entries if e.step == "stop"]
            assert "now stopped" in stopped or "now inactive" in stopped, stopped
        with http(status) as client:
            answer = client.get("/v1/services/lifsea-app.service")  # stopped: inactive, or unloaded (404)
            assert answer.status_code == 404 or answer.json()["active_state"] in ("inactive", "failed"), answer.text
    finally:
        lab(["fix", NODE, "--scenario", "crash-loop"], env)


async def test_var_full_leads_to_a_shell_that_frees_it(
    fleet: tuple[dict, dict[str, str], Layout], in_tmp: Path
) -> None:
    """/var filled to the last block: the runbook finds the file and opens a shell (with /var writable,
    and room for its recording taken from the agent's reserve); the person deletes the file there."""
    status, env, _ = fleet
    assert lab(["break", NODE, "--scenario", "var-full"], env).returncode == 0
    try:
        app = LifseaApp(Fleet(targets(status, role="admin")), refresh_interval=5.0)
        async with app.run_test(size=(150, 45)) as pilot:
            screen = await debug(pilot, app, "var-full")
            await waiting(pilot, screen, "shell")
            walk = screen.walk
            assert walk is not None and walk.facts["largest"] == "/var/lifsea-ballast"
            await shell(pilot, app, "rm /host/var/lifsea-ballast")
            await waiting(pilot, screen, None)
            text = await finished(pilot, status, screen, in_tmp)
            assert "ops session" in text
        with http(status) as client:
            assert client.get("/v1/diagnostics/disk").json()["used_percent"] < 50
    finally:
        lab(["fix", NODE, "--scenario", "var-full"], env)


async def test_dns_trouble_restarts_the_resolver(fleet: tuple[dict, dict[str, str], Layout], in_tmp: Path) -> None:
    status, env, _ = fleet
    assert lab(["break", NODE, "--scenario", "dns"], env).returncode == 0
    try:
        app = LifseaApp(Fleet(targets(status, role="operator")), refresh_interval=5.0)
        async with app.run_test(size=(150, 45)) as pilot:
            screen = await debug(pilot, app, "clock-dns")
            await waiting(pilot, screen, "action")
            await take(pilot, "INC-44 names do not resolve")
            await waiting(pilot, screen, None)
            await finished(pilot, status, screen, in_tmp)
        with http(status) as client:
            assert client.get("/v1/diagnostics/dns").json()["probes"][0]["ok"]
    finally:
        lab(["fix", NODE, "--scenario", "dns"], env)


async def test_bad_upgrade_is_rolled_back(fleet: tuple[dict, dict[str, str], Layout], in_tmp: Path) -> None:
    status, env, _ = fleet
    assert lab(["break", NODE, "--scenario", "bad-upgrade"], env).returncode == 0
    try:
        with http(status) as client:
            booted = next(d for d in client.get("/v1/deployments").json()["deployments"] if d["booted"])
            assert booted["version"].endswith("-bad")
        app = LifseaApp(Fleet(targets(status, role="operator")), refresh_interval=5.0)
        async with app.run_test(size=(150, 45)) as pilot:
            screen = await debug(pilot, app, "bad-upgrade")
            await waiting(pilot, screen, "action")
            walk = screen.walk
            assert walk is not None and walk.step is not None and walk.step.what == "rollback"
            await take(pilot, "INC-45 storage driver fails")
            await waiting(pilot, screen, "action")
            assert walk.step is not None and walk.step.what == "reboot"
            await take(pilot, "INC-45 boot the release before")
            await waiting(pilot, screen, None, timeout=240)
            await finished(pilot, status, screen, in_tmp)
        with http(status) as client:
            booted = next(d for d in client.get("/v1/deployments").json()["deployments"] if d["booted"])
            assert not booted["version"].endswith("-bad")
            assert client.get("/v1/services", params={"state": "failed"}).json()["units"] == []
    finally:
        assert lab(["fix", NODE, "--scenario", "bad-upgrade"], env).returncode == 0


async def test_fleet_debug_lists_what_fires_where(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    status, env, _ = fleet
    assert lab(["break", NODE, "--scenario", "dns"], env).returncode == 0
    try:
        app = LifseaApp(Fleet(targets(status, role="reader")), refresh_interval=5.0)
        async with app.run_test(size=(150, 45)) as pilot:
            await until(pilot, "nodes answered", lambda: all(s.reachable for s in app.fleet.snapshots.values()))
            await pilot.press("d")
            await until(pilot, "fleet debug", lambda: isinstance(app.screen, FleetDebugScreen))
            screen = app.screen
            table = screen.query_one("#fleet-debug", DataTable)
            await until(pilot, "both nodes checked", lambda: screen._done == 2, timeout=30)
            rows = {str(key.value) for key in table.rows}
            assert f"{NODE}/clock-dns" in rows
            assert "node2/clock-dns" not in rows  # node2's resolver answers
            table.move_cursor(row=table.get_row_index(f"{NODE}/clock-dns"))
            await pilot.press("enter")
            await until(pilot, "debug screen", lambda: isinstance(app.screen, DebugScreen))
            debug_screen = app.screen
            assert isinstance(debug_screen, DebugScreen)
            await waiting(pilot, debug_screen, "action")
            # A reader walks the checks; the action is offered, and refused by the node if taken.
            await take(pilot, "INC-46 try")
            await until(
                pilot, "refused", lambda: any("forbidden" in str(n.message) for n in app._notifications), timeout=10
            )
    finally:
        lab(["fix", NODE, "--scenario", "dns"], env)
