"""The node's journal through the agent, on real lab nodes: lines written inside the node with
systemd-cat are read, followed live, resumed from a cursor; bad requests are refused clearly."""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
import subprocess
import time

import httpx
import pytest
import websockets

from lifsea_tui.api import routes
from lifsea_tui.lab.layout import Layout

pytestmark = pytest.mark.lab


def in_node(layout: Layout, node: str, *argv: str, data: bytes | None = None) -> None:
    """Run a command inside the node (its own systemd-cat, talking to its own journald)."""
    leader = str(layout.node(node).state()["leader"])
    subprocess.run(
        ["nsenter", f"--target={leader}", "--mount", "--uts", "--ipc", "--net", "--pid", *argv],
        input=data, check=True, capture_output=True, timeout=20,
    )  # fmt: skip


def reader(node: dict) -> httpx.Client:
    return httpx.Client(
        base_url=node["url"],
        verify=ssl.create_default_context(cafile=node["ca_file"]),
        headers={"Authorization": f"Bearer {node['tokens']['reader']}"},
        timeout=30,
    )


async def test_a_line_written_in_the_node_reaches_a_follower_within_a_second(
    fleet: tuple[dict, dict[str, str], Layout],
) -> None:
    status, _, layout = fleet
    node = status["nodes"][1]
    token = f"lifsea-follow-{secrets.token_hex(4)}"
    url = node["url"].replace("https://", "wss://") + routes.LOGS_FOLLOW + f"?backlog=0&grep={token}"
    async with websockets.connect(
        url,
        ssl=ssl.create_default_context(cafile=node["ca_file"]),
        additional_headers={"Authorization": f"Bearer {node['tokens']['reader']}"},
    ) as stream:
        await asyncio.sleep(1.0)  # journalctl is following
        started = time.monotonic()
        await asyncio.to_thread(in_node, layout, "node2", "systemd-cat", "-t", "lifsea-test", "echo", f"{token} one")
        (entry,) = json.loads(await asyncio.wait_for(stream.recv(), 5))  # a frame is an array: a burst
        elapsed = time.monotonic() - started
    assert entry["message"] == f"{token} one" and entry["identifier"] == "lifsea-test"
    assert elapsed < 1.0, f"{elapsed:.2f} s"


