"""A rollout across 1,000 nodes: time to complete against the ideal, the controller's memory and CPU,
etcd writes per node, and the console's key-to-screen while its Rollouts screen watches.

The nodes are benchmarks.fakefleet with --upgrades (a real agent needs ~70 MB: a thousand do not fit this
machine); etcd is real (Debian's etcd-server, TLS), lifsea-fleetd and the console are the real programs.
The ideal is batches × the time a node cannot be made faster by the controller: its staging, its reboot
and the controller's settle time after boot (SETTLE_SECONDS), run back to back; the ratio against
batches × the measured median time of a node is printed too (what batching itself costs).

Figures, not assertions: printed and appended to benchmarks/results/rollout.jsonl.
Run: `python -m benchmarks.rollout [--nodes 1000] [--max-unavailable 50] [--stage 1] [--reboot 2]`.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.console import press_and_time, start_fake_fleet, tmux
from benchmarks.results import pct, recorder
from lifsea_tui.api.rollouts import Intent, Phase, RolloutSpec
from lifsea_tui.client import rollouts
from lifsea_tui.client.etcd import Store
from lifsea_tui.fleetd.steps import SETTLE_SECONDS
from lifsea_tui.lab.etcd import EtcdCluster

record = recorder("rollout.jsonl")


def etcd_counters(cluster: EtcdCluster) -> dict[str, float]:
    cert, key = cluster.client_cert("bench")
    context = ssl.create_default_context(cafile=str(cluster.ca_file))
    context.load_cert_chain(cert, key)
    url = f"https://127.0.0.1:{cluster.members[0].client_port}/metrics"
    with urllib.request.urlopen(url, context=context, timeout=10) as answer:
        text = answer.read().decode()
    wanted = ("etcd_mvcc_put_total", "etcd_mvcc_delete_total", "etcd_server_proposals_committed_total")
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.split(" ")[0] in wanted}


def proc_figures(pid: int) -> tuple[float, float]:
    """(RSS in MB, CPU seconds) of a process."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = 100.0
    return rss, (int(fields[11]) + int(fields[12])) / ticks


def console_keys(
    work: Path, inventory: Path, etcd_flags: list[str], stop_at: list[float], ready: threading.Event
) -> list[tuple[float, float]]:
    """Key-to-screen on the Rollouts screen (its node table) in a real terminal, until stop_at[0] passes:
    (when, milliseconds) for each press. `ready` is set once the screen is open and keys are going."""
    session = "lifsea-bench-rollout"
    tmux("kill-session", "-t", session)
    command = (
        f"LIFSEA_TUI_STATE_DIR={work / 'state'} {sys.executable} -m lifsea_tui.tui.cli --inventory {inventory} "
        f"--refresh 5 {' '.join(etcd_flags)}; sleep 5"
    )
    tmux("new-session", "-d", "-s", session, "-x", "150", "-y", "45", command)
    latencies: list[tuple[float, float]] = []
    try:
        started = time.perf_counter()
        while "● ok" not in tmux("capture-pane", "-p", "-t", session):
            if time.perf_counter() - started > 90:
                ready.set()
                return latencies
            time.sleep(0.1)
        tmux("send-keys", "-t", session, "R")
        time.sleep(2)
        tmux("send-keys", "-t", session, "Tab")  # to the nodes of the rollout
        time.sleep(0.5)
        ready.set()
        index = 0
        while time.time() < stop_at[0]:
            latencies.append((time.time(), press_and_time(session, "Down" if index % 20 < 10 else "Up")))
            index += 1
            time.sleep(0.1)
    finally:
        tmux("kill-session", "-t", session)
    return latencies


