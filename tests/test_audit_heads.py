"""The console remembers each node's audit head and notices when the chain no longer holds it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from lifsea_tui.agent.audit import GENESIS, canonical, record_hash
from lifsea_tui.client.fleet import Fleet
from lifsea_tui.client.heads import AuditHeads
from lifsea_tui.client.node import NodeTarget
from tests.helpers import RunningAgent, TinyNode, start_agent


def target(agent: RunningAgent) -> NodeTarget:
    return NodeTarget(name="tiny", url=agent.url, token=agent.tokens["operator"], ca_file=agent.ca_file)


def audit_something(agent: RunningAgent, reason: str) -> None:
    # A refused rollback (nothing to roll back to) is still an audited request.
    answer = httpx.post(
        f"{agent.url}/v1/rollback",
        json={"reason": reason},
        headers=agent.headers("operator"),
        verify=agent.ssl_context(),
    )
    assert answer.status_code == 409, answer.text


async def refreshed(agent: RunningAgent, heads_file: Path, scope: str = "") -> str | None:
    fleet = Fleet([target(agent)], heads=AuditHeads(heads_file, scope))
    try:
        await fleet.refresh()
        return fleet.snapshots["tiny"].audit_warning
    finally:
        await fleet.aclose()


def rewrite_chain(log: Path, change: dict) -> None:
    """What a careful attacker does: change a record and recompute every hash after it."""
    records = [json.loads(line) for line in log.read_text().splitlines()]
    records[1].update(change)
    prev = GENESIS
    for record in records:
        record["prev"] = prev
        record["hash"] = record_hash(record)
        prev = record["hash"]
    log.write_bytes(b"".join(canonical(r) + b"\n" for r in records))


async def test_rewritten_or_truncated_chain_is_noticed(tmp_path: Path, tiny_node: TinyNode) -> None:
    heads = tmp_path / "state" / "audit-heads.json"
    base = tmp_path / "agent"
    agent = start_agent(base, host_root=tiny_node.host_root, sysroot_path=tiny_node.sysroot)
    try:
        for n in range(3):
            audit_something(agent, f"reason {n}")
        assert await refreshed(agent, heads) is None
        seen = json.loads(heads.read_text())["tiny"]
        assert seen[0] >= 2
        audit_something(agent, "one more")
        assert await refreshed(agent, heads) is None  # the chain grew and still holds what was seen
        assert json.loads(heads.read_text())["tiny"][0] == seen[0] + 1
    finally:
        agent.stop()

    log = agent.config.audit_dir / "audit.jsonl"
    original = log.read_bytes()
    rewrite_chain(log, {"reason": "nothing to see here"})
    agent = start_agent(base, host_root=tiny_node.host_root, sysroot_path=tiny_node.sysroot)
    try:
        warning = await refreshed(agent, heads)
        assert warning is not None and "rewritten" in warning, warning
        # The remembered head does not move past a broken chain: the warning stays.
        assert await refreshed(agent, heads) == warning
    finally:
        agent.stop()

    log.write_bytes(b"".join(original.splitlines(keepends=True)[:2]))
    agent = start_agent(base, host_root=tiny_node.host_root, sysroot_path=tiny_node.sysroot)
    try:
        warning = await refreshed(agent, heads)
        assert warning is not None and "shrank" in warning, warning
    finally:
        agent.stop()


def test_unreadable_memory_is_a_fresh_start(tmp_path: Path) -> None:
    path = tmp_path / "audit-heads.json"
    path.write_text("{not json")
    assert AuditHeads(path).remembered(NodeTarget(name="x", url="https://x", token="t")) is None


async def test_a_fleet_made_again_is_not_taken_for_a_rewritten_one(tmp_path: Path, agent: RunningAgent) -> None:
    """Heads are remembered per fleet (an inventory and its context, or a lab by its CA): node1 of a lab
    made again, or of another context, starts fresh, while the same fleet's node is still checked."""
    heads_file = tmp_path / "heads.json"
    heads_file.write_text(json.dumps({"lab:aaaa/tiny": [999, "f" * 64]}))
    warning = await refreshed(agent, heads_file, scope="lab:aaaa")
    assert warning is not None and "shrank" in warning
    assert await refreshed(agent, heads_file, scope="lab:bbbb") is None
    assert "lab:bbbb/tiny" in json.loads(heads_file.read_text())
