"""Services and logs on a real lab node.

- GET /v1/services with 200 units loaded (extra ones made with systemd-run inside the node): p50 and
  p99 over TLS, against `systemctl list-units` run inside the node in the same run (systemd's own
  client on the same bus).
- A unit writing 5,000 lines a second, followed in the console's logs pane (the real screen, run
  headless): lines it took in per second, lines lost (the unit numbers its lines; a gap is a loss,
  wherever it happened), and the CPU of the agent and of the console; against `journalctl -f` on the
  same unit inside the node (journald's own reader), in the same run.

Prints each figure and appends JSON lines to benchmarks/results/services_logs.jsonl. Run as root:
`python -m benchmarks.services_logs`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchmarks.results import pct, recorder
from lifsea_tui.client.node import NodeTarget
from lifsea_tui.lab import targets
from lifsea_tui.lab.layout import Layout

record = recorder("services_logs.jsonl")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def in_node(leader: int, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", f"--target={leader}", "--mount", "--uts", "--ipc", "--net", "--pid", *argv],
        capture_output=True, text=True, check=True,
    )  # fmt: skip


async def console_follow(target: NodeTarget, unit: str, seconds: float) -> tuple[int, int, float]:
    """The console's logs pane on `unit` for `seconds`: lines it took in, lines missing between the
    first and last number it saw, and the console's CPU seconds (UI and network threads)."""
    from lifsea_tui.client.fleet import Fleet
    from lifsea_tui.tui.app import LifseaApp
    from lifsea_tui.tui.screens.logs import LogsScreen

    app = LifseaApp(Fleet([target]), refresh_interval=3600)
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause(0.5)
        screen = LogsScreen(target.name, unit)
        app.push_screen(screen)
        await pilot.pause(1.0)  # the backlog arrives; counting starts after it

        def taken() -> tuple[int, int]:
            """Entries the pane has taken in so far (those since dropped off its 20,000 too), and the
            number of the newest."""
            numbers = [int(e.message.split()[1]) for e in list(screen.entries)[-50:] if e.message.startswith("line ")]
            return screen.dropped_oldest + len(screen.entries), numbers[-1] if numbers else 0

        first, first_number = taken()
        started_cpu = time.process_time()
        await pilot.pause(seconds)
        cpu = time.process_time() - started_cpu
        last, last_number = taken()
    received = last - first
    return received, (last_number - first_number) - received, cpu


def native_follow(leader: int, unit: str, seconds: float) -> tuple[int, int]:
    """`journalctl -f` on the unit inside the node, for `seconds`: lines read, and lines missing between
    the first and last number read."""
    proc = subprocess.Popen(
        ["nsenter", f"--target={leader}", "--mount", "--pid", "journalctl", "-f", "-n", "0", "-o", "cat", "-u", unit],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    numbers: list[int] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("line "):
                numbers.append(int(line.split()[1]))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(seconds)
    counted = list(numbers)
    proc.kill()
    proc.wait()
    numbers = counted
    if not numbers:
        return 0, 0
    return len(numbers), numbers[-1] - numbers[0] + 1 - len(set(numbers))


def main() -> int:
    if os.geteuid() != 0:
        print("needs root (the lab)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="lifsea-bench-services-"))
    env = {**os.environ, "LIFSEA_LAB_DIR": str(work / "lab")}
    lab = [sys.executable, "-m", "lifsea_tui.lab.cli"]
    subprocess.run([*lab, "up", "--nodes", "1"], env=env, check=True)
    try:
        layout = Layout(work / "lab")
        node = layout.node("node1")
        leader = int(node.state()["leader"])  # type: ignore[call-overload]
        target = targets.from_lab(role="operator", lab_dir=work / "lab")[0]
        agent_pid = int((node.root / "agent.pid").read_text())

        units = int(in_node(leader, "systemctl", "list-units", "--all", "--no-legend", "--plain").stdout.count("\n"))
        extra = max(0, 200 - units)
        for n in range(extra):
            in_node(leader, "systemd-run", "--quiet", f"--unit=bench-{n}", "sleep", "infinity")
        http = httpx.Client(base_url=target.url, verify=target.tls(), headers=target.auth_headers())
        count = len(http.get("/v1/services").json()["units"])
        api, peer = [], []
        for _ in range(60):
            started = time.perf_counter()
            assert http.get("/v1/services").status_code == 200
            api.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            in_node(leader, "systemctl", "list-units", "--all", "--no-pager")
            peer.append((time.perf_counter() - started) * 1000)
        record(
            "GET /v1/services",
            units=count,
            p50_ms=round(pct(api, 50), 1),
            p99_ms=round(pct(api, 99), 1),
            systemctl_list_units_p50_ms=round(pct(peer, 50), 1),
            systemctl_list_units_p99_ms=round(pct(peer, 99), 1),
            ratio_p50=round(pct(api, 50) / pct(peer, 50), 2),
            aim_ratio=1.5,
            note="systemctl is a process start plus one ListUnits; the API also reads each unit's details",
        )
        for n in range(extra):
            in_node(leader, "systemctl", "stop", f"bench-{n}")

        # 5,000 numbered lines a second (a burst each second, paced by a sleep running beside it). journald
        # rate-limits each unit (10,000 lines per 30 s, scaled by free disk: 27,500 on a lab node's /var)
        # and drops the rest, so this unit's limit is raised; a unit cannot turn it off (0 means the default).
        in_node(
            leader, "systemd-run", "--quiet", "--unit=bench-logger",
            "-p", "LogRateLimitIntervalSec=1s", "-p", "LogRateLimitBurst=1000000",
            "/bin/sh", "-c", "i=1; while :; do sleep 1 & seq -f 'line %.0f' $i $((i+4999)); i=$((i+5000)); wait; done",
        )  # fmt: skip
        time.sleep(2)
        agent_cpu = cpu_seconds(agent_pid)
        seconds = 10.0
        received, lost, client_cpu = asyncio.run(console_follow(target, "bench-logger.service", seconds))
        agent_cpu = cpu_seconds(agent_pid) - agent_cpu
        peer_received, peer_lost = native_follow(leader, "bench-logger.service", seconds)
        written = int(
            in_node(leader, "journalctl", "-u", "bench-logger", "-n", "1", "-o", "cat").stdout.split()[1]
        )  # fmt: skip
        in_node(leader, "systemctl", "stop", "bench-logger")
        record(
            "follow 5,000 lines/s in the console's logs pane",
            lines_per_s=round(received / seconds),
            lost=lost,
            agent_cpu_pct=round(100 * agent_cpu / seconds, 1),
            console_cpu_pct=round(100 * client_cpu / seconds, 1),
            journalctl_follow_lines_per_s=round(peer_received / seconds),
            journalctl_follow_lost=peer_lost,
            ratio=round(received / peer_received, 2) if peer_received else None,
            unit_wrote_total=written,
            note="journalctl -f inside the node is the peer: what journald hands its own reader in the same run",
        )
    finally:
        subprocess.run([*lab, "down", "--purge"], env=env, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
