"""What a caller can cost a real agent over real TLS: anonymous floods, streams held, slow headers,
plain HTTP off loopback, a long audit log. Each test names what an attacker did before the bound."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from lifsea_tui.agent.audit import LOG_NAME, canonical, record_hash
from lifsea_tui.agent.config import ConfigError, LimitsConfig, load
from lifsea_tui.api import routes
from tests.helpers import RunningAgent, TinyNode, issue_pki, kill_agent, serve_agent, start_agent, write_agent_config


@pytest.fixture
def bounded(tmp_path: Path, tiny_node: TinyNode) -> Iterator[RunningAgent]:
    limits = LimitsConfig(
        refusal_summary_seconds=1.0, event_streams_per_caller=3, event_streams=5,
        connections_per_peer=40, header_timeout=2.0,
    )  # fmt: skip
    running = start_agent(
        tmp_path / "agent", host_root=tiny_node.host_root, sysroot_path=tiny_node.sysroot, limits=limits
    )
    yield running
    running.stop()


def records(agent: RunningAgent) -> list[dict]:
    with httpx.Client(base_url=agent.url, verify=agent.ssl_context(), headers=agent.headers("auditor")) as http:
        return http.get(routes.AUDIT, params={"limit": 1000}).json()["records"]


def test_anonymous_refusals_are_counted_not_written_one_by_one(bounded: RunningAgent) -> None:
    """300 anonymous POSTs once added 300 fsync'd records in 0.4 s: a way to fill /var from outside."""

    def others() -> list[dict]:
        return [r for r in records(bounded) if r["action"] != "refusals.summary"]

    before = len(others())
    started = time.monotonic()
    with httpx.Client(base_url=bounded.url, verify=bounded.ssl_context()) as http:
        for index in range(300):
            headers = {"Authorization": "Bearer wrong"} if index % 2 else {}
            assert http.post(routes.ROLLBACK, json={"reason": "flood"}, headers=headers).status_code == 401
    seconds = time.monotonic() - started
    assert len(others()) == before  # nothing written per refusal
    deadline = time.monotonic() + 10
    while True:
        summaries = [r for r in records(bounded) if r["action"] == "refusals.summary"]
        if sum(s["params"]["count"] for s in summaries) >= 300:
            break
        assert time.monotonic() < deadline, "the summaries do not count every refusal"
        time.sleep(0.2)
    assert sum(s["params"]["count"] for s in summaries) == 300
    assert len(summaries) <= seconds + 3  # one a second (the interval here), whatever the flood
    assert sum(s["params"]["by_what"]["POST /v1/rollback"] for s in summaries) == 300
    assert sum(s["params"]["by_peer"]["127.0.0.1"] for s in summaries) == 300
    with httpx.Client(base_url=bounded.url, verify=bounded.ssl_context(), headers=bounded.headers("reader")) as http:
        http.post(routes.ROLLBACK, json={"reason": "one role short"})
    last = records(bounded)[-1]
    assert last["actor"] == "reader-user" and last["outcome"].startswith("refused")  # still one by one


def test_event_streams_are_limited_per_caller_and_in_all(bounded: RunningAgent) -> None:
    url = bounded.url.replace("https://", "wss://") + routes.EVENTS

    async def stream(role: str) -> tuple[websockets.ClientConnection, int | None]:
        connection = await websockets.connect(url, ssl=bounded.ssl_context(), additional_headers=bounded.headers(role))
        try:
            first = json.loads(await asyncio.wait_for(connection.recv(), 5))
            assert first["kind"] == "hello"
            return connection, None
        except websockets.ConnectionClosed:
            return connection, connection.close_code

    async def scenario() -> list[int | None]:
        opened = [await stream("reader") for _ in range(4)] + [await stream("operator") for _ in range(3)]
        codes = [code for _, code in opened]
        for connection, _ in opened:
            await connection.close()
        await asyncio.sleep(0.3)
        again, code = await stream("reader")  # freed when closed
        await again.close()
        return [*codes, code]

    codes = asyncio.run(scenario())
    assert codes == [None, None, None, routes.CLOSE_TOO_MANY, None, None, routes.CLOSE_TOO_MANY, None]
    refused = [r for r in records(bounded) if r["action"] == "events" and r["outcome"].startswith("refused")]
    assert [r["actor"] for r in refused] == ["reader-user", "operator-user"]
    assert "at most 3" in refused[0]["outcome"] and "limit" in refused[1]["outcome"]


def _slow_header_connection(agent: RunningAgent) -> ssl.SSLSocket:
    port = int(agent.url.rsplit(":", 1)[1])
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    tls = agent.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1")
    tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    return tls


