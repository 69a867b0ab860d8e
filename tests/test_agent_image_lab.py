"""The agent as it runs on a host with no Python: the agent image (built offline by the project, an OCI
layout) run by runc on a lab node with the paths a DaemonSet gives it, /host, /host/sysroot, the bus
under /host/run, the node's pid namespace. The upgrade cycle, services, logs and a break-glass
session pass against it, and it comes back from its node's reboots as a pod would."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifsea_tui import agentimage
from lifsea_tui.api import ActionRequest, EndRequest, OpsAccess, OpsSessionRequest, StageRequest
from lifsea_tui.api.models import UpdateState
from lifsea_tui.client.node import NodeClient, NodeTarget
from lifsea_tui.client.ops import OpsShell
from lifsea_tui.lab.layout import Layout
from tests.conftest import lab, running_lab
from tests.helpers import PROMPT, Driver

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def image_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict, dict[str, str], Layout]]:
    if agentimage.tool_missing():
        pytest.skip(agentimage.tool_missing() or "")
    with running_lab(tmp_path_factory, 1, "imagelab", agent="image") as running:
        yield running


def container(layout: Layout, name: str) -> dict:
    node = layout.node(name)
    listed = subprocess.run(
        ["runc", f"--root={node.root / 'runc'}", "list", "--format", "json"], capture_output=True, text=True, check=True
    )
    return next(c for c in json.loads(listed.stdout or "[]") if c["id"] == f"lifsea-agent-{name}")


async def wait(what: str, probe, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = await probe()
            if last:
                return last
        except Exception as error:  # noqa: BLE001 - the node is rebooting: any failure is "not yet"
            last = error
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


async def test_the_agent_image_serves_a_node_through_its_whole_cycle(image_lab) -> None:
    status, env, layout = image_lab
    node = status["nodes"][0]
    name, leader = node["name"], layout.node(node["name"]).state()["leader"]

    # The image names the commit it was built from.
    spec = layout.read_spec()
    assert spec is not None and spec.agent == "image"
    head = subprocess.run(["git", "-C", str(agentimage.ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert agentimage.labels(spec.agent_image)["org.opencontainers.image.revision"].startswith(head.stdout.strip())

    # It is the image's agent, in the node's pid namespace, with the production paths.
    running = container(layout, name)
    assert running["status"] == "running" and running["bundle"] == str(layout.node(name).agent_bundle)
    pid = running["pid"]
    assert os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{leader}/ns/pid")
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert f"{agentimage.VENV}/bin/lifsea-agent".encode() in b" ".join(cmdline)
    assert b"/etc/lifsea-agent/agent.toml" in cmdline
    assert Path(f"/proc/{pid}/root/host/sysroot/ostree/repo").is_dir()
    assert Path(f"/proc/{pid}/root/host/run/dbus/system_bus_socket").exists()

    def target(role: str) -> NodeTarget:
        return NodeTarget(name=name, url=node["url"], token=node["tokens"][role], ca_file=Path(node["ca_file"]))

    reader, operator, admin = NodeClient(target("reader")), NodeClient(target("operator")), NodeClient(target("admin"))
    try:
        info = await reader.node()
        assert {key for key, cap in info.capabilities.items() if not cap.available} == set(), info.capabilities

        # Services and logs, through the node's bus and journal at /host.
        units = {u.name: u for u in (await reader.services(kind="service")).units}
        assert units["cron.service"].active_state == "active"
        restarted = await operator.service_action("cron.service", "restart", ActionRequest(reason="CHG-5 image"))
        assert restarted.job and restarted.audit_seq >= 0, restarted
        logs = await reader.logs(unit="cron.service", limit=50)
        assert logs.entries and all(entry.unit == "cron.service" for entry in logs.entries)

        # A break-glass session: runc inside the agent's container, joined to /proc/1/ns, the node's.
        session = await admin.ops_start(
            OpsSessionRequest(reason="INC-5 image", ttl_seconds=300, access=OpsAccess.read_only)
        )
        driver = Driver(OpsShell(target("admin"), session.id, cols=160, rows=40))
        await driver.expect(PROMPT)
        seen = await driver.run("echo $((6*7)) $(hostname) $(cat /proc/1/comm); touch /host/etc/x 2>&1", "STEP-1")
        assert f"42 {name} systemd" in seen and "Read-only file system" in seen, seen
        await admin.ops_end(session.id, EndRequest(reason="INC-5 done"))
        await driver.finished()

        # The upgrade cycle: the agent stages, reboots its node, and comes back in a new container.
        published = lab(["publish", "--version", "1.1", "--subject", "LifseaOS 1.1: image agent"], env)
        assert published.returncode == 0, published.stderr
        await operator.action("check", ActionRequest(reason="CHG-6 check"))
        await operator.action("stage", StageRequest(reason="CHG-6 stage"))
        await wait("staged", lambda: staged(reader))
        await operator.action("reboot", ActionRequest(reason="CHG-6 reboot into 1.1"))
        await wait("booted 1.1", lambda: booted_version(reader, "1.1"), 180)
        assert container(layout, name)["pid"] != pid  # the node's reboot ended the old one
        verified = await reader.audit_verify()
        assert verified.ok, verified
        records = (await reader.audit(limit=500)).records
        done = {(r.action, r.reason) for r in records if r.outcome == "ok"}
        assert {("upgrade.stage", "CHG-6 stage"), ("reboot", "CHG-6 reboot into 1.1")} <= done, done
        assert {("ops.session.attach", "INC-5 image"), ("ops.session.end", "INC-5 image")} <= done, done
        assert any(r.action == "ops.session.stop" and r.reason == "INC-5 done" for r in records)
    finally:
        for client in (reader, operator, admin):
            await client.aclose()


async def staged(client: NodeClient) -> bool:
    return (await client.upgrades()).state is UpdateState.staged


async def booted_version(client: NodeClient, version: str) -> bool:
    listing = await client.deployments()
    return any(d.booted and d.version == version for d in listing.deployments)