def test_lines_journald_keeps_in_run_are_read_too(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    """A node whose journald writes to /run/log/journal (before its flush to /var, after a failed one,
    Storage=volatile): its newest lines are there, and the logs show them, merged with /var's."""
    status, _, layout = fleet
    node = status["nodes"][1]
    token = f"lifsea-volatile-{secrets.token_hex(4)}"
    in_node(layout, "node2", "systemd-cat", "-t", "lifsea-test", "echo", f"{token} persistent")
    in_node(layout, "node2", "journalctl", "--relinquish-var")  # journald now writes to /run only
    try:
        in_node(layout, "node2", "systemd-cat", "-t", "lifsea-test", "echo", f"{token} volatile")
        with reader(node) as http:
            deadline = time.monotonic() + 10
            while len((page := http.get(routes.LOGS, params={"grep": token}).json())["entries"]) < 2:
                assert time.monotonic() < deadline, page
                time.sleep(0.2)
        assert sorted(e["message"] for e in page["entries"]) == [f"{token} persistent", f"{token} volatile"]
        assert any((layout.node("node2").host_root / "run/log/journal").iterdir())
    finally:
        in_node(layout, "node2", "journalctl", "--flush")


def test_read_resume_filters_and_odd_messages(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    status, _, layout = fleet
    node = status["nodes"][1]
    token = f"lifsea-read-{secrets.token_hex(4)}"
    in_node(layout, "node2", "systemd-cat", "-t", "lifsea-test", "echo", f"{token} first")
    with reader(node) as http:
        deadline = time.monotonic() + 10
        while not (page := http.get(routes.LOGS, params={"grep": token}).json())["entries"]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert [e["message"] for e in page["entries"]] == [f"{token} first"]
        cursor = page["cursor"]
        in_node(layout, "node2", "systemd-cat", "-t", "lifsea-test", "echo", f"{token} second")
        time.sleep(0.5)
        after = http.get(routes.LOGS, params={"grep": token, "after_cursor": cursor}).json()
        assert [e["message"] for e in after["entries"]] == [f"{token} second"]

        # A message that is not text: shown with its bytes escaped, and flagged.
        in_node(layout, "node2", "systemd-cat", "-t", "lifsea-test", data=f"{token} bin \x01".encode() + b"\xff\xfe\n")
        time.sleep(0.5)
        odd = http.get(routes.LOGS, params={"grep": f"{token} bin", "limit": 5}).json()["entries"]
        assert odd and odd[-1]["binary"] and "\\xff" in odd[-1]["message"]

        # A huge message (journald keeps lines up to 48 KiB): cut at 16 KiB, and said so.
        in_node(
            layout, "node2", "systemd-cat", "-t", "lifsea-test", data=f"{token} huge ".encode() + b"x" * 30000 + b"\n"
        )
        time.sleep(0.5)
        huge = http.get(routes.LOGS, params={"grep": f"{token} huge", "limit": 5}).json()["entries"]
        assert huge and huge[-1]["cut"] and len(huge[-1]["message"]) == 16 * 1024

        units = http.get(routes.LOGS, params={"unit": "cron.service", "limit": 5}).json()["entries"]
        assert units and all(e["unit"] == "cron.service" for e in units)
        urgent = http.get(routes.LOGS, params={"priority": 3, "limit": 50}).json()["entries"]
        assert all(e["priority"] <= 3 for e in urgent)

        for params, fragment in (
            ({"grep": "(unclosed"}, "pattern"),
            ({"unit": "../../etc/passwd"}, "not a unit name"),
            ({"priority": 9}, "priority"),
            ({"limit": 0}, "limit"),
        ):
            answer = http.get(routes.LOGS, params=params)
            assert answer.status_code == 400, (params, answer.text)
            assert fragment in answer.json()["detail"], answer.text


async def test_follow_refuses_bad_parameters_with_a_clear_close(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    status, _, _ = fleet
    node = status["nodes"][1]
    base = node["url"].replace("https://", "wss://") + routes.LOGS_FOLLOW
    for query in ("?priority=12", "?unit=a/b", "?backlog=-1"):
        async with websockets.connect(
            base + query,
            ssl=ssl.create_default_context(cafile=node["ca_file"]),
            additional_headers={"Authorization": f"Bearer {node['tokens']['reader']}"},
        ) as stream:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(stream.recv(), 5)
            assert stream.close_code == 4400, query


async def test_follows_are_limited_per_caller_not_one_journalctl_each(
    fleet: tuple[dict, dict[str, str], Layout],
) -> None:
    """200 follows from one reader once ran 200 journalctl processes (1.8 GB) and stalled /healthz."""
    status, _, layout = fleet
    node = status["nodes"][1]
    journal = str(layout.node(node["name"]).host_root)
    url = node["url"].replace("https://", "wss://") + routes.LOGS_FOLLOW + "?backlog=0"
    context = ssl.create_default_context(cafile=node["ca_file"])

    def journalctls() -> int:
        found = subprocess.run(["pgrep", "-f", f"journalctl --directory={journal}"], capture_output=True, text=True)
        return len(found.stdout.split())

    async def follow(role: str) -> websockets.ClientConnection:
        return await websockets.connect(
            url, ssl=context, additional_headers={"Authorization": f"Bearer {node['tokens'][role]}"}
        )

    before = journalctls()
    streams = [await follow("reader") for _ in range(12)]
    try:
        closed = []
        for stream in streams:
            try:
                await asyncio.wait_for(stream.recv(), 1.5)
            except TimeoutError:
                continue  # following: nothing new to say
            except websockets.ConnectionClosed:
                closed.append(stream.close_code)
        assert closed == [routes.CLOSE_TOO_MANY] * 8, closed
        assert journalctls() - before <= 4
        other = await follow("operator")  # another caller still may
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(other.recv(), 1.0)
        await other.close()
        with reader(node) as http:
            started = time.monotonic()
            assert http.get(routes.HEALTHZ).status_code == 200
            assert time.monotonic() - started < 1.0
            records = http.get(routes.AUDIT, params={"limit": 200}).json()["records"]
    finally:
        for stream in streams:
            await stream.close()
    refusals = [r for r in records if r["action"] == "logs.follow" and r["actor"] == "lab-reader"]
    assert len(refusals) == 1 and "at most 4" in refusals[0]["outcome"]  # the rest go into the summary


async def test_logs_pane_follows_searches_and_saves(
    fleet: tuple[dict, dict[str, str], Layout], tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from textual.widgets import DataTable, TabbedContent

    from lifsea_tui.client.fleet import Fleet
    from lifsea_tui.tui.app import LifseaApp
    from lifsea_tui.tui.logview import LogView
    from lifsea_tui.tui.screens.logs import LogsScreen
    from tests.test_tui_lab import open_node, targets, until

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIFSEA_TUI_STATE_DIR", str(tmp_path / "state"))
    status, _, layout = fleet
    app = LifseaApp(Fleet(targets(status, role="reader")), refresh_interval=5.0)
    token = f"lifsea-pane-{secrets.token_hex(4)}"
    async with app.run_test(size=(140, 40)) as pilot:
        # A unit's logs from the Services tab.
        node_screen = await open_node(pilot, app, "node2", "tab-services")
        units = node_screen.query_one("#services", DataTable)
        await until(pilot, "units", lambda: "cron.service" in units.rows)
        units.move_cursor(row=units.get_row_index("cron.service"))
        await pilot.press("l")
        await until(pilot, "logs screen", lambda: isinstance(app.screen, LogsScreen))
        logs = app.screen
        assert isinstance(logs, LogsScreen) and logs.unit == "cron.service"
        await until(pilot, "cron's lines", lambda: len(logs.entries) > 0, timeout=15)
        assert all(e.unit == "cron.service" for e in logs.entries)
        await pilot.press("escape")

        # The whole journal, followed live.
        node_screen.query_one("#tabs", TabbedContent).active = "tab-overview"
        await pilot.press("l")
        await until(pilot, "logs screen", lambda: isinstance(app.screen, LogsScreen))
        logs = app.screen
        assert isinstance(logs, LogsScreen) and logs.unit is None
        await until(pilot, "following", lambda: logs.state == "following" and len(logs.entries) > 0, timeout=15)
        await pilot.pause(1.0)
        await asyncio.to_thread(in_node, layout, "node2", "systemd-cat", "-t", "lifsea-test", "echo", token)
        await until(pilot, "the new line", lambda: any(token in e.message for e in logs.entries), timeout=5)
        view = logs.query_one(LogView)
        await until(pilot, "the new line on screen", lambda: any(token in line for line in view.shown()), timeout=5)

        await pilot.press("slash", *token, "enter")
        assert logs.search == token
        await pilot.press("ctrl+s")
        saved = list(tmp_path.glob("lifsea-logs-node2-all-*.log"))
        assert saved and token in saved[0].read_text()
        await pilot.press("p")
        await until(
            pilot, "priority filter", lambda: "warning and worse" in str(logs.query_one("#logs-status").content)
        )
        await pilot.pause(1.0)
        assert all(e.priority <= 4 for e in logs.entries)
