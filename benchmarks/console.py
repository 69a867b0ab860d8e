"""Console benchmarks: a 1,000-node fleet refresh (concurrent, against the same refresh done serially in the
same run), key-to-screen latency while that refresh runs, console memory, and start to first painted
fleet on the 3-node lab (under tmux, as a person starts it).

Figures, not assertions: printed and appended to benchmarks/results/console.jsonl.
Run: `python -m benchmarks.console [--nodes 1000] [--skip-lab]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.results import recorder
from lifsea_tui.client.fleet import Fleet
from lifsea_tui.client.netloop import new_event_loop
from lifsea_tui.client.node import NodeTarget
from lifsea_tui.lab import certs

record = recorder("console.jsonl")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def start_fake_fleet(
    count: int, work: Path, upgrades: tuple[float, float] | None = None
) -> tuple[subprocess.Popen[str], list[NodeTarget]]:
    """`upgrades`: (stage seconds, reboot seconds) to run each node's upgrade state machine."""
    cert, key = certs.issue(work / "ca", work / "certs", "fake")
    extra = ["--upgrades", str(upgrades[0]), str(upgrades[1])] if upgrades else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.fakefleet", str(count), str(cert), str(key), *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=raise_fd_limit,
    )
    assert proc.stdout is not None
    ports = json.loads(proc.stdout.readline())["ports"]
    ca = work / "ca" / "ca.pem"
    return proc, [
        NodeTarget(name=f"fake-{i:04}", url=f"https://127.0.0.1:{port}", token="bench", ca_file=ca)
        for i, port in enumerate(ports)
    ]


async def refresh_figures(targets: list[NodeTarget]) -> None:
    serial = Fleet(targets)
    started = time.perf_counter()
    for name in serial.snapshots:
        await serial.refresh_node(name)
    serial_cold = time.perf_counter() - started
    started = time.perf_counter()
    for name in serial.snapshots:
        await serial.refresh_node(name)
    serial_warm = time.perf_counter() - started
    await serial.aclose()

    fleet = Fleet(targets)
    started = time.perf_counter()
    await fleet.refresh()
    cold = time.perf_counter() - started
    started = time.perf_counter()
    await fleet.refresh()
    warm = time.perf_counter() - started
    ok = sum(1 for s in fleet.snapshots.values() if s.reachable)
    await fleet.aclose()
    record(
        "fleet-refresh",
        nodes=len(targets),
        answered=ok,
        concurrent_first_s=round(cold, 2),
        concurrent_keepalive_s=round(warm, 2),
        serial_first_s=round(serial_cold, 2),
        serial_keepalive_s=round(serial_warm, 2),
        speedup_first=round(serial_cold / cold, 1),
        speedup_keepalive=round(serial_warm / warm, 1),
        aim_first_s=1.0,
    )


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True).stdout


def press_and_time(session: str, key: str, give_up: float = 5.0) -> float:
    """Press `key` in a tmux session and read the screen until it changes: milliseconds, as a person sees it."""
    before = tmux("capture-pane", "-p", "-e", "-t", session)
    pressed = time.perf_counter()
    tmux("send-keys", "-t", session, key)
    while tmux("capture-pane", "-p", "-e", "-t", session) == before:
        if time.perf_counter() - pressed > give_up:
            break
    return (time.perf_counter() - pressed) * 1000


def key_latency(targets: list[NodeTarget], presses: int, work: Path) -> None:
    """Key-to-screen in a real terminal: press a key with tmux, read the screen until it changes.

    The console refreshes every 0.5 s, so nearly every press lands while a 1,000-node refresh runs.
    """
    inventory = work / "fleet.toml"
    inventory.write_text(
        "".join(
            f'[[nodes]]\nname = "{t.name}"\nurl = "{t.url}"\nca_file = "{t.ca_file}"\ntoken = "{t.token}"\n'
            for t in targets
        )
    )
    state = work / "state"
    session = "lifsea-bench-keys"
    tmux("kill-session", "-t", session)
    command = (
        f"LIFSEA_TUI_STATE_DIR={state} {sys.executable} -m lifsea_tui.tui.cli --inventory {inventory} "
        f"--refresh 0.5; sleep 5"
    )
    started = time.perf_counter()
    tmux("new-session", "-d", "-s", session, "-x", "150", "-y", "45", command)
    try:
        while tmux("capture-pane", "-p", "-t", session).count("● ok") < 30:
            if time.perf_counter() - started > 60:
                raise SystemExit("the console did not show the fleet within 60 s")
            time.sleep(0.02)
        shown = time.perf_counter() - started
        latencies = []
        for index in range(presses):
            latencies.append(press_and_time(session, "Down" if index % 20 < 10 else "Up"))
            time.sleep(0.05)
        pid = tmux("list-panes", "-t", session, "-F", "#{pane_pid}").strip()
        console = subprocess.run(
            ["pgrep", "-P", pid, "-f", "lifsea_tui.tui.cli"], capture_output=True, text=True
        ).stdout.split()
        memory = None
        if console:
            for line in Path(f"/proc/{console[0]}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    memory = int(line.split()[1]) / 1024
    finally:
        tmux("kill-session", "-t", session)
    latencies.sort()
    record(
        "console-keys-during-refresh",
        nodes=len(targets),
        presses=len(latencies),
        p50_ms=round(statistics.median(latencies), 1),
        p99_ms=round(latencies[int(len(latencies) * 0.99) - 1], 1),
        max_ms=round(latencies[-1], 1),
        first_rows_shown_s=round(shown, 2),
        aim_p99_ms=50,
        note="includes tmux send-keys and capture-pane (a few ms)",
    )
    if memory is not None:
        record("console-memory", nodes=len(targets), rss_mb=round(memory, 1), aim_mb=100)


def first_paint_with_lab() -> None:
    """From starting lifsea-tui to the fleet showing every lab node answering, read off the screen."""
    status = subprocess.run(
        [sys.executable, "-m", "lifsea_tui.lab.cli", "status", "--json"], capture_output=True, text=True
    )
    if status.returncode != 0:
        print("first-paint: no running lab; skipped (lifsea-lab up --nodes 3)", flush=True)
        return
    nodes = [node["name"] for node in json.loads(status.stdout)["nodes"]]
    session = "lifsea-bench"
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    state = tempfile.mkdtemp(prefix="lifsea-bench-state-")
    command = f"LIFSEA_TUI_STATE_DIR={state} {sys.executable} -m lifsea_tui.tui.cli"
    times = []
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "140", "-y", "30", command], check=True)
        while True:
            screen = subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
            ).stdout
            if screen.count("● ok") >= len(nodes):
                times.append(time.perf_counter() - started)
                break
            if time.perf_counter() - started > 30:
                break
            time.sleep(0.01)
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        time.sleep(0.3)
    shutil.rmtree(state, ignore_errors=True)
    if times:
        record(
            "start-to-first-painted-fleet",
            nodes=len(nodes),
            runs=len(times),
            median_s=round(statistics.median(times), 2),
            best_s=round(min(times), 2),
            aim_s=1.5,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--presses", type=int, default=200)
    parser.add_argument("--skip-lab", action="store_true")
    args = parser.parse_args()
    raise_fd_limit()
    work = Path(tempfile.mkdtemp(prefix="lifsea-bench-console-"))
    proc, targets = start_fake_fleet(args.nodes, work)
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:  # the loop the console's network runs on
            runner.run(refresh_figures(targets))
        key_latency(targets, args.presses, work)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    if not args.skip_lab:
        first_paint_with_lab()


if __name__ == "__main__":
    main()
