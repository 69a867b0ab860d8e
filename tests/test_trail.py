"""The audit trail collector against a real agent (TLS, its own audit log on disk) and a real etcd: what
it copies verifies as the node's log does, a rewrite is named at its first record, and the copy keeps
what the node no longer has. The lab test (test_audit_trail_lab.py) runs it inside lifsea-fleetd."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from lifsea_tui.agent import recording
from lifsea_tui.agent.audit import LOG_NAME, Head, verify
from lifsea_tui.agent.config import OpsConfig
from lifsea_tui.api import routes
from lifsea_tui.api.chain import canonical, record_hash
from lifsea_tui.api.trail import Problem
from lifsea_tui.client.etcd import Store, StoreUnavailable
from lifsea_tui.client.node import NodeTarget
from lifsea_tui.client.trail import DirectoryTrail, read_recent, read_states
from lifsea_tui.fleetd import collector
from lifsea_tui.lab import etcd
from lifsea_tui.tui import cli
from tests.helpers import RunningAgent, TinyNode, start_agent

pytestmark = pytest.mark.skipif(etcd.missing() is not None, reason=etcd.MISSING)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    members = etcd.EtcdCluster.fresh(tmp_path / "etcd", tmp_path / "ca", 1)
    members.start()
    await members.wait_ready()
    opened = Store(members.target("lifsea-fleetd"))
    yield opened
    await opened.aclose()
    members.stop()


def unfenced(store: Store) -> Callable[[list[Any]], Awaitable[bool]]:
    """The collector's writes, without the controller's leadership fence."""
    return functools.partial(store.txn, [])


def refused_posts(agent: RunningAgent, count: int) -> None:
    """Each refused POST of a reader is one audit record on the node."""
    with httpx.Client(base_url=agent.url, verify=agent.ssl_context(), headers=agent.headers("reader")) as http:
        for index in range(count):
            assert http.post(routes.UPGRADES_CHECK, json={"reason": f"try {index}"}).status_code == 403


async def test_the_collector_copies_the_chain_and_names_the_first_record_a_rewrite_changed(
    agent: RunningAgent, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collector, "PAGE", 3)  # several passes, each a page
    refused_posts(agent, 7)
    trail = DirectoryTrail(tmp_path / "trail")
    target = NodeTarget(name="tiny", url=agent.url, token=agent.tokens["auditor"], ca_file=agent.ca_file)

    log = agent.config.audit_dir / LOG_NAME
    fresh = collector.Collector(store, DirectoryTrail(tmp_path / "trail-b"), {"tiny-b": target}, unfenced(store))
    # Record 2 edited in place, its hash left as it was: the head and every link still match, so only the
    # periodic second look at older records sees it (then it is put back for what follows).
    try:
        for _ in range(5):
            await fresh.tick()
        lines = log.read_bytes().splitlines(keepends=True)
        assert (await read_states(store))["tiny-b"].collected_seq == len(lines) - 1
        edited = lines[2].replace(b'"outcome":"refused', b'"outcome":"REFUSED')
        assert edited != lines[2]
        log.write_bytes(b"".join([*lines[:2], edited, *lines[3:]]))
        for _ in range(collector.SWEEP_EVERY * 4):
            await fresh.tick()
        state = (await read_states(store))["tiny-b"]
        assert state.problem is not None and state.problem.first_bad_seq == 2, state
        assert "differs from the collected copy" in state.problem.what
    finally:
        await fresh.aclose()
    log.write_bytes(b"".join(lines))

    collecting = collector.Collector(store, trail, {"tiny": target}, unfenced(store), recent=4)
    try:
        for _ in range(10):
            await collecting.tick()
        assert trail.path("tiny").read_bytes() == log.read_bytes()  # the node's very bytes
        state = (await read_states(store))["tiny"]
        assert state.ok and state.collected_seq == state.node_seq == len(log.read_bytes().splitlines()) - 1
        assert state.lag is not None and state.lag < 30
        # etcd holds the newest records (at least `recent`, in chunks of a page): older chunks were deleted.
        recent = (await read_recent(store, "tiny"))["tiny"]
        seqs = [record.seq for record in recent]
        assert seqs == list(range(seqs[0], state.collected_seq + 1)) and 4 <= len(seqs) < 4 + collector.PAGE, seqs
        copy_hashes = [json.loads(line)["hash"] for line in trail.lines("tiny")]
        assert [record.hash for record in recent] == copy_hashes[seqs[0] :]
        restarted = collector.Collector(store, trail, {"tiny": target}, unfenced(store), recent=4)
        await restarted.load()
        assert restarted.chunks["tiny"] == collecting.chunks["tiny"] and collecting.chunks["tiny"][0] == seqs[0]
        await restarted.aclose()

        # Record 4 edited and every hash after it recomputed: the node's own chain still holds.
        lines = [json.loads(line) for line in log.read_bytes().splitlines()]
        original = lines[4]["reason"]
        prev = lines[3]["hash"]
        for fields in lines[4:]:
            fields["reason"] = "nothing to see" if fields["seq"] == 4 else fields["reason"]
            fields["prev"], fields["hash"] = prev, ""
            fields["hash"] = prev = record_hash(fields)
        log.write_bytes(b"".join(canonical(fields) + b"\n" for fields in lines))
        await collecting.tick()
        state = (await read_states(store))["tiny"]
        assert state.problem is not None and state.problem.first_bad_seq == 4, state
        assert "rewritten" in state.problem.what
        copy = [json.loads(line) for line in trail.lines("tiny")]
        assert copy[4]["reason"] == original
        assert verify(trail.path("tiny")).ok
        refused_posts(agent, 2)
        await collecting.tick()  # flagged: nothing more is taken from it
        assert len(list(trail.lines("tiny"))) == len(copy)
    finally:
        await collecting.aclose()


async def test_a_node_that_does_not_answer_is_named_and_a_torn_copy_is_cut_back(store: Store, tmp_path: Path) -> None:
    trail = DirectoryTrail(tmp_path / "trail")
    gone = NodeTarget(name="gone", url="https://127.0.0.1:9", token="t", timeout=1)

    collecting = collector.Collector(store, trail, {"gone": gone}, unfenced(store))
    try:
        await collecting.tick()
    finally:
        await collecting.aclose()
    state = (await read_states(store))["gone"]
    assert state.unreachable and state.ok and state.collected_seq == -1
    record = {"seq": 0, "prev": "0" * 64, "action": "x"}
    record["hash"] = record_hash(record)
    path = trail.path("gone")
    path.parent.mkdir(parents=True)
    path.write_bytes(canonical(record) + b"\n" + b'{"seq": 1, "prev"')  # a write cut short by a crash
    again = DirectoryTrail(tmp_path / "trail")
    assert again.head("gone") == (0, record["hash"])
    assert path.read_bytes() == canonical(record) + b"\n"
    with pytest.raises(ValueError, match="not a node name"):
        again.path("../etc")


async def test_recordings_are_kept_once_they_match_their_seal_and_a_change_on_the_node_is_named(
    tiny_node: TinyNode, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collector, "SWEEP_EVERY", 1)
    monkeypatch.setattr(collector, "VERIFY_EVERY", 1)  # the node hashes its recordings again every pass
    running = start_agent(
        tmp_path / "agent",
        host_root=tiny_node.host_root,
        sysroot_path=tiny_node.sysroot,
        ops=OpsConfig(recordings=tmp_path / "recordings"),
    )
    target = NodeTarget(name="tiny", url=running.url, token=running.tokens["auditor"], ca_file=running.ca_file)

    collecting = collector.Collector(store, DirectoryTrail(tmp_path / "trail"), {"tiny": target}, unfenced(store))
    try:
        recording = "0123456789abcdef"
        (tmp_path / "recordings").mkdir()
        cast = tmp_path / "recordings" / f"{recording}.cast"
        original = b'{"version": 2, "width": 80, "height": 24}\n[0.5, "o", "cat /etc/shadow\\r\\n"]\n'
        cast.write_bytes(original)
        seal = hashlib.sha256(original).hexdigest()
        running.app.state.agent.audit.append(  # type: ignore[attr-defined]
            actor="admin-user", role="admin", action="ops.session.end", reason="INC-7",
            params={"session": recording, "recording": recording, "sha256": seal, "size": len(original)},
            outcome="ok",
        )  # fmt: skip
        await collecting.tick()
        copy = collecting.trail.recording_path("tiny", recording)  # type: ignore[attr-defined]
        assert copy.read_bytes() == original
        assert (await read_states(store))["tiny"].ok
        cast.write_bytes(original.replace(b"cat /etc/shadow", b"ls            "))  # the shell covers its tracks
        await collecting.tick()
        state = (await read_states(store))["tiny"]
        assert state.problem is not None and "recording 0123456789abcdef changed on the node" in state.problem.what
        assert copy.read_bytes() == original
        trail_log = collecting.trail.path("tiny")  # type: ignore[attr-defined]
        checked = verify(trail_log, recordings=copy.parent)
        assert checked.ok and checked.recordings_checked == 1, checked
    finally:
        await collecting.aclose()
        running.stop()


async def test_a_node_that_goes_quiet_with_a_shell_open_is_named(
    tiny_node: TinyNode, store: Store, tmp_path: Path
) -> None:
    running = start_agent(tmp_path / "agent", host_root=tiny_node.host_root, sysroot_path=tiny_node.sysroot)
    target = NodeTarget(
        name="tiny", url=running.url, token=running.tokens["auditor"], ca_file=running.ca_file, timeout=2
    )

    collecting = collector.Collector(store, DirectoryTrail(tmp_path / "trail"), {"tiny": target}, unfenced(store))
    try:
        for session, outcome in (("aaaaaaaaaaaaaaaa", "started"), ("bbbbbbbbbbbbbbbb", "refused: no room")):
            running.app.state.agent.audit.append(  # type: ignore[attr-defined]
                actor="admin-user", role="admin", action="ops.session.start", reason="INC-8",
                params={"session": session, "recording": session}, outcome=outcome,
            )  # fmt: skip
        await collecting.tick()
        assert (await read_states(store))["tiny"].silent_during == []
        running.stop()  # the node goes quiet while session aaaa… is open (bbbb… never opened)
        await collecting.tick()
        state = (await read_states(store))["tiny"]
        assert state.unreachable and state.silent_during == ["aaaaaaaaaaaaaaaa"], state
    finally:
        await collecting.aclose()
        running.stop()


def test_a_recording_changed_on_disk_during_its_session_keeps_its_seal_and_its_live_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writable shell can reach its own recording on disk. The seal is of what the agent wrote, the file
    edited under it is named at the seal, and the live bytes (memory) and a live copy built from them are
    what was recorded."""
    monkeypatch.setattr(recording, "LIVE_BYTES", 4096)
    recorder = recording.Recorder(tmp_path / "rec", "0123456789abcdef", {"actor": "admin-user"})
    recorder.open(80, 24, {"TERM": "xterm"}, "node1 (writable): INC-77")
    recorder.output(b"$ cat /etc/shadow\r\nroot:*:19000:0:99999:7:::\r\n")
    trail = DirectoryTrail(tmp_path / "trail")
    first = recorder.live(0, 100)
    assert first is not None and len(first) == 100
    trail.append_live("node1", recorder.id, first)
    cast = recorder.path
    cast.write_bytes(cast.read_bytes().replace(b"cat /etc/shadow", b"ls -l          "))  # covering its tracks
    recorder.output(b"$ exit\r\n")
    rest = recorder.live(trail.live_size("node1", recorder.id), 1 << 20)
    assert rest is not None and b"exit" in rest
    trail.append_live("node1", recorder.id, rest)
    seal = recorder.seal("exited")
    assert seal.on_disk == hashlib.sha256(cast.read_bytes()).hexdigest() != seal.sha256
    assert b"cat /etc/shadow" not in cast.read_bytes()
    # The end marker came after the last live read: the copy misses it, so it is not kept.
    assert not trail.keep_live("node1", recorder.id, seal.sha256)
    tail = recorder.live(trail.live_size("node1", recorder.id), 1 << 20)
    assert tail is not None and b"session end: exited" in tail
    trail.append_live("node1", recorder.id, tail)
    assert trail.keep_live("node1", recorder.id, seal.sha256)
    assert trail.live_seal("node1", recorder.id) == seal.sha256  # for a copy whose end record never came
    kept = trail.recording_path("node1", recorder.id).read_bytes()
    assert b"cat /etc/shadow" in kept and hashlib.sha256(kept).hexdigest() == seal.sha256
    recorder.release()  # a while after the seal: nothing is held, nothing is made up

    assert recorder.live(0, 10) is None and recorder.live(recorder.size, 10) == b""


