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

from lifsea_tui.api.rollouts import (
    Intent,
    LogEntry,
    NodeRollout,
    NodeState,
    Phase,
    RolloutSpec,
    Window,
    next_opening,
    parse_selector,
    selects,
    window_open,
)
from lifsea_tui.client import rollouts
from lifsea_tui.client.etcd import Store, StoreUnavailable
from lifsea_tui.client.node import NodeTarget
from lifsea_tui.fleetd import fleetlock, policy
from lifsea_tui.fleetd.controller import Controller
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
        # A write the last member takes and cannot commit: etcd says "request timed out" (or "no leader",
        # by timing); either way the store answered, so it is no quorum, never "unreachable".
        with pytest.raises(StoreUnavailable, match="no quorum"):
            await rollouts.ask(store, "r-q", Intent(action="resume", reason="alone"), "alice")
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
    # When the next one opens: Monday 11:00 -> Tuesday 08:00; Friday 11:00 -> Monday 08:00.
    assert next_opening([weekdays], monday_0900 + 2 * hour) == monday_0900 + 23 * hour
    assert next_opening([weekdays], monday_0900 + 4 * 24 * hour + 2 * hour) == monday_0900 + 7 * 24 * hour - hour
    assert next_opening([], monday_0900) is None
    assert policy.closed_until([weekdays], monday_0900 + 2 * hour) == "; the next opens Tue 08:00 UTC (in 21 h 0 min)"
    assert (
        policy.closed_until([weekdays], monday_0900 + 4 * 24 * hour) == "; the next opens Mon 08:00 UTC (in 2 d 23 h)"
    )


def test_windows_are_written_as_people_say_them_and_bad_ones_are_named() -> None:
    window = Window.parse("fri-mon 22:00 1h30m Europe/Berlin")  # a range through the week's end
    assert (window.days, window.start, window.minutes, window.tz) == (
        ["mon", "fri", "sat", "sun"],
        "22:00",
        90,
        "Europe/Berlin",
    )
    assert Window.parse(str(window)) == window
    assert Window.parse("daily 02:00 4h").days == ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    for text, says in (
        ("mon 25:00 1h", "a start is HH:MM"),
        ("mon 02:00 0m", "more than 0"),
        ("mon 02:00 200h", "at most a week"),
        ("moon 02:00 1h", "days are mon..sun"),
        ("mon 02:00 an-hour", "hours and minutes"),
        ("mon 02:00", "DAYS HH:MM LENGTH"),
        ("mon 02:00 1h Mars/Olympus", "unknown time zone"),
        ("mon 02:00 1h ../../etc/passwd", "unknown time zone"),
    ):
        with pytest.raises(ValueError, match=says):
            Window.parse(text)
    with pytest.raises(ValueError, match="unknown time zone"):  # written to etcd by hand: refused on reading too
        Window(start="02:00", minutes=60, tz="Nowhere/Special")


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


async def test_a_rollout_that_does_not_parse_is_set_aside_and_named_while_the_others_go_on(store: Store) -> None:
    """Written by hand, or by a newer console with an option this controller does not know: the controller
    neither guesses at it nor stops; readers name it."""
    await rollouts.start(store, spec("r-good", ["a"]))
    await store.put_json("rollouts/r-newer/spec", {**rollouts.spec_json(spec("r-newer", ["b"])), "surge": 3})
    await store.put_json("rollouts/r-newer/status", {"phase": "planned", "message": "-", "updated_at": 0})
    await store.client.put(store.key("rollouts/r-junk/spec"), b"not json {")
    unreadable: dict[str, str] = {}
    assert [r.spec.id for r in await rollouts.read_all(store, {}, unreadable)] == ["r-good"]
    assert "surge" in unreadable["r-newer"] and set(unreadable) == {"r-newer", "r-junk"}
    with pytest.raises(rollouts.RolloutUnreadable, match="r-newer cannot be read: spec: surge"):
        await rollouts.read(store, "r-newer")
    controller = Controller(store, {}, tick=0.1)
    assert await controller.campaign()
    await controller.reconcile()  # does not raise; r-good has no node the controller knows: refused, not stuck
    assert set(controller.unreadable) == {"r-newer", "r-junk"}
    good = await rollouts.read(store, "r-good")
    assert good is not None and good.status.phase is Phase.aborted
    # What an older controller sees of a rollout that uses no newer option: only the fields it knows.
    written = await store.get("rollouts/r-good/spec")
    assert written is not None and not {"selector", "group_by", "groups", "group_max", "windows"} & set(written.json())


