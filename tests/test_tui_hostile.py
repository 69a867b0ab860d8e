"""The real console against a hostile node (tests/hostile.py): every screen it can reach, opened.

A reader token once crashed every operator's console (`[/nope]` in a debug record's summary became a
MarkupError on the Audit tab), and OSC 52 / OSC 0 sequences from a node reached the operator's terminal
raw. Here each screen is opened against a node whose every string attacks, and what the console would
draw is read back: no crash, no control character anywhere in it, the text shown literally.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, TabbedContent

from lifsea_tui.client.fleet import Fleet
from lifsea_tui.client.node import NodeTarget
from lifsea_tui.tui.app import LifseaApp
from lifsea_tui.tui.player import PlayerScreen
from lifsea_tui.tui.screens.debug import DebugScreen, FleetDebugScreen
from lifsea_tui.tui.screens.failed import FailedUnitsScreen
from lifsea_tui.tui.screens.logs import LogsScreen
from lifsea_tui.tui.screens.node import NodeScreen
from lifsea_tui.tui.screens.shell import ShellScreen
from tests.helpers import issue_pki
from tests.hostile import LITERAL, HostileNode

# What must never be in what the console draws: C0 controls (but newline), DEL, C1, and the characters
# that reorder or hide text.
RAW = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff\U000e0000-\U000e007f]"
)
NAME = "evil[/x]"  # an inventory name that is markup too


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[tuple[HostileNode, Path]]:
    ca, cert, key = issue_pki(tmp_path / "pki", "hostile")
    node = HostileNode(cert, key)
    yield node, ca
    node.stop()


def drawn(app: LifseaApp) -> str:
    """What the console would put on the terminal now, as text (from its own screenshot)."""
    svg = app.export_screenshot()
    assert not RAW.search(svg), f"raw control character drawn: {RAW.search(svg)!r} on {app.screen}"
    return html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")


async def until(pilot: Pilot, what: str, condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert pilot.app.is_running, f"the console died waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what} on {pilot.app.screen}"
        await pilot.pause(0.1)


async def test_every_screen_shows_hostile_text_literally_and_nothing_raw(
    hostile: tuple[HostileNode, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIFSEA_TUI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LIFSEA_TUI_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)
    node, ca = hostile
    app = LifseaApp(Fleet([NodeTarget(name=NAME, url=node.url, token="t", ca_file=ca)]), refresh_interval=3600)
    seen: dict[str, str] = {}
    async with app.run_test(size=(160, 50)) as pilot:
        await until(pilot, "the fleet row", lambda: app.fleet.snapshots[NAME].reachable)
        await pilot.pause(0.5)
        seen["fleet"] = drawn(app)

        await pilot.press("F")
        await until(pilot, "failed units", lambda: isinstance(app.screen, FailedUnitsScreen))
        await pilot.pause(0.3)
        seen["failed"] = drawn(app)
        await pilot.press("escape")

        await pilot.press("d")
        await until(pilot, "fleet debug", lambda: isinstance(app.screen, FleetDebugScreen))
        await until(pilot, "its findings", lambda: app.screen.query_one(DataTable).row_count > 0)
        seen["fleet debug"] = drawn(app)
        await pilot.press("escape")

        await pilot.press("enter")
        await until(pilot, "the node screen", lambda: isinstance(app.screen, NodeScreen))
        node_screen = app.screen
        assert isinstance(node_screen, NodeScreen)
        await until(pilot, "the audit table", lambda: node_screen.query_one("#audit-table", DataTable).row_count > 0)
        tabs = node_screen.query_one("#tabs", TabbedContent)
        for tab in ("tab-overview", "tab-deployments", "tab-upgrades", "tab-services", "tab-ops", "tab-audit"):
            tabs.active = tab
            await pilot.pause(0.4)
            seen[tab] = drawn(app)
        await pilot.press("v")
        await until(pilot, "the verdict", lambda: "NOT INTACT" in drawn(app))
        seen["verify"] = drawn(app)

        await pilot.press("c")  # the node refuses with a hostile detail: a notification
        await pilot.pause(0.3)
        seen["reason modal"] = drawn(app)
        await pilot.press(*"INC-1", "enter")
        await until(pilot, "the refusal", lambda: any("wrong_state" in n.message or "refused" in n.message
                                                      for n in app._notifications))  # fmt: skip
        await pilot.pause(0.3)
        seen["notification"] = drawn(app)

        tabs.active = "tab-services"
        await pilot.pause(0.3)
        await pilot.press("l")
        await until(pilot, "the logs", lambda: isinstance(app.screen, LogsScreen) and len(app.screen.entries) > 0)
        await pilot.pause(0.4)
        seen["logs"] = drawn(app)
        await pilot.press("escape")
        await until(pilot, "back on the node", lambda: app.screen is node_screen)

        tabs.active = "tab-ops"
        await pilot.pause(0.3)
        recordings = node_screen.query_one("#recordings", DataTable)
        recordings.focus()
        await pilot.press("enter")
        await until(pilot, "the player", lambda: isinstance(app.screen, PlayerScreen))
        await pilot.pause(0.5)
        seen["player"] = drawn(app)
        await pilot.press("t")
        await pilot.pause(0.3)
        seen["transcript"] = drawn(app)
        await pilot.press("q")
        await until(pilot, "back on the node", lambda: app.screen is node_screen)

        node_screen.query_one("#ops-sessions", DataTable).focus()
        await pilot.press("enter")
        await until(pilot, "the shell", lambda: isinstance(app.screen, ShellScreen))
        shell = app.screen
        assert isinstance(shell, ShellScreen)
        await until(pilot, "the session's end", lambda: shell.exit is not None)
        await pilot.pause(0.3)
        seen["shell"] = drawn(app)
        await pilot.press("escape")

        await pilot.press("d")
        await until(pilot, "the debug screen", lambda: isinstance(app.screen, DebugScreen))
        debug = app.screen
        assert isinstance(debug, DebugScreen)
        await until(pilot, "the triage", lambda: bool(debug.proposals))
        seen["debug"] = drawn(app)
        await pilot.press("enter")  # walk the runbook under the cursor through the hostile answers
        await until(pilot, "a step of the walk", lambda: debug.walk is not None and not debug.busy)
        await pilot.pause(0.5)
        seen["walk"] = drawn(app)
        await pilot.press("ctrl+s")
        await pilot.pause(0.3)
        failures = [n.message for n in app._notifications if "failed:" in n.message]
        assert not failures, failures  # no worker of the console broke on what the node said
        assert app.is_running
    for where, text in seen.items():
        assert "Traceback" not in text and "MarkupError" not in text, where
    for where in ("fleet", "tab-audit", "tab-services", "logs", "tab-overview", "tab-ops", "debug"):
        assert LITERAL in seen[where], f"{where} does not show the node's text literally"
    assert "␛]52;" in seen["tab-audit"] and "␛]0;PWNED-TITLE␇" in seen["tab-audit"]  # shown, made visible
    assert any("<U+202E>evil.exe<U+202C>" in text for text in seen.values())
    assert "[link=https://evil.example/]" in seen["tab-deployments"]
    exported = list(tmp_path.glob("lifsea-debug-*.md"))
    assert exported and not RAW.search(exported[0].read_text())


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")
def test_a_real_terminal_gets_no_title_or_clipboard_from_a_node(
    hostile: tuple[HostileNode, Path], tmp_path: Path
) -> None:
    """The console in tmux, as a person runs it: tmux takes OSC 0 as the pane's title and, with
    set-clipboard on, OSC 52 as a paste buffer. After visiting the screens, neither has happened."""
    node, ca = hostile
    inventory = tmp_path / "nodes.toml"
    inventory.write_text(f'[[nodes]]\nname = "evil"\nurl = "{node.url}"\nca_file = "{ca}"\ntoken = "t"\n')
    socket_name = f"lifsea-hostile-{os.getpid()}"
    env = {**os.environ, "LIFSEA_TUI_STATE_DIR": str(tmp_path / "state"), "LIFSEA_TUI_CONFIG_DIR": str(tmp_path / "c")}

    def tmux(*args: str) -> str:
        return subprocess.run(["tmux", "-L", socket_name, *args], capture_output=True, text=True, env=env).stdout

    command = f"{sys.executable} -m lifsea_tui.tui.cli --inventory {inventory}"
    subprocess.run(
        ["tmux", "-L", socket_name, "-f", "/dev/null", "new-session", "-d", "-x", "160", "-y", "48", "-s", "h",
         command],
        check=True, env=env,
    )  # fmt: skip
    try:
        tmux("set-option", "-g", "set-clipboard", "on")
        tmux("set-option", "-g", "allow-rename", "on")
        title_before = tmux("display-message", "-p", "#{pane_title}")

        def screen() -> str:
            return tmux("capture-pane", "-p")

        def wait_for(text: str) -> str:
            deadline = time.monotonic() + 20
            while text not in (shown := screen()):
                assert time.monotonic() < deadline, f"no {text!r} on the screen:\n{shown}"
                time.sleep(0.2)
            return shown

        fleet = wait_for(LITERAL)
        tmux("send-keys", "enter")
        wait_for("Overview")
        for key in ("Right", "Right", "Right", "Right", "Right"):  # every tab
            tmux("send-keys", key)
            time.sleep(0.6)
        audit = wait_for("␛]52;")
        tmux("send-keys", "v")
        time.sleep(1.0)
        tmux("send-keys", "escape")
        time.sleep(0.5)
        title_after = tmux("display-message", "-p", "#{pane_title}")
        buffers = tmux("list-buffers")
    finally:
        tmux("kill-server")
    assert "PWNED" not in title_after and "C1-TITLE" not in title_after and title_after == title_before
    assert buffers.strip() == "", f"a node wrote the clipboard: {buffers!r}"
    assert LITERAL in fleet and LITERAL in audit


SHELL_FIRST = """
id = "aa-shell-first"
title = "AA shell first"
symptom = "units have failed"
start = "failed"

