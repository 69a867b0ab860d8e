"""/metrics and the node's resources in /v1/summary, on a real agent (tiny ostree node, real HTTPS).

The scrape is read back with prometheus-client's own parser, as Prometheus would read it: a series that
parses is a series an alert can use. (The lab test runs Debian's Prometheus itself: test_prometheus_lab.)
"""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from lifsea_tui.api import routes
from lifsea_tui.lab import image
from tests.helpers import RunningAgent, TinyNode

EVIL = 'v2"} 1\nlifsea_agent_units_failed 99\n# \\'


def scrape(http: httpx.Client, agent: RunningAgent) -> dict[str, list[tuple[dict[str, str], float]]]:
    answer = http.get(routes.METRICS, headers=agent.headers("reader"))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def value(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    matches = [v for got, v in found.get(name, []) if all(got.get(k) == want for k, want in labels.items())]
    assert len(matches) == 1, (name, labels, found.get(name))
    return matches[0]


def test_metrics_say_what_a_pager_needs(agent: RunningAgent) -> None:
    with httpx.Client(base_url=agent.url, verify=agent.ssl_context(), timeout=30) as http:
        assert http.get(routes.METRICS).status_code == 401  # no token, no figures
        for _ in range(3):
            http.get(routes.SUMMARY, headers=agent.headers("reader"))
        found = scrape(http, agent)
    assert value(found, "lifsea_agent_booted_info", version="1.0") == 1
    assert "lifsea_agent_pending_info" not in found and value(found, "lifsea_agent_pending_deployment") == 0
    assert value(found, "lifsea_agent_update_state", state="idle") == 1
    assert value(found, "lifsea_agent_update_state", state="failed") == 0
    assert value(found, "lifsea_agent_ops_sessions") == 0
    assert value(found, "lifsea_agent_audit_chain_ok") == 1  # the first scrape waits for the first walk
    assert value(found, "lifsea_agent_audit_chain_checked_seq") >= 0
    assert 0 < value(found, "lifsea_agent_var_used_ratio") < 1
    assert value(found, "lifsea_agent_requests_total", method="GET", route="/v1/summary", status="200") == 3
    count = value(found, "lifsea_agent_request_duration_seconds_count", method="GET", route="/v1/summary")
    assert count == 3 and value(found, "lifsea_agent_request_duration_seconds_bucket", route="/v1/summary", le="+Inf")
    assert value(found, "lifsea_agent_process_resident_memory_bytes") > 10 * 1024 * 1024
    # The tiny node has no bus: what only the bus can say is absent, never a made-up zero.
    assert "lifsea_agent_units_failed" not in found and "lifsea_agent_unit_restarts_total" not in found
    assert value(found, "lifsea_agent_build_info", node="tiny") == 1


def test_a_version_string_cannot_forge_a_series(agent: RunningAgent, tiny_node: TinyNode) -> None:
    """A release's version is text its publisher chose; in a label it is escaped, so a quote and a newline
    stay inside the label and no series can be forged."""
    image.publish(tiny_node.repo, EVIL)
    with httpx.Client(base_url=agent.url, verify=agent.ssl_context(), timeout=60) as http:
        operator = agent.headers("operator")
        assert http.post(routes.UPGRADES_CHECK, json={"reason": "evil"}, headers=operator).status_code in (200, 202)
        assert http.post(routes.UPGRADES_STAGE, json={"reason": "evil"}, headers=operator).status_code == 202
        deadline = time.monotonic() + 60
        while http.get(routes.UPGRADES, headers=operator).json()["state"] != "staged":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        found = scrape(http, agent)
    assert value(found, "lifsea_agent_pending_info", version=EVIL) == 1
    assert value(found, "lifsea_agent_pending_deployment") == 1
    assert value(found, "lifsea_agent_update_state", state="staged") == 1
    assert "lifsea_agent_units_failed" not in found


def test_summary_carries_the_node_resources(agent: RunningAgent) -> None:
    with httpx.Client(base_url=agent.url, verify=agent.ssl_context(), timeout=30) as http:
        summary = http.get(routes.SUMMARY, headers=agent.headers("reader")).json()
    resources = summary["resources"]
    assert len(resources["load"]) == 3 and resources["cpus"] >= 1
    assert 0 < resources["memory_available_bytes"] <= resources["memory_total_bytes"]
    assert 0 < resources["var_free_bytes"] <= resources["var_total_bytes"]
    assert resources["var_used_bytes"] <= resources["var_total_bytes"]
    assert resources["uptime_seconds"] is None  # no bus to ask systemd: not known, not guessed