def test_labels_select_nodes_and_groups_spread_the_batches() -> None:
    labels = {"n1": {"zone": "a"}, "n2": {"zone": "a"}, "n3": {"zone": "b"}, "n4": {"zone": "a", "gpu": ""}, "n5": {}}
    assert [n for n in labels if selects(parse_selector("zone=a"), labels[n])] == ["n1", "n2", "n4"]
    assert [n for n in labels if selects(parse_selector("zone!=a, gpu"), labels[n])] == []
    assert [n for n in labels if selects(parse_selector("gpu"), labels[n])] == ["n4"]
    for bad in ("zone==a", "Zone=a", "zone=a b", "", "zone=[red]"):
        with pytest.raises(ValueError, match="a selector is"):
            parse_selector(bad)
    order, groups, limits = rollouts.grouped(list(labels), labels, "zone", "50%")
    assert order == ["n1", "n3", "n5", "n2", "n4"]  # a, b, none, a, a
    assert groups["n5"] == "" and limits == {"a": 1, "b": 1, "": 1}
    assert rollouts.grouped(list(labels), labels, "zone", "2")[2] == {"a": 2, "b": 2, "": 2}
    for bad in ("zone", "=1", "zone="):
        with pytest.raises(ValueError, match="LABEL=N"):
            rollouts.parse_group_limit(bad)
    with pytest.raises(ValueError, match="group_by and group_max go together"):
        spec("r-x", ["n1"], group_by="zone")
    with pytest.raises(ValueError, match="every node of a grouped rollout"):
        spec("r-x", ["n1", "n3"], group_by="zone", groups={"n1": "a"}, group_max={"a": 1})
    grouped = spec("r-x", order, group_by="zone", groups=groups, group_max={"a": 1, "b": 1, "": 1}, max_unavailable=5)
    rollout = rollouts.Rollout(
        spec=grouped,
        status=rollouts.RolloutStatus(phase=Phase.progressing, message="", updated_at=0),
        nodes=[
            NodeRollout(name=n, batch=0, state=NodeState.staging if n == "n1" else NodeState.pending) for n in order
        ],
        log=[],
    )
    admitted, held = policy.within_groups(rollout, [n for n in rollout.nodes if n.name != "n1"])
    assert [n.name for n in admitted] == ["n3", "n5"]  # n1 already moves in zone a: n2 and n4 wait
    assert [n.name for n in held] == ["n2", "n4"] and held[0].reason == "waiting: 1 of zone=a already moving"


def test_labels_in_the_agent_config_and_the_inventory_are_checked(tmp_path: Path) -> None:
    from lifsea_tui.agent.config import ConfigError, load
    from lifsea_tui.client.inventory import InventoryError, parse

    token = "\n[[tokens]]\nname = 'x'\nrole = 'reader'\nsha256 = '" + "0" * 64 + "'\n"
    config = tmp_path / "agent.toml"
    config.write_text("node_name = 'n1'\n[labels]\nzone = 'a'\n'topology.io/rack' = 'r-7'\n" + token)
    assert load(config, {}).labels == {"zone": "a", "topology.io/rack": "r-7"}
    for bad in ("'Zone' = 'a'", "zone = '[b]ad'", "zone = 3", "zone = 'x\\u001b]52;c;AAAA'"):
        config.write_text(f"node_name = 'n1'\n[labels]\n{bad}\n" + token)
        with pytest.raises(ConfigError, match=r"\[labels\]"):
            load(config, {})
    node = {"name": "n1", "url": "https://10.0.0.1:7443", "token": "t", "labels": {"zone": "b"}}
    assert parse({"nodes": [node]}, "inv", tmp_path)[0].labels == {"zone": "b"}
    with pytest.raises(InventoryError, match="node 'n1': labels: label key"):
        parse({"nodes": [{**node, "labels": {"Bad Key": "x"}}]}, "inv", tmp_path)


