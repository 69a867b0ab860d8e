"""The whole update cycle on real lab nodes: systemd-nspawn machines booted from ostree deployments.

publish 1.1 -> check -> stage -> pending -> reboot -> booted 1.1 -> rollback -> reboot -> booted 1.0, each
step asserted through the API and through `ostree admin status` on the node's sysroot; the audit chain
verifies at the end and names every step's actor and reason.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from lifsea_tui.api import routes
from lifsea_tui.lab.layout import Layout
from tests.conftest import lab

pytestmark = pytest.mark.lab


def wait_for(what: str, probe, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except httpx.TransportError as error:
            last = error
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def admin_status_versions(sysroot: Path) -> list[str]:
    """Versions in boot order, as `ostree admin status` lists them."""
    out = subprocess.run(
        ["ostree", "admin", "status", f"--sysroot={sysroot}"], capture_output=True, text=True, check=True
    ).stdout
    return [line.split(":", 1)[1].strip() for line in out.splitlines() if line.strip().startswith("Version:")]


def test_status_json_shape(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    status, env, _ = fleet
    assert status["update_server"].startswith("http://127.0.0.1:")
    assert [n["name"] for n in status["nodes"]] == ["node1", "node2"]
    for node in status["nodes"]:
        assert set(node["tokens"]) == {"reader", "operator", "admin", "auditor"}
        assert Path(node["ca_file"]).exists()
    again = lab(["up", "--nodes", "2"], env)  # idempotent
    assert again.returncode == 0, again.stderr
    assert "already up" in again.stderr


def test_node_is_real(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    status, _, layout = fleet
    node = status["nodes"][1]
    with httpx.Client(
        base_url=node["url"],
        verify=ssl.create_default_context(cafile=node["ca_file"]),
        headers={"Authorization": f"Bearer {node['tokens']['reader']}"},
        timeout=30,
    ) as http:
        info = http.get(routes.NODE).json()
        deadline = time.monotonic() + 90
        while info["ready_seconds"] is None and time.monotonic() < deadline:  # systemd still starting it
            time.sleep(1)
            info = http.get(routes.NODE).json()
    # Started, and started after its boot began: the clock the rollout gates wait on.
    assert info["ready_seconds"] is not None and 0 <= info["ready_seconds"] <= info["uptime_seconds"], info
    assert info["name"] == "node2" and info["os_name"] == "LifseaOS" and info["os_version"] == "1.0"
    assert info["capabilities"]["reboot"]["available"], info["capabilities"]
    assert info["uptime_seconds"] is not None and info["uptime_seconds"] >= 0
    assert info["machine_id"] and len(info["machine_id"]) == 32
    root = layout.node("node2").host_root
    assert (root / "usr").stat().st_dev  # the machine's root, seen through /proc/LEADER/root
    with pytest.raises(OSError):
        (root / "usr" / "lifsea-write-test").write_text("x")  # /usr is read-only on a node


def test_each_machine_has_a_cgroup_tree_of_its_own(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    """Two machines never share a unit's cgroup: when they did (both in nspawn's `payload/`), one node's
    unit starting or stopping beside its namesake on another failed with status=219/CGROUP."""
    _, _, layout = fleet
    trees = {}
    for name in ("node1", "node2"):
        leader = os.readlink(layout.node(name).host_root).split("/")[2]  # /proc/LEADER/root
        with open(f"/proc/{leader}/cgroup") as handle:
            lines = [line.strip() for line in handle if ":name=systemd:" in line or line.startswith("0::")]
        assert lines and all(line.endswith(f"-{name}/payload/init.scope") for line in lines), lines
        trees[name] = lines
    assert not set(trees["node1"]) & set(trees["node2"]), trees


def test_full_cycle(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    """The cycle on node1, asserted through the API and `ostree admin status`."""
    status, env, layout = fleet
    node = status["nodes"][0]
    sysroot = layout.node(node["name"]).sysroot
    context = ssl.create_default_context(cafile=node["ca_file"])
    reader = httpx.Client(
        base_url=node["url"],
        verify=context,
        timeout=60,
        headers={"Authorization": f"Bearer {node['tokens']['reader']}"},
    )
    operator = httpx.Client(
        base_url=node["url"],
        verify=context,
        timeout=120,
        headers={"Authorization": f"Bearer {node['tokens']['operator']}"},
    )

    def booted_version():
        listing = reader.get(routes.DEPLOYMENTS).json()
        return next((d["version"] for d in listing["deployments"] if d["booted"]), None)

    def act(path: str, reason: str, expect: int = 200) -> dict:
        response = operator.post(path, json={"reason": reason})
        assert response.status_code == expect, response.text
        return response.json()

    assert booted_version() == "1.0"
    published = lab(["publish", "--version", "1.1", "--subject", "LifseaOS 1.1: cycle test"], env)
    assert published.returncode == 0, published.stderr

    checked = act(routes.UPGRADES_CHECK, "CHG-1 check")
    assert checked["status"]["state"] == "available"
    assert checked["status"]["targets"][0]["version"] == "1.1"

    act(routes.UPGRADES_STAGE, "CHG-1 stage", expect=202)
    wait_for("staged", lambda: reader.get(routes.UPGRADES).json()["state"] == "staged")
    deployments = reader.get(routes.DEPLOYMENTS).json()["deployments"]
    assert [(d["version"], d["pending"], d["booted"]) for d in deployments] == [
        ("1.1", True, False),
        ("1.0", False, True),
    ]
    assert admin_status_versions(sysroot) == ["1.1", "1.0"]

    act(routes.REBOOT, "CHG-1 reboot into 1.1")
    wait_for("booted 1.1", lambda: booted_version() == "1.1")
    deployments = reader.get(routes.DEPLOYMENTS).json()["deployments"]
    assert [(d["version"], d["booted"], d["rollback"]) for d in deployments] == [
        ("1.1", True, False),
        ("1.0", False, True),
    ]
    assert (layout.node(node["name"]).host_root / "usr/share/lifsea/release-notes-1.1.txt").exists()
    assert reader.get(routes.NODE).json()["os_version"] == "1.1"

    act(routes.ROLLBACK, "CHG-1 roll back")
    assert admin_status_versions(sysroot) == ["1.0", "1.1"]
    deployments = reader.get(routes.DEPLOYMENTS).json()["deployments"]
    assert [(d["version"], d["pending"], d["booted"]) for d in deployments] == [
        ("1.0", True, False),
        ("1.1", False, True),
    ]

    act(routes.REBOOT, "CHG-1 reboot into 1.0")
    wait_for("booted 1.0", lambda: booted_version() == "1.0")
    assert admin_status_versions(sysroot) == ["1.0", "1.1"]
    assert reader.get(routes.UPGRADES).json()["state"] in ("idle", "available")

    verified = reader.get(routes.AUDIT_VERIFY).json()
    assert verified["ok"], verified
    records = reader.get(routes.AUDIT, params={"limit": 1000}).json()["records"]
    done = [(r["action"], r["actor"], r["reason"]) for r in records if r["outcome"] == "ok"]
    for step in (
        ("upgrade.check", "CHG-1 check"),
        ("upgrade.stage", "CHG-1 stage"),
        ("reboot", "CHG-1 reboot into 1.1"),
        ("rollback", "CHG-1 roll back"),
        ("reboot", "CHG-1 reboot into 1.0"),
    ):
        assert (step[0], "lab-operator", step[1]) in done, step
    boots = [r["params"]["version"] for r in records if r["action"] == "node.booted"]
    assert boots[-3:] == ["1.0", "1.1", "1.0"]
    history = reader.get(routes.HISTORY).json()["entries"]
    assert [e["version"] for e in history if e["event"] == "booted"][:2] == ["1.0", "1.1"]
    reader.close()
    operator.close()
