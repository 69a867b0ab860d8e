"""The agent SIGKILLed in the middle of staging: on restart the sysroot is consistent, the update state is
recomputed from disk, the interrupted operation is audited, and the chain verifies."""

from __future__ import annotations

import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from lifsea_tui.agent.audit import verify
from lifsea_tui.api import routes
from lifsea_tui.lab import image, sysroot
from tests.helpers import TinyNode, kill_agent, serve_agent, write_agent_config


@pytest.mark.parametrize("where", ["during-pull", "right-after-accept"])
def test_sigkill_during_stage(tmp_path: Path, tiny_node: TinyNode, where: str) -> None:
    config, info = write_agent_config(tmp_path / "agent", host_root=tiny_node.host_root, sysroot_path=tiny_node.sysroot)
    headers = {"Authorization": f"Bearer {info['tokens']['operator']}"}
    image.publish(tiny_node.repo, "1.1")
    image.publish(tiny_node.repo, "1.2")  # a check fetches the newest tree, and only the metadata of 1.1
    proc = serve_agent(config, info)
    listener = None
    try:
        with httpx.Client(
            base_url=info["url"], verify=ssl.create_default_context(cafile=str(info["ca"])), headers=headers, timeout=30
        ) as http:
            checked = http.post(routes.UPGRADES_CHECK, json={"reason": "before the crash"})
            assert checked.status_code == 200
            body: dict[str, str] = {"reason": "crash me"}
            if where == "during-pull":
                import socket

                listener = socket.socket()
                listener.bind(("127.0.0.1", 0))
                listener.listen(4)
                # Stage 1.1, whose tree must still be pulled, from an update server that now hangs.
                body["checksum"] = checked.json()["status"]["targets"][1]["checksum"]
                sysroot.set_remote(tiny_node.sysroot, f"http://127.0.0.1:{listener.getsockname()[1]}")
            accepted = http.post(routes.UPGRADES_STAGE, json=body)
            assert accepted.status_code == 202
            if where == "during-pull":
                time.sleep(0.5)
        kill_agent(proc)
        proc = serve_agent(config, info)
        with httpx.Client(
            base_url=info["url"], verify=ssl.create_default_context(cafile=str(info["ca"])), headers=headers, timeout=30
        ) as http:
            records = http.get(routes.AUDIT, params={"limit": 1000}).json()["records"]
            stage = [r for r in records if r["action"] == "upgrade.stage"]
            outcomes = [r["outcome"] for r in stage]
            assert outcomes[0] == "started"
            if where == "during-pull":
                assert outcomes[-1].startswith("interrupted"), outcomes
            else:  # the deploy may have finished before the kill; either way the operation is closed
                assert outcomes[-1] == "ok" or outcomes[-1].startswith("interrupted"), outcomes
            deployments = http.get(routes.DEPLOYMENTS).json()["deployments"]
            state = http.get(routes.UPGRADES).json()["state"]
        pending = [d for d in deployments if d["pending"]]
        assert state == ("staged" if pending else "idle")
        assert any(d["booted"] for d in deployments)
        listing = subprocess.run(
            ["ostree", "admin", "status", f"--sysroot={tiny_node.sysroot}"], capture_output=True, text=True
        )
        assert listing.returncode == 0, listing.stderr
        assert listing.stdout.count("lifsea ") == len(deployments)
        fsck = subprocess.run(
            ["ostree", "fsck", f"--repo={tiny_node.sysroot}/ostree/repo"], capture_output=True, text=True
        )
        assert fsck.returncode == 0, fsck.stderr
        assert verify(info["audit"] / "audit.jsonl").ok
    finally:
        if listener:
            listener.close()
        kill_agent(proc)
