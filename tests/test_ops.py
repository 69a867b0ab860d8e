"""Break-glass ops sessions on real lab nodes: runc containers in the node's namespaces, over the websocket.

The lab's own agents serve the main path (as deployed). Fault tests that need short timers or a small
recording disk start a second agent in this process against the same real node, with its own audit log,
ops directory and recordings: everything else (runc, the node's namespaces, its ostree repo) is real.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from lifsea_tui.agent.audit import verify
from lifsea_tui.agent.config import OpsConfig
from lifsea_tui.api import EndRequest, OpsAccess, OpsSessionRequest, routes
from lifsea_tui.api import ops as proto
from lifsea_tui.client.node import NodeClient, NodeError, NodeTarget
from lifsea_tui.client.ops import Closed, Exit, Expiring, Hello, OpsShell
from lifsea_tui.lab import image, sysroot
from lifsea_tui.lab.layout import Layout
from tests.helpers import PROMPT, Driver, RunningAgent, start_agent

pytestmark = pytest.mark.lab


def target(node: dict, role: str = "admin") -> NodeTarget:
    return NodeTarget(name=node["name"], url=node["url"], token=node["tokens"][role], ca_file=Path(node["ca_file"]))


def agent_target(agent: RunningAgent, role: str = "admin") -> NodeTarget:
    return NodeTarget(name=agent.config.node_name, url=agent.url, token=agent.tokens[role], ca_file=agent.ca_file)


def runc_containers(ops_dir: Path) -> list[str]:
    out = subprocess.run(
        ["runc", f"--root={ops_dir / 'runc'}", "list", "--format=json"], capture_output=True, text=True
    ).stdout
    return [c["id"] for c in json.loads(out or "null") or []]


def audit_records(client: httpx.Client) -> list[dict]:
    return client.get(routes.AUDIT, params={"limit": 1000}).json()["records"]


@pytest.fixture
def node1(fleet: tuple[dict, dict[str, str], Layout]) -> Iterator[tuple[dict, Layout, httpx.Client]]:
    status, _, layout = fleet
    node = status["nodes"][0]
    with httpx.Client(
        base_url=node["url"],
        verify=ssl.create_default_context(cafile=node["ca_file"]),
        headers={"Authorization": f"Bearer {node['tokens']['admin']}"},
        timeout=60,
    ) as http:
        yield node, layout, http


def second_agent(base: Path, layout: Layout, name: str = "node2", **ops: object) -> RunningAgent:
    node = layout.node(name)
    config = OpsConfig(
        image=f"{sysroot.REMOTE}:{image.OPS_REF}",
        namespaces=node.namespaces,
        dir=base / "ops",
        recordings=ops.pop("recordings", base / "recordings"),  # type: ignore[arg-type]
        **ops,  # type: ignore[arg-type]
    )
    return start_agent(base, host_root=node.host_root, sysroot_path=node.sysroot, name=f"{name}-second", ops=config)


async def test_session_on_a_real_node(node1: tuple[dict, Layout, httpx.Client]) -> None:
    """ps sees the node's systemd, /host is the node's root and read-only, the exit code comes back,
    the recording replays what was typed and printed, and its hash is in the audit log."""
    node, layout, http = node1
    client = NodeClient(target(node))
    session = await client.ops_start(
        OpsSessionRequest(reason="INC-1 look at the node", ticket="INC-1", ttl_seconds=300)
    )
    assert session.state == "detached" and session.actor == "lab-admin" and session.ticket == "INC-1"
    listed = (await client.ops_sessions()).sessions
    assert [s.id for s in listed] == [session.id]
    assert (await client.summary()).ops_sessions == 1  # what the fleet table shows
    ops_dir = layout.node("node1").ops_dir
    assert f"lifsea-ops-{session.id}" in runc_containers(ops_dir)

    shell = OpsShell(target(node), session.id, cols=120, rows=40)
    driver = Driver(shell)
    await driver.expect(PROMPT)
    hello = driver.events[0]
    assert isinstance(hello, Hello) and hello.session == session.id and not hello.reattached

    ps = await driver.run("ps -e -o pid=,comm= | head -3", "DONE-PS")
    assert any(line.split() == ["1", "systemd"] for line in ps.splitlines()), ps
    release = await driver.run("cat /host/etc/os-release", "DONE-OS")
    assert 'NAME="LifseaOS"' in release
    write = await driver.run("touch /host/etc/ops-was-here; echo rc=$?", "DONE-W")
    assert "Read-only file system" in write and "rc=1" in write
    assert not (layout.node("node1").host_root / "etc" / "ops-was-here").exists()
    size = await driver.run("stty size", "DONE-SZ")
    assert "40 120" in size
    await shell.resize(100, 30)
    size = await driver.run("stty size", "DONE-SZ2")
    assert "30 100" in size
    await shell.send(b"echo typed-by-test; exit 7\r")
    end = await driver.finished()
    assert isinstance(end, Exit) and end.code == 7 and end.reason == "exited", end

    # Nothing left behind: no container, no bundle.
    assert f"lifsea-ops-{session.id}" not in runc_containers(ops_dir)
    assert not (ops_dir / "sessions" / session.id).exists()
    ended = await client.ops_session(session.id)
    assert ended.state == "ended" and ended.exit_code == 7

    cast = await client.recording(session.id)
    lines = cast.decode().splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2
    events = [json.loads(line) for line in lines[1:]]
    printed = "".join(e[2] for e in events if e[1] == "o")
    assert "typed-by-test" in printed and 'NAME="LifseaOS"' in printed and "1 systemd" in printed
    assert ["r", "100x30"] in [e[1:] for e in events]
    assert next(e[2] for e in events if e[1] == "m") == "session start"
    assert [e[2] for e in events if e[1] == "m"][-1] == "session end: exited"
    times = [e[0] for e in events]
    assert times == sorted(times)

    records = audit_records(http)
    mine = [r for r in records if r["params"].get("session") == session.id]
    assert [r["action"] for r in mine] == [
        "ops.session.start",
        "ops.session.attach",
        "ops.session.end",
    ], [(r["action"], r["outcome"]) for r in mine]
    assert mine[0]["reason"] == "INC-1 look at the node" and mine[0]["params"]["ticket"] == "INC-1"
    assert mine[-1]["params"]["sha256"] == hashlib.sha256(cast).hexdigest()
    assert mine[-1]["params"]["size"] == len(cast) and mine[-1]["params"]["exit_code"] == 7
    viewed = [r for r in audit_records(http) if r["action"] == "recording.view"]
    assert viewed and viewed[-1]["params"]["recording"] == session.id
    listing = (await client.recordings()).recordings
    assert any(r.id == session.id and r.sha256 == mine[-1]["params"]["sha256"] for r in listing)
    assert http.get(routes.AUDIT_VERIFY).json()["ok"]
    await client.aclose()


async def test_reattach_replays_the_screen_and_the_session_goes_on(node1: tuple[dict, Layout, httpx.Client]) -> None:
    node, _, http = node1
    client = NodeClient(target(node))
    session = await client.ops_start(OpsSessionRequest(reason="INC-2 re-attach", ttl_seconds=300))
    first = Driver(OpsShell(target(node), session.id))
    await first.expect(PROMPT)
    await first.run("echo before-the-drop", "DONE-1")
    await first.shell.close()  # the connection goes away; the session must not
    await asyncio.wait_for(first.task, 10)
    await asyncio.sleep(0.5)
    assert (await client.ops_session(session.id)).state == "detached"

    second = Driver(OpsShell(target(node), session.id))
    await second.expect(b"before-the-drop")  # the screen tail, replayed
    hello = second.events[0]
    assert isinstance(hello, Hello) and hello.reattached and hello.replayed > 0
    out = await second.run("echo after-the-drop", "DONE-2")
    assert "after-the-drop" in out
    await second.shell.send(b"exit 0\r")
    end = await second.finished()
    assert isinstance(end, Exit) and end.code == 0
    actions = [r["action"] for r in audit_records(http) if r["params"].get("session") == session.id]
    assert actions == [
        "ops.session.start",
        "ops.session.attach",
        "ops.session.detach",
        "ops.session.reattach",
        "ops.session.end",
    ]
    cast = (await client.recording(session.id)).decode()
    assert "before-the-drop" in cast and "after-the-drop" in cast and '"re-attached"' in cast
    await client.aclose()


async def test_ttl_warns_then_kills(node1: tuple[dict, Layout, httpx.Client]) -> None:
    node, layout, _ = node1
    client = NodeClient(target(node))
    session = await client.ops_start(OpsSessionRequest(reason="INC-3 short", ttl_seconds=10))
    driver = Driver(OpsShell(target(node), session.id))
    await driver.expect(PROMPT)
    await driver.shell.send(b"sleep 600\r")
    end = await driver.finished(timeout=30)
    assert isinstance(end, Exit) and end.reason == "ttl", driver.events[-3:]
    assert any(isinstance(e, Expiring) for e in driver.events)
    assert f"lifsea-ops-{session.id}" not in runc_containers(layout.node("node1").ops_dir)
    # The node's processes are untouched; only the container's are gone.
    assert "sleep 600" not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    await client.aclose()


async def test_end_by_delete_and_limits(node1: tuple[dict, Layout, httpx.Client]) -> None:
    node, _, http = node1
    client = NodeClient(target(node))
    sessions = [await client.ops_start(OpsSessionRequest(reason=f"INC-4 limit {i}")) for i in range(2)]
    with pytest.raises(NodeError) as refused:
        await client.ops_start(OpsSessionRequest(reason="INC-4 one too many"))
    assert refused.value.status == 429 and "at most 2" in refused.value.detail
    for session in sessions:
        ended = await client.ops_end(session.id, EndRequest(reason="INC-4 done"))
        assert ended.state == "ended" and ended.end_reason == "ended by lab-admin"
    with pytest.raises(NodeError) as gone:
        await client.ops_end(sessions[0].id, EndRequest(reason="again"))
    assert gone.value.status == 404
    records = audit_records(http)
    limited = [r for r in records if r["action"] == "ops.session.start" and r["outcome"].startswith("refused")]
    assert any(r["outcome"].startswith("refused: lab-admin has 2") for r in limited)
    stops = [r for r in records if r["action"] == "ops.session.stop"]
    assert {r["params"]["session"] for r in stops} >= {s.id for s in sessions}
    await client.aclose()


def test_roles_and_bad_requests(node1: tuple[dict, Layout, httpx.Client]) -> None:
    node, layout, http = node1
    ops_dir = layout.node("node1").ops_dir
    before = runc_containers(ops_dir)
    for role in ("operator", "reader", "auditor"):
        answer = httpx.post(
            node["url"] + routes.OPS_SESSIONS,
            json={"reason": "not mine to open"},
            headers={"Authorization": f"Bearer {node['tokens'][role]}"},
            verify=ssl.create_default_context(cafile=node["ca_file"]),
        )
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"] == "forbidden"
    assert runc_containers(ops_dir) == before
    assert not any((ops_dir / "sessions").glob("*")) if (ops_dir / "sessions").exists() else True
    refusals = [r for r in audit_records(http) if r["action"] == "ops.sessions" and r["outcome"].startswith("refused")]
    assert {r["role"] for r in refusals} >= {"operator", "reader", "auditor"}
    for body, status in (
        ({"reason": " "}, 400),
        ({"reason": "x", "ttl_seconds": 0}, 400),
        ({"reason": "x", "shell": "/bin/sh"}, 400),
    ):
        answer = http.post(routes.OPS_SESSIONS, json=body)
        assert answer.status_code == status, (body, answer.text)
    assert http.get("/v1/ops/sessions/../../etc").status_code == 404
    assert http.get("/v1/recordings/not-an-id").status_code in (400, 404)
    auditor = {"Authorization": f"Bearer {node['tokens']['auditor']}"}
    assert http.get(routes.RECORDINGS, headers=auditor).status_code == 200
    reader = {"Authorization": f"Bearer {node['tokens']['reader']}"}
    assert http.get(routes.RECORDINGS, headers=reader).status_code == 403


async def test_protocol_violations_close_with_clear_codes(node1: tuple[dict, Layout, httpx.Client]) -> None:
    node, _, http = node1
    client = NodeClient(target(node))
    session = await client.ops_start(OpsSessionRequest(reason="INC-5 protocol", ttl_seconds=120))
    url = node["url"].replace("https://", "wss://") + routes.OPS_ATTACH.format(session_id=session.id)
    context = ssl.create_default_context(cafile=node["ca_file"])

    async def close_code(frames: list[bytes | str], *, role: str = "admin", subprotocol: bool = True) -> tuple:
        async with websockets.connect(
            url,
            ssl=context,
            additional_headers={"Authorization": f"Bearer {node['tokens'][role]}"},
            subprotocols=[websockets.Subprotocol(proto.SUBPROTOCOL)] if subprotocol else None,
            max_size=None,
        ) as socket:
            for frame in frames:
                with contextlib.suppress(websockets.ConnectionClosed):
                    await socket.send(frame)
            with contextlib.suppress(websockets.ConnectionClosed):
                async for _ in socket:
                    pass
            return socket.close_code, socket.close_reason

    hello = proto.control("hello", cols=80, rows=24)
    assert (await close_code([proto.data(proto.STDIN, b"ls\r")]))[0] == proto.CLOSE_PROTOCOL
    assert (await close_code([proto.data(proto.STDIN, b"ls\r")]))[1] == "data before hello"
    assert (await close_code([b"\x03{not json"]))[0] == proto.CLOSE_PROTOCOL
    assert (await close_code([hello, b"\x07abc"]))[1] == "unknown channel 7"
    huge = proto.data(proto.STDIN, b"x" * (proto.MAX_FRAME + 10))
    assert (await close_code([hello, huge]))[0] == proto.CLOSE_TOO_LARGE
    assert (await close_code([proto.control("hello", cols=0, rows=24)]))[0] == proto.CLOSE_PROTOCOL
    assert (await close_code([hello, "text frame"]))[0] == proto.CLOSE_PROTOCOL
    assert (await close_code([hello], subprotocol=False))[0] == proto.CLOSE_PROTOCOL
    assert (await close_code([hello], role="operator"))[0] == routes.CLOSE_FORBIDDEN
    missing = url.replace(session.id, "0" * 16)
    url, saved = missing, url
    assert (await close_code([hello]))[0] == proto.CLOSE_NOT_FOUND
    url = saved
    # After all that the session is still there and usable.
    driver = Driver(OpsShell(target(node), session.id))
    await driver.expect(PROMPT)
    await driver.shell.send(b"exit 3\r")
    end = await driver.finished()
    assert isinstance(end, Exit) and end.code == 3
    violations = [
        r for r in audit_records(http) if r["action"] == "ops.session.attach" and r["outcome"].startswith("refused")
    ]
    reasons = " | ".join(r["outcome"] for r in violations)
    for text in ("data before hello", "not JSON", "unknown channel 7", "frame of", "out of range", "text frame"):
        assert text in reasons, text
    await client.aclose()


async def test_client_killed_then_grace_ends_the_session(
    fleet: tuple[dict, dict[str, str], Layout], tmp_path: Path
) -> None:
    """The client vanishes without a close; after the grace period the container is gone, the recording sealed."""
    _, _, layout = fleet
    agent = second_agent(tmp_path / "agent", layout, grace=2, warn_before=5)
    try:
        client = NodeClient(agent_target(agent))
        session = await client.ops_start(OpsSessionRequest(reason="INC-6 client dies", ttl_seconds=300))
        # A client process that attaches, starts a command, and is SIGKILLed.
        script = (
            "import asyncio,sys\n"
            "from pathlib import Path\n"
            "from lifsea_tui.client.node import NodeTarget\n"
            "from lifsea_tui.client.ops import OpsShell, Output\n"
            "async def main():\n"
            f"    t = NodeTarget(name='n', url={agent.url!r}, token={agent.tokens['admin']!r},\n"
            f"                   ca_file=Path({str(agent.ca_file)!r}))\n"
            f"    shell = OpsShell(t, {session.id!r})\n"
            "    async for e in shell.events():\n"
            "        if isinstance(e, Output) and b'OPS' in e.data:\n"
            "            await shell.send(b'sleep 500\\r'); print('ready', flush=True)\n"
            "asyncio.run(main())\n"
        )
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGKILL)
        child.wait()
        deadline = time.monotonic() + 30
        while (await client.ops_session(session.id)).state != "ended":
            assert time.monotonic() < deadline, "the session outlived its grace period"
            await asyncio.sleep(0.3)
        ended = await client.ops_session(session.id)
        assert ended.end_reason == "detached"
        assert runc_containers(agent.config.ops.dir) == []
        records = list(json.loads(line) for line in (agent.config.audit_dir / "audit.jsonl").read_text().splitlines())
        end = [r for r in records if r["action"] == "ops.session.end"][-1]
        cast = (agent.config.ops.recordings / f"{session.id}.cast").read_bytes()
        assert end["params"]["sha256"] == hashlib.sha256(cast).hexdigest()
        assert b"sleep 500" in cast and b"session end: detached" in cast
        assert verify(agent.config.audit_dir / "audit.jsonl").ok
        await client.aclose()
    finally:
        agent.stop()


async def test_recording_disk_full_refuses_and_ends(fleet: tuple[dict, dict[str, str], Layout], tmp_path: Path) -> None:
    """A small tmpfs for recordings: a session is refused when it could not be recorded, and a session
    whose recording fills the disk mid-way is ended; nothing half-open remains either way."""
    _, _, layout = fleet
    disk = tmp_path / "small"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)], check=True)
    agent = None
    try:
        # 1: the free-space floor refuses before anything starts.
        agent = second_agent(tmp_path / "a1", layout, recordings=disk, min_free_bytes=1024 * 1024)
        client = NodeClient(agent_target(agent))
        with pytest.raises(NodeError) as refused:
            await client.ops_start(OpsSessionRequest(reason="INC-7 no room"))
        assert refused.value.status == 503 and "cannot be recorded" in refused.value.detail
        assert runc_containers(agent.config.ops.dir) == [] and not any(disk.iterdir())
        await client.aclose()
        agent.stop()

        # 2: a full disk, no floor: the header cannot be written, so nothing starts.
        filler = disk / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as handle:
            handle.write(b"x" * (1024 * 1024))
        agent = second_agent(tmp_path / "a2", layout, recordings=disk, min_free_bytes=0)
        client = NodeClient(agent_target(agent))
        with pytest.raises(NodeError) as full:
            await client.ops_start(OpsSessionRequest(reason="INC-7 disk full"))
        assert full.value.status == 503 and "No space left" in full.value.detail
        assert runc_containers(agent.config.ops.dir) == []
        assert not any((agent.config.ops.dir / "sessions").glob("*"))

        # 3: room for the start only: output fills the disk and the session ends, recording sealed as it is.
        filler.write_bytes(b"x" * (400 * 1024))
        session = await client.ops_start(OpsSessionRequest(reason="INC-7 fills up", ttl_seconds=120))
        driver = Driver(OpsShell(agent_target(agent), session.id))
        await driver.expect(PROMPT)
        await driver.shell.send(b"head -c 3000000 /dev/zero | od -v | head -c 2000000\r")
        end = await driver.finished(timeout=60)
        assert isinstance(end, Exit) and end.reason.startswith("recording failed"), end
        assert runc_containers(agent.config.ops.dir) == []
        records = [json.loads(line) for line in (agent.config.audit_dir / "audit.jsonl").read_text().splitlines()]
        last = [r for r in records if r["action"] == "ops.session.end"][-1]
        assert last["params"]["end_reason"].startswith("recording failed") and last["params"]["sha256"]
        assert verify(agent.config.audit_dir / "audit.jsonl").ok
        await client.aclose()
    finally:
        if agent is not None:
            agent.stop()
        subprocess.run(["umount", str(disk)], check=False)


async def test_reserve_makes_room_for_a_shell_on_a_full_disk(
    fleet: tuple[dict, dict[str, str], Layout], tmp_path: Path
) -> None:
    """A full /var is when the shell is needed most: the agent keeps a reserve file beside the recordings
    and gives it up for a session when the disk is full, says so in the audit log, and keeps it again
    once there is room."""
    _, _, layout = fleet
    disk = tmp_path / "small"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    agent = None
    try:
        agent = second_agent(tmp_path / "a", layout, recordings=disk, min_free_bytes=256 * 1024,
                             reserve_bytes=1024 * 1024)  # fmt: skip
        reserve = disk / ".reserve"
        assert reserve.stat().st_size == 1024 * 1024
        filler = disk / "filler"
        with contextlib.suppress(OSError), filler.open("ab", buffering=0) as handle:
            while True:
                handle.write(b"x" * 65536)
        assert shutil.disk_usage(disk).free < 256 * 1024

        client = NodeClient(agent_target(agent))
        with pytest.raises(NodeError) as refused:  # this agent's config does not allow a writable /host
            await client.ops_start(OpsSessionRequest(reason="INC-9 /var full", access=OpsAccess.writable))
        assert refused.value.status == 403 and "does not allow writable shells" in refused.value.detail
        assert reserve.exists()  # a refusal for another reason keeps the reserve
        session = await client.ops_start(OpsSessionRequest(reason="INC-9 /var full", ttl_seconds=120))
        assert not reserve.exists()
        driver = Driver(OpsShell(agent_target(agent), session.id))
        await driver.expect(PROMPT)
        await driver.shell.send(b"echo room-$((40+2))\r")
        await driver.expect(b"room-42")
        filler.unlink()  # the person frees the disk
        await driver.shell.send(b"exit\r")
        await driver.finished()
        records = [json.loads(line) for line in (agent.config.audit_dir / "audit.jsonl").read_text().splitlines()]
        start = [r for r in records if r["action"] == "ops.session.start"][-1]
        assert start["params"]["reserve_released"] is True
        cast = (disk / f"{session.id}.cast").read_bytes()
        assert b"room-42" in cast
        deadline = time.monotonic() + 10
        while not reserve.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert reserve.stat().st_size == 1024 * 1024
        await client.aclose()
    finally:
        if agent is not None:
            await asyncio.to_thread(agent.stop)
        subprocess.run(["umount", str(disk)], check=False)


def test_agent_killed_mid_session(node1: tuple[dict, Layout, httpx.Client]) -> None:
    """SIGKILL the lab agent with a session open: its restart tears the container down, seals the
    recording as interrupted, and the audit chain still verifies."""
    _, layout, http = node1
    answer = http.post(routes.OPS_SESSIONS, json={"reason": "INC-8 agent dies", "ttl_seconds": 300})
    assert answer.status_code == 201, answer.text
    session_id = answer.json()["id"]
    ops_dir = layout.node("node1").ops_dir
    assert f"lifsea-ops-{session_id}" in runc_containers(ops_dir)
    os.kill(int((layout.node("node1").root / "agent.pid").read_text()), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, "the agent did not come back"
        try:
            records = audit_records(http)
            if any(r["action"] == "ops.session.end" and r["params"].get("session") == session_id for r in records):
                break
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    end = next(r for r in records if r["action"] == "ops.session.end" and r["params"].get("session") == session_id)
    assert end["outcome"].startswith("interrupted") and end["params"]["sha256"]
    assert f"lifsea-ops-{session_id}" not in runc_containers(ops_dir)
    assert not (ops_dir / "sessions" / session_id).exists()
    listing = http.get(routes.RECORDINGS).json()["recordings"]
    sealed = next(r for r in listing if r["id"] == session_id)
    assert sealed["sha256"] == end["params"]["sha256"] and sealed["end_reason"].startswith("interrupted")
    assert http.get(routes.AUDIT_VERIFY).json()["ok"]


async def test_agent_shutdown_ends_sessions_and_input_can_be_recorded(
    fleet: tuple[dict, dict[str, str], Layout], tmp_path: Path
) -> None:
    _, _, layout = fleet
    agent = second_agent(tmp_path / "agent", layout, record_input=True)
    stopped = False
    try:
        client = NodeClient(agent_target(agent))
        session = await client.ops_start(OpsSessionRequest(reason="INC-9 shutdown", ttl_seconds=300))
        driver = Driver(OpsShell(agent_target(agent), session.id))
        await driver.expect(PROMPT)
        await driver.run("echo typed-keys", "DONE-K")
        assert runc_containers(agent.config.ops.dir) == [f"lifsea-ops-{session.id}"]
        await client.aclose()
        await asyncio.to_thread(agent.stop)  # off this loop: the client must answer the close handshake
        stopped = True
        end = await driver.finished(timeout=20)
        # The server closes connections (1012) before its shutdown ends the sessions: no exit message.
        assert isinstance(end, Closed) and end.code == 1012 and "stopping" in end.reason, end
        assert runc_containers(agent.config.ops.dir) == []
        records = [json.loads(line) for line in (agent.config.audit_dir / "audit.jsonl").read_text().splitlines()]
        last = [r for r in records if r["action"] == "ops.session.end"][-1]
        assert last["params"]["end_reason"] == "agent shutdown" and last["params"]["sha256"]
        events = [
            json.loads(line)
            for line in (agent.config.ops.recordings / f"{session.id}.cast").read_text().splitlines()[1:]
        ]
        typed = "".join(e[2] for e in events if e[1] == "i")
        assert "echo typed-keys" in typed
    finally:
        if not stopped:
            agent.stop()


# Every way the review found, and more, for a shell in the node's namespaces to write the node: each
# prints "PROBE name rc=N" (0: it worked).
PROBES = r"""
p(){ name=$1; shift; "$@" >/dev/null 2>&1; echo "PROBE $name rc=$?"; }
p proc-root touch /proc/1/root/var/lifsea-escape-TOKEN
p audit-dir ls /proc/1/root/var/lib/lifsea-agent/audit
p audit-log touch /host/var/lib/lifsea-agent/audit/probe-TOKEN
p host-var touch /host/var/lifsea-probe-TOKEN
p host-etc touch /host/etc/lifsea-probe-TOKEN
p host-usr touch /host/usr/lifsea-probe-TOKEN
p nested-mount touch /host/var/lifsea-nested/probe-TOKEN
p kill-node sh -c 'kill -0 $(pgrep -o -x cron)'
p kill-init kill -0 1
p ptrace-read cat /proc/1/environ
p mount mount -t tmpfs none /mnt
p remount mount -o remount,rw /host
p net-change ip addr add 10.253.0.1/32 dev lo
p sysctl sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
p hostname hostname lifsea-evil
p user-ns unshare -Ur true
p nsenter nsenter -t 1 -m true
p sysrq sh -c 'echo h > /proc/sysrq-trigger'
p cgroup mkdir /sys/fs/cgroup/cpu/lifsea-probe-TOKEN
p sysfs sh -c 'cat /sys/kernel/mm/ksm/run > /sys/kernel/mm/ksm/run'
p reads-node sh -c 'cat /host/etc/shadow && ps -e -o pid=,comm= | grep -q "^ *1 systemd$" && ip addr show lo'
p own-child sh -c 'sleep 30 & kill $!'
"""
WRITES = {"proc-root", "audit-dir", "audit-log", "host-var", "host-etc", "host-usr", "nested-mount", "kill-node",
          "kill-init", "ptrace-read", "mount", "remount", "net-change", "sysctl", "hostname", "user-ns", "nsenter",
          "sysrq", "cgroup", "sysfs"}  # fmt: skip
# What each level promises can work; everything else in WRITES must be refused at that level.
ALLOWED = {
    OpsAccess.read_only: set(),
    OpsAccess.debug: {"proc-root", "audit-dir", "kill-node", "kill-init", "ptrace-read", "net-change"},
    OpsAccess.writable: {"proc-root", "audit-dir", "audit-log", "kill-node", "kill-init", "ptrace-read", "net-change",
                         "host-var", "host-etc", "nested-mount"},
}  # fmt: skip


@pytest.mark.parametrize("access", list(OpsAccess))
async def test_each_access_level_is_the_boundary_it_names(
    node1: tuple[dict, Layout, httpx.Client], access: OpsAccess
) -> None:
    """A read-only shell once wrote the node through /proc/1/root (the audit log included), signalled and
    traced its processes, and left mounts under /host writable. Each level is tried against every write
    path; the session record and the audit log name the level."""
    node, layout, http = node1
    machine = layout.node("node1")
    var = sysroot.stateroot_var(machine.sysroot)
    token = os.urandom(4).hex()
    nested = var / "lifsea-nested"
    nested.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(nested)], check=True)  # a mount under /var
    log = var / "lib" / "lifsea-agent" / "audit" / "audit.jsonl"
    log_before = log.read_bytes()
    client = NodeClient(target(node))
    try:
        session = await client.ops_start(
            OpsSessionRequest(reason=f"INC-11 probe {access.value}", ttl_seconds=300, access=access)
        )
        assert session.access == access
        driver = Driver(OpsShell(target(node), session.id, cols=200, rows=50))
        await driver.expect(PROMPT)
        greeting = bytes(driver.output).decode(errors="replace")
        assert {"read-only": "READ-ONLY", "debug": "DEBUG", "writable": "WRITABLE"}[access.value] in greeting
        out = await driver.run(PROBES.replace("TOKEN", token).strip().replace("\n", "\r"), "PROBES-DONE", 90)
        results = {m.group(1): int(m.group(2)) for m in re.finditer(r"PROBE (\S+) rc=(\d+)", out)}
        assert set(results) == WRITES | {"reads-node", "own-child"}, out[-2000:]
        assert results["reads-node"] == 0 and results["own-child"] == 0, out[-2000:]
        worked = {name for name in WRITES if results[name] == 0}
        assert worked == ALLOWED[access], f"{access.value}: worked {sorted(worked)}; promised {sorted(ALLOWED[access])}"
        await driver.shell.send(b"exit\r")
        await driver.finished()
    finally:
        await client.aclose()
        etc = machine.host_root / "etc"
        for leftover in (var / f"lifsea-escape-{token}", var / f"lifsea-probe-{token}", log.parent / f"probe-{token}"):
            leftover.unlink(missing_ok=True)
        (etc / f"lifsea-probe-{token}").unlink(missing_ok=True)
        subprocess.run(["umount", str(nested)], check=False)
        nested.rmdir()
        leader = str(machine.state()["leader"])
        subprocess.run(["nsenter", f"--target={leader}", "--net", "ip", "addr", "del", "10.253.0.1/32", "dev", "lo"],
                       capture_output=True)  # fmt: skip
    if access == OpsAccess.read_only:
        assert not (var / f"lifsea-escape-{token}").exists()
        assert log.read_bytes().startswith(log_before) and not (log.parent / f"probe-{token}").exists()
    started = next(r for r in audit_records(http) if r["action"] == "ops.session.start"
                   and r["params"].get("session") == session.id)  # fmt: skip
    assert started["params"]["access"] == access.value
