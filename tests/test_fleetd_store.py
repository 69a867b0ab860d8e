"""The fleet controller's store on real etcd (Debian's etcd-server, mutual TLS from a lab CA, loopback):
rollouts and intents, reboot slots under contention, leadership and fencing, FleetLock over real HTTP,
and a three-member cluster losing one member (nothing changes) and then two (no quorum, said so)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn

from lifsea_tui.api.rollouts import Intent, Phase, RolloutSpec, Window
from lifsea_tui.client import rollouts
from lifsea_tui.client.etcd import Store, StoreUnavailable
from lifsea_tui.fleetd import fleetlock
from lifsea_tui.fleetd.controller import Controller, window_open
from lifsea_tui.lab import etcd

pytestmark = pytest.mark.skipif(etcd.missing() is not None, reason=etcd.MISSING)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[etcd.EtcdCluster]:
    members = etcd.EtcdCluster.fresh(tmp_path / "etcd", tmp_path / "ca", 1)
    members.start()
    yield members
    members.stop()


@pytest.fixture
async def store(cluster: etcd.EtcdCluster) -> AsyncIterator[Store]:
    await cluster.wait_ready()
    opened = Store(cluster.target("lifsea-fleetd"))
    yield opened
    await opened.aclose()


def spec(rollout_id: str, nodes: list[str], **extra: object) -> RolloutSpec:
    fields: dict[str, object] = {
        "id": rollout_id,
        "target_version": "1.1",
        "nodes": nodes,
        "max_unavailable": 1,
        "reason": "CHG-1 test",
        "created_by": "tester",
        "created_at": datetime.now(UTC),
        **extra,
    }
    return RolloutSpec.model_validate(fields)


async def test_a_rollout_is_written_whole_and_overlaps_are_refused(store: Store) -> None:
    written = await rollouts.start(store, spec("r-one", ["a", "b", "c"], canary=1, max_unavailable=2))
    assert [n.batch for n in written.nodes] == [0, 1, 1]
    again = await rollouts.read(store, "r-one")
    assert again is not None and again.status.phase is Phase.planned
    assert [(e.seq, e.who, e.action) for e in again.log] == [(1, "tester", "start")]
    with pytest.raises(rollouts.RolloutRefused, match=r"c \(r-one\)"):
        await rollouts.start(store, spec("r-two", ["c", "d"]))
    with pytest.raises(rollouts.RolloutRefused, match="exists"):
        await rollouts.start(store, spec("r-one", ["z"]))
    await rollouts.start(store, spec("r-three", ["d"]))  # no overlap: taken
    assert [r.spec.id for r in await rollouts.read_all(store)] == ["r-one", "r-three"]


async def test_concurrent_starts_on_the_same_nodes_admit_exactly_one(store: Store) -> None:
    results = await asyncio.gather(
        *(rollouts.start(store, spec(f"r-{i}", ["shared", f"own{i}"])) for i in range(6)), return_exceptions=True
    )
    taken = [r for r in results if not isinstance(r, BaseException)]
    assert len(taken) == 1, results
    assert all(isinstance(r, rollouts.RolloutRefused) for r in results if r not in taken)


async def test_intents_are_logged_in_order_and_checked_against_the_phase(store: Store) -> None:
    await rollouts.start(store, spec("r-i", ["a"]))
    with pytest.raises(rollouts.RolloutRefused, match="cannot resume"):
        await rollouts.ask(store, "r-i", Intent(action="resume", reason="nothing paused"), "alice")
    seqs = await asyncio.gather(
        *(rollouts.ask(store, "r-i", Intent(action="pause", reason=f"p{i}"), f"user{i}") for i in range(5))
    )
    assert sorted(seqs) == [2, 3, 4, 5, 6]  # concurrent appends: each its own seq, none lost
    found = await rollouts.read(store, "r-i")
    assert found is not None and [e.seq for e in found.log] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(rollouts.RolloutRefused, match="no rollout"):
        await rollouts.ask(store, "r-none", Intent(action="abort", reason="x"), "alice")


async def test_slots_never_exceed_their_limit_under_contention(store: Store) -> None:
    taken = await asyncio.gather(*(rollouts.take_slot(store, "zone-a", f"n{i}", 3, "test") for i in range(20)))
    assert sum(taken) == 3
    held = await rollouts.slots(store, "zone-a")
    assert len(held) == 3 and all(slot.since <= time.time() for slot in held)
    assert await rollouts.take_slot(store, "zone-a", held[0].holder, 3, "again")  # recursive: held is held
    assert not await rollouts.take_slot(store, "zone-a", "late", 3, "test")
    assert await rollouts.take_slot(store, "zone-b", "late", 1, "test")  # another group has its own slots
    await rollouts.free_slot(store, "zone-a", held[0].holder)
    assert await rollouts.take_slot(store, "zone-a", "late", 3, "test")


async def test_one_controller_leads_and_a_successor_takes_over_within_the_lease(cluster: etcd.EtcdCluster) -> None:
    await cluster.wait_ready()
    stores = [Store(cluster.target("lifsea-fleetd")) for _ in range(2)]
    first = Controller(stores[0], {}, ident="first", lease_ttl=2, tick=0.2)
    second = Controller(stores[1], {}, ident="second", lease_ttl=2, tick=0.2)
    try:
        assert await first.campaign()
        assert not await second.campaign()
        assert await first.campaign()  # refreshing keeps the lead
        # The first stops refreshing (as a killed or frozen process would): its lease runs out.
        started = time.monotonic()
        while not await second.campaign():
            assert time.monotonic() - started < 4, "the successor did not lead within the lease TTL"
            await asyncio.sleep(0.2)
        # The old leader's writes are fenced: its transaction checks a leader key that is no longer its.
        await rollouts.start(stores[1], spec("r-f", ["a"]))
        found = await rollouts.read(stores[1], "r-f")
        assert found is not None
        assert not await first.write(found, status={"message": "stale leader writing"})
        assert first.leading is False
        again = await rollouts.read(stores[1], "r-f")
        assert again is not None and again.status.message != "stale leader writing"
        assert await second.write(again, status={"message": "the leader writes"})
    finally:
        for store in stores:
            await store.aclose()


async def test_fleetlock_over_http(store: Store, cluster: etcd.EtcdCluster) -> None:
    # Served in this test's loop: the store's gRPC channel belongs to it, as in lifsea-fleetd.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(fleetlock.app(store, {"workers": 2}, default_limit=1), log_level="warning")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            headers = {"fleet-lock-protocol": "true"}

            async def lock(client_id: str, group: str = "default", path: str = "/v1/pre-reboot") -> httpx.Response:
                body = {"client_params": {"id": client_id, "group": group}}
                return await http.post(path, json=body, headers=headers)

            assert (await lock("m1")).status_code == 200
            assert (await lock("m1")).status_code == 200  # recursive
            full = await lock("m2")
            assert full.status_code == 409 and full.json()["kind"] == "failed_lock_semaphore_full"
            assert "m1" in full.json()["value"]
            assert (await lock("w1", "workers")).status_code == 200
            assert (await lock("w2", "workers")).status_code == 200
            assert (await lock("w3", "workers")).status_code == 409
            assert [s.holder for s in await rollouts.slots(store, "default")] == ["m1"]  # listable: who, since
            assert (await lock("m1", path="/v1/steady-state")).status_code == 200
            assert (await lock("m1", path="/v1/steady-state")).status_code == 200  # unlock if held: idempotent
            assert (await lock("m2")).status_code == 200

            no_header = await http.post("/v1/pre-reboot", json={"client_params": {"id": "x", "group": "default"}})
            assert no_header.status_code == 400 and no_header.json()["kind"] == "missing_header"
            for bad in (b"{", b'{"client_params": {"id": "a/b", "group": "default"}}', b'{"client_params": {}}'):
                answer = await http.post("/v1/pre-reboot", content=bad, headers=headers)
                assert answer.status_code == 400 and answer.json()["kind"] == "bad_request", answer.text
            huge = await http.post("/v1/pre-reboot", content=b"x" * 10_000, headers=headers)
            assert huge.status_code == 413

            cluster.stop()
            down = await lock("m3")
            assert down.status_code == 503 and down.json()["kind"] == "store_unavailable"
    finally:
        server.should_exit = True
        await serving


async def test_three_members_lose_one_then_quorum(tmp_path: Path) -> None:
    members = etcd.EtcdCluster.fresh(tmp_path / "etcd3", tmp_path / "ca", 3)
    members.start()
    store = Store(members.target("lifsea-fleetd", timeout=2))
    try:
        await members.wait_ready()
        await rollouts.start(store, spec("r-q", ["a"]))
        members.stop("etcd1")
        assert (await rollouts.read(store, "r-q")) is not None  # two of three: as before
        await rollouts.ask(store, "r-q", Intent(action="pause", reason="one member down"), "alice")
        members.stop("etcd2")
        with pytest.raises(StoreUnavailable, match="no quorum"):
            await rollouts.read(store, "r-q")
        members.start("etcd1")
        deadline = time.monotonic() + 30
        while True:
            try:
                found = await rollouts.read(store, "r-q")
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the store did not come back with quorum"
                await asyncio.sleep(0.3)
        assert found is not None and [e.action for e in found.log] == ["start", "pause"]  # nothing forgotten
    finally:
        await store.aclose()
        members.stop()


def test_windows() -> None:
    monday_0900 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC).timestamp()  # a Monday
    hour = 3600.0
    weekdays = Window(days=["mon", "tue", "wed", "thu", "fri"], start="08:00", minutes=120)
    assert window_open([], monday_0900)
    assert window_open([weekdays], monday_0900)
    assert not window_open([weekdays], monday_0900 + 2 * hour)  # 11:00, after it closed
    assert not window_open([weekdays], monday_0900 - 2 * hour)  # 07:00
    assert not window_open([weekdays], monday_0900 + 5 * 24 * hour)  # Saturday
    overnight = Window(days=["sun"], start="23:00", minutes=180)  # runs into Monday
    assert window_open([overnight], datetime(2026, 11, 30, 1, 0, tzinfo=UTC).timestamp())
    assert not window_open([overnight], datetime(2026, 11, 30, 2, 30, tzinfo=UTC).timestamp())
    tokyo = Window(start="09:00", minutes=60, tz="Asia/Tokyo")  # 00:00 to 01:00 UTC
    assert window_open([tokyo], datetime(2026, 11, 30, 0, 30, tzinfo=UTC).timestamp())
    assert not window_open([tokyo], monday_0900)
    with pytest.raises(ValueError):
        Window(days=[], start="08:00", minutes=60)  # a window that never opens is refused
    with pytest.raises(ValueError):
        Window(start="25:00", minutes=60)
    assert timedelta(minutes=weekdays.minutes) == timedelta(hours=2)


async def test_a_rollout_of_a_thousand_nodes_fits_etcds_transaction_limits(store: Store) -> None:
    """etcd takes 128 operations a transaction: a 1,000-node rollout is written, refused and skipped whole."""
    names = [f"n{i:04}" for i in range(1000)]
    await rollouts.start(store, spec("r-big", names, max_unavailable=50))
    found = await rollouts.read(store, "r-big")
    assert found is not None and len(found.nodes) == 1000 and len(found.spec.batches()) == 21
    controller = Controller(store, {}, ident="c", tick=0.1)  # knows none of the nodes: refuses the rollout
    assert await controller.campaign()
    await controller.reconcile()
    refused = await rollouts.read(store, "r-big")
    assert refused is not None and refused.status.phase is Phase.aborted
    assert "unknown nodes" in refused.status.message
    assert {n.state.value for n in refused.nodes} == {"skipped"}
    slots_taken = await rollouts.take_slots(store, "big", names[:200], 150, "test")
    assert slots_taken == names[:60]  # one transaction's worth at a time, never past the limit
    assert len(await rollouts.take_slots(store, "big", names[:200], 150, "test")) == 120
    await controller.resign()
