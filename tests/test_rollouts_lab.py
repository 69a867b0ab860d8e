"""Fleet rollouts on a real 3-node lab: nspawn machines booted from ostree, their agents, the lab's own
etcd (TLS) and its supervised lifsea-fleetd, driven by `lifsea-tui rollout` as a script would.

"Never two down at once" is checked from the lab's view of the machines (the supervisor's state of
each nspawn machine), not from what the controller says.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from lifsea_tui.api import routes
from lifsea_tui.api.rollouts import RolloutSpec
from lifsea_tui.client import rollouts
from lifsea_tui.client.etcd import EtcdTarget, Store, StoreUnavailable
from lifsea_tui.lab.image import REF
from lifsea_tui.lab.layout import Layout
from tests.conftest import Console, lab, running_lab

pytestmark = pytest.mark.lab
NODES = ["node1", "node2", "node3"]


@pytest.fixture(scope="module")
def lab3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], dict[str, str], Layout]]:
    with running_lab(tmp_path_factory, 3, "lab3") as running:
        yield running


@pytest.fixture(autouse=True)
def nothing_left_running(lab3: tuple[dict[str, Any], dict[str, str], Layout]) -> Iterator[None]:
    """A test that fails mid-rollout leaves it paused on the nodes; abort it, so the next test's failure
    is its own and not 'these nodes are in a rollout that has not finished'."""
    yield
    _, env, _ = lab3
    listed = rollout_cli(env, "list", "--json")
    for rollout in json.loads(listed.stdout or "[]"):
        if rollout["phase"] not in ("completed", "rolled-back", "aborted"):
            rollout_cli(env, "abort", rollout["id"], "--reason", "the test that started it has ended")


def rollout_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lifsea_tui.tui.cli", "rollout", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


class DownWatcher:
    """Samples the lab's own view of each machine ten times a second; remembers the most down at once."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.most_down = 0
        self.went_down: list[str] = []
        self.down_sets: set[frozenset[str]] = set()  # every set of machines seen down together
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        previous: set[str] = set()
        while not self.stop.is_set():
            down = {name for name in NODES if self.layout.node(name).state().get("state") != "running"}
            self.most_down = max(self.most_down, len(down))
            self.down_sets.add(frozenset(down))
            self.went_down += sorted(down - previous)
            previous = down
            time.sleep(0.1)

    def __enter__(self) -> DownWatcher:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


def node_http(status: dict[str, Any], name: str) -> httpx.Client:
    node = next(n for n in status["nodes"] if n["name"] == name)
    return httpx.Client(
        base_url=node["url"],
        verify=ssl.create_default_context(cafile=node["ca_file"]),
        headers={"Authorization": f"Bearer {node['tokens']['reader']}"},
        timeout=30,
    )


def booted(status: dict[str, Any], name: str) -> str | None:
    with node_http(status, name) as http:
        listing = http.get(routes.DEPLOYMENTS).json()["deployments"]
    return next((d["version"] for d in listing if d["booted"]), None)


def rollback_version(status: dict[str, Any], name: str) -> str | None:
    with node_http(status, name) as http:
        listing = http.get(routes.DEPLOYMENTS).json()["deployments"]
    return next((d["version"] for d in listing if d["rollback"]), None)


def audit_reasons(status: dict[str, Any], name: str) -> list[tuple[str, str, str]]:
    with node_http(status, name) as http:
        records = http.get(routes.AUDIT, params={"limit": 1000}).json()["records"]
    return [(r["actor"], r["action"], r["reason"] or "") for r in records if r["outcome"] == "ok"]


class Watch:
    """The rollout as etcd holds it, read with the console's credentials."""

    def __init__(self, status: dict[str, Any], rollout_id: str) -> None:
        self.target = EtcdTarget.from_json(status["etcd"], "console")
        self.rollout_id = rollout_id

    async def until(self, check: Any, timeout: float, what: str) -> rollouts.Rollout:
        store = Store(self.target)
        deadline = time.monotonic() + timeout
        found = None
        try:
            while time.monotonic() < deadline:
                found = await rollouts.read(store, self.rollout_id)
                if found is not None and check(found):
                    return found
                await asyncio.sleep(0.2)
        finally:
            await store.aclose()
        raise AssertionError(f"timed out waiting for {what}; last: {found.summary() if found else None}")