async def test_with_etcds_auth_on_each_intent_is_proven_by_its_writer_and_forgeries_are_not_taken(
    cluster: etcd.EtcdCluster,
) -> None:
    """etcd's own users (certificate names): consoles may write rollouts, slots and their own writers/USER/
    marks, nothing else; the controller takes only intents whose writer's mark matches the bytes."""
    await cluster.wait_ready()
    await cluster.enable_auth({"lifsea-fleetd": "lifsea-fleetd", "alice": "lifsea-console", "bob": "lifsea-console"})
    await cluster.enable_auth({"lifsea-fleetd": "lifsea-fleetd", "alice": "lifsea-console", "bob": "lifsea-console"})
    alice, bob = Store(cluster.target("alice")), Store(cluster.target("bob"))
    fleetd, stranger = Store(cluster.target("lifsea-fleetd")), Store(cluster.target("mallory"))
    unreachable = NodeTarget(name="n1", url="https://127.0.0.1:9", token="t", timeout=0.5)
    controller = Controller(fleetd, {"n1": unreachable}, proven_writers=True)
    try:
        for forbidden in ("leader", "writers/bob/r-x/00000001", "fleet/anything"):
            with pytest.raises(StoreUnavailable, match="permission denied"):
                await alice.put_json(forbidden, "x")
        with pytest.raises(StoreUnavailable, match="permission denied"):
            await stranger.get("rollouts/")  # a certificate from the CA, but no etcd user: nothing
        await rollouts.start(alice, spec("r-auth", ["n1"]))
        assert await controller.campaign()
        await controller.reconcile()  # the start is alice's: taken (n1 does not answer: it stays planned)
        seq = await rollouts.ask(bob, "r-auth", Intent(action="pause", reason="INC-1 hold"), "bob@laptop")
        await controller.reconcile()
        paused = await rollouts.read(fleetd, "r-auth")
        assert paused is not None and paused.status.phase is Phase.paused
        assert "bob@laptop (etcd user bob)" in paused.status.message
        # alice writes an entry that says bob wrote it: she cannot leave bob's mark, so it is not taken.
        forged = LogEntry(
            seq=seq + 1, time=time.time(), who="bob@laptop", kind="intent", action="resume", reason="go", writer="bob"
        )
        writes = [
            alice.put_op(rollouts.logseq_key("r-auth"), seq + 1),
            alice.put_op(rollouts.log_key("r-auth", seq + 1), forged.model_dump(mode="json")),
        ]
        await alice.txn([], writes)
        await controller.reconcile()
        after = await rollouts.read(fleetd, "r-auth")
        assert after is not None and after.status.phase is Phase.paused, after.status
        assert "resume by bob@laptop not taken: etcd does not prove who wrote it (it names bob" in after.log[-1].reason
        # An entry changed after it was written no longer matches its writer's mark.
        pause = next(e for e in after.log if e.seq == seq)
        assert await rollouts.proven(fleetd, "r-auth", pause)
        await alice.put_json(rollouts.log_key("r-auth", seq), {**pause.model_dump(mode="json"), "reason": "benign"})
        changed = await rollouts.read(fleetd, "r-auth")
        assert changed is not None
        assert not await rollouts.proven(fleetd, "r-auth", next(e for e in changed.log if e.seq == seq))
    finally:
        for opened in (alice, bob, fleetd, stranger):
            await opened.aclose()
