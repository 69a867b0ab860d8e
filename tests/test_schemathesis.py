"""Property-based API tests: schemathesis generates requests from /openapi.json and checks the agent's answers
(no 5xx, responses match the schema) against a real agent over TLS on a real ostree sysroot."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.helpers import RunningAgent, make_tiny_node, ostree_missing, start_agent

# Examples per operation; raise it to hunt harder: LIFSEA_SCHEMATHESIS_EXAMPLES=500 pytest tests/test_schemathesis.py
EXAMPLES = int(os.environ.get("LIFSEA_SCHEMATHESIS_EXAMPLES", "30"))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    missing = ostree_missing()
    if missing:
        pytest.skip(missing)
    base: Path = tmp_path_factory.mktemp("schemathesis")
    node = make_tiny_node(base / "node")
    running = start_agent(base / "agent", host_root=node.host_root, sysroot_path=node.sysroot)
    yield running
    running.stop()
    node.close()


def test_api_conforms(live: RunningAgent) -> None:
    spec = requests.get(f"{live.url}/openapi.json", verify=str(live.ca_file), timeout=10).json()
    # Reboot, services and logs have their own tests on real lab nodes; this sysroot has no systemd and
    # no journal to answer them (a 503 saying so, which test_services checks).
    schema = schemathesis.openapi.from_dict(spec).exclude(path="/v1/reboot").exclude(path_regex="^/v1/(services|logs)")
    session = requests.Session()
    session.verify = str(live.ca_file)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10

    for operation in operations:
        role = "reader" if operation.method.upper() == "GET" else "operator"
        _conformance_test(operation, live, session, live.headers(role))()


def _conformance_test(operation, live: RunningAgent, session: requests.Session, headers: dict[str, str]):
    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def conforms(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=live.url, session=session, headers=headers, verify=str(live.ca_file))

    return conforms


def test_ssl_context_is_real(live: RunningAgent) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{live.url}/healthz", verify=ssl.get_default_verify_paths().cafile or True, timeout=5)