def kill_controller(layout: Layout) -> int:
    """SIGKILL the lab's controller; the supervisor starts a new one, as systemd would."""
    pid_file = layout.root / "fleetd.pid"
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while int(pid_file.read_text()) == pid:
        assert time.monotonic() < deadline, "the supervisor did not restart the controller"
        time.sleep(0.1)
    return pid


async def test_rolling_upgrade_and_rollback_survive_killed_controllers_and_a_frozen_store(lab3) -> None:
    status, env, layout = lab3
    before = {name: booted(status, name) for name in NODES}
    published = lab(["publish", "--version", "2.1"], env)
    assert published.returncode == 0, published.stderr
    started = rollout_cli(
        env,
        "start",
        "--version",
        "2.1",
        "--canary",
        "1",
        "--max-unavailable",
        "1",
        "--soak",
        "3",
        "--reason",
        "CHG-21 move the fleet to 2.1",
        "--json",
    )
    assert started.returncode == 0, started.stderr
    rollout_id = json.loads(started.stdout)["id"]
    watch = Watch(status, rollout_id)
    killed = []
    with DownWatcher(layout) as watcher:
        # SIGKILL the controller in each phase a node passes through, and while a batch soaks.
        for node, state in (("node1", "staging"), ("node2", "rebooting"), ("node3", "verifying")):
            await watch.until(lambda r, n=node, s=state: r.node(n).state.value == s, 180, f"{node} {state}")
            killed.append(kill_controller(layout))
            if node == "node1":
                await watch.until(lambda r: r.status.phase.value == "soaking", 180, "soaking")
                killed.append(kill_controller(layout))
        done = await watch.until(lambda r: r.status.phase.value == "completed", 240, "completed")
    assert len(set(killed)) == 4
    assert watcher.most_down == 1, f"{watcher.most_down} machines were down at once"
    assert watcher.went_down[:3] == ["node1", "node2", "node3"], watcher.went_down
    assert {n.name: (n.state.value, n.booted_version) for n in done.nodes} == {n: ("done", "2.1") for n in NODES}
    assert {name: booted(status, name) for name in NODES} == dict.fromkeys(NODES, "2.1")
    for name in NODES:
        moved = [(a, r) for actor, a, r in audit_reasons(status, name) if actor == "lifsea-fleetd"]
        actions = [action for action, reason in moved if rollout_id in reason]
        assert "upgrade.stage" in actions and "reboot" in actions, moved
        assert actions.count("upgrade.stage") == 1, f"{name} was staged twice: {moved}"
    decisions = [(e.kind, e.action) for e in done.log]
    assert decisions[0] == ("intent", "start") and decisions[-1] == ("decision", "completed")

    # Roll the whole fleet back, and freeze the store for a while in the middle of it.
    back = rollout_cli(env, "rollback", rollout_id, "--reason", "CHG-21 back out")
    assert back.returncode == 0, back.stderr
    etcd_pid = next(
        int(p)
        for p in subprocess.run(
            ["pgrep", "-f", f"{layout.etcd_dir}/etcd1/data"], capture_output=True, text=True
        ).stdout.split()
    )
    with DownWatcher(layout) as watcher:
        await watch.until(lambda r: r.node("node1").state.value == "reverted", 180, "node1 reverted")
        seen = len((layout.root / "fleetd.log").read_text())
        os.kill(etcd_pid, signal.SIGSTOP)
        try:
            time.sleep(8)
            log = (layout.root / "fleetd.log").read_text()[seen:]
            assert "not dispatching: store" in log, log[-2000:]
            answer = rollout_cli(env, "status", rollout_id)
            assert answer.returncode == 3 and "did not answer" in answer.stderr, answer
        finally:
            os.kill(etcd_pid, signal.SIGCONT)
        done = await watch.until(lambda r: r.status.phase.value == "rolled-back", 300, "rolled back")
    assert watcher.most_down == 1, f"{watcher.most_down} machines were down at once"
    assert {n.name: n.state.value for n in done.nodes} == dict.fromkeys(NODES, "reverted")
    assert {name: booted(status, name) for name in NODES} == before
    reasons = [r for actor, a, r in audit_reasons(status, "node3") if actor == "lifsea-fleetd" and a == "rollback"]
    assert reasons and "CHG-21 back out" in reasons[-1]


