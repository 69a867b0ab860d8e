"""The OCI config each access level asks runc for (the lab test in test_ops.py tries the real boundary;
this one holds the config to it on machines that cannot run the lab)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifsea_tui.agent.ops import access
from lifsea_tui.api import OpsAccess


def spec(tmp_path: Path, level: OpsAccess) -> dict:
    image = tmp_path / "image"
    (image / "etc").mkdir(parents=True, exist_ok=True)
    (image / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    bundle = tmp_path / f"bundle-{level.value}"
    bundle.mkdir()
    mounts = access.host_mounts(level, tmp_path / "root", tmp_path / "deploy", tmp_path / "var")
    return access.bundle_spec(
        access=level, image_root=image, bundle=bundle, namespaces=Path("/proc/1/ns"), cgroup="/x", session_id="s",
        host_mounts=mounts, shell=["/bin/bash"], term="xterm",
    )  # fmt: skip


def test_read_only_runs_as_nobody_the_node_knows_with_one_capability(tmp_path: Path) -> None:
    read_only = spec(tmp_path, OpsAccess.read_only)
    process = read_only["process"]
    uid = process["user"]["uid"]
    assert access.SESSION_UID_BASE <= uid < access.SESSION_UID_BASE + access.SESSION_UID_SPAN
    assert process["user"]["gid"] == uid and process["noNewPrivileges"]
    assert all(caps in ([], ["CAP_DAC_READ_SEARCH"]) for caps in process["capabilities"].values())
    host = [m for m in read_only["mounts"] if m["destination"].startswith(("/host", "/sys"))]
    assert host and all("rro" in m["options"] and "rw" not in m["options"] for m in host)
    denied = {name for rule in read_only["linux"]["seccomp"]["syscalls"] for name in rule["names"]}
    assert {"mount", "unshare", "setns", "ptrace", "open_by_handle_at", "bpf", "clone3"} <= denied
    assert f"ops:x:{uid}:{uid}:" in (tmp_path / "bundle-read-only" / "passwd").read_text()


def test_debug_and_writable_say_what_they_add(tmp_path: Path) -> None:
    debug, writable = spec(tmp_path, OpsAccess.debug), spec(tmp_path, OpsAccess.writable)
    for level in (debug, writable):
        assert level["process"]["user"]["uid"] == 0 and level["process"]["noNewPrivileges"]
        denied = {name for rule in level["linux"]["seccomp"]["syscalls"] for name in rule["names"]}
        assert "ptrace" not in denied and {"mount", "unshare", "setns"} <= denied
        assert "CAP_SYS_ADMIN" not in level["process"]["capabilities"]["bounding"]
    assert all("rro" in m["options"] for m in debug["mounts"] if m["destination"].startswith("/host"))
    rw = {m["destination"]: m["options"] for m in writable["mounts"] if m["destination"].startswith("/host")}
    assert "rw" in rw["/host"] and "rw" in rw["/host/var"] and "rro" in rw["/host/usr"]


@pytest.mark.parametrize(
    ("output", "problem"),
    [("runc version 1.1.5+ds1\ncommit: x", None), ("runc version 1.2.0", None),
     ("runc version 1.0.3", "too old"), ("no runc here", "cannot tell")],
)  # fmt: skip
def test_a_runc_that_would_ignore_recursive_read_only_is_refused(output: str, problem: str | None) -> None:
    found = access.runc_too_old(output)
    assert (found is None) if problem is None else (problem in (found or ""))
