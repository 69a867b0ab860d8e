"""The node's paths stay the node's: a real agent on a real ostree deployment whose /etc a hostile root
on the node has filled with links that lead upward, off the node, and with FIFOs."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx

from lifsea_tui.api import routes
from tests.helpers import RunningAgent, TinyNode


def _get(agent: RunningAgent, path: str) -> httpx.Response:
    with httpx.Client(base_url=agent.url, verify=agent.ssl_context(), headers=agent.headers("reader")) as http:
        return http.get(path, timeout=30)


def _plant(tmp_path: Path, tiny_node: TinyNode) -> str:
    """Links on the node to a secret on the agent's host, each way a link can point."""
    secret = f"AGENT-HOST-SECRET-{os.getpid()}"
    key = tmp_path / "agent-tls.key"
    key.write_text(f"nameserver 10.66.66.66\nNAME={secret}\n{secret}\n")
    etc = tiny_node.host_root / "etc"
    upward = "../" * (len(etc.parts) + 2) + str(key).lstrip("/")
    for name in ("resolv.conf", "hostname", "os-release", "machine-id"):
        (etc / name).unlink(missing_ok=True)
    (etc / "resolv.conf").symlink_to(upward)  # relative, climbing out of the node's root
    (etc / "hostname").symlink_to(str(key))  # absolute: means the node's own path, not the agent's
    (etc / "os-release").symlink_to(f"/proc/self/root{key}")  # a /proc magic link
    (etc / "machine-id").symlink_to(upward)
    (etc / "timezone").symlink_to(upward)
    return secret


def test_links_on_the_node_never_read_the_agents_host(agent: RunningAgent, tiny_node: TinyNode, tmp_path: Path) -> None:
    secret = _plant(tmp_path, tiny_node)
    answers = [
        _get(agent, routes.DIAGNOSTICS_DNS),
        _get(agent, routes.NODE),
        _get(agent, routes.DIAGNOSTICS_CLOCK),
        _get(agent, routes.DIAGNOSTICS_ETC),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert secret not in answer.text and "10.66.66.66" not in answer.text, answer.request.url
    dns = answers[0].json()
    assert dns["nameservers"] == [] and dns["resolv_conf"].startswith("# cannot read")


def test_an_absolute_link_resolves_inside_the_node(agent: RunningAgent, tiny_node: TinyNode) -> None:
    etc = tiny_node.host_root / "etc"
    (etc / "resolv.conf").unlink(missing_ok=True)
    (etc / "lifsea-resolv").write_text("nameserver 192.0.2.53\n")
    (etc / "resolv.conf").symlink_to("/etc/lifsea-resolv")
    dns = _get(agent, routes.DIAGNOSTICS_DNS).json()
    assert dns["nameservers"] == ["192.0.2.53"]


def test_fifos_in_etc_do_not_hang_the_diagnostics(agent: RunningAgent, tiny_node: TinyNode) -> None:
    """/v1/diagnostics/etc once blocked for ever reading a FIFO found in both /etc and /usr/etc."""
    root = tiny_node.host_root
    for where in (root / "etc", root / "usr" / "etc"):
        os.mkfifo(where / "lifsea-pipe")
    (root / "etc" / "resolv.conf").unlink(missing_ok=True)
    os.mkfifo(root / "etc" / "resolv.conf")
    started = time.monotonic()
    etc = _get(agent, routes.DIAGNOSTICS_ETC)
    dns = _get(agent, routes.DIAGNOSTICS_DNS)
    assert time.monotonic() - started < 10
    assert etc.status_code == 200, etc.text
    assert "/etc/lifsea-pipe" not in {c["path"] for c in etc.json()["changes"]}  # same kind on both sides
    assert dns.status_code == 200 and "cannot read" in dns.json()["resolv_conf"]


def test_var_as_a_link_off_the_node_is_not_walked(agent: RunningAgent, tiny_node: TinyNode, tmp_path: Path) -> None:
    outside = tmp_path / "agent-host-dir"
    outside.mkdir()
    (outside / "agent-host-only-file").write_bytes(b"x" * 100_000)
    var = tiny_node.host_root / "var"
    subprocess.run(["chattr", "-i", str(tiny_node.host_root)], check=True)  # ostree's immutable deployment root
    var.rename(tiny_node.host_root / "var.real")
    var.symlink_to("../" * (len(var.parts) + 2) + str(outside).lstrip("/"))
    answer = _get(agent, routes.DIAGNOSTICS_DISK)
    assert "agent-host-only-file" not in answer.text
    assert answer.status_code == 503
