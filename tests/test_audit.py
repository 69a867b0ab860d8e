"""The audit log: hash chain, verification naming the first bad record, and a log that cannot be written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lifsea_tui.agent.audit import LOG_NAME, AuditLog, AuditUnavailable, verify


def _fill(log: AuditLog, count: int) -> None:
    for index in range(count):
        log.append(
            actor="alice", role="operator", action="rollback", reason=f"step {index}", params={"i": index}, outcome="ok"
        )


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_chain_verifies_and_survives_reopen(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "n1")
    _fill(log, 5)
    reopened = AuditLog(tmp_path, "n1")
    assert reopened.head == log.head
    record = reopened.append(actor="bob", role="admin", action="reboot", outcome="ok")
    assert record.seq == 5
    assert record.prev == log.head.hash
    result = verify(tmp_path / LOG_NAME)
    assert result.ok and result.records == 6 and result.head_hash == record.hash


def test_edited_record_is_named(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "n1")
    _fill(log, 5)
    lines = _lines(log.path)
    record = json.loads(lines[2])
    record["actor"] = "mallory"
    lines[2] = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
    log.path.write_text("".join(lines))
    result = verify(log.path)
    assert not result.ok
    assert result.first_bad_seq == 2
    assert "changed" in (result.problem or "")


def test_deleted_record_is_named(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "n1")
    _fill(log, 5)
    lines = _lines(log.path)
    del lines[1]
    log.path.write_text("".join(lines))
    result = verify(log.path)
    assert not result.ok and result.first_bad_seq == 2
    assert "removed" in (result.problem or "")


def test_reordered_records_are_named(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "n1")
    _fill(log, 5)
    lines = _lines(log.path)
    lines[1], lines[3] = lines[3], lines[1]
    log.path.write_text("".join(lines))
    result = verify(log.path)
    assert not result.ok and result.first_bad_seq == 3


def test_garbage_line_is_named(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "n1")
    _fill(log, 3)
    with log.path.open("a") as handle:
        handle.write("{not json\n")
    result = verify(log.path)
    assert not result.ok and result.first_bad_seq == 3 and "line 4" in (result.problem or "")


def test_offline_cli_names_the_bad_record(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "n1")
    _fill(log, 4)
    command = [sys.executable, "-m", "lifsea_tui.agent.cli", "verify-audit", str(tmp_path)]
    good = subprocess.run(command, capture_output=True, text=True)
    assert good.returncode == 0 and "4 records" in good.stdout
    lines = _lines(log.path)
    lines[1] = lines[1].replace('"reason":"step 1"', '"reason":"step one"')
    log.path.write_text("".join(lines))
    bad = subprocess.run(command, capture_output=True, text=True)
    assert bad.returncode == 1
    assert "record 1" in bad.stdout


def test_open_operations_are_found(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "n1")
    log.append(actor="a", role="operator", action="upgrade.stage", params={"op": "x1"}, outcome="started")
    log.append(actor="a", role="operator", action="upgrade.stage", params={"op": "x1"}, outcome="ok")
    log.append(actor="a", role="operator", action="upgrade.stage", params={"op": "x2"}, outcome="started")
    assert [r.params["op"] for r in log.open_operations()] == ["x2"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs to fill needs root")
def test_full_disk_refuses_and_keeps_the_chain(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        log = AuditLog(mount, "n1")
        with pytest.raises(AuditUnavailable):
            for index in range(10_000):
                log.append(
                    actor="a", role="operator", action="rollback", reason="x" * 200, params={"i": index}, outcome="ok"
                )
        head = log.head
        result = verify(log.path)
        assert result.ok, result.problem
        assert result.head_seq == head.seq
    finally:
        subprocess.run(["umount", str(mount)], check=True)