def ostree_repo(layout: Layout, *args: str) -> str:
    return subprocess.run(
        ["ostree", f"--repo={layout.repo}", *args], capture_output=True, text=True, check=True
    ).stdout.strip()


async def test_a_bad_canary_stops_the_rollout_and_no_other_node_moves(lab3) -> None:
    status, env, layout = lab3
    good_head = ostree_repo(layout, "rev-parse", REF)
    try:
        await bad_canary(status, env)
    finally:  # the next release is built on the update server's head: take the bad one off it
        ostree_repo(layout, "reset", REF, good_head)
        ostree_repo(layout, "summary", "--update")


async def bad_canary(status: dict[str, Any], env: dict[str, str]) -> None:
    before = {name: booted(status, name) for name in NODES}
    published = lab(["publish", "--version", "3.0-bad", "--bad"], env)
    assert published.returncode == 0, published.stderr
    first = rollout_cli(env, "start", "--version", "3.0-bad", "--reason", "CHG-30 storage driver", "--json")
    assert first.returncode == 0, first.stderr
    rollout_id = json.loads(first.stdout)["id"]
    paused = await Watch(status, rollout_id).until(lambda r: r.status.phase.value == "paused", 180, "paused")
    canary = paused.node("node1")
    assert canary.state.value == "failed" and "lifsea-storage.service" in canary.reason
    assert "canary node1 failed" in paused.status.message
    assert [paused.node(n).state.value for n in ("node2", "node3")] == ["pending", "pending"]
    assert booted(status, "node2") == before["node2"] and booted(status, "node3") == before["node3"]
    for name in ("node2", "node3"):
        assert not [r for actor, _, r in audit_reasons(status, name) if rollout_id in r], f"{name} was touched"

    # While it holds the nodes, a second rollout on them is refused.
    second = rollout_cli(env, "start", "--version", "3.0-bad", "--reason", "again")
    assert second.returncode == 1 and "in a rollout that has not finished" in second.stderr

    # Rolling it back takes the canary back; then, with --on-failure rollback, the controller does it alone.
    assert rollout_cli(env, "rollback", rollout_id, "--reason", "CHG-30 bad driver").returncode == 0
    await Watch(status, rollout_id).until(lambda r: r.status.phase.value == "rolled-back", 180, "rolled back")
    assert booted(status, "node1") == before["node1"]
    auto = rollout_cli(
        env, "start", "--version", "3.0-bad", "--on-failure", "rollback", "--reason", "CHG-31 try again", "--json"
    )
    assert auto.returncode == 0, auto.stderr
    auto_id = json.loads(auto.stdout)["id"]
    gone_back = await Watch(status, auto_id).until(lambda r: r.status.phase.value == "rolled-back", 240, "auto")
    assert {n.name: n.state.value for n in gone_back.nodes} == {
        "node1": "reverted",
        "node2": "skipped",
        "node3": "skipped",
    }
    assert {name: booted(status, name) for name in NODES} == before


def test_bad_requests_are_refused_clearly(lab3) -> None:
    status, env, _ = lab3
    cases = [
        (["--version", "1.1", "--max-unavailable", "0"], 2, "at least 1"),
        (["--version", "1.1", "--max-unavailable", "lots"], 2, "a count"),
        (["--version", "1.1", "--nodes", "node1,nodeX"], 2, "unknown nodes: nodeX"),
        (["--version", "1.1", "--nodes", ""], 2, "no nodes"),
        (["--version", "1.1", "--reason", " "], 2, "reason"),
    ]
    for args, code, text in cases:
        full = [*args] if "--reason" in args else [*args, "--reason", "CHG-0"]
        answer = rollout_cli(env, "start", *full)
        assert answer.returncode == code and text in answer.stderr, (args, answer)
    assert rollout_cli(env, "status", "r-nope").returncode == 1
    unknown = rollout_cli(env, "start", "--version", "9.9", "--reason", "CHG-99", "--json")
    assert unknown.returncode == 0, unknown.stderr
    refused = asyncio.run(
        Watch(status, json.loads(unknown.stdout)["id"]).until(
            lambda r: r.status.phase.value == "aborted", 120, "the unknown version refused"
        )
    )
    assert "unknown version 9.9" in refused.status.message and "1.0" in refused.status.message
    assert all(n.state.value == "skipped" for n in refused.nodes)


