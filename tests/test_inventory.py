"""Inventory files as kubeconfig's habit has them: shared defaults, named contexts chosen by flag,
environment or the file itself, and clear errors for a context or default that does not exist."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from lifsea_tui.client.inventory import CONTEXT_ENV, InventoryError, from_file
from lifsea_tui.client.node import NodeTarget
from lifsea_tui.lab.layout import Layout
from lifsea_tui.lab.targets import from_lab, lab_status
from lifsea_tui.tui import sources
from lifsea_tui.tui.cli import build_parser

INVENTORY = """
current_context = "staging"

[defaults]
ca_file = "ca.pem"
token_file = "shared.token"
timeout = 4
labels = { team = "edge" }

[[nodes]]
name = "lab-1"
url = "https://127.0.0.1:1"

[contexts.prod]
token_env = "PROD_TOKEN"
timeout = 20
labels = { env = "prod" }

[[contexts.prod.nodes]]
name = "edge-7"
url = "https://10.0.0.7:7443"
labels = { zone = "a" }

[[contexts.prod.nodes]]
name = "edge-8"
url = "https://10.0.0.8:7443"
token = "its-own"
timeout = 2

[contexts.staging]
[[contexts.staging.nodes]]
name = "stage-1"
url = "https://10.1.0.1:7443"
"""


@pytest.fixture
def inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "ca.pem").write_text("not read here")
    token = tmp_path / "shared.token"
    token.write_text("shared-secret\n")
    token.chmod(0o600)
    path = tmp_path / "nodes.toml"
    path.write_text(INVENTORY)
    monkeypatch.delenv(CONTEXT_ENV, raising=False)
    monkeypatch.setenv("PROD_TOKEN", "prod-secret")
    return path


def test_a_context_takes_its_nodes_and_its_defaults_over_the_shared_ones(inventory: Path) -> None:
    seven, eight = from_file(inventory, "prod")
    assert (seven.name, seven.token, seven.timeout) == ("edge-7", "prod-secret", 20.0)
    assert seven.ca_file == inventory.parent / "ca.pem"  # from [defaults], relative to the file
    assert seven.labels == {"team": "edge", "env": "prod", "zone": "a"}
    assert (eight.token, eight.timeout) == ("its-own", 2.0)  # a node's own way to a token wins


def test_which_context_the_flag_the_environment_then_the_file(inventory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert [t.name for t in from_file(inventory)] == ["stage-1"]  # current_context
    staged = from_file(inventory)[0]
    assert (staged.token, staged.timeout) == ("shared-secret", 4.0)  # [defaults] alone
    monkeypatch.setenv(CONTEXT_ENV, "prod")
    assert [t.name for t in from_file(inventory)] == ["edge-7", "edge-8"]
    assert [t.name for t in from_file(inventory, "staging")] == ["stage-1"]  # the flag over the environment
    inventory.write_text(INVENTORY.replace('current_context = "staging"\n', ""))
    monkeypatch.delenv(CONTEXT_ENV)
    assert [t.name for t in from_file(inventory)] == ["lab-1"]  # no context: the file's own nodes


def test_an_unknown_context_or_default_is_a_clear_error(inventory: Path) -> None:
    with pytest.raises(InventoryError, match=r"unknown context 'prdo' \(its contexts: prod, staging\)"):
        from_file(inventory, "prdo")
    inventory.write_text(INVENTORY.replace("timeout = 4", "timeout = 4\nurl = 'https://x'"))
    with pytest.raises(InventoryError, match=r"\[defaults\]: unknown keys url"):
        from_file(inventory)
    inventory.write_text(INVENTORY.replace("[contexts.staging]\n", "[contexts.staging]\nnme = 1\n"))
    with pytest.raises(InventoryError, match=r"\[contexts.staging\]: unknown keys nme"):
        from_file(inventory)


def test_the_console_takes_context_from_its_flag(inventory: Path) -> None:
    args = build_parser().parse_args(["get", "nodes", "--inventory", str(inventory), "--context", "prod"])
    assert [t.name for t in sources.targets_from(args)] == ["edge-7", "edge-8"]


def test_the_console_title_names_the_context(inventory: Path) -> None:
    parser = build_parser()
    chosen = sources.fleet_source(parser.parse_args(["--inventory", str(inventory), "--context", "prod"]), store=False)
    assert chosen.label == "prod" and [t.name for t in chosen.targets] == ["edge-7", "edge-8"]
    assert sources.fleet_source(parser.parse_args(["--inventory", str(inventory)]), store=False).label == "staging"
    assert sources.context_label(None, None) == "lab"  # no inventory: the lab


def test_each_context_and_each_lab_is_a_fleet_of_its_own(inventory: Path, tmp_path: Path) -> None:
    parser = build_parser()
    prod = sources.fleet_source(parser.parse_args(["--inventory", str(inventory), "--context", "prod"]), store=False)
    staging = sources.fleet_source(parser.parse_args(["--inventory", str(inventory), "--context", "staging"]))
    assert prod.scope == f"{inventory.resolve()}#prod"
    assert prod.scope != staging.scope
    scopes = set()
    for number in (1, 2):
        ca = tmp_path / f"ca{number}.pem"
        ca.write_text(f"a CA made the {number}. time")
        scopes.add(sources.fleet_scope(None, None, [NodeTarget(name="node1", url="https://x", token="t", ca_file=ca)]))
    assert len(scopes) == 2 and all(scope.startswith("lab:") for scope in scopes)


def test_the_lab_is_read_from_its_status_file_only_while_its_supervisor_runs(tmp_path: Path) -> None:
    """The console reads a lab's nodes from the file `up` wrote, in place; a lab that is down (its
    supervisor gone, the pid file stale) is no lab, however current its file looks."""
    layout = Layout(tmp_path)
    status = {
        "nodes": [{"name": "node1", "url": "https://127.0.0.1:1", "ca_file": "/ca.pem", "tokens": {"admin": "t"}}]
    }
    layout.write_status(status)
    assert layout.status_file.stat().st_mode & 0o777 == 0o600  # it holds tokens
    supervisor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "lifsea_tui.lab.supervisor"])
    try:
        cmdline = Path(f"/proc/{supervisor.pid}/cmdline")
        deadline = time.monotonic() + 10
        while b"lifsea_tui.lab.supervisor" not in cmdline.read_bytes():  # until it has exec'd
            assert time.monotonic() < deadline, "the stand-in supervisor did not start"
            time.sleep(0.01)
        layout.pid_file.write_text(f"{supervisor.pid}\n")
        assert lab_status(tmp_path) == status
        assert [t.name for t in from_lab("admin", tmp_path)] == ["node1"]
    finally:
        supervisor.kill()
        supervisor.wait()
    with pytest.raises(InventoryError, match="no running lab"):
        lab_status(tmp_path)
