"""The agent's read-only diagnostics and the debug audit trail, on a real lab node."""

from __future__ import annotations

import os
import secrets
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lifsea_tui.agent.audit import verify
from lifsea_tui.api import routes
from lifsea_tui.lab import scenarios
from lifsea_tui.lab.layout import Layout
from lifsea_tui.lab.sysroot import stateroot_var
from tests.conftest import lab
from tests.helpers import lab_client

pytestmark = pytest.mark.lab


def test_disk_clock_and_etc_are_the_nodes(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    status, _, layout = fleet
    node = status["nodes"][1]
    machine = layout.node(node["name"])
    with lab_client(node, "reader") as http:
        disk = http.get(routes.DIAGNOSTICS_DISK, params={"path": "var"}).json()
        var = shutil.disk_usage(stateroot_var(machine.sysroot))
        assert disk["path"] == "/var" and disk["total_bytes"] == var.total
        assert abs(disk["free_bytes"] - var.free) < 64 * 1024 * 1024
        assert disk["complete"] and any(e["path"] == "/var/log/journal" for e in disk["largest"])
        # A 5 MiB file shows among the biggest, by the blocks it takes.
        big = stateroot_var(machine.sysroot) / "tmp" / f"diag-{secrets.token_hex(4)}"
        big.write_bytes(os.urandom(5 * 1024 * 1024))
        try:
            disk = http.get(routes.DIAGNOSTICS_DISK).json()
            sizes = {e["path"]: e["bytes"] for e in disk["largest"]}
            assert sizes.get(f"/var/tmp/{big.name}", 0) >= 5 * 1024 * 1024, sizes
        finally:
            big.unlink()
        assert http.get(routes.DIAGNOSTICS_DISK, params={"path": "usr/../../"}).status_code == 400

        clock = http.get(routes.DIAGNOSTICS_CLOCK).json()
        assert abs(datetime.fromisoformat(clock["node_time"]).timestamp() - time.time()) < 5
        assert clock["ntp_synchronized"] in (True, False)

        # A file changed in the node's /etc: reported against the image's /usr/etc, newest first.
        before = time.time()
        scenarios.in_node(machine, "sh", "-c", "echo '# tuned' >> /etc/nginx/nginx.conf && touch /etc/lifsea-diag")
        try:
            since = datetime.fromtimestamp(before - 2, UTC).isoformat()
            changes = http.get(routes.DIAGNOSTICS_ETC, params={"since": since}).json()
            found = {c["path"]: c["change"] for c in changes["changes"]}
            assert found == {"/etc/nginx/nginx.conf": "modified", "/etc/lifsea-diag": "added"}, found
        finally:
            scenarios.in_node(machine, "sh", "-c", "sed -i '/^# tuned$/d' /etc/nginx/nginx.conf && rm /etc/lifsea-diag")
        everything = http.get(routes.DIAGNOSTICS_ETC).json()["changes"]
        assert "/etc/lifsea-diag" not in {c["path"] for c in everything}
        assert "/etc/nginx/nginx.conf" not in {c["path"] for c in everything}  # same bytes as the image again


def test_dns_is_asked_from_the_nodes_network(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    """The node has a network of its own (127.0.0.53 is its resolver, not this machine's): the probe is
    made from inside it, and a stopped resolver shows as refused."""
    status, env, _ = fleet
    node = status["nodes"][1]
    with lab_client(node, "reader") as http:
        dns = http.get(routes.DIAGNOSTICS_DNS).json()
        assert dns["nameservers"] == ["127.0.0.53"] and dns["probes"][0]["ok"], dns
        assert http.get(routes.DIAGNOSTICS_DNS, params={"name": "bad name;rm"}).status_code == 400
        assert lab(["break", node["name"], "--scenario", "dns"], env).returncode == 0
        try:
            probe = http.get(routes.DIAGNOSTICS_DNS).json()["probes"][0]
            assert not probe["ok"] and "refused" in probe["error"].lower(), probe
        finally:
            assert lab(["fix", node["name"], "--scenario", "dns"], env).returncode == 0
        deadline = time.monotonic() + 10
        while not http.get(routes.DIAGNOSTICS_DNS).json()["probes"][0]["ok"]:
            assert time.monotonic() < deadline, "the resolver did not answer again"
            time.sleep(0.3)


def test_debug_records_join_the_audit_chain(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    status, _, layout = fleet
    node = status["nodes"][1]
    walk = secrets.token_hex(8)
    record = {"walk": walk, "runbook": "var-full", "event": "finding", "step": "space", "summary": "ok: /var has room",
              "evidence": ["/var: 3% used"]}  # fmt: skip
    with lab_client(node, "reader") as reader, lab_client(node, "auditor") as auditor:
        answer = reader.post(routes.DEBUG_RECORDS, json=record)
        assert answer.status_code == 201, answer.text
        seq = answer.json()["audit_seq"]
        audit = reader.get(routes.AUDIT, params={"after": seq - 1, "limit": 1}).json()["records"][0]
        assert audit["action"] == "debug.finding" and audit["actor"] == "lab-reader"
        assert audit["params"] == {"walk": walk, "runbook": "var-full", "step": "space", "evidence": ["/var: 3% used"]}
        assert auditor.post(routes.DEBUG_RECORDS, json=record).status_code == 403  # an auditor changes nothing
        for bad in (
            {**record, "walk": "not-hex"},
            {**record, "event": "format"},
            {**record, "summary": "   "},
            {**record, "evidence": ["x" * 401]},
            {**record, "evidence": ["e"] * 21},
            {**record, "extra": 1},
        ):
            refused = reader.post(routes.DEBUG_RECORDS, json=bad)
            assert refused.status_code == 400 and refused.json()["error"] == "bad_request", (bad, refused.text)
    audit_dir = stateroot_var(layout.node(node["name"]).sysroot) / "lib" / "lifsea-agent" / "audit"
    assert verify(Path(audit_dir) / "audit.jsonl").ok


def test_grep_that_matches_nothing_is_an_empty_page(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    """journalctl --grep exits 1 when nothing matches; that is no entries, not a bad request."""
    status, _, _ = fleet
    with lab_client(status["nodes"][1], "reader") as http:
        answer = http.get(routes.LOGS, params={"grep": f"no-such-line-{secrets.token_hex(6)}"})
        assert answer.status_code == 200 and answer.json()["entries"] == []
        assert http.get(routes.LOGS, params={"grep": "(unclosed"}).status_code == 400