async def test_a_multi_node_reboot_from_the_fleet_rolls_through_the_shared_slots(lab3) -> None:
    """Select all, r: one node down at a time, and none while a FleetLock client holds the only slot."""
    from lifsea_tui.client.fleet import Fleet
    from lifsea_tui.lab.targets import from_lab
    from lifsea_tui.tui.app import LifseaApp

    status, _, layout = lab3
    boots = {name: layout.node(name).state().get("boots", 0) for name in NODES}
    store = Store(EtcdTarget.from_json(status["etcd"], "console"))
    assert await rollouts.take_slot(store, "default", "zincati-7", 1, "FleetLock client")
    app = LifseaApp(
        Fleet(from_lab("operator", status=status)),
        refresh_interval=3600,
        rollout_store=EtcdTarget.from_json(status["etcd"], "console"),
    )
    try:
        with DownWatcher(layout) as watcher:
            async with app.run_test(size=(120, 36)) as pilot:
                await pilot.pause(2)
                await pilot.press("a", "r")
                await pilot.pause(0.5)
                await pilot.press(*"CHG-40 kernel parameters", "enter")
                await pilot.pause(6)
                assert {n: layout.node(n).state().get("boots", 0) for n in NODES} == boots, "rebooted without a slot"
                await rollouts.free_slot(store, "default", "zincati-7")
                deadline = time.monotonic() + 240
                while any(layout.node(n).state().get("boots", 0) == boots[n] for n in NODES):
                    assert time.monotonic() < deadline, "not every node rebooted"
                    await pilot.pause(0.5)
                while await rollouts.slots(store, "default"):
                    assert time.monotonic() < deadline, "the console kept a slot after the reboots"
                    await pilot.pause(0.5)
        assert watcher.most_down == 1, f"{watcher.most_down} machines were down at once"
        assert watcher.went_down[:3] == NODES, watcher.went_down
        reasons = [r for actor, action, r in audit_reasons(status, "node2") if action == "reboot"]
        assert reasons[-1] == "CHG-40 kernel parameters (rolling reboot 2/3)", reasons
    finally:
        await rollouts.free_slot(store, "default", "zincati-7")
        await store.aclose()


