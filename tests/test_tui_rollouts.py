"""The Rollouts screen against a real etcd (Debian's etcd-server, mutual TLS on loopback): what it writes
is what the controller reads, and what etcd holds is what it shows, store down included.

The fleet here is FrozenFleet (fixed answers, so the picture is stable); rollouts on real nodes are
tested in test_rollouts_lab.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from lifsea_tui.api.rollouts import LogEntry, NodeState, Phase, RolloutSpec
from lifsea_tui.client import rollouts
from lifsea_tui.client.etcd import Store
from lifsea_tui.lab import etcd
from lifsea_tui.tui.app import LifseaApp
from tests.frozen import FrozenFleet

pytestmark = pytest.mark.skipif(etcd.missing() is not None, reason=etcd.MISSING)
SIZE = (120, 36)


@pytest.fixture(autouse=True)
def own_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFSEA_TUI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LIFSEA_TUI_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[etcd.EtcdCluster]:
    members = etcd.EtcdCluster.fresh(tmp_path / "etcd", tmp_path / "ca", 1)
    members.start()
    asyncio.run(members.wait_ready())
    yield members
    members.stop()


@pytest.fixture
async def store(cluster: etcd.EtcdCluster) -> AsyncIterator[Store]:
    opened = Store(cluster.target("tester"))
    yield opened
    await opened.aclose()


def text_of(app: LifseaApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def settle(pilot: Pilot, seconds: float = 0.5) -> None:
    await pilot.pause(seconds)


async def test_start_a_rollout_from_the_form_and_steer_it(cluster: etcd.EtcdCluster, store: Store) -> None:
    app = LifseaApp(FrozenFleet(), refresh_interval=3600, rollout_store=cluster.target("console"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("R")
        await settle(pilot, 1.5)
        assert "0 rollouts" in text_of(app, "#store-line")
        await pilot.press("n")
        await settle(pilot)
        preview = text_of(app, "#preview")
        assert "batches" in preview and "→ 1.1" in preview, preview  # the newest offered version, by default
        await pilot.press("enter")  # no reason yet: refused, and says so
        await settle(pilot, 0.2)
        assert "reason is required" in text_of(app, "#problem")
        await pilot.press(*"CHG-5 fleet to 1.1", "enter")
        await settle(pilot, 2.0)
        written = await rollouts.read_all(store)
        assert len(written) == 1
        spec = written[0].spec
        assert spec.target_version == "1.1" and spec.reason == "CHG-5 fleet to 1.1"
        assert spec.nodes == sorted(app.fleet.snapshots) and spec.canary == 1 and spec.max_unavailable == 1
        assert spec.id in text_of(app, "#detail-head")
        rows = app.screen.query_one("#rollout-nodes", DataTable)
        assert rows.row_count == len(spec.nodes)

        await pilot.press("p")
        await settle(pilot, 0.3)
        await pilot.press(*"INC-3 hold on", "enter")
        await settle(pilot, 1.5)
        found = await rollouts.read(store, spec.id)
        assert found is not None
        assert [(e.kind, e.action, e.reason) for e in found.log][-1] == ("intent", "pause", "INC-3 hold on")

        cluster.stop()  # the store goes away: the screen says so and keeps the last read
        await settle(pilot, 5.0)
        assert "store unreachable" in text_of(app, "#store-line")
        assert spec.id in text_of(app, "#detail-head")


async def test_the_form_narrows_by_labels_limits_each_zone_and_keeps_to_windows(
    cluster: etcd.EtcdCluster, store: Store
) -> None:
    app = LifseaApp(FrozenFleet(), refresh_interval=3600, rollout_store=cluster.target("console"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_rollouts()
        await settle(pilot, 1.0)
        await pilot.press("n")
        await settle(pilot)
        form = app.screen
        form.query_one("#windows", Input).value = "sat,sun 02:00 4h Mars/Base"
        await settle(pilot, 0.2)
        assert "unknown time zone 'Mars/Base'" in text_of(app, "#preview")
        form.query_one("#windows", Input).value = "sat,sun 02:00 4h Europe/Berlin"
        form.query_one("#selector", Input).value = "zone=c"
        await settle(pilot, 0.2)
        assert "no node is labelled zone=c" in text_of(app, "#preview")
        form.query_one("#selector", Input).value = "zone!=b"
        form.query_one("#per-group", Input).value = "zone=1"
        form.query_one("#max-unavailable", Input).value = "2"
        await settle(pilot, 0.2)
        preview = text_of(app, "#preview")
        assert "2 nodes in" in preview and "at most per zone: a 1" in preview, preview
        assert "starts nodes only within sat,sun 02:00 4h Europe/Berlin" in preview, preview
        await pilot.press(*"CHG-6 zone a, weekends", "enter")
        await settle(pilot, 2.0)
        (written,) = await rollouts.read_all(store)
        spec = written.spec
        assert spec.nodes == ["edge-1", "edge-3"] and spec.selector == "zone!=b"
        assert (spec.group_by, spec.group_max) == ("zone", {"a": 1})
        assert [str(w) for w in spec.windows] == ["sat,sun 02:00 4h Europe/Berlin"]
        assert "at most per zone: a 1" in text_of(app, "#detail-head")


async def test_read_only_hides_every_key_that_writes(cluster: etcd.EtcdCluster, store: Store) -> None:
    app = LifseaApp(FrozenFleet(), refresh_interval=3600, read_only=True, rollout_store=cluster.target("console"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_rollouts()
        await settle(pilot, 1.0)
        shown = {key for key, active in app.screen.active_bindings.items() if active.enabled and active.binding.show}
        assert "escape" in shown and not {"n", "p", "u", "A", "b"} & shown, shown
        await pilot.press("n")
        await settle(pilot)
        assert not app.screen.query("#preview")  # no form opened
        assert await rollouts.read_all(store) == []


async def test_without_a_store_the_screen_says_so() -> None:
    app = LifseaApp(FrozenFleet(), refresh_interval=3600)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_rollouts()
        await settle(pilot)
        assert "No fleet store" in text_of(app, "#store-line")
        await pilot.press("n")
        await settle(pilot)
        assert not app.screen.query("#preview")


async def written_rollout(store: Store) -> None:
    """A rollout midway, written as the controller would leave it (fixed times, so the picture is stable)."""
    t0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC).timestamp()
    spec = RolloutSpec(
        id="r-20261126-030000-beef",
        target_version="1.1",
        nodes=["edge-1", "edge-2", "edge-3", "edge-4"],
        canary=1,
        max_unavailable=2,
        soak=30,
        reason="CHG-7 move the edge to 1.1 [link=https://x]",
        created_by="alice@ops",
        created_at=datetime(2026, 11, 26, 3, 0, tzinfo=UTC),
    )
    made = await rollouts.start(store, spec)
    states = {
        "edge-1": (NodeState.done, "healthy on the target", "1.1"),
        "edge-2": (NodeState.rebooting, "rebooting", "1.0"),
        "edge-3": (NodeState.staging, "waiting: unreachable: \x1b]52;c;aGk=\x07 refused", "1.0"),
    }
    nodes = []
    for node in made.nodes:
        if node.name in states:
            state, reason, version = states[node.name]
            finished = t0 + 95 if state is NodeState.done else None
            node = node.model_copy(
                update={
                    "state": state,
                    "reason": reason,
                    "booted_version": version,
                    "started_at": t0 + 5,
                    "finished_at": finished,
                }
            )
        nodes.append(node)
    status = made.status.model_copy(
        update={"phase": Phase.progressing, "batch": 1, "message": "batch 2 of 3", "updated_at": t0 + 100}
    )
    writes = [store.put_op(rollouts.status_key(spec.id), status.model_dump(mode="json"))]
    writes += [store.put_op(rollouts.node_key(spec.id, n.name), n.model_dump(mode="json")) for n in nodes]
    for seq, (who, action, why) in enumerate(
        [
            ("alice@ops", "start", spec.reason),
            ("fleetd-1", "planned", "3 batches"),
            ("fleetd-1", "node", "edge-1 done: healthy on 1.1"),
            ("fleetd-1", "batch", "batch 2 of 3 starts"),
        ],
        start=1,
    ):
        kind = "intent" if seq == 1 else "decision"
        entry = LogEntry(seq=seq, time=t0 + seq * 10, who=who, kind=kind, action=action, reason=why)
        writes.append(store.put_op(rollouts.log_key(spec.id, seq), entry.model_dump(mode="json")))
    writes.append(store.put_op(rollouts.logseq_key(spec.id), 4))
    assert await store.txn([], writes)


def test_rollouts_screen_snapshot(snap_compare, cluster: etcd.EtcdCluster) -> None:
    async def write() -> None:
        store = Store(cluster.target("tester"))
        try:
            await written_rollout(store)
        finally:
            await store.aclose()

    asyncio.run(write())

    async def open_rollouts(pilot: Pilot) -> None:
        await pilot.pause(0.4)
        await pilot.press("R")
        await pilot.pause(2.0)

    app = LifseaApp(FrozenFleet(), refresh_interval=3600, rollout_store=cluster.target("console"))
    assert snap_compare(app, terminal_size=SIZE, run_before=open_rollouts)


async def test_the_rollout_command_prints_node_text_plain(store: Store) -> None:
    """`rollout status` prints reasons an agent wrote (its error details): no escape sequence reaches the terminal."""
    from lifsea_tui.tui.rollout_cli import describe

    await written_rollout(store)
    found = await rollouts.read(store, "r-20261126-030000-beef")
    assert found is not None
    printed = describe(found)
    assert "\x1b" not in printed and "\x07" not in printed
    assert "␛]52;c;aGk=␇" in printed
