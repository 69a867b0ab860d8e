"""The fleet controller's node steps against a real agent on a tiny ostree node (real ostree, real HTTPS).

These are the corners a rollout meets on a node someone else touched: another update already staged, and
a "rebooting" record whose reboot was never asked (the controller died between writing and asking).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lifsea_tui.api import routes
from lifsea_tui.api.rollouts import NodeRollout, NodeState, RolloutSpec
from lifsea_tui.client.node import NodeClient, NodeTarget
from lifsea_tui.fleetd import steps
from lifsea_tui.lab import image
from tests.frozen import FrozenClient
from tests.helpers import RunningAgent, TinyNode, issue_pki, serve


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


async def test_a_reboot_is_asked_again_only_when_the_nodes_systemd_says_it_did_not_happen(
    agent: RunningAgent, tmp_path: Path
) -> None:
    """Recorded as rebooting, not booted since, REBOOT_ASK_AGAIN later: asked again when the node's systemd
    answers (a node that has been up for 1.5 h; a fixed answer over real TLS, as a node that never got the
    ask would give); never while its systemd cannot say (the tiny agent has no bus, as a lab machine
    mid-boot has none while its agent, beside it, still answers)."""
    ca, cert, key = issue_pki(tmp_path / "pki", "up")
    up = FrozenClient("up")

    async def node(request: Request) -> JSONResponse:
        return JSONResponse((await up.node()).model_dump(mode="json"))

    served = serve(uvicorn.Config(Starlette(routes=[Route(routes.NODE, node)]), ssl_certfile=str(cert),
                                  ssl_keyfile=str(key), log_level="critical", lifespan="off"))  # fmt: skip
    answering = NodeClient(NodeTarget(name="up", url=served.url, token="t", ca_file=ca))
    no_bus = operator(agent)
    try:
        now = time.time()
        base = steps.started(NodeRollout(name="tiny", batch=0), spec("1.2"), now)
        recent = base.model_copy(update={"state": NodeState.rebooting, "reboot_at": now - 5})
        assert await steps.step(spec("1.2"), "x", recent, answering, now) is None
        lost = base.model_copy(update={"state": NodeState.rebooting, "reboot_at": now - steps.REBOOT_ASK_AGAIN - 1})
        again = await steps.step(spec("1.2"), "x", lost, answering, now)
        assert again is not None and again.action is not None and again.action[0] == "reboot"
        assert again.node.reboot_at == now and "asking again" in again.node.reason
        assert await steps.step(spec("1.2"), "x", lost, no_bus, now) is None  # cannot tell: wait
    finally:
        await answering.aclose()
        await no_bus.aclose()
        served.stop()