async def test_hooks_fail_a_node_before_it_is_touched_and_a_standby_controller_takes_over(lab3) -> None:
    status, env, layout = lab3
    standby = subprocess.Popen(
        [sys.executable, "-m", "lifsea_tui.fleetd.cli", "--lab-dir", str(layout.root), "--id", "standby"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(layout.root / "standby.log", "wb"),
    )
    store = Store(EtcdTarget.from_json(status["etcd"], "console"))
    try:
        failing = rollout_cli(
            env,
            "start",
            "--version",
            "1.0",
            "--nodes",
            "node1",
            "--reason",
            "CHG-50 hook",
            "--pre-hook",
            "test {node} != node1",
            "--json",
        )
        hanging = rollout_cli(
            env,
            "start",
            "--version",
            "1.0",
            "--nodes",
            "node2",
            "--reason",
            "CHG-51 hook",
            "--pre-hook",
            "sleep 60",
            "--hook-timeout",
            "2",
            "--json",
        )
        ids = [json.loads(answer.stdout)["id"] for answer in (failing, hanging)]
        first = await Watch(status, ids[0]).until(lambda r: r.status.phase.value == "paused", 60, "pre hook fails")
        assert "pre hook: `test node1 != node1` exited 1" in first.node("node1").reason
        second = await Watch(status, ids[1]).until(lambda r: r.status.phase.value == "paused", 60, "hook hangs")
        assert "did not finish within 2 s and was killed" in second.node("node2").reason
        for rollout_id, name in zip(ids, ("node1", "node2"), strict=True):
            assert not [r for _, _, r in audit_reasons(status, name) if rollout_id in r], "touched before its hook"
            assert rollout_cli(env, "abort", rollout_id, "--reason", "done testing hooks").returncode == 0

        # Two controllers: one leads. Kill the leader; the other (or its restarted self) leads within the lease.
        leader = await store.get(rollouts.LEADER)
        assert leader is not None
        leading = leader.value.decode()
        if leading.startswith("standby"):
            standby.kill()
        else:
            kill_controller(layout)
        started = time.monotonic()
        while True:
            now = await store.get(rollouts.LEADER)
            if now is not None and now.value.decode() != leading:
                break
            assert time.monotonic() - started < 10, "nobody took over within the lease"
            await asyncio.sleep(0.2)
        node3 = booted(status, "node3")
        assert node3 is not None
        after = rollout_cli(env, "start", "--version", node3, "--nodes", "node3", "--reason", "CHG-52", "--json")
        done = await Watch(status, json.loads(after.stdout)["id"]).until(
            lambda r: r.status.phase.value == "completed", 90, "the new leader completes a rollout"
        )
        assert done.node("node3").reason == "healthy on the target"
        deciders = {e.who for e in done.log if e.kind == "decision"}
        assert deciders == {now.value.decode()}, deciders  # only the leader acts
        assert not [r for actor, a, r in audit_reasons(status, "node3") if a == "upgrade.stage" and "CHG-52" in r]
    finally:
        standby.kill()
        standby.wait()
        await store.aclose()


async def test_a_node_that_does_not_answer_waits_until_its_deadline_then_fails(lab3) -> None:
    status, env, layout = lab3
    version = booted(status, "node3")
    agent_pid = int((layout.node("node3").root / "agent.pid").read_text())
    os.kill(agent_pid, signal.SIGSTOP)  # its port still takes connections; nothing answers on them
    try:
        started = rollout_cli(
            env,
            "start",
            "--version",
            str(version),
            "--nodes",
            "node2,node3",
            "--canary",
            "0",
            "--max-unavailable",
            "2",
            "--node-deadline",
            "25",
            "--error-budget",
            "1",
            "--reason",
            "CHG-60 one node frozen",
            "--json",
        )
        assert started.returncode == 0, started.stderr
        rollout_id = json.loads(started.stdout)["id"]
        watch = Watch(status, rollout_id)
        waiting = await watch.until(lambda r: r.node("node3").reason.startswith("waiting:"), 60, "node3 waits")
        assert waiting.node("node3").state.value == "staging"
        done = await watch.until(lambda r: r.status.phase.value == "completed", 90, "the deadline passes")
        assert done.node("node3").state.value == "failed"
        assert "no verdict before its deadline (25 s" in done.node("node3").reason
        assert done.node("node2").state.value == "done"  # within the error budget, the rollout goes on
    finally:
        os.kill(agent_pid, signal.SIGCONT)


async def test_a_controller_on_a_three_member_etcd_goes_on_with_two_and_stops_with_one(lab3, tmp_path) -> None:
    """A controller of the test's own (in this process) on three etcd members of the test's own: one member
    stopped mid-rollout changes nothing; a second stops the dispatching (no quorum, said so) and nothing
    moves; back to two, the rollout finishes where it was."""
    from lifsea_tui.fleetd.controller import Controller
    from lifsea_tui.lab.etcd import EtcdCluster
    from lifsea_tui.lab.targets import from_lab

    status, env, layout = lab3
    before = {name: booted(status, name) for name in NODES}
    published = lab(["publish", "--version", "4.0"], env)
    assert published.returncode == 0, published.stderr
    members = EtcdCluster.fresh(tmp_path / "etcd3", layout.pki / "ca", 3)
    members.start()
    await members.wait_ready()
    store = Store(members.target("lifsea-fleetd", timeout=2))
    watcher_store = Store(members.target("console", timeout=2))
    controller = Controller(store, {t.name: t for t in from_lab("controller", status=status)}, tick=0.5)
    stop = asyncio.Event()
    running = asyncio.create_task(controller.run(stop))
    try:
        await asyncio.sleep(1)
        spec = RolloutSpec(
            id="r-quorum",
            target_version="4.0",
            nodes=NODES,
            canary=1,
            max_unavailable=1,
            reason="CHG-70 quorum",
            created_by="test",
            created_at=datetime.now(UTC),
        )
        await rollouts.start(watcher_store, spec)

        async def until(check: Any, timeout: float, what: str) -> rollouts.Rollout:
            deadline = time.monotonic() + timeout
            found = None
            while time.monotonic() < deadline:
                with contextlib.suppress(StoreUnavailable):
                    found = await rollouts.read(watcher_store, "r-quorum")
                    if found is not None and check(found):
                        return found
                await asyncio.sleep(0.3)
            last = found.summary() if found else None
            raise AssertionError(f"timed out waiting for {what}; controller: {controller.problem}; last: {last}")

        await until(lambda r: r.node("node1").state.value == "done", 120, "node1 done")
        members.stop("etcd1")
        await until(lambda r: r.node("node2").state.value == "done", 120, "node2 done with two members")
        members.stop("etcd2")
        frozen_at = time.monotonic()
        while controller.problem is None:
            assert time.monotonic() - frozen_at < 15, "the controller did not notice the store has no quorum"
            await asyncio.sleep(0.2)
        assert "no quorum" in controller.problem
        boots = layout.node("node3").state().get("boots")
        await asyncio.sleep(5)
        assert layout.node("node3").state().get("boots") == boots  # nothing dispatched without quorum
        members.start("etcd1")
        done = await until(lambda r: r.status.phase.value == "completed", 180, "completed with quorum back")
        assert [n.booted_version for n in done.nodes] == ["4.0"] * 3
        assert controller.problem is None
    finally:
        stop.set()
        controller.wake.set()
        await running
        await store.aclose()
        await watcher_store.aclose()
        members.stop()
    # Each node keeps the release it was on as its rollback; "forward" to that older release is a rollback.
    # (Earlier tests may leave the nodes on different releases: go back on those that shared node1's.)
    assert {name: rollback_version(status, name) for name in NODES} == before
    back_to = before["node1"]
    assert back_to is not None
    same = [name for name in NODES if before[name] == back_to]
    # One node at a time: three nspawn machines booting at once on a loaded machine have twice come back
    # with a unit failed at boot (remount-fs, tmpfiles), which the health gate rightly fails.
    back = rollout_cli(
        env,
        *("start", "--version", back_to, "--nodes", ",".join(same), "--max-unavailable", "1", "--canary", "0"),
        *("--reason", f"CHG-71 back to {back_to}", "--json"),
    )
    assert back.returncode == 0, back.stderr
    returned = await Watch(status, json.loads(back.stdout)["id"]).until(
        lambda r: r.status.phase.value == "completed", 180, f"back on {back_to}"
    )
    assert {n.name: n.booted_version for n in returned.nodes} == {name: back_to for name in same}


async def test_nodes_are_chosen_by_their_labels_and_each_zone_keeps_its_own_limit(lab3) -> None:
    """The lab's agents say zone=a (node1, node3) or zone=b (node2) in /v1/node and /v1/summary. A
    selector picks by them; a per-zone limit of 1 with a fleet-wide limit of 3 lets node2 move beside a
    zone-a node but never both zone-a nodes at once (that one seen from the lab's view of the machines)."""
    status, env, layout = lab3
    for name, zone in (("node1", "a"), ("node2", "b"), ("node3", "a")):
        with node_http(status, name) as http:
            assert http.get(routes.NODE).json()["labels"] == {"zone": zone, "pool": "lab"}
            assert http.get(routes.SUMMARY).json()["labels"]["zone"] == zone
    nothing = rollout_cli(env, "start", "--version", "1.0", "--selector", "zone=c", "--reason", "CHG-90")
    assert nothing.returncode == 2 and "none has zone=c" in nothing.stderr, nothing
    bad = rollout_cli(env, "start", "--version", "1.0", "--max-unavailable-per", "zone", "--reason", "CHG-90")
    assert bad.returncode == 2 and "LABEL=N" in bad.stderr, bad
    published = lab(["publish", "--version", "4.1"], env)
    assert published.returncode == 0, published.stderr
    started = rollout_cli(
        env,
        *("start", "--version", "4.1", "--selector", "pool=lab,zone!=c", "--canary", "0"),
        *("--max-unavailable", "3", "--max-unavailable-per", "zone=1", "--reason", "CHG-91 zone by zone", "--json"),
    )
    assert started.returncode == 0, started.stderr
    watch = Watch(status, json.loads(started.stdout)["id"])
    with DownWatcher(layout) as watcher:
        done = await watch.until(lambda r: r.status.phase.value == "completed", 240, "completed")
    assert done.spec.nodes == ["node1", "node2", "node3"]  # zones taken in turn: a, b, a
    assert done.spec.groups == {"node1": "a", "node2": "b", "node3": "a"}
    assert done.spec.group_max == {"a": 1, "b": 1}
    assert {n.booted_version for n in done.nodes} == {"4.1"}
    assert not any({"node1", "node3"} <= down for down in watcher.down_sets), watcher.down_sets
    # node2 was in flight beside a zone-a node (the rollout's own times: reboots that short need not overlap)
    node1, node2, node3 = (done.node(name) for name in ("node1", "node2", "node3"))
    assert node2.started_at is not None and node2.finished_at is not None
    spans = {n.name: (n.started_at or 0.0, n.finished_at or 0.0) for n in (node1, node3)}
    overlapping = [
        name for name, (began, ended) in spans.items() if began < node2.finished_at and node2.started_at < ended
    ]
    assert overlapping, [(n.name, n.started_at, n.finished_at) for n in done.nodes]
    summary = json.loads(rollout_cli(env, "status", done.spec.id, "--json").stdout)
    assert summary["group_by"] == "zone" and [n["group"] for n in summary["nodes"]] == ["a", "b", "a"]
    only_b = rollout_cli(env, "start", "--version", "4.1", "--selector", "zone=b", "--reason", "CHG-92", "--json")
    assert only_b.returncode == 0, only_b.stderr
    done = await Watch(status, json.loads(only_b.stdout)["id"]).until(
        lambda r: r.status.phase.value == "completed", 60, "zone b alone"
    )
    assert [n.name for n in done.nodes] == ["node2"] and done.spec.selector == "zone=b"


async def test_a_window_closing_mid_rollout_lets_the_node_in_flight_finish_and_starts_nothing_until_the_next(
    lab3,
) -> None:
    """Two windows a minute apart: the canary is still moving when the first closes (it finishes), the rest
    wait through the gap (phase waiting, no node started in it, no deadline counted), then move once the
    second window opens."""
    status, env, _ = lab3
    published = lab(["publish", "--version", "5.0"], env)
    assert published.returncode == 0, published.stderr
    now = time.time()
    minute = now // 60 * 60
    closes = minute + 60 * -(-(now + 40 - minute) // 60)  # the first minute boundary at least 40 s away
    opens = closes + 60
    first = f"daily {datetime.fromtimestamp(minute, UTC):%H:%M} {int(closes - minute) // 60}m UTC"
    second = f"daily {datetime.fromtimestamp(opens, UTC):%H:%M} 1h UTC"
    hold = max(1, int(closes - time.time()) - 4)  # the canary's hook ends just before the close: it is in flight
    started = rollout_cli(
        env,
        # The deadline counts from the node's turn, hook included: the hold (up to 96 s) plus a reboot.
        *("start", "--version", "5.0", "--canary", "1", "--max-unavailable", "1", "--node-deadline", str(hold + 150)),
        *("--window", first, "--window", second, "--pre-hook", f"test {{node}} != node1 || sleep {hold}"),
        *("--reason", "CHG-80 in the windows only", "--json"),
    )
    assert started.returncode == 0, started.stderr
    watch = Watch(status, json.loads(started.stdout)["id"])
    waiting = await watch.until(lambda r: r.status.phase.value == "waiting", closes - time.time() + 60, "waiting")
    assert "outside its maintenance windows; the next opens" in waiting.status.message
    assert time.time() >= closes - 1
    done = await watch.until(lambda r: r.status.phase.value == "completed", opens - time.time() + 150, "completed")
    canary, rest = done.node("node1"), [done.node("node2"), done.node("node3")]
    assert canary.state.value == "done" and canary.finished_at is not None and canary.finished_at > closes
    for node in rest:
        assert node.state.value == "done", node
        assert node.started_at is not None and node.started_at >= opens - 1, f"{node.name} started in the gap"
    actions = [e.action for e in done.log if e.kind == "decision"]
    assert actions.index("window-closed") < actions.index("window-open")
    assert {n.booted_version for n in done.nodes} == {"5.0"}


async def test_killing_the_console_mid_rollout_changes_nothing_and_reopening_shows_where_it_is(lab3) -> None:
    status, env, _ = lab3
    if subprocess.run(["which", "tmux"], capture_output=True).returncode != 0:
        pytest.skip("tmux is not installed (scripts/setup.sh installs it)")
    published = lab(["publish", "--version", "6.0"], env)
    assert published.returncode == 0, published.stderr
    started = rollout_cli(
        env,
        *("start", "--version", "6.0", "--canary", "1", "--max-unavailable", "1", "--soak", "5"),
        *("--reason", "CHG-95 console killed on the way", "--json"),
    )
    assert started.returncode == 0, started.stderr
    rollout_id = json.loads(started.stdout)["id"]
    watch = Watch(status, rollout_id)
    first = Console(env, "first")
    try:
        first.until("● ok", 60)
        first.tmux("send-keys", "-t", "first", "R")
        first.until("store: etcd", 15)
        first.until(rollout_id, 15)
        await watch.until(lambda r: r.node("node1").state.value in ("staging", "rebooting"), 60, "node1 moving")
        os.kill(first.pid, signal.SIGKILL)  # as a lost laptop or a closed terminal would
    finally:
        first.close()
    moved = await watch.until(lambda r: r.node("node2").state.value != "pending", 180, "node2 moves on its own")
    assert moved.node("node1").state.value == "done"
    second = Console(env, "second")
    try:
        second.until("● ok", 60)
        second.tmux("send-keys", "-t", "second", "R")
        second.until("store: etcd", 15)
        shown = second.until(rollout_id, 15)
        assert "node1" in shown and "done" in shown, shown
        assert "batch 2/3" in shown or "batch 3/3" in shown, shown  # where it is, not where it was
        done = await watch.until(lambda r: r.status.phase.value == "completed", 240, "completed")
        second.until("3 of 3 nodes on 6.0", 15)
    finally:
        second.close()
    assert {n.booted_version for n in done.nodes} == {"6.0"}


async def test_a_release_that_crash_loops_is_caught_by_the_runbook_gate_and_no_other_node_moves(lab3) -> None:
    """A unit that systemd restarts for ever is never 'failed', so the failed-unit gate passes it; the
    crash-loop runbook's first check sees it. Runbooks that fired before the node was touched do not count.
    (Rolling a failed canary back is tested with the bad-upgrade release.)"""
    status, env, _ = lab3
    refused = rollout_cli(env, "start", "--version", "1.0", "--runbook-gate", "nope", "--reason", "CHG-96")
    assert refused.returncode == 2 and "unknown runbooks nope (known: bad-upgrade" in refused.stderr, refused
    published = lab(["publish", "--version", "7.0", "--crash-loop"], env)
    assert published.returncode == 0, published.stderr
    before = {name: booted(status, name) for name in NODES}
    started = rollout_cli(
        env,
        *("start", "--version", "7.0", "--canary", "1", "--runbook-gate", "all"),
        *("--reason", "CHG-97 a release that loops", "--json"),
    )
    assert started.returncode == 0, started.stderr
    watch = Watch(status, json.loads(started.stdout)["id"])
    done = await watch.until(lambda r: r.status.phase.value == "paused", 300, "the canary caught")
    canary = done.nodes[0]
    assert canary.state.value == "failed", canary
    assert "runbook crash-loop (A service is crash-looping) applies" in canary.reason, canary
    assert "lifsea-cache.service" in canary.reason
    assert canary.baseline_runbooks is not None  # taken before the node was touched
    assert [n.state.value for n in done.nodes[1:]] == ["pending", "pending"]
    assert {name: booted(status, name) for name in NODES[1:]} == {name: before[name] for name in NODES[1:]}
