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


# -- a crash's torn tail, the stored bytes, the head held in memory, sealed recordings ------------------


def test_torn_tail_is_cut_at_start_kept_and_recorded(tmp_path: Path) -> None:
    """A write that never finished leaves a line without its newline; the next start must not glue the
    next record onto it (which broke verification for ever after)."""
    log = AuditLog(tmp_path, "n1")
    _fill(log, 3)
    torn = b'{"action":"rollback","actor":"alice","hash":"12'
    with log.path.open("ab") as handle:
        handle.write(torn)
    reopened = AuditLog(tmp_path, "n1")
    assert reopened.repaired is not None and reopened.repaired["cut_bytes"] == len(torn)
    kept = tmp_path / reopened.repaired["kept_in"]
    assert kept.read_bytes() == torn
    (repaired,) = reopened.page(before=None, after=None, limit=1)
    assert repaired.seq == 3 and repaired.action == "audit.repaired" and str(len(torn)) in repaired.outcome
    reopened.append(actor="bob", role="operator", action="reboot", outcome="ok")
    result = verify(log.path)
    assert result.ok, result.problem
    assert result.records == 5


def test_torn_line_is_named_by_verify(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "n1")
    _fill(log, 2)
    with log.path.open("ab") as handle:
        handle.write(b'{"seq":2')
    result = verify(log.path)
    assert not result.ok and result.first_bad_seq == 2 and "torn" in (result.problem or "")


def test_a_key_given_twice_is_named(tmp_path: Path) -> None:
    """A reader that takes the first value of a key would see `mallory`; the hash (over the last value)
    still matches. Only the stored bytes tell."""
    log = AuditLog(tmp_path, "n1")
    _fill(log, 3)
    lines = _lines(log.path)
    lines[1] = '{"actor":"mallory",' + lines[1][1:]
    log.path.write_text("".join(lines))
    result = verify(log.path)
    assert not result.ok and result.first_bad_seq == 1
    assert "canonical" in (result.problem or "")


def test_reencoded_record_is_named(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "n1")
    _fill(log, 3)
    lines = _lines(log.path)
    lines[2] = json.dumps(json.loads(lines[2]), sort_keys=True) + "\n"  # the same fields, with spaces
    log.path.write_text("".join(lines))
    result = verify(log.path)
    assert not result.ok and result.first_bad_seq == 2


def _rechain(lines: list[str], start: int, records: list[dict]) -> list[str]:
    """What a root shell can do: write records of its own and recompute every hash after them."""
    from lifsea_tui.agent.audit import canonical, record_hash

    prev = json.loads(lines[start - 1])["hash"] if start else "0" * 64
    out = lines[:start]
    for seq, fields in enumerate(records, start=start):
        fields = {**fields, "seq": seq, "prev": prev}
        fields["hash"] = record_hash(fields)
        prev = fields["hash"]
        out.append(canonical(fields).decode() + "\n")
    return out


def test_truncating_the_newest_records_is_named_against_the_head_in_memory(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "n1")
    _fill(log, 6)
    lines = _lines(log.path)
    log.path.write_text("".join(lines[:4]))
    assert verify(log.path).ok  # a valid chain on its own: only the agent's memory knows better
    result = log.verify()
    assert not result.ok
    assert result.first_bad_seq == 4
    assert "removed" in (result.problem or "") and "4–5" in (result.problem or "")


def test_a_rewritten_and_rechained_log_is_named_against_the_head_in_memory(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "n1")
    _fill(log, 5)
    lines = _lines(log.path)
    forged = [json.loads(line) for line in lines[2:]]
    for fields in forged:
        fields["reason"] = "nothing to see"
    log.path.write_text("".join(_rechain(lines, 2, forged)))
    assert verify(log.path).ok
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 4 and "rewritten" in (result.problem or "")


def test_records_appended_behind_the_agent_are_named(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "n1")
    _fill(log, 3)
    lines = _lines(log.path)
    extra = {**json.loads(lines[-1]), "actor": "ghost"}
    log.path.write_text("".join(_rechain(lines, 3, [extra])))
    result = log.verify()
    assert not result.ok and "not written by this agent" in (result.problem or "")


