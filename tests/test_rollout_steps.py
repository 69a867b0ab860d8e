"""The fleet controller's node steps against a real agent on a tiny ostree node (real ostree, real HTTPS).

These are the corners a rollout meets on a node someone else touched: another update already staged, and
a "rebooting" record whose reboot was never asked (the controller died between writing and asking).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from lifsea_tui.api.rollouts import NodeRollout, NodeState, RolloutSpec
from lifsea_tui.client.node import NodeClient, NodeTarget
from lifsea_tui.fleetd import steps
from lifsea_tui.lab import image
from tests.helpers import RunningAgent, TinyNode


def spec(version: str) -> RolloutSpec:
    return RolloutSpec(
        id="r-steps",
        target_version=version,
        nodes=["tiny"],
        max_unavailable=1,
        reason="CHG-5 steps",
        created_by="test",
        created_at=datetime.now(UTC),
    )


def operator(agent: RunningAgent) -> NodeClient:
    return NodeClient(NodeTarget(name="tiny", url=agent.url, token=agent.tokens["operator"], ca_file=agent.ca_file))


async def pending_version(client: NodeClient, timeout: float = 60) -> str | None:
    """The staged deployment's version, once no operation runs on the node."""
    deadline = time.monotonic() + timeout
    while (summary := await client.summary()).update.operation or summary.update.state.value == "staging":
        assert time.monotonic() < deadline, summary.update
        await asyncio.sleep(0.1)
    return next((d.version for d in summary.deployments.deployments if d.pending), None)


async def test_a_node_with_another_update_staged_has_it_replaced_by_the_target(
    agent: RunningAgent, tiny_node: TinyNode
) -> None:
    """1.1 is staged by hand; a rollout to 1.2 cancels it (its reason in the node's log says why), then
    checks and stages 1.2 and asks the reboot. Before, the stage was refused ("already staged") at every
    poll until the node's deadline, holding a reboot slot all that time."""
    image.publish(tiny_node.repo, "1.1")
    target = image.publish(tiny_node.repo, "1.2")
    client = operator(agent)
    try:
        checked = await client.action("check", steps.ActionRequest(reason="by hand"))
        older = next(t for t in checked.status.targets if t.version == "1.1")
        await client.action("stage", steps.StageRequest(reason="a hotfix, by hand", checksum=older.checksum))
        assert await pending_version(client) == "1.1"

        node = steps.started(NodeRollout(name="tiny", batch=0), spec("1.2"), time.time())
        actions: list[str] = []
        for _ in range(40):
            result = await steps.step(spec("1.2"), target, node, client, time.time())
            if result is None:
                await asyncio.sleep(0.2)
                continue
            node = result.node
            if result.action is None:
                continue
            name, request = result.action
            actions.append(name)
            if name == "reboot":
                break
            await client.action(name, request)
            await pending_version(client)
        assert actions[0] == "cancel", actions
        assert actions[-1] == "reboot" and "stage" in actions, actions
        assert node.state is NodeState.rebooting
        assert await pending_version(client) == "1.2"
        cancels = [r for r in (await client.audit()).records if r.action == "upgrade.cancel" and r.outcome == "ok"]
        assert "cancel the staged 1.1: the rollout's target is 1.2" in cancels[-1].reason
        assert "r-steps" in cancels[-1].reason
    finally:
        await client.aclose()


async def test_a_reboot_never_asked_is_asked_again_once_the_node_still_answers(agent: RunningAgent) -> None:
    """A node recorded as rebooting that still answers, and has not booted since, gets its reboot asked
    again after REBOOT_ASK_AGAIN; within that time the controller waits (a real reboot takes a while to
    take the agent down)."""
    client = operator(agent)
    try:
        now = time.time()
        base = steps.started(NodeRollout(name="tiny", batch=0), spec("1.2"), now)
        recent = base.model_copy(update={"state": NodeState.rebooting, "reboot_at": now - 5})
        assert await steps.step(spec("1.2"), "x", recent, client, now) is None
        lost = base.model_copy(update={"state": NodeState.rebooting, "reboot_at": now - steps.REBOOT_ASK_AGAIN - 1})
        again = await steps.step(spec("1.2"), "x", lost, client, now)
        assert again is not None and again.action is not None
        assert again.action[0] == "reboot"
        assert again.node.reboot_at == now and "asking again" in again.node.reason
    finally:
        await client.aclose()
