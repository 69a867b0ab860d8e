"""Fixtures: real ostree sysroots and agents on loopback TLS, and (as root) a real lab fleet."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifsea_tui.lab.layout import Layout
from tests.helpers import RunningAgent, TinyNode, make_tiny_node, ostree_missing, start_agent


def lab_missing() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root (systemd-nspawn, ostree deployments)"
    for command, package in (
        ("systemd-nspawn", "systemd-container"),
        ("debootstrap", "debootstrap"),
        ("ostree", "ostree"),
    ):
        if shutil.which(command) is None:
            return f"{command} is missing (apt-get install {package})"
    return ostree_missing()


@pytest.fixture
def tiny_node(tmp_path: Path) -> Iterator[TinyNode]:
    missing = ostree_missing()
    if missing:
        pytest.skip(missing)
    node = make_tiny_node(tmp_path / "node")
    yield node
    node.close()


@pytest.fixture
def agent(tmp_path: Path, tiny_node: TinyNode) -> Iterator[RunningAgent]:
    running = start_agent(tmp_path / "agent", host_root=tiny_node.host_root, sysroot_path=tiny_node.sysroot)
    yield running
    running.stop()


def lab(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lifsea_tui.lab.cli", *args], capture_output=True, text=True, env=env, timeout=900
    )


@contextlib.contextmanager
def running_lab(
    tmp_path_factory: pytest.TempPathFactory, nodes: int, name: str, agent: str = "process"
) -> Iterator[tuple[dict, dict[str, str], Layout]]:
    """A real lab of `nodes` nodes in its own directory, taken down (and checked clean) at the end;
    `agent` "image": each node's agent runs from the agent image (lifsea-lab up --agent image)."""
    missing = lab_missing()
    if missing:
        pytest.skip(missing)
    root = tmp_path_factory.mktemp(name)
    env = {**os.environ, "LIFSEA_LAB_DIR": str(root)}
    started = lab(["up", "--nodes", str(nodes), "--agent", agent], env)
    try:
        assert started.returncode == 0, started.stderr
        status = lab(["status", "--json"], env)
        assert status.returncode == 0, status.stderr
        assert Layout(root).running_status() == json.loads(status.stdout)  # what the console reads in place
        yield json.loads(status.stdout), env, Layout(root)
    finally:
        stopped = lab(["down", "--purge"], env)
        assert stopped.returncode == 0, stopped.stderr
        leftovers = subprocess.run(["pgrep", "-f", str(root)], capture_output=True, text=True).stdout.split()
        assert not leftovers, f"processes left running (nodes, agents, etcd, controller?): {leftovers}"
        assert str(root) not in Path("/proc/self/mountinfo").read_text()


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict, dict[str, str], Layout]]:
    """A real 2-node lab for the session."""
    with running_lab(tmp_path_factory, 2, "lab") as running:
        yield running


CONSOLE = f"{sys.executable} -m lifsea_tui.tui.cli"


class Console:
    """The real console in a tmux pane of its own tmux server, read as a person would read it."""

    def __init__(
        self, env: dict[str, str], name: str, program: str = f"{sys.executable} -m lifsea_tui.tui.cli"
    ) -> None:
        self.socket = f"lifsea-test-{os.getpid()}"
        self.name = name
        command = " ".join(
            [
                f"LIFSEA_LAB_DIR={env['LIFSEA_LAB_DIR']}",
                f"LIFSEA_TUI_STATE_DIR={env['LIFSEA_LAB_DIR']}/console-state",
                f"exec {program}",
            ]
        )
        self.tmux("new-session", "-d", "-s", name, "-x", "150", "-y", "45", command)
        self.tmux("resize-window", "-t", name, "-x", "150", "-y", "45")  # a detached session may start smaller
        self.pid = int(self.tmux("list-panes", "-t", name, "-F", "#{pane_pid}").strip())

    def tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10)
        return done.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.name)

    def until(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while text not in (shown := self.screen()):
            assert time.monotonic() < deadline, f"{text!r} never appeared; the screen:\n{shown}"
            time.sleep(0.2)
        return shown

    def close(self) -> None:
        self.tmux("kill-server")