async def run(args: argparse.Namespace, work: Path) -> None:
    fleet_proc, targets = start_fake_fleet(args.nodes, work, upgrades=(args.stage, args.reboot))
    cluster = EtcdCluster.fresh(work / "etcd", work / "ca", 1)
    cluster.start()
    fleetd = None
    stop_at = [float("inf")]  # the console's key presses go on until this time
    try:
        await cluster.wait_ready()
        inventory = work / "fleet.toml"
        inventory.write_text(
            "".join(
                f'[[nodes]]\nname = "{t.name}"\nurl = "{t.url}"\nca_file = "{t.ca_file}"\ntoken = "bench"\n'
                f"timeout = 10\n"
                for t in targets
            )
        )
        cert, key = cluster.client_cert("lifsea-fleetd")
        flags = [
            f"--etcd=127.0.0.1:{cluster.members[0].client_port}",
            f"--etcd-ca={cluster.ca_file}",
            "--etcd-server-name=localhost",
        ]
        fleetd = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lifsea_tui.fleetd.cli",
                "--inventory",
                str(inventory),
                *flags,
                f"--etcd-cert={cert}",
                f"--etcd-key={key}",
                "--id",
                "bench",
                "--log-level",
                "warning",
            ],
            stdin=subprocess.DEVNULL,
            stderr=open(work / "fleetd.log", "wb"),
        )
        store = Store(cluster.target("console"))
        spec = RolloutSpec(
            id="r-bench",
            target_version="1.1",
            nodes=[t.name for t in targets],
            canary=1,
            max_unavailable=args.max_unavailable,
            reason="benchmark",
            created_by="bench",
            created_at=datetime.now(UTC),
        )
        await asyncio.sleep(2)  # the controller leads
        before = etcd_counters(cluster)
        rss_idle, cpu_idle = proc_figures(fleetd.pid)
        console_cert, console_key = cluster.client_cert("console")
        ready = threading.Event()
        keys_task = asyncio.get_running_loop().run_in_executor(
            None,
            console_keys,
            work,
            inventory,
            [*flags, f"--etcd-cert={console_cert}", f"--etcd-key={console_key}"],
            stop_at,
            ready,
        )
        # The rollout is written paused, so the console shows its thousand nodes while keys are pressed
        # against the fleet refresh alone (the same run's baseline); then it is resumed and timed.
        await rollouts.start(store, spec)
        await rollouts.ask(store, spec.id, Intent(action="pause", reason="baseline first"), "bench")
        await asyncio.get_running_loop().run_in_executor(None, ready.wait)
        await asyncio.sleep(args.baseline)
        rollout_began = time.time()
        started = time.monotonic()
        await rollouts.ask(store, spec.id, Intent(action="resume", reason="measure"), "bench")
        peak_rss = rss_idle
        while True:
            await asyncio.sleep(1)
            peak_rss = max(peak_rss, proc_figures(fleetd.pid)[0])
            found = await rollouts.read(store, spec.id)
            assert found is not None
            if found.status.phase in (Phase.completed, Phase.aborted) or (
                found.status.phase is Phase.paused and found.status.applied >= 3
            ):
                break
            if time.monotonic() - started > args.timeout:
                raise SystemExit(f"not done within {args.timeout} s: {found.status.message}")
        took = time.monotonic() - started
        stop_at[0] = 0
        latencies = await keys_task
        after = etcd_counters(cluster)
        _, cpu = proc_figures(fleetd.pid)
        done = sum(1 for n in found.nodes if n.state.value == "done")
        batches = len(spec.batches())
        ideal = batches * (args.stage + args.reboot + SETTLE_SECONDS)
        spans = [n.finished_at - n.started_at for n in found.nodes if n.started_at and n.finished_at]
        keys = after["etcd_mvcc_put_total"] + after["etcd_mvcc_delete_total"]
        keys -= before["etcd_mvcc_put_total"] + before["etcd_mvcc_delete_total"]
        # Each write request (a put or a transaction) is one raft proposal; so is a lease grant.
        writes = after["etcd_server_proposals_committed_total"] - before["etcd_server_proposals_committed_total"]
        record(
            "rollout-1000",
            nodes=args.nodes,
            max_unavailable=args.max_unavailable,
            batches=batches,
            phase=found.status.phase.value,
            done=done,
            took_s=round(took, 1),
            ideal_s=round(ideal, 1),
            ratio=round(took / ideal, 3),
            ratio_to_measured_node=round(took / (batches * statistics.median(spans)), 3) if spans else None,
            aim_ratio=1.05,
            node_median_s=round(statistics.median(spans), 2) if spans else None,
            controller_rss_mb=round(peak_rss, 1),
            controller_rss_idle_mb=round(rss_idle, 1),
            aim_rss_mb=100,
            controller_cpu_s=round(cpu - cpu_idle, 1),
            controller_cpu_share=round((cpu - cpu_idle) / took, 2),
            etcd_keys_written_per_node=round(keys / args.nodes, 2),
            etcd_write_requests_per_node=round(writes / args.nodes, 2),
            aim_writes_per_node=10,
        )
        during = [ms for when, ms in latencies if when >= rollout_began]
        before_rollout = [ms for when, ms in latencies if when < rollout_began]
        if during and before_rollout:
            record(
                "rollout-console-keys",
                presses=len(during),
                p50_ms=round(statistics.median(during), 1),
                p99_ms=round(pct(during, 99), 1),
                max_ms=round(max(during), 1),
                baseline_presses=len(before_rollout),
                baseline_p50_ms=round(statistics.median(before_rollout), 1),
                baseline_p99_ms=round(pct(before_rollout, 99), 1),
                aim_p99_ms=50,
                note="Rollouts screen open; baseline: the same console before the rollout starts (its fleet "
                "refresh of 1,000 nodes running); includes tmux send-keys and capture-pane",
            )
        await store.aclose()
    finally:
        stop_at[0] = 0
        if fleetd is not None:
            fleetd.terminate()
            fleetd.wait(10)
        cluster.stop()
        if fleet_proc.stdin is not None:
            fleet_proc.stdin.close()
        fleet_proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--max-unavailable", type=int, default=50)
    parser.add_argument("--stage", type=float, default=1.0, help="seconds a fake node takes to stage")
    parser.add_argument("--reboot", type=float, default=2.0, help="seconds a fake node is down rebooting")
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--baseline", type=float, default=20.0, help="seconds of key presses before the rollout")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lifsea-bench-rollout-") as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
