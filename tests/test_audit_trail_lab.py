"""The audit trail collected off the nodes, on a real 2-node lab: the lab's supervised lifsea-fleetd copies
each node's audit log into its trail, and flags a node whose log no longer holds what was collected.

The attacks are made on the node's log file from outside the node, as root on the node could make
them (the same file a writable break-glass shell reaches at /host/var/lib/lifsea-agent/audit).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lifsea_tui.api import routes
from lifsea_tui.api.chain import canonical, record_hash
from lifsea_tui.lab.layout import Layout
from lifsea_tui.lab.sysroot import stateroot_var
from tests.conftest import Console, running_lab
from tests.helpers import lab_client

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], dict[str, str], Layout]]:
    with running_lab(tmp_path_factory, 2, "labtrail") as running:
        yield running


def audit_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lifsea_tui.tui.cli", "audit", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def status(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    answer = audit_cli(env, "status", "--json")
    assert answer.returncode in (0, 1), answer.stderr
    return {node["name"]: node for node in json.loads(answer.stdout)}


def until(env: dict[str, str], check: Any, timeout: float, what: str) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        seen = status(env)
        if check(seen):
            return seen
        assert time.monotonic() < deadline, f"timed out waiting for {what}; last: {seen}"
        time.sleep(0.3)


def caught_up(name: str) -> Any:
    return lambda s: (
        s[name]["ok"] and s[name]["node_seq"] is not None and s[name]["collected_seq"] == s[name]["node_seq"]
    )


def act(lab_status: dict[str, Any], name: str, reason: str) -> None:
    node = next(n for n in lab_status["nodes"] if n["name"] == name)
    with lab_client(node, "operator") as http:
        answer = http.post(routes.UPGRADES_CHECK, json={"reason": reason})
        assert answer.status_code == 200, answer.text


def node_records(lab_status: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The node's newest records, as its API gives them."""
    node = next(n for n in lab_status["nodes"] if n["name"] == name)
    with lab_client(node, "auditor") as http:
        records: list[dict[str, Any]] = http.get(routes.AUDIT, params={"limit": 1000}).json()["records"]
    return records


def node_log(layout: Layout, name: str) -> Path:
    return stateroot_var(layout.node(name).sysroot) / "lib" / "lifsea-agent" / "audit" / "audit.jsonl"


def verify(env: dict[str, str], name: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    exported = audit_cli(env, "export", name)
    assert exported.returncode == 0, exported.stderr
    copy = tmp_path / f"{name}.jsonl"
    copy.write_text(exported.stdout)
    checked = subprocess.run(
        [sys.executable, "-m", "lifsea_tui.agent.cli", "verify-audit", str(copy)], capture_output=True, text=True
    )
    return checked, [json.loads(line) for line in exported.stdout.splitlines()]


def test_the_trail_is_collected_survives_a_controller_kill_and_stays_the_evidence(lab2, tmp_path) -> None:
    lab_status, env, layout = lab2
    until(env, lambda s: all(caught_up(n)(s) for n in ("node1", "node2")), 30, "first collection")
    for index in range(3):
        act(lab_status, "node1", f"INC-{index} look for updates")
        act(lab_status, "node2", f"INC-{index} look for updates")
    # Waited for against each node's own head: a state written before the last records would look caught up.
    heads = {name: node_records(lab_status, name)[-1]["seq"] for name in ("node1", "node2")}
    seen = until(env, lambda s: all(s[n]["collected_seq"] >= heads[n] for n in heads), 15, "the new records")
    assert seen["node1"]["lag_seconds"] is not None and seen["node1"]["lag_seconds"] < 10

    # SIGKILL the controller: its successor goes on from the collected head, nothing twice, nothing skipped.
    pid = int((layout.root / "fleetd.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    act(lab_status, "node1", "INC-9 after the controller died")
    deadline = time.monotonic() + 15
    while int((layout.root / "fleetd.pid").read_text()) == pid:
        assert time.monotonic() < deadline, "the supervisor did not restart the controller"
        time.sleep(0.1)
    on_node = node_records(lab_status, "node1")
    written = next(r["seq"] for r in on_node if r["reason"] == "INC-9 after the controller died")
    until(env, lambda s: s["node1"]["collected_seq"] >= on_node[-1]["seq"], 30, "collection again")
    checked, records = verify(env, "node1", tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert [r["seq"] for r in records] == list(range(len(records)))
    by_seq = {r["seq"]: r for r in on_node}
    assert records[written]["reason"] == "INC-9 after the controller died", records[-3:]
    assert records[written]["hash"] == by_seq[written]["hash"]

    # node1: a record's reason changed and every hash after it recomputed (the node's own verify passes).
    path = node_log(layout, "node1")
    lines = [json.loads(line) for line in path.read_bytes().splitlines()]
    target = next(r["seq"] for r in lines if r["reason"] == "INC-1 look for updates")
    prev = lines[target - 1]["hash"] if target else "0" * 64
    for fields in lines[target:]:
        if fields["seq"] == target:
            fields["reason"] = "routine check"
        fields["prev"] = prev
        fields["hash"] = record_hash(fields)
        prev = fields["hash"]
    path.write_bytes(b"".join(canonical(fields) + b"\n" for fields in lines))
    # node2: the newest two records cut off.
    console = Console(env, "trail")
    try:
        console.until("● ok", 60)
        path2 = node_log(layout, "node2")
        kept = path2.read_bytes().splitlines(keepends=True)[:-2]
        path2.write_bytes(b"".join(kept))
        flagged = until(env, lambda s: not s["node1"]["ok"] and not s["node2"]["ok"], 15, "both flagged")
        shown = console.until(f"audit log changed from #{len(kept)}", 15)  # node2's row
        assert f"audit log changed from #{target}" in shown, shown  # node1's
    finally:
        console.close()
    assert flagged["node1"]["first_bad_seq"] == target, flagged["node1"]
    assert flagged["node2"]["first_bad_seq"] == len(kept), flagged["node2"]
    assert "is gone from the node's log" in flagged["node2"]["problem"]
    assert audit_cli(env, "status").returncode == 1
    text = audit_cli(env, "status").stdout
    assert f"FLAGGED from record {target}" in text and f"FLAGGED from record {len(kept)}" in text

    # The collected copies still hold what the nodes wrote, and verify.
    checked, records = verify(env, "node1", tmp_path)
    assert checked.returncode == 0, checked.stdout
    assert records[target]["reason"] == "INC-1 look for updates"
    checked, records = verify(env, "node2", tmp_path)
    assert checked.returncode == 0, checked.stdout
    assert len(records) > len(kept)
