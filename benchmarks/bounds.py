"""What a hostile caller costs an agent: the findings of the hardening review, measured again.

An agent runs as its own process (`lifsea-agent serve`, as on a node) on a small real ostree node with
a 200,000-record audit log, and is attacked the ways the review did: 300 anonymous POSTs, 200 event
streams from one reader, 200 TLS connections that never finish their headers, and history and audit
pages read while /healthz is timed. Figures, not assertions: printed, and appended to
benchmarks/results/bounds.jsonl. Run: `python -m benchmarks.bounds` (needs the ostree CLI).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import websockets

from benchmarks.results import recorder
from lifsea_tui.agent.audit import LOG_NAME, canonical, record_hash
from lifsea_tui.api import routes
from tests.helpers import make_tiny_node, write_agent_config

record = recorder("bounds.jsonl")
RECORDS = 200_000


def long_log(directory: Path, count: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    prev = "0" * 64
    with (directory / LOG_NAME).open("wb") as handle:
        for seq in range(count):
            action = "reboot" if seq % 1000 == 0 else "debug.finding"
            fields = {
                "seq": seq, "time": "2026-12-01T00:00:00.000000Z", "node": "tiny", "actor": "alice", "role": "operator",
                "action": action, "reason": f"step {seq}", "params": {"n": seq}, "outcome": "ok", "prev": prev,
            }  # fmt: skip
            fields["hash"] = prev = record_hash(fields)
            handle.write(canonical(fields) + b"\n")


def wait_healthy(url: str, ca: ssl.SSLContext | str) -> None:
    """Until an agent just started answers /healthz."""
    with httpx.Client(base_url=url, verify=ca) as http:
        while True:
            try:
                http.get(routes.HEALTHZ)
                return
            except httpx.TransportError:
                time.sleep(0.05)


def audit_lines(directory: Path) -> int:
    with (directory / LOG_NAME).open("rb") as handle:
        return sum(1 for _ in handle)


def healthz_while(url: str, ca: ssl.SSLContext, stop: threading.Event, samples: list[float]) -> None:
    with httpx.Client(base_url=url, verify=ca) as http:
        while not stop.is_set():
            started = time.monotonic()
            http.get(routes.HEALTHZ)
            samples.append(time.monotonic() - started)
            time.sleep(0.02)


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="lifsea-bounds-"))
    node = make_tiny_node(base / "node")
    config, info = write_agent_config(base / "agent", host_root=node.host_root, sysroot_path=node.sysroot)
    long_log(info["audit"], RECORDS)
    started = time.monotonic()
    agent = subprocess.Popen(
        [sys.executable, "-m", "lifsea_tui.agent.cli", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    ca = ssl.create_default_context(cafile=str(info["ca"]))
    url, tokens = info["url"], info["tokens"]
    try:
        wait_healthy(url, ca)
        start_seconds = time.monotonic() - started
        print(f"agent start with a {RECORDS:,}-record audit log (index built): {start_seconds:.2f} s")
        record("start_with_long_log", seconds=round(start_seconds, 2), records=RECORDS)

        # 1. Anonymous POSTs.
        before = audit_lines(info["audit"])
        started = time.monotonic()
        with httpx.Client(base_url=url, verify=ca) as http:
            for _ in range(300):
                http.post(routes.ROLLBACK, json={"reason": "flood"})
        flood = time.monotonic() - started
        added = audit_lines(info["audit"]) - before
        print(f"300 anonymous POSTs in {flood:.2f} s: {added} audit records written at once (was 300)")
        record("anonymous_flood", seconds=round(flood, 2), records_added=added)

        # 2. Pages and history of the long log while /healthz is timed.
        samples: list[float] = []
        stop = threading.Event()
        prober = threading.Thread(target=healthz_while, args=(url, ca, stop, samples))
        prober.start()
        pages, histories = [], []
        headers = {"Authorization": f"Bearer {tokens['reader']}"}
        with httpx.Client(base_url=url, verify=ca, headers=headers, timeout=60) as http:
            for _ in range(10):
                t = time.monotonic()
                http.get(routes.AUDIT, params={"before": 1000, "limit": 100})
                pages.append(time.monotonic() - t)
                t = time.monotonic()
                http.get(routes.HISTORY)
                histories.append(time.monotonic() - t)
        stop.set()
        prober.join()
        page, history, stall = sorted(pages)[5], sorted(histories)[5], max(samples)
        print(
            f"{RECORDS:,} records: an audit page {page * 1000:.0f} ms, the history {history * 1000:.0f} ms (median); "
            f"/healthz at worst {stall * 1000:.0f} ms meanwhile (was 5.4 s and a 4.2 s stall)"
        )
        record(
            "long_log", page_ms=round(page * 1000), history_ms=round(history * 1000), healthz_max_ms=round(stall * 1000)
        )

        # 3. Event streams from one reader.
        async def streams() -> tuple[int, float]:
            ws_url = url.replace("https://", "wss://") + routes.EVENTS
            opened = []
            for _ in range(200):
                try:
                    connection = await websockets.connect(ws_url, ssl=ca, additional_headers=headers)
                    await asyncio.wait_for(connection.recv(), 5)
                    opened.append(connection)
                except (websockets.ConnectionClosed, OSError, TimeoutError):
                    continue
            held = 0
            for connection in opened:
                try:
                    await asyncio.wait_for(connection.recv(), 0.05)
                except TimeoutError:
                    held += 1
                except websockets.ConnectionClosed:
                    pass
            t = time.monotonic()
            async with httpx.AsyncClient(base_url=url, verify=ca) as http:
                await http.get(routes.HEALTHZ)
            latency = time.monotonic() - t
            for connection in opened:
                await connection.close()
            return held, latency

        held, latency = asyncio.run(streams())
        print(
            f"200 event streams asked by one reader: {held} held (the per-caller limit); "
            f"/healthz {latency * 1000:.0f} ms"
        )
        record("event_streams", asked=200, held=held, healthz_ms=round(latency * 1000))

        # 4. Connections that never finish their headers.
        port = int(url.rsplit(":", 1)[1])
        slow = []
        for _ in range(200):
            try:
                raw = socket.create_connection(("127.0.0.1", port), timeout=5)
                tls = ca.wrap_socket(raw, server_hostname="127.0.0.1")
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                slow.append(tls)
            except OSError:
                continue
        time.sleep(12)  # the header deadline is 10 s
        still_open = 0
        for connection in slow:
            connection.settimeout(0.2)
            try:
                if connection.recv(1):
                    still_open += 1
            except TimeoutError:
                still_open += 1
            except OSError:
                pass
            connection.close()
        print(
            f"200 slow-header TLS connections ({len(slow)} connected): {still_open} still open after 12 s "
            "(was 200 at 75 s)"
        )
        record("slow_headers", opened=len(slow), still_open_after_12s=still_open)
    finally:
        agent.terminate()
        agent.wait(10)
        node.close()
        subprocess.run(["chattr", "-R", "-i", str(base)], capture_output=True)  # ostree's immutable deployments
        subprocess.run(["rm", "-rf", str(base)], check=False)


if __name__ == "__main__":
    main()