def test_live_bytes_older_than_the_memory_window_are_refused_not_invented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recording, "LIVE_BYTES", 1024)
    recorder = recording.Recorder(tmp_path / "rec", "0123456789abcdef", {})
    recorder.open(80, 24, {}, "t")
    for index in range(100):
        recorder.output(f"line {index:04}\r\n".encode())
    assert recorder.live(0, 10) is None
    newest = recorder.live(recorder.size - 1024, 4096)
    assert newest is not None and len(newest) == 1024
    assert recorder.path.read_bytes().endswith(newest)
    assert recorder.live(recorder.size + 1, 10) is None
    recorder.seal("exited")


async def test_etcd_down_a_while_loses_nothing_and_collection_catches_up(agent: RunningAgent, tmp_path: Path) -> None:
    """Passes while etcd is down fail (the controller says so and tries again); the records they took are
    in the trail already, and once etcd is back its state and its recent records catch up, with no gap."""
    members = etcd.EtcdCluster.fresh(tmp_path / "etcd", tmp_path / "ca", 1)
    members.start()
    await members.wait_ready()
    store = Store(members.target("lifsea-fleetd", timeout=2))
    trail = DirectoryTrail(tmp_path / "trail")
    target = NodeTarget(name="tiny", url=agent.url, token=agent.tokens["auditor"], ca_file=agent.ca_file)
    collecting = collector.Collector(store, trail, {"tiny": target}, unfenced(store))
    try:
        await collecting.load()
        await collecting.tick()
        members.stop()
        for count in (3, 2):
            refused_posts(agent, count)
            with pytest.raises(StoreUnavailable):
                await collecting.tick()
        members.start()
        await members.wait_ready()
        await collecting.tick()
        log = (agent.config.audit_dir / LOG_NAME).read_bytes()
        state = (await read_states(store))["tiny"]
        assert state.ok and state.collected_seq == state.node_seq == len(log.splitlines()) - 1, state
        assert trail.path("tiny").read_bytes() == log  # nothing twice, nothing skipped
        seqs = [record.seq for record in (await read_recent(store, "tiny"))["tiny"]]
        assert seqs == list(range(0, state.collected_seq + 1)), seqs  # what was taken while etcd was down too
    finally:
        await collecting.aclose()
        await store.aclose()
        members.stop()