def _closed_by_server(connection: ssl.SSLSocket, within: float) -> bool:
    connection.settimeout(within)
    try:
        return connection.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_slow_headers_are_cut_off_and_connections_are_capped_per_peer(bounded: RunningAgent) -> None:
    """200 slow-header TLS connections were all still open after 75 s."""
    slow = [_slow_header_connection(bounded) for _ in range(30)]
    try:
        started = time.monotonic()
        with httpx.Client(base_url=bounded.url, verify=bounded.ssl_context()) as http:
            assert http.get(routes.HEALTHZ).status_code == 200  # the agent still answers others
        assert all(_closed_by_server(c, 6) for c in slow)
        assert time.monotonic() - started < 8
    finally:
        for connection in slow:
            connection.close()
    more = []
    try:
        for _ in range(45):
            try:
                more.append(_slow_header_connection(bounded))
            except OSError:
                more.append(None)  # type: ignore[arg-type]
        refused = sum(1 for c in more if c is None or _closed_by_server(c, 0.5))
        assert refused >= 5  # over 40 from one peer address: closed at once
    finally:
        for connection in more:
            if connection is not None:
                connection.close()


def test_plain_http_is_for_loopback_only(tmp_path: Path, tiny_node: TinyNode) -> None:
    path, _ = write_agent_config(tmp_path, host_root=tiny_node.host_root, sysroot_path=tiny_node.sysroot)
    text = path.read_text()
    plain = text[: text.index("[tls]")] + text[text.index("[audit]") :]
    path.write_text(plain)
    assert load(path, {}).listen_host == "127.0.0.1"  # loopback: allowed
    for host in ("0.0.0.0", "10.0.0.7", "::", "node.example"):
        with pytest.raises(ConfigError, match="loopback"):
            load(path, {"listen_host": host})
    served = subprocess.run(
        [sys.executable, "-m", "lifsea_tui.agent.cli", "serve", "--config", str(path), "--listen", "0.0.0.0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert served.returncode == 2 and "loopback" in served.stderr


@pytest.mark.parametrize(
    ("written", "typo", "said"),
    [
        ("[listen]", "[listn]", "unknown key listn at the top level"),
        ('node_name = "tiny"', 'nodename = "tiny"', "unknown key nodename at the top level"),
        ("[paths]\n", "[paths]\nhostroot = '/host'\n", "unknown key hostroot in [paths]"),
        ("[tls]\n", "[tls]\nclient-ca = '/x.pem'\n", "unknown key client-ca in [tls]"),
        ("[[tokens]]\n", "[[tokens]]\nsha = '00'\n", "unknown key sha in [[tokens]]"),
        ("[audit]\n", "[ops]\nttl = 5\n[audit]\n", "[ops]: unknown keys ttl"),
    ],
)
def test_a_typo_in_the_config_is_an_error_naming_the_file_and_the_key(
    tmp_path: Path, tiny_node: TinyNode, written: str, typo: str, said: str
) -> None:
    """Before, an unknown key or section was silently ignored: `[listn]` left the agent on its defaults."""
    path, _ = write_agent_config(tmp_path, host_root=tiny_node.host_root, sysroot_path=tiny_node.sysroot)
    assert load(path, {}).node_name == "tiny"
    path.write_text(path.read_text().replace(written, typo, 1))
    with pytest.raises(ConfigError) as refused:
        load(path, {})
    assert str(refused.value).startswith(f"{path}: ") and said in str(refused.value), refused.value
    served = subprocess.run(
        [sys.executable, "-m", "lifsea_tui.agent.cli", "serve", "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert served.returncode == 2 and str(path) in served.stderr and said in served.stderr, served.stderr


def test_a_certificate_that_does_not_match_its_key_is_an_error_naming_both(tmp_path: Path, tiny_node: TinyNode) -> None:
    path, _ = write_agent_config(tmp_path, host_root=tiny_node.host_root, sysroot_path=tiny_node.sysroot)
    _, _, other_key = issue_pki(tmp_path / "other", "other")
    text = path.read_text()
    key = next(line.split('"')[1] for line in text.splitlines() if line.startswith("key = "))
    path.write_text(text.replace(key, str(other_key)))
    with pytest.raises(ConfigError, match="the key does not match the certificate") as refused:
        load(path, {})
    assert str(other_key) in str(refused.value) and str(path) in str(refused.value)
    path.write_text(text.replace(key, str(tmp_path / "gone.key")))
    with pytest.raises(ConfigError, match=r"gone\.key: no such file"):
        load(path, {})


def _long_log(directory: Path, count: int) -> None:
    """A chained log of `count` records, written at once (the agent would fsync each: minutes)."""
    directory.mkdir(parents=True, exist_ok=True)
    prev = "0" * 64
    with (directory / LOG_NAME).open("wb") as handle:
        for seq in range(count):
            action, params = ("reboot", {"checksum": "c" * 64}) if seq % 1000 == 0 else ("debug.finding", {"n": seq})
            fields = {
                "seq": seq, "time": "2026-12-01T00:00:00.000000Z", "node": "tiny", "actor": "alice",
                "role": "operator", "action": action, "reason": f"step {seq}", "params": params,
                "outcome": "ok", "prev": prev,
            }  # fmt: skip
            fields["hash"] = prev = record_hash(fields)
            handle.write(canonical(fields) + b"\n")


def test_a_long_audit_log_never_stalls_the_agent(tmp_path: Path, tiny_node: TinyNode) -> None:
    """200,000 records: history and audit pages once parsed the whole log on the event loop (5.4 s,
    /healthz stalled 4.2 s)."""
    _long_log(tmp_path / "agent" / "audit", 200_000)
    agent = start_agent(tmp_path / "agent", host_root=tiny_node.host_root, sysroot_path=tiny_node.sysroot)
    stalls: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=agent.url, verify=agent.ssl_context()) as http:
            while not stop.is_set():
                started = time.monotonic()
                http.get(routes.HEALTHZ)
                stalls.append(time.monotonic() - started)
                time.sleep(0.02)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        with httpx.Client(
            base_url=agent.url, verify=agent.ssl_context(), headers=agent.headers("reader"), timeout=30
        ) as http:
            started = time.monotonic()
            for _ in range(5):
                page = http.get(routes.AUDIT, params={"limit": 100}).json()
                older = http.get(routes.AUDIT, params={"before": 1000, "limit": 10}).json()
                history = http.get(routes.HISTORY).json()["entries"]
            elapsed = (time.monotonic() - started) / 5
    finally:
        stop.set()
        prober.join()
        agent.stop()
    assert page["head_seq"] >= 199_999  # and the agent's own records (it saw the node booted) after them
    assert [r["seq"] for r in page["records"]][-1] == page["head_seq"] and len(page["records"]) == 100
    assert [r["seq"] for r in older["records"]] == list(range(990, 1000))
    assert sum(1 for e in history if e["event"] == "rebooted") == 200
    assert elapsed < 1.0, f"{elapsed:.2f} s for a page, an older page and the history"
    assert max(stalls) < 0.5, f"/healthz waited {max(stalls):.2f} s"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_an_open_connection_costs_the_agent_kilobytes_not_a_quarter_megabyte(
    tmp_path: Path, tiny_node: TinyNode
) -> None:
    """Every console, controller and collector holds a TLS connection to each node, and an anonymous
    caller may hold up to the per-peer limit: asyncio's TLS transport gave each a 256 KiB read buffer,
    allocated and zeroed. 50 connections, each past its handshake and one request, must cost the agent
    far less than 50 such buffers (12.5 MiB)."""
    path, info = write_agent_config(tmp_path, host_root=tiny_node.host_root, sysroot_path=tiny_node.sysroot)
    proc = serve_agent(path, info)
    try:
        context = ssl.create_default_context(cafile=str(info["ca"]))
        port = int(info["url"].rsplit(":", 1)[1])
        warm = []
        for _ in range(5):  # the first connections load what every connection uses
            warm.append(context.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1"))
        time.sleep(0.5)
        before = _rss_kib(proc.pid)
        held = []
        for _ in range(50):
            connection = context.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1")
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n")
            assert connection.recv(4096).startswith(b"HTTP/1.1 200")
            held.append(connection)
        grown = _rss_kib(proc.pid) - before
        assert grown < 50 * 100, f"{grown} KiB for 50 connections"
        for connection in held + warm:
            connection.close()
    finally:
        kill_agent(proc)


def test_the_agent_sends_no_session_tickets(tmp_path: Path, tiny_node: TinyNode) -> None:
    """TLS 1.3 tickets cost every client memory (kept with the agent's certificate chain) for resumptions
    no client of the agent makes: a console on 1,000 nodes held 15 MB of them. The agent sends none."""
    path, info = write_agent_config(tmp_path, host_root=tiny_node.host_root, sysroot_path=tiny_node.sysroot)
    proc = serve_agent(path, info)
    try:
        context = ssl.create_default_context(cafile=str(info["ca"]))
        port = int(info["url"].rsplit(":", 1)[1])
        with context.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n")
            assert tls.recv(4096).startswith(b"HTTP/1.1 200")  # tickets, if any, came before the answer
            assert tls.version() == "TLSv1.3"
            assert tls.session is None or not tls.session.has_ticket
    finally:
        kill_agent(proc)
