"""The agent over real TLS on loopback, on a real ostree sysroot: auth, rules, bad input, upgrades, events."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import websockets
from starlette.routing import WebSocketRoute

from lifsea_tui.agent.audit import verify
from lifsea_tui.agent.auth import RULES
from lifsea_tui.api import routes
from lifsea_tui.lab import image, sysroot
from tests.helpers import RunningAgent, TinyNode


def client(agent: RunningAgent, role: str | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=agent.url, verify=agent.ssl_context(), timeout=30, headers=agent.headers(role) if role else {}
    )


def audit_records(agent: RunningAgent) -> list[dict]:
    with client(agent, "reader") as http:
        return http.get(routes.AUDIT, params={"limit": 1000}).json()["records"]


def all_routes(routes: list) -> Iterator:
    """The app's routes, those of its included routers too (FastAPI keeps those apart)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        yield from all_routes(inner.routes) if inner is not None else [route]


def test_every_route_has_a_rule(agent: RunningAgent) -> None:
    """Walks the app's whole surface (every documented operation and every websocket) against RULES."""
    app = agent.app
    seen = set()
    for path, operations in app.openapi()["paths"].items():  # type: ignore[attr-defined]
        for method in operations:
            assert (method.upper(), path) in RULES, f"{method.upper()} {path} has no rule"
            seen.add((method.upper(), path))
    for route in all_routes(app.routes):  # type: ignore[attr-defined]
        if isinstance(route, WebSocketRoute):
            assert ("WS", route.path) in RULES, f"websocket {route.path} has no rule"
            seen.add(("WS", route.path))
    assert {("GET", routes.NODE), ("POST", routes.ROLLBACK), ("WS", routes.EVENTS)} <= seen
    assert len(seen) == len(RULES) - 1  # all but /openapi.json itself, which is not an operation


def test_route_without_rule_is_refused(agent: RunningAgent) -> None:
    from lifsea_tui.agent.auth import Authenticator, AuthError, Identity
    from lifsea_tui.api import Role

    with pytest.raises(AuthError) as refused:
        Authenticator.authorize("DELETE", "/v1/anything", Identity("root", Role.admin))
    assert refused.value.status == 403


def test_tls_is_real(agent: RunningAgent) -> None:
    with httpx.Client(base_url=agent.url, verify=True) as untrusting, pytest.raises(httpx.ConnectError):
        untrusting.get(routes.HEALTHZ)
    with client(agent) as http:
        assert http.get(routes.HEALTHZ).text == "ok\n"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": "Basic abc"}, 401),
    ],
)
def test_missing_or_bad_token(agent: RunningAgent, headers: dict, status: int) -> None:
    with client(agent) as http:
        response = http.get(routes.DEPLOYMENTS, headers=headers)
    assert response.status_code == status
    assert response.json()["error"] == "unauthorized"