async def test_records_and_recordings_past_the_retention_go_and_what_is_kept_still_verifies(
    agent: RunningAgent, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfdbinary: Any
) -> None:
    monkeypatch.setattr(collector, "SWEEP_EVERY", 1)  # second looks every pass: they start at the first kept
    refused_posts(agent, 4)
    trail = DirectoryTrail(tmp_path / "trail")
    target = NodeTarget(name="tiny", url=agent.url, token=agent.tokens["auditor"], ca_file=agent.ca_file)
    collecting = collector.Collector(store, trail, {"tiny": target}, unfenced(store), keep=3600)
    try:
        await collecting.tick()
        time.sleep(0.05)
        cut = time.time()
        time.sleep(0.05)
        refused_posts(agent, 3)
        await collecting.tick()
        log = agent.config.audit_dir / LOG_NAME
        older = sum(
            1
            for line in log.read_bytes().splitlines()
            if datetime.fromisoformat(json.loads(line)["time"]).timestamp() < cut
        )
        recordings = trail.recordings("tiny")
        recordings.mkdir(parents=True)
        (old := recordings / "0123456789abcdef.cast").write_bytes(b"old")
        os.utime(old, (cut - 10, cut - 10))
        (new := recordings / "fedcba9876543210.cast").write_bytes(b"new")
        head = trail.head("tiny")
        collecting.prune(cut)
        assert trail.first("tiny") == older > 0 and trail.head("tiny") == head
        assert [json.loads(line)["seq"] for line in trail.lines("tiny")] == list(range(older, head[0] + 1))
        assert not old.exists() and new.exists()
        restarted = DirectoryTrail(tmp_path / "trail")
        assert restarted.first("tiny") == older and restarted.head("tiny") == head

        refused_posts(agent, 2)
        for _ in range(3):
            await collecting.tick()
        state = (await read_states(store))["tiny"]
        assert state.ok and state.collected_seq == state.node_seq == head[0] + 2, state
        kept = json.loads(next(iter(trail.lines("tiny"))))
        assert verify(trail.path("tiny"), after=Head(older - 1, kept["prev"])).ok
        assert not verify(trail.path("tiny")).ok  # it no longer starts at the beginning of the chain
        assert cli.main(["audit", "export", "tiny", "--trail", str(tmp_path / "trail")]) == 0
        said = capfdbinary.readouterr().err.decode()
        assert f"--after {older - 1}:{kept['prev']}" in said, said

        # A flagged node's copy is evidence: nothing of it goes.
        collecting.known["tiny"] = state.model_copy(update={"problem": Problem(first_bad_seq=1, what="x", found_at=0)})
        collecting.prune(time.time() + 3600)
        assert trail.first("tiny") == older and new.exists()
    finally:
        await collecting.aclose()
