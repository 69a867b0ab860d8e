"""Agent and lab benchmarks: idle memory, read throughput and p99 over TLS, stage through the API against
the ostree CLI doing the same pull and deploy, and lab start-up cold and warm.

Figures, not assertions: each prints what it measured (and the peer's figure from the same run) and
appends a JSON line to benchmarks/results/agent.jsonl. Run as root: `make bench` or
`python -m benchmarks.agent [--cold]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.results import recorder
from lifsea_tui.api import routes
from lifsea_tui.lab import image, sysroot
from lifsea_tui.lab.layout import Layout
from lifsea_tui.lab.updateserver import UpdateServer
from tests.helpers import write_agent_config

record = recorder("agent.jsonl")


def lab(args: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "lifsea_tui.lab.cli", *args],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.monotonic() - started


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def hammer(
    url: str, ca: str, token: str, path: str, requests: int, concurrency: int
) -> tuple[float, float, float]:
    """Requests per second, p50 and p99 latency in ms, over keep-alive TLS connections."""
    context = ssl.create_default_context(cafile=ca)
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, verify=context, limits=limits, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        await http.get(path)
        queue = iter(range(requests))

        async def worker() -> None:
            for _ in queue:
                started = time.perf_counter()
                response = await http.get(path)
                latencies.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return requests / elapsed, statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]


def bench_lab_and_reads(cold: bool) -> None:
    root = Path(tempfile.mkdtemp(prefix="lifsea-bench-lab-"))
    env = {**os.environ, "LIFSEA_LAB_DIR": str(root)}
    if cold:
        cache = Path(tempfile.mkdtemp(prefix="lifsea-bench-cache-"))
        env["LIFSEA_LAB_CACHE"] = str(cache)
    try:
        first = lab(["up", "--nodes", "3"], env)
        record(
            "lab-up-3-nodes",
            kind="cold (image build + sysroots)" if cold else "first up (cached image, new sysroots)",
            seconds=round(first, 1),
        )
        lab(["down"], env)
        warm = lab(["up", "--nodes", "3"], env)
        record("lab-up-3-nodes", kind="warm (sysroots exist)", seconds=round(warm, 2))
        status = json.loads(
            subprocess.run(
                [sys.executable, "-m", "lifsea_tui.lab.cli", "status", "--json"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        node = status["nodes"][0]
        time.sleep(3)  # let the agent settle after start
        pid = int((Layout(root).node(node["name"]).root / "agent.pid").read_text())
        record("agent-idle-rss", mb=round(rss_mb(pid), 1), aim_mb=80)
        for path in (routes.HEALTHZ, routes.NODE, routes.DEPLOYMENTS):
            rate, p50, p99 = asyncio.run(
                hammer(node["url"], node["ca_file"], node["tokens"]["reader"], path, requests=2000, concurrency=8)
            )
            record(
                "agent-read-tls",
                route=path,
                requests=2000,
                concurrency=8,
                req_per_s=round(rate),
                p50_ms=round(p50, 2),
                p99_ms=round(p99, 2),
            )
        record("agent-rss-after-load", mb=round(rss_mb(pid), 1))
    finally:
        lab(["down", "--purge"], env)
        if cold:
            shutil.rmtree(env["LIFSEA_LAB_CACHE"], ignore_errors=True)


def bench_stage(files: int, api_first: bool) -> None:
    """Stage through the API against `ostree pull` + `ostree admin deploy` by hand, same image, same delta."""
    cache_repo = Path(os.environ.get("LIFSEA_LAB_CACHE") or Path.home() / ".cache" / "lifsea-lab") / "repo"
    if not image.has_ref(cache_repo):
        raise SystemExit("no cached lab image; run `lifsea-lab up` once first")
    work = Path(tempfile.mkdtemp(prefix="lifsea-bench-stage-"))
    repo = work / "repo"
    image.init_repo(repo)
    subprocess.run(["ostree", f"--repo={repo}", "pull-local", str(cache_repo), image.REF], check=True)
    server = UpdateServer(repo).start()
    proc = None
    try:
        api_root, cli_root = work / "api-sysroot", work / "cli-sysroot"
        for root in (api_root, cli_root):
            sysroot.create(root, server.url)
        # A release with real weight: `files` new files of 16 KiB each, on top of the published image.
        payload = work / "payload"
        target = payload / "usr" / "share" / "lifsea-payload"
        target.mkdir(parents=True)
        for index in range(files):
            (target / f"blob-{index:05}").write_bytes(os.urandom(16 * 1024))
        payload.chmod(0o755)
        for path in payload.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        image.commit(repo, [f"ref={image.REF}", f"dir={payload}"], "9.0", "LifseaOS 9.0: benchmark payload")

        def by_hand() -> float:
            started = time.monotonic()
            subprocess.run(
                ["ostree", f"--repo={cli_root}/ostree/repo", "pull", sysroot.REMOTE, image.REF],
                check=True,
                capture_output=True,
            )
            subprocess.run(
                [
                    "ostree",
                    "admin",
                    "deploy",
                    f"--sysroot={cli_root}",
                    f"--os={image.OSNAME}",
                    "--retain",
                    f"{sysroot.REMOTE}:{image.REF}",
                ],
                check=True,
                capture_output=True,
            )
            return time.monotonic() - started

        config, info = write_agent_config(
            work / "agent", host_root=sysroot.default_deployment(api_root), sysroot_path=api_root
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "lifsea_tui.agent.cli", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        context = ssl.create_default_context(cafile=str(info["ca"]))
        headers = {"Authorization": f"Bearer {info['tokens']['operator']}"}
        http = httpx.Client(base_url=info["url"], verify=context, headers=headers, timeout=600)
        for _ in range(100):
            try:
                http.get(routes.HEALTHZ)
                break
            except httpx.TransportError:
                time.sleep(0.1)

        def through_api() -> tuple[float, float]:
            started = time.monotonic()
            http.post(routes.UPGRADES_CHECK, json={"reason": "benchmark"}).raise_for_status()
            checked = time.monotonic() - started
            http.post(routes.UPGRADES_STAGE, json={"reason": "benchmark"}).raise_for_status()
            while http.get(routes.UPGRADES).json()["state"] != "staged":
                time.sleep(0.02)
            return time.monotonic() - started, checked

        # Whichever runs second finds the update server's files in the page cache: alternate the order.
        if api_first:
            api_seconds, check_seconds = through_api()
            cli_seconds = by_hand()
        else:
            cli_seconds = by_hand()
            api_seconds, check_seconds = through_api()
        http.close()
        record(
            "stage-vs-ostree-cli",
            payload_files=files,
            first="api" if api_first else "ostree cli",
            payload_mb=files * 16 // 1024,
            api_check_and_stage_s=round(api_seconds, 2),
            of_which_check_s=round(check_seconds, 2),
            cli_pull_and_deploy_s=round(cli_seconds, 2),
            ratio=round(api_seconds / cli_seconds, 2),
            aim_ratio=1.2,
        )
    finally:
        if proc:
            proc.terminate()
            proc.wait()
        server.stop()
        for deployment in work.glob("*-sysroot/ostree/deploy/*/deploy/*"):
            if deployment.is_dir():
                subprocess.run(["chattr", "-i", str(deployment)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cold", action="store_true", help="also time a lab start with an empty image cache")
    parser.add_argument("--files", type=int, default=2000, help="files in the stage benchmark's release")
    parser.add_argument("--stage-only", action="store_true", help="only the stage benchmark")
    parser.add_argument("--rounds", type=int, default=4, help="stage rounds, alternating which side goes first")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the agent benchmarks run the lab: run them as root")
    if not args.stage_only:
        bench_lab_and_reads(args.cold)
    for round_ in range(args.rounds):
        bench_stage(args.files, api_first=round_ % 2 == 0)


if __name__ == "__main__":
    main()