[steps.failed]
check = "failed-units"
explain = "Which units failed."
problem = "look"
ok = "done"
unknown = "done"

[steps.look]
shell = "Look around"
access = "writable"
commands = ["ls /host"]
then = "done"

[steps.done]
end = "done"
resolved = true
"""


async def test_a_read_only_console_opens_no_shell_from_a_walk_or_the_ops_tab(
    hostile: tuple[HostileNode, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--read-only hid the o key, yet a runbook's shell step (writable, in two shipped runbooks) still
    opened a session, and enter on the Ops tab re-attached to one."""
    monkeypatch.setenv("LIFSEA_TUI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LIFSEA_TUI_CONFIG_DIR", str(tmp_path / "config"))
    (tmp_path / "config" / "runbooks").mkdir(parents=True)
    (tmp_path / "config" / "runbooks" / "shell-first.toml").write_text(SHELL_FIRST)
    node, ca = hostile
    fleet = Fleet([NodeTarget(name="evil", url=node.url, token="t", ca_file=ca)])
    app = LifseaApp(fleet, read_only=True, refresh_interval=3600)
    async with app.run_test(size=(160, 50)) as pilot:
        await until(pilot, "the fleet row", lambda: app.fleet.snapshots["evil"].reachable)
        await pilot.press("enter")
        await until(pilot, "the node screen", lambda: isinstance(app.screen, NodeScreen))
        node_screen = app.screen
        assert isinstance(node_screen, NodeScreen)
        node_screen.query_one("#tabs", TabbedContent).active = "tab-ops"
        sessions = node_screen.query_one("#ops-sessions", DataTable)
        await until(pilot, "the open session", lambda: sessions.row_count > 0)
        sessions.focus()
        await pilot.press("enter")
        await pilot.pause(0.5)
        assert app.screen is node_screen  # no shell screen
        await pilot.press("o")  # the key is not there either
        await pilot.pause(0.3)
        assert app.screen is node_screen

        await pilot.press("d")
        await until(pilot, "the debug screen", lambda: isinstance(app.screen, DebugScreen))
        debug = app.screen
        assert isinstance(debug, DebugScreen)
        await until(pilot, "the triage", lambda: bool(debug.proposals))
        debug.query_one("#debug-runbooks", DataTable).move_cursor(row=0)  # AA shell first: sorted first
        await pilot.press("enter")
        await until(
            pilot, "the shell step", lambda: debug.walk is not None and debug.walk.step is not None
            and debug.walk.step.kind == "shell" and not debug.busy,
        )  # fmt: skip
        await pilot.press("enter")
        await pilot.pause(0.5)
        assert app.screen is debug  # no modal asking for a shell, no shell
        messages = [n.message for n in app._notifications]
    assert sum("read-only console" in m for m in messages) == 2, messages
