"""`lifsea-lab break` and `fix` on a real lab node, seen through the agent as an on-call engineer would."""

from __future__ import annotations

import ssl
import subprocess
import time
from collections.abc import Callable

import httpx
import pytest

from lifsea_tui.api import routes
from lifsea_tui.lab import image, scenarios
from lifsea_tui.lab.layout import Layout
from tests.conftest import lab

pytestmark = pytest.mark.lab


def wait(what: str, probe: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_each_scenario_breaks_the_node_and_fix_clears_it(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    status, env, layout = fleet
    node = status["nodes"][0]
    http = httpx.Client(
        base_url=node["url"],
        verify=ssl.create_default_context(cafile=node["ca_file"]),
        headers={"Authorization": f"Bearer {node['tokens']['reader']}"},
        timeout=30,
    )

    def unit(name: str) -> dict:
        answer = http.get(f"/v1/services/{name}")
        return answer.json() if answer.status_code == 200 else {"active_state": "absent"}

    def logs(name: str) -> str:
        return "\n".join(
            e["message"] for e in http.get(routes.LOGS, params={"unit": name, "limit": 50}).json()["entries"]
        )

    listed = lab(["scenarios"], env)
    assert listed.returncode == 0 and "crash-loop" in listed.stdout

    assert lab(["break", "node1", "--scenario", "stopped-service"], env).returncode == 0
    wait("nginx stopped", lambda: unit("nginx.service")["active_state"] == "inactive")
    assert lab(["fix", "node1", "--scenario", "stopped-service"], env).returncode == 0
    wait("nginx back", lambda: unit("nginx.service")["active_state"] == "active")

    assert lab(["break", "node1", "--scenario", "crash-loop"], env).returncode == 0
    wait("restarts climbing", lambda: (unit("lifsea-app.service").get("restarts") or 0) >= 2)
    assert "cannot parse /etc/lifsea-app.conf" in logs("lifsea-app.service")
    assert lab(["fix", "node1", "--scenario", "crash-loop"], env).returncode == 0
    wait("the crash loop gone", lambda: unit("lifsea-app.service")["active_state"] in ("absent", "inactive"))

    assert lab(["break", "node1", "--scenario", "broken-config"], env).returncode == 0
    wait("nginx failed", lambda: unit("nginx.service")["active_state"] == "failed")
    assert "emerg" in logs("nginx.service")
    failed = http.get(routes.SERVICES, params={"state": "failed"}).json()["units"]
    assert [u["name"] for u in failed] == ["nginx.service"]
    # The summary the fleet polls knows too, from systemd's signals.
    wait("failed in the summary", lambda: http.get(routes.SUMMARY).json()["failed_units"] == ["nginx.service"])
    assert lab(["fix", "node1"], env).returncode == 0  # all scenarios, whatever was applied
    wait("nginx back", lambda: unit("nginx.service")["active_state"] == "active")
    assert http.get(routes.SERVICES, params={"state": "failed"}).json()["units"] == []

    # A full /var: the node's own filesystem (a loop-mounted image), filled to the last block.
    machine = layout.node("node1")
    assert lab(["break", "node1", "--scenario", "var-full"], env).returncode == 0
    available = scenarios.in_node(machine, "df", "--output=avail", "-B1", "/var").split()[-1]
    assert int(available) < 1024 * 1024, available
    with pytest.raises(scenarios.ScenarioError, match="No space left"):
        scenarios.in_node(machine, "sh", "-c", "head -c 65536 /dev/zero > /var/tmp/lifsea-probe")
    assert lab(["fix", "node1", "--scenario", "var-full"], env).returncode == 0
    scenarios.in_node(
        machine, "sh", "-c", "head -c 65536 /dev/zero > /var/tmp/lifsea-probe && rm /var/tmp/lifsea-probe"
    )

    # A bad release, deployed and booted; fix boots the release before and takes the bad one away.
    def booted() -> str:
        return next(d for d in http.get(routes.DEPLOYMENTS).json()["deployments"] if d["booted"])["version"]

    before = booted()
    try:
        assert lab(["break", "node1", "--scenario", "bad-upgrade"], env).returncode == 0
        wait("the bad release booted", lambda: booted().endswith(".1-bad"), timeout=60)
        wait("its unit failed", lambda: unit("lifsea-storage.service")["active_state"] == "failed", timeout=30)
    finally:
        assert lab(["fix", "node1", "--scenario", "bad-upgrade"], env).returncode == 0
    wait("the release before booted", lambda: booted() == before, timeout=60)
    assert all(not (d["version"] or "").endswith("-bad") for d in http.get(routes.DEPLOYMENTS).json()["deployments"])
    assert "-bad" not in subprocess.run(
        ["ostree", f"--repo={layout.repo}", "show", "--print-metadata-key=version", image.REF],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip

    bad = lab(["break", "node9", "--scenario", "crash-loop"], env)
    assert bad.returncode == 2 and "no node 'node9'" in bad.stderr
    http.close()


async def test_fleet_shows_failed_units_and_the_fleet_wide_list(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    from textual.widgets import DataTable, TabbedContent

    from lifsea_tui.client.fleet import Fleet
    from lifsea_tui.tui.app import LifseaApp
    from lifsea_tui.tui.screens.failed import FailedUnitsScreen
    from lifsea_tui.tui.screens.node import NodeScreen
    from tests.test_tui_lab import row, targets, until

    status, env, _ = fleet
    assert lab(["break", "node2", "--scenario", "broken-config"], env).returncode == 0
    try:
        app = LifseaApp(Fleet(targets(status, role="reader")), refresh_interval=1.0)
        async with app.run_test(size=(150, 40)) as pilot:
            node2 = next(n for n in status["nodes"] if n["name"] == "node2")

            def summary() -> object:
                with httpx.Client(
                    base_url=node2["url"],
                    verify=ssl.create_default_context(cafile=node2["ca_file"]),
                    headers={"Authorization": f"Bearer {node2['tokens']['reader']}"},
                ) as http:
                    return http.get(routes.SUMMARY).json().get("failed_units"), http.get(
                        routes.SERVICES, params={"state": "failed"}
                    ).json()

            try:
                # Counted, whatever else may have failed on the node (a lab node can have its own trouble).
                await until(
                    pilot,
                    "node2 failed unit counted",
                    lambda: (
                        "nginx.service" in (app.fleet.snapshots["node2"].failed_units or [])
                        and row(app, "node2")[6] == str(len(app.fleet.snapshots["node2"].failed_units or []))
                    ),
                    timeout=60,
                )
            except AssertionError as error:
                raise AssertionError(
                    f"{error}; snapshot {app.fleet.snapshots['node2']}; agent says {summary()}"
                ) from None
            assert "nginx.service" not in (app.fleet.snapshots["node1"].failed_units or [])
            await pilot.press("F")
            await until(pilot, "failed units screen", lambda: isinstance(app.screen, FailedUnitsScreen))
            table = app.screen.query_one("#failed", DataTable)
            await until(pilot, "the row", lambda: "node2/nginx.service" in table.rows)
            await pilot.press("enter")
            await until(pilot, "node screen", lambda: isinstance(app.screen, NodeScreen))
            assert app.screen.query_one("#tabs", TabbedContent).active == "tab-services"
    finally:
        assert lab(["fix", "node2"], env).returncode == 0