def _seal(log: AuditLog, recordings: Path, recording: str, data: bytes) -> None:
    from lifsea_tui.agent.recording import file_seal

    recordings.mkdir(exist_ok=True)
    (recordings / f"{recording}.cast").write_bytes(data)
    seal = file_seal(recordings / f"{recording}.cast")
    log.append(
        actor="alice", role="admin", action="ops.session.end", reason="INC-1",
        params={"session": recording, "recording": recording, "sha256": seal.sha256, "size": seal.size},
        outcome="ok",
    )  # fmt: skip


def test_changed_and_missing_recordings_are_named(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit", "n1")
    recordings = tmp_path / "recordings"
    _seal(log, recordings, "a" * 16, b'{"version": 2}\n[0.1, "o", "ls\\r\\n"]\n')
    _seal(log, recordings, "b" * 16, b'{"version": 2}\n[0.1, "o", "rm -rf /var/x\\r\\n"]\n')
    _seal(log, recordings, "c" * 16, b'{"version": 2}\n')
    result = log.verify(recordings)
    assert result.ok and result.recordings_checked == 3
    (recordings / f"{'b' * 16}.cast").write_bytes(b'{"version": 2}\n[0.1, "o", "ls\\r\\n"]\n')
    (recordings / f"{'c' * 16}.cast").unlink()
    result = log.verify(recordings)
    assert not result.ok
    problems = {bad.id: bad.problem for bad in result.bad_recordings}
    assert set(problems) == {"b" * 16, "c" * 16}
    assert "changed since sealed" in problems["b" * 16] and "missing" in problems["c" * 16]
    assert result.first_bad_seq is None  # the chain itself holds
    offline = subprocess.run(
        [sys.executable, "-m", "lifsea_tui.agent.cli", "verify-audit", str(tmp_path / "audit"),
         "--recordings", str(recordings)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert offline.returncode == 1 and f"recording {'b' * 16}" in offline.stdout


def test_pages_come_from_the_index_and_follow_a_file_changed_behind_the_agent(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "n1")
    _fill(log, 3000)
    assert [r.seq for r in log.page(before=None, after=None, limit=3)] == [2997, 2998, 2999]
    assert [r.seq for r in log.page(before=1000, after=None, limit=3)] == [997, 998, 999]
    assert [r.seq for r in log.page(before=None, after=10, limit=2)] == [11, 12]
    assert [r.seq for r in log.page(before=None, after=2999, limit=5)] == []
    lines = _lines(log.path)
    log.path.write_text("".join(lines[:20]))  # a root shell cut it
    assert [r.seq for r in log.page(before=None, after=None, limit=3)] == [17, 18, 19]
    assert [r.seq for r in AuditLog(tmp_path, "n1").page(before=None, after=None, limit=1)] == [19]


def test_history_and_open_operations_come_from_the_index(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, "n1", tracked={"reboot"})
    _fill(log, 50)
    log.append(actor="a", role="operator", action="reboot", reason="CHG-1", outcome="ok")
    log.append(actor="a", role="operator", action="upgrade.stage", params={"op": "x9"}, outcome="started")
    assert [r.reason for r in log.of_actions(["reboot"])] == ["CHG-1"]
    assert [r.params["op"] for r in log.open_operations()] == ["x9"]
    reopened = AuditLog(tmp_path, "n1", tracked={"reboot"})
    assert [r.seq for r in reopened.of_actions(["reboot"])] == [50]


def test_a_lone_surrogate_is_stored_as_replacement_and_the_chain_holds(tmp_path: Path) -> None:
    """JSON can carry "\\ud800", which UTF-8 cannot: a caller must not be able to make the log unwritable."""
    log = AuditLog(tmp_path, "n1")
    record = log.append(actor="a", role="operator", action="rollback", reason="x\ud800y", outcome="ok")
    assert record.reason == "x\ufffdy"
    assert verify(log.path).ok
