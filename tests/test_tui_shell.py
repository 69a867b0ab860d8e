"""The Shell screen against a real lab node: open it from the node screen, type, see, resize, leave."""

from __future__ import annotations

import json
import os
import pty
import select
import ssl
import subprocess
import sys
import time

import httpx
import pytest
from textual.widgets import DataTable

from lifsea_tui.client.fleet import Fleet
from lifsea_tui.lab.layout import Layout
from lifsea_tui.tui.app import LifseaApp
from lifsea_tui.tui.screens.node import NodeScreen
from lifsea_tui.tui.screens.shell import ShellScreen, ShellTerminal
from tests.test_tui_lab import own_settings, targets, until

pytestmark = pytest.mark.lab
__all__ = ["own_settings"]


async def open_shell(pilot, app: LifseaApp, node: str, reason: str) -> ShellScreen:
    await until(pilot, f"{node} answered", lambda: app.fleet.snapshots[node].reachable)
    table = app.screen.query_one("#nodes", DataTable)
    table.move_cursor(row=table.get_row_index(node))
    await pilot.press("enter")
    await until(pilot, "node screen", lambda: isinstance(app.screen, NodeScreen))
    await pilot.press("o")
    await pilot.pause(0.2)
    await pilot.press(*reason)
    await pilot.press("tab", *"INC-77", "enter")
    await pilot.press(*"echo typed-at-once", "enter")  # before the container is up: must not be lost
    await until(pilot, "shell screen", lambda: isinstance(app.screen, ShellScreen))
    screen = app.screen
    assert isinstance(screen, ShellScreen)
    await until(pilot, "a prompt", lambda: "OPS" in screen.terminal.text(), timeout=20)
    await until(pilot, "early keys", lambda: "\ntyped-at-once" in screen.terminal.text(), timeout=10)
    return screen


async def type_line(pilot, text: str) -> None:
    await pilot.press(*[{" ": "space"}.get(c, c) for c in text])
    await pilot.press("enter")


