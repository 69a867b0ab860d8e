"""The audit trail collected off the nodes, on a real 2-node lab: the lab's supervised lifsea-fleetd copies
each node's audit log into its trail, and flags a node whose log no longer holds what was collected.

The first test makes its attacks on the node's log file from outside the node, as root on the node
could; the second makes them from a writable break-glass shell on the node, which also edits its own
recording.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lifsea_tui.api import OpsAccess, OpsSessionRequest, routes
from lifsea_tui.api.chain import canonical, record_hash
from lifsea_tui.client.node import NodeClient, NodeTarget
from lifsea_tui.client.ops import OpsShell
from lifsea_tui.lab.layout import Layout
from lifsea_tui.lab.sysroot import stateroot_var
from tests.conftest import Console, running_lab
from tests.helpers import PROMPT, Driver, lab_client

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], dict[str, str], Layout]]:
    with running_lab(tmp_path_factory, 3, "labtrail") as running:
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


def follow_until(process: subprocess.Popen[str], wanted: set[str], timeout: float) -> list[dict[str, Any]]:
    """JSON lines from a following `audit log -f` until every reason in `wanted` was printed."""
    assert process.stdout is not None
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while wanted - {record["reason"] for record in seen}:
        left = deadline - time.monotonic()
        assert left > 0, f"not printed while following: {wanted}; printed: {seen}"
        ready, _, _ = select.select([process.stdout], [], [], left)
        if ready:
            text = process.stdout.readline()
            assert text, f"the follower ended: {process.poll()}"
            seen.append(json.loads(text))
    return seen


def test_the_collected_trail_is_read_fleet_wide_filtered_followed_and_exported_by_time(lab3, tmp_path) -> None:
    """`audit log` reads the recent records etcd holds for every node (filters by node, action and time,
    and follows new ones as they are collected); `audit export --since` writes a slice of the copy that
    the offline verifier checks against the record it follows (and refuses against any other)."""
    lab_status, env, _ = lab3
    until(env, lambda s: all(caught_up(n)(s) for n in ("node1", "node2", "node3")), 30, "first collection")
    follower = subprocess.Popen(
        [sys.executable, "-m", "lifsea_tui.tui.cli", "audit", "log", "-f", "--json", "--action", "upgrade.check"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        act(lab_status, "node1", "INC-40 first look")
        time.sleep(1.1)
        between = datetime.now(UTC)
        time.sleep(1.1)
        act(lab_status, "node2", "INC-41 second look")
        followed = follow_until(follower, {"INC-40 first look", "INC-41 second look"}, 20)
    finally:
        follower.terminate()
        follower.wait(10)
    assert {r["node"] for r in followed if r["reason"].startswith("INC-4")} == {"node1", "node2"}
    assert all(r["action"].startswith("upgrade.check") for r in followed), followed

    listed = audit_cli(env, "log", "--node", "node2", "--json")
    assert listed.returncode == 0, listed.stderr
    records = [json.loads(text) for text in listed.stdout.splitlines()]
    assert {r["node"] for r in records} == {"node2"} and "INC-41 second look" in {r["reason"] for r in records}
    later = audit_cli(env, "log", "--action", "upgrade.check", "--since", between.isoformat())
    assert "INC-41 second look" in later.stdout and "INC-40" not in later.stdout, later.stdout
    nothing = audit_cli(env, "log", "--actor", "nobody-at-all")
    assert nothing.returncode == 1 and not nothing.stdout
    bad = audit_cli(env, "log", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "is not a time" in bad.stderr

    # A time range of node2's copy, and the record it follows: it verifies against that record only.
    sliced = audit_cli(env, "export", "node2", "--since", between.isoformat())
    assert sliced.returncode == 0, sliced.stderr
    assert "INC-41 second look" in sliced.stdout
    assert all(datetime.fromisoformat(json.loads(text)["time"]) >= between for text in sliced.stdout.splitlines())
    anchor = re.search(r"--after (\d+):([0-9a-f]{64})", sliced.stderr)
    assert anchor is not None, sliced.stderr
    part = tmp_path / "node2-part.jsonl"
    part.write_text(sliced.stdout)
    first = json.loads(sliced.stdout.splitlines()[0])
    assert first["seq"] == int(anchor.group(1)) + 1
    for after, expected in ((anchor.group(0).split()[1], 0), (f"{anchor.group(1)}:{'0' * 64}", 1)):
        checked = subprocess.run(
            [sys.executable, "-m", "lifsea_tui.agent.cli", "verify-audit", str(part), "--after", after],
            capture_output=True,
            text=True,
        )
        assert checked.returncode == expected, (after, checked.stdout, checked.stderr)


def test_the_trail_is_collected_survives_a_controller_kill_and_stays_the_evidence(lab3, tmp_path) -> None:
    lab_status, env, layout = lab3
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


def counted(output: str, marker: str) -> int:
    """The number `grep -c` printed just before the marker."""
    found = re.search(r"(\d+)\r?\n" + marker, output)
    return int(found.group(1)) if found else -1


# Typed into the shell as one line: change the reason of the record that opened this session and compute
# every hash after it again, as the node's own verify wants (sed and sha256sum: the node has no Python).
REWRITE = (
    "L=/host/var/lib/lifsea-agent/audit/audit.jsonl; N=/host/var/tmp/rewritten; : > $N; prev=; found=; "
    "while IFS= read -r line; do "
    'case "$line" in *\'"reason":"INC-77 free /var"\'*) found=1; '
    'line=$(printf \'%s\' "$line" | sed \'s|"reason":"INC-77 free /var"|"reason":"routine look"|\');; esac; '
    'if [ -n "$found" ]; then '
    'line=$(printf \'%s\' "$line" | sed "s/\\"prev\\":\\"[0-9a-f]*\\"/\\"prev\\":\\"$prev\\"/"); '
    'h=$(printf \'%s\' "$line" | sed \'s/"hash":"[0-9a-f]*",//\' | sha256sum | cut -c1-64); '
    'line=$(printf \'%s\' "$line" | sed "s/\\"hash\\":\\"[0-9a-f]*\\"/\\"hash\\":\\"$h\\"/"); fi; '
    'prev=$(printf \'%s\' "$line" | sed \'s/.*"hash":"\\([0-9a-f]*\\)".*/\\1/\'); '
    "printf '%s\\n' \"$line\" >> $N; done < $L; cat $N > $L"
)


async def test_a_writable_shell_that_rewrites_its_nodes_log_and_its_own_recording_is_caught(lab3, tmp_path) -> None:
    """The issue's own scenario, on node3: a writable break-glass shell edits its own recording, rewrites
    the node's audit log (a record changed and every hash after it recomputed: the node's own verify
    passes), cuts off the newest records, and empties the log. The node is flagged within seconds, in
    `audit status` and in the console; the collected copy keeps the original records and, copied live
    from the agent's memory, the recording as it was recorded; the export verifies."""
    lab_status, env, layout = lab3
    name = "node3"
    await asyncio.to_thread(until, env, caught_up(name), 30, "first collection")
    node = next(n for n in lab_status["nodes"] if n["name"] == name)
    target = NodeTarget(name=name, url=node["url"], token=node["tokens"]["admin"], ca_file=Path(node["ca_file"]))
    trail = Path(lab_status["controller"]["trail"]) / name
    client = NodeClient(target)
    session = await client.ops_start(
        OpsSessionRequest(reason="INC-77 free /var", ttl_seconds=600, access=OpsAccess.writable)
    )
    driver = Driver(OpsShell(target, session.id, cols=200, rows=50))
    try:
        await driver.expect(PROMPT)
        await driver.run("echo evidence-of-$((6*7))", "STEP-1")
        live = trail / "recordings" / f"{session.id}.live"
        deadline = time.monotonic() + 15
        while not (live.exists() and b"evidence-of-42" in live.read_bytes()):
            assert time.monotonic() < deadline, (
                "what the shell printed was not copied off the node as it went: "
                f"{sorted(p.name for p in live.parent.iterdir()) if live.parent.exists() else None}; "
                f"{status(env)[name]}; {(layout.root / 'fleetd.log').read_text()[-3000:]}"
            )
            await asyncio.sleep(0.2)
        cast = f"/host/var/lib/lifsea-agent/recordings/{session.id}.cast"
        edited = await driver.run(
            f"sed -i 's/evidence-of-4[2]/nothing-to-see/g' {cast}; grep -c nothing-to {cast}", "STEP-2"
        )
        assert counted(edited, "STEP-2") >= 1, edited  # the shell did change its recording on disk
        opened = next(r for r in node_records(lab_status, name) if r["params"].get("session") == session.id)
        rewritten = await driver.run(REWRITE + "; grep -c 'routine look' $L", "STEP-3", 60)
        assert counted(rewritten, "STEP-3") >= 1, rewritten[-1500:]
        checked = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "lifsea_tui.agent.cli", "verify-audit", str(node_log(layout, name))],
            capture_output=True,
            text=True,
        )
        assert checked.returncode == 0, checked.stdout  # the rewrite is one the node's own verify cannot see
        flagged = await asyncio.to_thread(until, env, lambda s: not s[name]["ok"], 15, "node3 flagged")
        assert flagged[name]["first_bad_seq"] == opened["seq"], flagged[name]
        console = Console(env, "breakglass")
        try:
            await asyncio.to_thread(console.until, f"audit log changed from #{opened['seq']}", 30)
        finally:
            console.close()
        # Then the newest records cut off, then the whole log emptied: still flagged, at the same record.
        await driver.run("head -n -3 $L > $N; cat $N > $L", "STEP-4")
        await driver.run(": > $L; wc -c < $L", "STEP-5")
        await driver.shell.send(b"exit\r")
        await driver.finished()
    finally:
        await client.aclose()
    kept = trail / "recordings" / f"{session.id}.cast"
    deadline = time.monotonic() + 20
    while not kept.exists():
        assert time.monotonic() < deadline, (
            f"the recording was not kept: {sorted(p.name for p in kept.parent.iterdir())}"
        )
        await asyncio.sleep(0.2)
    ended = next(r for r in node_records(lab_status, name) if r["action"] == "ops.session.end")
    assert ended["params"]["session"] == session.id
    assert ended["outcome"].startswith("failed: the recording file was changed during the session"), ended
    recorded = kept.read_bytes()
    assert b"evidence-of-42" in recorded and hashlib.sha256(recorded).hexdigest() == ended["params"]["sha256"]
    with lab_client(node, "auditor") as http:
        assert http.get(routes.RECORDING.format(recording_id=session.id)).json()["error"] == "recording_changed"
    played = subprocess.run(
        [sys.executable, "-m", "lifsea_tui.tui.cli", "play", name, session.id, "--findings"],
        capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    assert played.returncode in (0, 1) and "the collected copy" in played.stderr, played.stderr
    assert "changed since it was sealed" in played.stderr, played.stderr
    kept.write_bytes(recorded.replace(b"evidence-of-42", b"evidence-of-43"))  # and now the copy, too
    refused = subprocess.run(
        [sys.executable, "-m", "lifsea_tui.tui.cli", "play", name, session.id, "--findings"],
        capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 1 and "does not match a seal" in refused.stderr, refused.stderr
    assert refused.stdout == ""  # nothing of it was played or judged
    kept.write_bytes(recorded)
    after = status(env)[name]
    assert not after["ok"] and after["first_bad_seq"] == opened["seq"], after
    checked, records = verify(env, name, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert records[opened["seq"]]["reason"] == "INC-77 free /var"
    assert records[opened["seq"]]["hash"] == opened["hash"]
