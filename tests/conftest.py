"""Fixtures: real ostree sysroots and agents on loopback TLS, and (as root) a real lab fleet."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

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
    node.server.stop()


@pytest.fixture
def agent(tmp_path: Path, tiny_node: TinyNode) -> Iterator[RunningAgent]:
    running = start_agent(tmp_path / "agent", host_root=tiny_node.host_root, sysroot_path=tiny_node.sysroot)
    yield running
    running.stop()