def test_wrong_role_is_refused_and_audited(agent: RunningAgent) -> None:
    with client(agent, "reader") as http:
        response = http.post(routes.ROLLBACK, json={"reason": "try"})
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    last = audit_records(agent)[-1]
    assert last["actor"] == "reader-user" and last["outcome"].startswith("refused")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "JSON"),
        (b'{"reason": ""}', "reason"),
        (b'{"reason": "   "}', "reason"),
        (b'{"reason": 5}', "reason"),
        (b'{"reason": "ok", "force": true}', "force"),
        (b"[]", ""),
    ],
)
def test_malformed_bodies(agent: RunningAgent, body: bytes, fragment: str) -> None:
    before = audit_records(agent)
    with client(agent, "operator") as http:
        response = http.post(routes.UPGRADES_CHECK, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "bad_request"
    assert fragment in response.json()["detail"]
    after = audit_records(agent)
    assert len(after) == len(before) + 1
    assert after[-1]["outcome"].startswith("refused") and after[-1]["actor"] == "operator-user"
    with client(agent, "reader") as http:
        assert http.get(routes.UPGRADES).json()["state"] == "idle"


def test_oversize_body(agent: RunningAgent) -> None:
    with client(agent, "operator") as http:
        response = http.post(routes.UPGRADES_CHECK, json={"reason": "x" * 100_000})
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


def test_unknown_route_is_json(agent: RunningAgent) -> None:
    with client(agent, "reader") as http:
        response = http.get("/v1/nope")
    assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_wrong_state_actions(agent: RunningAgent) -> None:
    with client(agent, "operator") as http:
        for path, words in (
            (routes.UPGRADES_STAGE, "check first"),
            (routes.UPGRADES_CANCEL, "no pending"),
            (routes.ROLLBACK, "no rollback"),
        ):
            response = http.post(path, json={"reason": "on-call test"})
            assert response.status_code == 409, (path, response.text)
            assert words in response.json()["detail"]
    refusals = [r for r in audit_records(agent) if r["outcome"].startswith("refused")]
    assert len(refusals) == 3


def test_check_stage_cancel_on_real_ostree(agent: RunningAgent, tiny_node: TinyNode) -> None:
    image.publish(tiny_node.repo, "1.1", "LifseaOS 1.1: better")
    image.publish(tiny_node.repo, "1.2", "LifseaOS 1.2: best")
    with client(agent, "operator") as http:
        checked = http.post(routes.UPGRADES_CHECK, json={"reason": "weekly update"})
        assert checked.status_code == 200, checked.text
        status = checked.json()["status"]
        assert status["state"] == "available"
        assert [(t["version"], t["subject"]) for t in status["targets"]] == [
            ("1.2", "LifseaOS 1.2: best"),
            ("1.1", "LifseaOS 1.1: better"),
        ]
        target = status["targets"][0]
        assert "lifsea-release 1.2" in target["diff"]["packages_added"]
        assert target["diff"]["added"] >= 1 and target["diff"]["modified"] >= 1
        staged = http.post(routes.UPGRADES_STAGE, json={"reason": "weekly update"})
        assert staged.status_code == 202
        deadline = time.monotonic() + 60
        while http.get(routes.UPGRADES).json()["state"] != "staged":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        deployments = http.get(routes.DEPLOYMENTS).json()["deployments"]
        assert [(d["version"], d["pending"], d["booted"]) for d in deployments] == [
            ("1.2", True, False),
            ("1.0", False, True),
        ]
        again = http.post(routes.UPGRADES_STAGE, json={"reason": "twice"})
        assert again.status_code == 409
        cancelled = http.post(routes.UPGRADES_CANCEL, json={"reason": "not tonight"})
        assert cancelled.status_code == 200, cancelled.text
        deployments = http.get(routes.DEPLOYMENTS).json()["deployments"]
        assert [d["version"] for d in deployments] == ["1.0"]
        history = http.get(routes.HISTORY).json()["entries"]
    events = [(e["event"], e["version"], e["actor"]) for e in history]
    assert ("deployed", "1.2", "operator-user") in events and ("undeployed", "1.2", "operator-user") in events
    outcomes = [(r["action"], r["outcome"], r["reason"]) for r in audit_records(agent)]
    assert ("upgrade.stage", "started", "weekly update") in outcomes
    assert ("upgrade.stage", "ok", "weekly update") in outcomes
    assert ("upgrade.cancel", "ok", "not tonight") in outcomes
    assert verify(agent.config.audit_dir / "audit.jsonl").ok


def _blackhole() -> tuple[socket.socket, str]:
    """A TCP port that accepts and never answers: an update server that hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_update_server_down_gives_503_and_the_rest_keeps_serving(agent: RunningAgent, tiny_node: TinyNode) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    sysroot.set_remote(tiny_node.sysroot, f"http://127.0.0.1:{dead_port}")
    with client(agent, "operator") as http:
        response = http.post(routes.UPGRADES_CHECK, json={"reason": "check"})
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["error"] == "update_server_unavailable"
        assert "127.0.0.1" in body["detail"] or "connect" in body["detail"].lower()
        status = http.get(routes.UPGRADES).json()
        assert status["state"] == "failed" and status["last_error"]
        assert http.get(routes.DEPLOYMENTS).status_code == 200
    assert audit_records(agent)[-1]["outcome"].startswith("failed")


def test_one_operation_at_a_time(agent: RunningAgent, tiny_node: TinyNode) -> None:
    listener, url = _blackhole()
    sysroot.set_remote(tiny_node.sysroot, url)
    results: dict[str, httpx.Response] = {}

    def slow_check() -> None:
        with client(agent, "operator") as http:
            results["check"] = http.post(routes.UPGRADES_CHECK, json={"reason": "slow"}, timeout=60)

    worker = threading.Thread(target=slow_check)
    worker.start()
    try:
        with client(agent, "operator") as http:
            deadline = time.monotonic() + 10
            while http.get(routes.UPGRADES).json()["state"] != "checking":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            second = http.post(routes.ROLLBACK, json={"reason": "meanwhile"})
            assert second.status_code == 423
            assert "check is in progress" in second.json()["detail"]
            assert http.get(routes.NODE).status_code == 200  # reads are never blocked
    finally:
        listener.close()
        worker.join(60)
    assert results["check"].status_code in (502, 503)


def test_events_push_update_state(agent: RunningAgent, tiny_node: TinyNode) -> None:
    image.publish(tiny_node.repo, "1.1")

    async def scenario() -> list[dict]:
        url = agent.url.replace("https://", "wss://") + routes.EVENTS
        async with websockets.connect(
            url, ssl=agent.ssl_context(), additional_headers=agent.headers("reader")
        ) as socket_:
            hello = json.loads(await socket_.recv())
            assert hello["kind"] == "hello" and hello["data"]["node"] == "tiny"
            async with httpx.AsyncClient(
                base_url=agent.url, verify=agent.ssl_context(), headers=agent.headers("operator")
            ) as http:
                response = await http.post(routes.UPGRADES_CHECK, json={"reason": "events"})
                assert response.status_code == 200
            seen = []
            while not any(e["kind"] == "update" and e["data"]["state"] == "available" for e in seen):
                seen.append(json.loads(await asyncio.wait_for(socket_.recv(), 10)))
            return seen

    seen = asyncio.run(scenario())
    states = [e["data"]["state"] for e in seen if e["kind"] == "update"]
    assert "checking" in states and states[-1] == "available"


def test_events_refuse_without_token(agent: RunningAgent) -> None:
    async def scenario() -> int | None:
        url = agent.url.replace("https://", "wss://") + routes.EVENTS
        async with websockets.connect(url, ssl=agent.ssl_context()) as socket_:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await socket_.recv()
            return closed.value.rcvd.code if closed.value.rcvd else None

    assert asyncio.run(scenario()) == routes.CLOSE_UNAUTHORIZED


def test_stage_an_older_target(agent: RunningAgent, tiny_node: TinyNode) -> None:
    """Two releases are new; staging the older one fetches its tree (a check only fetched its metadata)."""
    image.publish(tiny_node.repo, "1.1")
    image.publish(tiny_node.repo, "1.2")
    with client(agent, "operator") as http:
        targets = http.post(routes.UPGRADES_CHECK, json={"reason": "two new"}).json()["status"]["targets"]
        older = next(t for t in targets if t["version"] == "1.1")
        staged = http.post(routes.UPGRADES_STAGE, json={"reason": "the older one", "checksum": older["checksum"]})
        assert staged.status_code == 202, staged.text
        deadline = time.monotonic() + 60
        while (state := http.get(routes.UPGRADES).json())["state"] != "staged":
            assert state["state"] != "failed", state["last_error"]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        pending = [d for d in http.get(routes.DEPLOYMENTS).json()["deployments"] if d["pending"]]
    assert [(d["version"], d["checksum"]) for d in pending] == [("1.1", older["checksum"])]
    listing = subprocess.run(
        ["ostree", "admin", "status", f"--sysroot={tiny_node.sysroot}"], capture_output=True, text=True, check=True
    ).stdout
    assert "Version: 1.1" in listing


def test_reboot_with_no_bus_is_503_and_audited_as_failed(agent: RunningAgent) -> None:
    """The tiny node has no system bus: nothing can be asked to reboot, so nothing may say it rebooted."""
    with client(agent, "operator") as http:
        response = http.post(routes.REBOOT, json={"reason": "CHG-9 reboot"})
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "unavailable"
    reboots = [r for r in audit_records(agent) if r["action"] == "reboot"]
    assert [r["outcome"].split(":")[0] for r in reboots] == ["started", "failed"]


def test_verify_compares_the_log_with_the_head_the_agent_holds(agent: RunningAgent) -> None:
    with client(agent, "operator") as http:
        for index in range(4):
            http.post(routes.ROLLBACK, json={"reason": f"attempt {index}"})  # refused (409), each audited
        assert http.get(routes.AUDIT_VERIFY).json()["ok"]
        log = agent.config.audit_dir / "audit.jsonl"
        lines = log.read_bytes().splitlines(keepends=True)
        log.write_bytes(b"".join(lines[:-2]))  # what a root shell on the node can do
        result = http.get(routes.AUDIT_VERIFY).json()
        page = http.get(routes.AUDIT, params={"limit": 1000}).json()
    assert not result["ok"] and "removed" in result["problem"]
    assert result["first_bad_seq"] == len(lines) - 2
    assert [r["seq"] for r in page["records"]][-1] == len(lines) - 3  # pages follow the file as it is now
    assert page["head_seq"] == len(lines) - 1  # and the head says what the agent wrote


def test_a_recording_changed_since_sealed_is_refused_and_named(agent: RunningAgent) -> None:
    """The seal is the audit log's: a recording rewritten on the node is not served as the session's record."""
    from lifsea_tui.agent.recording import file_seal

    recordings = agent.config.ops.recordings
    recordings.mkdir(parents=True, exist_ok=True)
    recording = "0123456789abcdef"
    cast = recordings / f"{recording}.cast"
    cast.write_bytes(b'{"version": 2, "width": 80, "height": 24}\n[0.5, "o", "rm -rf /var/lib/x\\r\\n"]\n')
    seal = file_seal(cast)
    agent.app.state.agent.audit.append(  # type: ignore[attr-defined]
        actor="admin-user", role="admin", action="ops.session.end", reason="INC-7",
        params={"session": recording, "recording": recording, "sha256": seal.sha256, "size": seal.size},
        outcome="ok",
    )  # fmt: skip
    with client(agent, "auditor") as http:
        assert http.get(routes.RECORDING.format(recording_id=recording)).status_code == 200
        assert http.get(routes.AUDIT_VERIFY).json()["recordings_checked"] == 1
        cast.write_bytes(b'{"version": 2, "width": 80, "height": 24}\n[0.5, "o", "ls\\r\\n"]\n')
        refused = http.get(routes.RECORDING.format(recording_id=recording))
        listed = http.get(routes.RECORDINGS).json()["recordings"]
        result = http.get(routes.AUDIT_VERIFY).json()
    assert refused.status_code == 409 and refused.json()["error"] == "recording_changed"
    assert [item["sha256"] for item in listed] == [seal.sha256]
    assert not result["ok"] and [b["id"] for b in result["bad_recordings"]] == [recording]
    views = [r for r in audit_records(agent) if r["action"] == "recording.view"]
    assert [v["outcome"].split(":")[0] for v in views] == ["ok", "refused"]


def test_checking_and_staging_report_their_progress(agent: RunningAgent, tiny_node: TinyNode) -> None:
    """A release of 1,500 new files takes a while to pull: the agent says how far it is (libostree's own
    object and byte counts) in update events while the check fetches it (whole: its diff needs the tree),
    then that staging deploys it, then that it is staged."""
    image.publish(tiny_node.repo, "1.1", extra={f"/usr/share/bulk/{n}": f"{n} " * 200 for n in range(1500)})

    async def scenario() -> list[dict]:
        url = agent.url.replace("https://", "wss://") + routes.EVENTS
        async with websockets.connect(url, ssl=agent.ssl_context(), additional_headers=agent.headers("reader")) as ws:
            await ws.recv()  # hello
            async with httpx.AsyncClient(
                base_url=agent.url, verify=agent.ssl_context(), headers=agent.headers("operator"), timeout=60
            ) as http:
                assert (await http.post(routes.UPGRADES_CHECK, json={"reason": "bulk"})).status_code == 200
                assert (await http.post(routes.UPGRADES_STAGE, json={"reason": "bulk"})).status_code == 202
            seen: list[dict] = []
            while not any(e["kind"] == "update" and e["data"]["state"] == "staged" for e in seen):
                seen.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
            return [e["data"] for e in seen if e["kind"] == "update"]

    updates = asyncio.run(scenario())
    pulling = [u["progress"] for u in updates if u["operation"] == "check" and u["progress"]]
    assert pulling and all(p["phase"] == "pulling" for p in pulling), updates
    fetched = [p["fetched"] for p in pulling]
    assert fetched == sorted(fetched) and all(p["fetched"] <= p["requested"] for p in pulling)
    assert pulling[-1]["fetched"] == pulling[-1]["requested"] >= 1500  # every new file is an object
    assert pulling[-1]["bytes_transferred"] > 1500 * 20  # compressed on the wire, but each object costs some
    staging = [u["progress"] for u in updates if u["operation"] == "stage" and u["progress"]]
    # The check fetched it all: nothing left to pull. (The stage's own answer may already see "deploying"
    # when the background work got there first, so the phase can be published twice.)
    assert staging and {p["phase"] for p in staging} == {"deploying"}, staging
    assert updates[-1]["state"] == "staged" and updates[-1]["progress"] is None


def test_shutdown_with_a_websocket_half_closed_still_runs_the_agents_own_shutdown(
    agent: RunningAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client sent its close frame and went quiet (no TLS close_notify): the agent answered and is waiting
    for the connection to go. Stopping the agent then must not try to close it a second time, which raised
    in uvicorn's shutdown and skipped the rest of it: the other connections, and the agent's own shutdown
    (ending and auditing its ops sessions)."""
    from websockets.client import ClientProtocol
    from websockets.http11 import Response
    from websockets.uri import parse_uri

    port = int(agent.url.rsplit(":", 1)[1])
    raw = agent.ssl_context().wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1")
    protocol = ClientProtocol(parse_uri(f"wss://127.0.0.1:{port}{routes.EVENTS}"))
    request = protocol.connect()
    request.headers["Authorization"] = agent.headers("reader")["Authorization"]
    protocol.send_request(request)
    raw.sendall(b"".join(protocol.data_to_send()))
    raw.settimeout(10)
    while not any(isinstance(event, Response) for event in protocol.events_received()):
        protocol.receive_data(raw.recv(65536))
    assert protocol.handshake_exc is None
    protocol.send_close(1000)
    raw.sendall(b"".join(protocol.data_to_send()))
    time.sleep(0.5)  # the agent answers the close and waits for the connection to go

    failures: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))
    agent.server.should_exit = True
    time.sleep(1.0)
    raw.close()
    agent.thread.join(15)
    assert not agent.thread.is_alive()
    assert failures == []
    assert agent.server.lifespan.shutdown_event.is_set()  # the app's own shutdown ran
