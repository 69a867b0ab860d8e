"""Debian's Prometheus scrapes the lab's agents (HTTPS, the lab's CA, a reader token) with the alert rules
the project ships, and sees the unit the crash-loop scenario broke: by PromQL, and as a pending alert."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from lifsea_tui.lab.layout import Layout
from lifsea_tui.lab.procs import free_port, stop
from lifsea_tui.lab.scenarios import CRASHLOOP_UNIT
from tests.conftest import lab

pytestmark = pytest.mark.lab
RULES = Path(__file__).parent.parent / "deploy" / "prometheus" / "lifsea-alerts.yml"


@contextlib.contextmanager
def prometheus(status: dict, base: Path) -> Iterator[httpx.Client]:
    if shutil.which("prometheus") is None:
        pytest.skip("Debian's prometheus is not installed (scripts/setup.sh installs it)")
    base.mkdir(parents=True, exist_ok=True)
    # One scrape config per node, each with the node's own reader token (lab nodes do not share tokens),
    # relabelled to the one job name the shipped rules expect.
    scrapes = []
    for node in status["nodes"]:
        token = base / f"{node['name']}.token"
        token.write_text(node["tokens"]["reader"])
        token.chmod(0o600)
        scrapes.append(
            {
                "job_name": f"lifsea-agent-{node['name']}",
                "scheme": "https",
                "tls_config": {"ca_file": node["ca_file"]},
                "authorization": {"type": "Bearer", "credentials_file": str(token)},
                "static_configs": [
                    {"targets": [node["url"].removeprefix("https://")], "labels": {"node": node["name"]}}
                ],
                "relabel_configs": [{"target_label": "job", "replacement": "lifsea-agent"}],
            }
        )
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": scrapes,
    }
    (base / "prometheus.yml").write_text(yaml.safe_dump(config))
    checked = subprocess.run(
        ["promtool", "check", "config", str(base / "prometheus.yml")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    port = free_port()
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={base / 'prometheus.yml'}",
            f"--storage.tsdb.path={base / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(base / "prometheus.log").open("wb"),
        stdin=subprocess.DEVNULL,
        cwd=base,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            until("Prometheus is ready", lambda: _ready(http, process), 60)
            yield http
    finally:
        stop(process, 20)


def _ready(http: httpx.Client, process: subprocess.Popen[bytes]) -> bool:
    assert process.poll() is None, "prometheus exited"
    with contextlib.suppress(httpx.HTTPError):
        return http.get("/-/ready").status_code == 200
    return False


def until(what: str, probe: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return found


def query(http: httpx.Client, promql: str) -> list[dict]:
    answer = http.get("/api/v1/query", params={"query": promql}).json()
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def test_prometheus_sees_the_crash_loop_and_its_alert(
    fleet: tuple[dict, dict[str, str], Layout], tmp_path: Path
) -> None:
    status, env, _ = fleet
    names = sorted(node["name"] for node in status["nodes"])
    with prometheus(status, tmp_path / "prometheus") as http:
        up = until(
            "every agent scraped (TLS, token)",
            lambda: len(found := query(http, 'up{job="lifsea-agent"} == 1')) == len(names) and found,
            60,
        )
        assert sorted(series["metric"]["node"] for series in up) == names
        booted = query(http, "lifsea_agent_booted_info")
        assert sorted(series["metric"]["node"] for series in booted) == names and booted[0]["metric"]["version"]
        assert query(http, "lifsea_agent_audit_chain_ok == 1")
        assert lab(["break", "node1", "--scenario", "crash-loop"], env).returncode == 0
        try:
            looping = until(
                f"{CRASHLOOP_UNIT} restarting, seen by PromQL",
                lambda: query(http, f'increase(lifsea_agent_unit_restarts_total{{unit="{CRASHLOOP_UNIT}"}}[2m]) > 0'),
                90,
            )
            assert [series["metric"]["node"] for series in looping] == ["node1"]

            def alert() -> list[dict]:
                alerts = http.get("/api/v1/alerts").json()["data"]["alerts"]
                return [a for a in alerts if a["labels"]["alertname"] == "LifseaUnitCrashLooping"]

            (firing,) = until("the crash-loop alert", alert, 120)
            assert firing["labels"]["node"] == "node1" and firing["labels"]["unit"] == CRASHLOOP_UNIT
            assert firing["state"] in ("pending", "firing")
            assert not query(http, f'lifsea_agent_unit_restarts_total{{node="node2",unit="{CRASHLOOP_UNIT}"}}')
        finally:
            assert lab(["fix", "node1", "--scenario", "crash-loop"], env).returncode == 0
