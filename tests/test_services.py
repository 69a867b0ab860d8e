"""systemd units on real lab nodes through the agent: read, stop/start/restart, live state changes."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import websockets

from lifsea_tui.api import ActionRequest, routes
from lifsea_tui.client.node import NodeClient, NodeTarget
from lifsea_tui.client.runbook.checks import check_restarts
from lifsea_tui.client.runbook.model import Status
from lifsea_tui.lab.layout import Layout
from tests.helpers import RunningAgent, lab_client

pytestmark = pytest.mark.lab

CRASHLOOP = """[Unit]
Description=crashes at once, for the restart counter
StartLimitIntervalSec=0
[Service]
ExecStart=/bin/false
Restart=always
RestartSec=200ms
"""


def busctl(layout: Layout, node: str, *args: str) -> None:
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={layout.node(node).bus}"}
    subprocess.run(["busctl", *args], env=env, check=True, capture_output=True)


def test_units_are_listed_with_details_and_failed_first(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    status, _, _ = fleet
    with lab_client(status["nodes"][1], "reader") as http:
        units = http.get(routes.SERVICES).json()["units"]
        cron = next(u for u in units if u["name"] == "cron.service")
        assert cron["active_state"] == "active" and cron["sub_state"] == "running"
        assert cron["main_pid"] and cron["restarts"] == 0 and cron["since"]
        states = [u["active_state"] for u in units]
        assert states == sorted(states, key=lambda s: s != "failed")
        only = http.get(routes.SERVICES, params={"kind": "timer"}).json()["units"]
        assert only and all(u["name"].endswith(".timer") for u in only)
        assert http.get("/v1/services/cron.service").json()["name"] == "cron.service"
        assert http.get("/v1/services/no-such-thing.service").status_code == 404
        for bad in ("cron;reboot", "cron.service%20x", "..%2F..%2Fetc%2Fpasswd", "$(reboot).service", "x" * 300):
            answer = http.get(f"/v1/services/{bad}")
            assert answer.status_code in (400, 404), (bad, answer.text)
            if answer.status_code == 400:
                assert answer.json()["error"] == "bad_request"
        answer = http.post("/v1/services/cron.service/restart", json={"reason": "readers may not"})
        assert answer.status_code == 403


def test_a_listing_after_a_restart_shows_the_new_process_not_a_kept_one(
    fleet: tuple[dict, dict[str, str], Layout],
) -> None:
    """The agent keeps each unit's details between listings and drops them when systemd signals a change:
    after a restart the list must show the new main PID and the new since, never what it kept."""
    status, _, _ = fleet
    with lab_client(status["nodes"][1], "operator") as http:
        listed = lambda: next(u for u in http.get(routes.SERVICES).json()["units"] if u["name"] == "cron.service")  # noqa: E731
        before = listed()
        assert listed()["main_pid"] == before["main_pid"]  # kept, and still true
        answer = http.post("/v1/services/cron.service/restart", json={"reason": "INC-7 does the list follow?"})
        assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 10
        while (after := listed())["main_pid"] in (before["main_pid"], None) or after["active_state"] != "active":
            assert time.monotonic() < deadline, f"still {after} after the restart"
            time.sleep(0.2)
        assert after["since"] > before["since"]


async def test_a_stopped_unit_reaches_an_event_subscriber_within_a_second(
    fleet: tuple[dict, dict[str, str], Layout],
) -> None:
    status, _, _ = fleet
    node = status["nodes"][1]
    url = node["url"].replace("https://", "wss://") + routes.EVENTS
    context = ssl.create_default_context(cafile=node["ca_file"])
    async with websockets.connect(
        url, ssl=context, additional_headers={"Authorization": f"Bearer {node['tokens']['reader']}"}
    ) as events:
        await events.recv()  # hello
        await asyncio.sleep(0.5)  # the agent's unit watch is subscribed
        with lab_client(node, "operator") as http:
            started = time.monotonic()
            answer = await asyncio.to_thread(
                http.post, "/v1/services/cron.service/stop", json={"reason": "INC-5 stop cron"}
            )
            assert answer.status_code == 200, answer.text
            seen = None
            while seen is None:
                remaining = 1.0 - (time.monotonic() - started)
                assert remaining > 0, "no inactive cron.service event within 1 s"
                event = json.loads(await asyncio.wait_for(events.recv(), remaining))
                if event["kind"] == "services" and event["data"]["unit"] == "cron.service":
                    if event["data"].get("active_state") == "inactive":
                        seen = event
            answer = await asyncio.to_thread(
                http.post, "/v1/services/cron.service/start", json={"reason": "INC-5 start it again"}
            )
            assert answer.status_code == 200
            records = http.get(routes.AUDIT, params={"limit": 1000}).json()["records"]
    done = [(r["action"], r["reason"], r["outcome"]) for r in records if r["params"].get("unit") == "cron.service"]
    assert ("service.stop", "INC-5 stop cron", "ok") in done
    assert ("service.start", "INC-5 start it again", "ok") in done


def test_a_crash_looping_unit_counts_its_restarts(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    status, _, layout = fleet
    node = status["nodes"][1]
    unit_file = layout.node("node2").host_root / "etc" / "systemd" / "system" / "crashloop.service"
    unit_file.write_text(CRASHLOOP)
    try:
        busctl(layout, "node2", "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
               "org.freedesktop.systemd1.Manager", "Reload")  # fmt: skip
        with lab_client(node, "operator") as http:
            answer = http.post("/v1/services/crashloop.service/start", json={"reason": "INC-6 watch it crash"})
            assert answer.status_code == 200, answer.text
            deadline = time.monotonic() + 15
            restarts = 0
            while restarts < 3:
                assert time.monotonic() < deadline, f"NRestarts stayed at {restarts}"
                restarts = http.get("/v1/services/crashloop.service").json()["restarts"] or 0
                time.sleep(0.3)
            http.post("/v1/services/crashloop.service/stop", json={"reason": "INC-6 enough"})
    finally:
        unit_file.unlink(missing_ok=True)


SLOW_CRASHLOOP = """[Unit]
Description=runs a second, then crashes: running most of the time it loops
StartLimitIntervalSec=0
[Service]
ExecStart=/bin/sh -c 'sleep 1; exit 1'
Restart=always
RestartSec=500ms
"""


async def test_a_loop_caught_while_running_is_still_found(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    """The crash-loop check on a unit seen running between two crashes: it looks again and finds its
    restarts went up. Once the unit is stopped by hand it keeps its count but is not found (nor waited on)."""
    status, _, layout = fleet
    node = status["nodes"][1]
    target = NodeTarget(name="node2", url=node["url"], token=node["tokens"]["operator"], ca_file=Path(node["ca_file"]))
    units = layout.node("node2").host_root / "etc" / "systemd" / "system"
    unit_file, wanted = units / "slowloop.service", units / "multi-user.target.wants" / "slowloop.service"
    unit_file.write_text(SLOW_CRASHLOOP)
    wanted.symlink_to("../slowloop.service")  # enabled: stays loaded once stopped, with its count
    client = NodeClient(target)
    try:
        busctl(layout, "node2", "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
               "org.freedesktop.systemd1.Manager", "Reload")  # fmt: skip
        await client.service_action("slowloop.service", "start", ActionRequest(reason="INC-7 loop slowly"))
        deadline = time.monotonic() + 30
        while True:  # three restarts in, and caught running
            unit = await client.service("slowloop.service")
            if (unit.restarts or 0) >= 3 and unit.sub_state == "running":
                break
            assert time.monotonic() < deadline, unit
            await asyncio.sleep(0.05)
        found = await check_restarts(client, {"min": 3, "relook": 2})
        assert found.status is Status.problem, found
        line = next(line for line in found.evidence if line.startswith("slowloop.service:"))
        assert f"{unit.restarts} → " in line and "in 2 s" in line, line

        await client.service_action("slowloop.service", "stop", ActionRequest(reason="INC-7 enough"))
        assert ((await client.service("slowloop.service")).restarts or 0) >= 3  # systemd keeps the count
        began = time.monotonic()
        found = await check_restarts(client, {"min": 3, "relook": 2})
        assert not any("slowloop" in line for line in [found.summary, *found.evidence]), found
        assert time.monotonic() - began < 2, "a stopped unit is not looked at again"
    finally:
        wanted.unlink(missing_ok=True)
        unit_file.unlink(missing_ok=True)
        busctl(layout, "node2", "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
               "org.freedesktop.systemd1.Manager", "Reload")  # fmt: skip
        await client.aclose()


def test_units_that_stop_the_node_are_refused_by_any_name(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    """An operator once powered a lab node off with POST /v1/services/poweroff.target/start."""
    status, _, layout = fleet
    node = status["nodes"][1]
    machine = layout.node("node2")
    leader_before = os.readlink(machine.host_root)
    with lab_client(node, "admin") as http:
        for unit, action in (
            ("poweroff.target", "start"),
            ("runlevel0.target", "start"),  # an alias of poweroff.target
            ("ctrl-alt-del.target", "start"),  # an alias of reboot.target
            ("emergency.target", "start"),
            ("debug-shell.service", "start"),
            ("dbus.service", "stop"),
            ("lifsea-agent.service", "restart"),
        ):
            answer = http.post(f"/v1/services/{unit}/{action}", json={"reason": "INC-11 try the boundary"})
            assert answer.status_code == 403, (unit, answer.text)
            assert answer.json()["error"] == "forbidden" and "deny list" in answer.json()["detail"]
        assert http.get(routes.NODE).status_code == 200
        records = http.get(routes.AUDIT, params={"limit": 1000}).json()["records"]
    assert os.readlink(machine.host_root) == leader_before  # the node did not go down or reboot
    refused = {r["params"]["unit"] for r in records if r["outcome"].startswith("refused") and "unit" in r["params"]}
    assert {"poweroff.target", "runlevel0.target", "debug-shell.service"} <= refused
    alias = next(r for r in records if r["params"].get("unit") == "runlevel0.target")
    assert "poweroff.target" in alias["params"]["names"]


def test_an_allow_list_limits_units_even_without_a_bus(tmp_path, tiny_node) -> None:  # type: ignore[no-untyped-def]
    from lifsea_tui.agent.config import ServicesConfig
    from tests.helpers import start_agent

    running = start_agent(
        tmp_path / "agent", host_root=tiny_node.host_root, sysroot_path=tiny_node.sysroot,
        services=ServicesConfig(allow=["nginx.service"], deny=["nginx-debug.service"]),
    )  # fmt: skip
    try:
        with httpx.Client(
            base_url=running.url, verify=running.ssl_context(), headers=running.headers("operator")
        ) as http:
            refused = http.post("/v1/services/cron.service/restart", json={"reason": "INC-11"})
            denied = http.post("/v1/services/nginx-debug.service/start", json={"reason": "INC-11"})
            allowed = http.post("/v1/services/nginx.service/restart", json={"reason": "INC-11"})
    finally:
        running.stop()
    assert refused.status_code == 403 and "allow list" in refused.json()["detail"]
    assert denied.status_code == 403 and "deny list" in denied.json()["detail"]
    assert allowed.status_code == 503  # allowed; the tiny node just has no systemd to ask


def test_no_bus_is_503_with_the_reason(agent: RunningAgent) -> None:
    """The tiny node has no systemd: the answer says so instead of failing obscurely."""
    answer = httpx.get(agent.url + routes.SERVICES, headers=agent.headers("reader"), verify=agent.ssl_context())
    assert answer.status_code == 503 and "system bus" in answer.json()["detail"]
    assert answer.json()["error"] == "unavailable"


async def test_services_tab_shows_units_live_and_acts_on_them(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    from textual.widgets import DataTable, TabbedContent

    from lifsea_tui.client.fleet import Fleet
    from lifsea_tui.tui.app import LifseaApp
    from tests.test_tui_lab import open_node, targets, until

    status, _, _ = fleet
    app = LifseaApp(Fleet(targets(status, role="operator")), refresh_interval=5.0)
    async with app.run_test(size=(140, 40)) as pilot:
        screen = await open_node(pilot, app, "node2", "tab-services")
        units = screen.query_one("#services", DataTable)
        await until(pilot, "units listed", lambda: "cron.service" in units.rows)

        def cron_state() -> str:
            return str(units.get_row("cron.service")[1])

        assert cron_state() == "active/running"
        units.move_cursor(row=units.get_row_index("cron.service"))
        await pilot.press("X")
        await pilot.pause(0.2)
        await pilot.press(*"INC-7 stop cron from the console", "enter")
        await until(pilot, "cron stopped, shown live", lambda: cron_state().startswith("inactive"), timeout=10)
        await pilot.press("S")
        await pilot.pause(0.2)
        await pilot.press(*"INC-7 start it again", "enter")
        await until(pilot, "cron running again", lambda: cron_state() == "active/running", timeout=10)
        # The unit keys live on the Services tab only.
        screen.query_one("#tabs", TabbedContent).active = "tab-overview"
        await pilot.pause(0.2)
        shown = {key for key, active in app.active_bindings.items() if active.binding.show and active.enabled}
        assert shown.isdisjoint({"R", "S", "X"})
