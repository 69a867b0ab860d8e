"""What collecting a node's audit log off the node costs: a real agent (its own process, TLS) with a
100,000-record log, a real etcd, and the fleet controller's collector copying it into a directory.

Prints the first collection (time, requests, this process's CPU) against the floor of the same pages
fetched and parsed with no checks (the peer, in the same run), then the steady state: a pass that finds
nothing new, and a pass with a second look at older records.

    python -m benchmarks.trail
"""

from __future__ import annotations

import asyncio
import functools
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bounds import long_log, wait_healthy
from benchmarks.results import recorder
from lifsea_tui.client.etcd import Store
from lifsea_tui.client.node import NodeClient, NodeTarget
from lifsea_tui.client.trail import DirectoryTrail
from lifsea_tui.fleetd import collector
from lifsea_tui.lab.etcd import EtcdCluster
from tests.helpers import make_tiny_node, write_agent_config

record = recorder("trail.jsonl")
RECORDS = 100_000


async def run(base: Path, target: NodeTarget) -> None:
    members = EtcdCluster.fresh(base / "etcd", base / "ca", 1)
    members.start()
    store = Store(members.target("lifsea-fleetd"))
    try:
        await members.wait_ready()

        # The floor: every page fetched and parsed, nothing checked or kept.
        client = NodeClient(target)
        started, cpu = time.monotonic(), time.process_time()
        after, requests = -1, 0
        while True:
            page = await client.audit(after=after, limit=collector.PAGE)
            requests += 1
            if not page.records:
                break
            after = page.records[-1].seq
        floor, floor_cpu = time.monotonic() - started, time.process_time() - cpu
        await client.aclose()

        trail = DirectoryTrail(base / "trail")
        collecting = collector.Collector(store, trail, {target.name: target}, functools.partial(store.txn, []))
        started, cpu, passes = time.monotonic(), time.process_time(), 0
        while trail.head(target.name)[0] < RECORDS - 1:
            await collecting.tick()
            passes += 1
        first, first_cpu = time.monotonic() - started, time.process_time() - cpu
        print(
            f"first collection of {RECORDS:,} records: {first:.2f} s ({first_cpu:.2f} s CPU, {passes} passes); "
            f"the same pages fetched and parsed unchecked: {floor:.2f} s ({floor_cpu:.2f} s CPU, {requests} "
            f"requests); ratio {first / floor:.2f}"
        )
        record(
            "first_collection",
            records=RECORDS,
            seconds=round(first, 2),
            cpu_seconds=round(first_cpu, 2),
            floor_seconds=round(floor, 2),
            ratio=round(first / floor, 2),
        )
        quiet: list[tuple[bool, float]] = []
        for _ in range(collector.SWEEP_EVERY * 4):
            started = time.monotonic()
            await collecting.tick()
            swept = collecting.passes[target.name] % collector.SWEEP_EVERY == 0
            quiet.append((swept, time.monotonic() - started))
        plain_ms = 1000 * sum(t for sweep, t in quiet if not sweep) / sum(1 for sweep, _ in quiet if not sweep)
        sweep_ms = 1000 * sum(t for sweep, t in quiet if sweep) / sum(1 for sweep, _ in quiet if sweep)
        size = trail.path(target.name).stat().st_size
        print(
            f"steady state, nothing new: {plain_ms:.1f} ms a pass (one request); with a second look at "
            f"{collector.PAGE} older records: {sweep_ms:.1f} ms; copy on disk {size / 1e6:.1f} MB"
        )
        record("steady_state", pass_ms=round(plain_ms, 1), sweep_pass_ms=round(sweep_ms, 1), copy_bytes=size)
        await collecting.aclose()
    finally:
        await store.aclose()
        members.stop()


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="lifsea-trail-"))
    node = make_tiny_node(base / "node")
    config, info = write_agent_config(base / "agent", host_root=node.host_root, sysroot_path=node.sysroot)
    long_log(info["audit"], RECORDS)
    agent = subprocess.Popen(
        [sys.executable, "-m", "lifsea_tui.agent.cli", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ca = info["ca"]
        wait_healthy(info["url"], str(ca))
        target = NodeTarget(name="tiny", url=info["url"], token=info["tokens"]["auditor"], ca_file=Path(ca))
        asyncio.run(run(base, target))
    finally:
        agent.terminate()
        agent.wait(10)
        node.close()


if __name__ == "__main__":
    main()