async def test_shell_screen_runs_commands_and_leaves(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    status, _, _ = fleet
    app = LifseaApp(Fleet(targets(status, role="admin")), refresh_interval=5.0)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_shell(pilot, app, "node2", "INC-77 look around")
        terminal = screen.query_one(ShellTerminal)
        banner = str(screen.query_one("#banner").content)
        assert "RECORDED" in banner and "INC-77 look around" in banner and "left" in banner
        assert screen.session.ticket == "INC-77"
        # The terminal fills the screen between banner and hint, and the shell knows it.
        assert (terminal.cols, terminal.rows) == (120, 34)
        await type_line(pilot, "stty size; echo ho''st=$(hostname)")
        await until(pilot, "stty output", lambda: "34 120" in terminal.text() and "host=node2" in terminal.text())

        # Keys a Textual app would otherwise keep: ctrl+c interrupts, tab completes, ctrl+q is the shell's.
        await type_line(pilot, "sleep 30")
        await pilot.press("ctrl+c")
        await type_line(pilot, "echo after-''interrupt")
        await until(pilot, "interrupted", lambda: "after-interrupt" in terminal.text(), timeout=10)
        await pilot.press(*"ech", "tab", "space", *"tab-completed", "enter")
        await until(pilot, "completion", lambda: "\ntab-completed" in terminal.text())
        assert isinstance(app.screen, ShellScreen)  # ctrl+c and tab did not leave or move focus

        # A full-screen program in the alternate screen, then back to the shell's screen.
        await type_line(pilot, "less /host/etc/os-release")
        await until(pilot, "less shows the file", lambda: 'NAME="LifseaOS"' in terminal.text())
        await pilot.press("q")
        await until(pilot, "back from less", lambda: "stty size" in terminal.text())

        await pilot.resize_terminal(100, 30)
        await pilot.pause(0.3)
        await type_line(pilot, "clear; stty size")
        await until(pilot, "resized", lambda: "28 100" in terminal.text())

        await pilot.press("ctrl+right_square_bracket")
        await until(pilot, "back on the node screen", lambda: isinstance(app.screen, NodeScreen))
        session = screen.session

    node = next(n for n in status["nodes"] if n["name"] == "node2")
    with httpx.Client(
        base_url=node["url"],
        verify=ssl.create_default_context(cafile=node["ca_file"]),
        headers={"Authorization": f"Bearer {node['tokens']['admin']}"},
    ) as http:
        ended = http.get(f"/v1/ops/sessions/{session.id}").json()
        assert ended["state"] == "ended" and ended["end_reason"].startswith("ended by lab-admin")
        cast = http.get(f"/v1/recordings/{session.recording}").text
    printed = "".join(json.loads(line)[2] for line in cast.splitlines()[1:] if json.loads(line)[1] == "o")
    assert "host=node2" in printed and "after-interrupt" in printed


async def test_shell_exit_code_is_shown(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    status, _, _ = fleet
    app = LifseaApp(Fleet(targets(status, role="admin")), refresh_interval=5.0)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_shell(pilot, app, "node1", "INC-78 exit code")
        await type_line(pilot, "exit 4")
        await until(pilot, "ended", lambda: screen.exit is not None, timeout=20)
        banner = str(screen.query_one("#banner").content)
        assert "SESSION ENDED" in banner and "exit 4" in banner
        await pilot.press("escape")
        await until(pilot, "back", lambda: isinstance(app.screen, NodeScreen))


async def test_ops_shell_refused_for_operator(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    status, _, _ = fleet
    app = LifseaApp(Fleet(targets(status, role="operator")), refresh_interval=5.0)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, "node1 answered", lambda: app.fleet.snapshots["node1"].reachable)
        await pilot.press("enter")
        await until(pilot, "node screen", lambda: isinstance(app.screen, NodeScreen))
        await pilot.press("o")
        await pilot.pause(0.2)
        await pilot.press(*"INC-79 not allowed", "enter")
        await until(
            pilot,
            "refusal shown",
            lambda: any("forbidden" in str(n.message) for n in app._notifications),
            timeout=10,
        )
        screen = app.screen
        assert isinstance(screen, ShellScreen) and screen.session is None
        assert "NOT STARTED" in str(screen.query_one("#banner").content)
        await pilot.press("escape")
        await until(pilot, "back", lambda: isinstance(app.screen, NodeScreen))


def test_shell_command_bridges_a_pipe_and_returns_the_exit_code(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    _, _, layout = fleet
    result = subprocess.run(
        [sys.executable, "-m", "lifsea_tui.tui.cli", "shell", "node1", "--reason", "INC-80 scripted",
         "--lab-dir", str(layout.root)],
        input="echo scripted-$((6*7))\nexit 9\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 9, result.stderr
    assert "scripted-42" in result.stdout
    unknown = subprocess.run(
        [sys.executable, "-m", "lifsea_tui.tui.cli", "shell", "node9", "--reason", "x", "--lab-dir", str(layout.root)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert unknown.returncode == 2 and "no node 'node9'" in unknown.stderr


def test_shell_command_in_a_terminal_ends_with_tilde_dot(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    """A real pseudo-terminal on our side: raw mode, the prompt, a command, then ~. ends the session."""
    _, _, layout = fleet
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(
            sys.executable,
            [sys.executable, "-m", "lifsea_tui.tui.cli", "shell", "node2", "--reason", "INC-81 tty",
             "--lab-dir", str(layout.root)],
        )  # fmt: skip
    seen = bytearray()

    def expect(needle: bytes, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in seen:
            assert time.monotonic() < deadline, f"no {needle!r} in {bytes(seen[-400:])!r}"
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    seen.extend(os.read(fd, 65536))
                except OSError:
                    break

    expect(b"OPS")
    assert b"RECORDED" in seen and b"~." in seen
    os.write(fd, b"echo tty-$((2+3))\r")
    expect(b"tty-5")
    os.write(fd, b"\r~.")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 255


async def test_shell_screen_reconnects_after_a_network_drop(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    status, _, _ = fleet
    app = LifseaApp(Fleet(targets(status, role="admin")), refresh_interval=5.0)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_shell(pilot, app, "node1", "INC-82 flaky network")
        terminal = screen.query_one(ShellTerminal)
        await type_line(pilot, "echo before-''drop")
        await until(pilot, "before", lambda: "before-drop" in terminal.text())
        shell = screen._shell
        assert shell is not None and shell._socket is not None
        socket = shell._socket
        app.net.loop.call_soon_threadsafe(socket.transport.abort)  # the connection dies, no close frame
        await until(pilot, "the drop noticed", lambda: screen.reconnects >= 1, timeout=10)
        await until(pilot, "re-attached", lambda: screen.state == "attached", timeout=20)
        assert "before-drop" in terminal.text()  # the node replayed the screen
        await type_line(pilot, "echo after-''drop")
        await until(pilot, "after", lambda: "after-drop" in terminal.text())
        await pilot.press("ctrl+right_square_bracket")
        await until(pilot, "left", lambda: isinstance(app.screen, NodeScreen))


async def test_a_flood_of_output_does_not_freeze_the_console(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    """Endless output: the console keeps taking keys (ctrl+c stops it) and its backlog stays bounded."""
    status, _, _ = fleet
    app = LifseaApp(Fleet(targets(status, role="admin")), refresh_interval=5.0)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_shell(pilot, app, "node2", "INC-83 flood")
        terminal = screen.query_one(ShellTerminal)
        await type_line(pilot, "yes flood-line")
        await until(pilot, "flooding", lambda: "flood-line" in terminal.text(), timeout=10)
        started = time.monotonic()
        for _ in range(20):  # the console stays responsive while output pours in
            await pilot.pause(0.05)
            assert len(screen._pending) <= 2 * 1024 * 1024
        await pilot.press("ctrl+c")
        await type_line(pilot, "echo after-''flood")
        # What was in flight when ctrl+c went out (the agent's, the socket's and the console's bounded
        # backlog) is drawn first: instant on an idle machine, seen past 30 s with both cores loaded.
        await until(pilot, "the flood stopped", lambda: "after-flood" in terminal.text(), timeout=60)
        assert time.monotonic() - started < 60
        await pilot.press("ctrl+right_square_bracket")
        await until(pilot, "left", lambda: isinstance(app.screen, NodeScreen))
