"""The command line for scripts: `lifsea-tui get`, completion, exit codes, `verify-audit --json`.

Run as a user's script would (a subprocess), against a real agent on a tiny ostree node and a node that
answers nothing (a loopback port nobody listens on).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from lifsea_tui.api import routes
from lifsea_tui.client.inventory import CONTEXT_ENV
from lifsea_tui.lab.procs import free_port
from lifsea_tui.tui.cli import build_parser
from tests.helpers import RunningAgent

HOSTILE = "INC-1 \x1b]52;c;cHduZWQ=\x07 \x1b]0;owned\x07 [red]x[/]\ttab"


@pytest.fixture
def inventory(agent: RunningAgent, tmp_path: Path) -> Path:
    token = tmp_path / "operator.token"
    token.write_text(agent.tokens["operator"] + "\n")
    token.chmod(0o600)
    path = tmp_path / "inventory.toml"
    path.write_text(
        f"""
[defaults]
ca_file = "{agent.ca_file}"
token_file = "{token}"
timeout = 2

[[nodes]]
name = "tiny"
url = "{agent.url}"
labels = {{ zone = "a" }}

[[nodes]]
name = "dead"
url = "https://127.0.0.1:{free_port()}"
labels = {{ zone = "b" }}
"""
    )
    return path


def get(inventory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lifsea_tui.tui.cli", "get", *args, "--inventory", str(inventory)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def test_get_nodes_lists_every_node_and_a_dead_one_makes_the_exit_code_1(inventory: Path) -> None:
    table = get(inventory, "nodes")
    assert table.returncode == 1, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "VERSION", "PENDING", "UPDATE", "FAILED", "SESSIONS"]
    assert lines[1].split()[:3] == ["tiny", "Ready", "1.0"] or lines[1].split()[:3] == ["tiny", "Degraded", "1.0"]
    assert lines[2].split() == ["dead", "Unreachable"]
    assert "lifsea-tui get: dead: " in table.stderr and "tiny" not in table.stderr
    as_json = get(inventory, "nodes", "-o", "json")
    assert as_json.returncode == 1
    items = {item["node"]: item for item in json.loads(as_json.stdout)}
    assert items["tiny"]["problem"] is None and items["tiny"]["labels"]["zone"] == "a"
    assert [d["version"] for d in items["tiny"]["summary"]["deployments"]["deployments"] if d["booted"]] == ["1.0"]
    assert items["dead"]["summary"] is None and items["dead"]["problem"]
    as_yaml = get(inventory, "nodes", "tiny", "-o", "yaml")
    assert as_yaml.returncode == 0, as_yaml.stderr  # only the node that answers was asked
    assert [item["node"] for item in yaml.safe_load(as_yaml.stdout)] == ["tiny"]
    wide = get(inventory, "nodes", "tiny", "-o", "wide")
    assert "zone=a" in wide.stdout and "CHECKSUM" in wide.stdout.splitlines()[0]


def test_get_deployments_services_and_audit_of_one_node(inventory: Path) -> None:
    deployments = get(inventory, "deployments", "tiny", "-o", "json")
    assert deployments.returncode == 0, deployments.stderr
    (only,) = json.loads(deployments.stdout)
    assert only["node"] == "tiny" and only["deployment"]["booted"] and len(only["deployment"]["checksum"]) == 64
    table = get(inventory, "deployments", "tiny")
    assert table.stdout.splitlines()[1].split()[:3] == ["tiny", "0", "1.0"]
    # The tiny node has no system bus: its services cannot be listed, which is a node's failure to answer.
    services = get(inventory, "services", "tiny")
    assert services.returncode == 1 and "lifsea-tui get: tiny: " in services.stderr
    audit = get(inventory, "audit", "tiny", "--limit", "3", "-o", "json")
    assert audit.returncode == 0
    records = json.loads(audit.stdout)
    seqs = [r["record"]["seq"] for r in records]
    assert 0 < len(seqs) <= 3 and seqs == sorted(seqs)


def test_get_selects_by_label_and_refuses_bad_input_with_exit_2(inventory: Path) -> None:
    zone_a = get(inventory, "nodes", "-l", "zone=a", "-o", "json")
    assert [item["node"] for item in json.loads(zone_a.stdout)] == ["tiny"]
    assert zone_a.returncode == 0  # dead does not answer, but its inventory labels alone leave it out
    zone_c = get(inventory, "nodes", "-l", "pool", "-o", "json")
    assert zone_c.returncode == 1 and "dead" in zone_c.stderr  # dead's pool can only be asked: said, not guessed
    nothing = get(inventory, "deployments", "tiny", "-l", "zone=z")
    assert nothing.returncode == 0 and nothing.stdout == ""
    unknown = get(inventory, "nodes", "nosuch")
    assert unknown.returncode == 2 and "no node nosuch (known: dead, tiny)" in unknown.stderr
    context = get(inventory, "nodes", "--context", "prod")
    assert context.returncode == 2 and "prod" in context.stderr
    selector = get(inventory, "nodes", "-l", "zone==a")
    assert selector.returncode == 2 and "selector" in selector.stderr
    kind = get(inventory, "pods")
    assert kind.returncode == 2 and "invalid choice" in kind.stderr


def test_node_text_in_a_table_is_made_plain_and_json_escapes_it(agent: RunningAgent, inventory: Path) -> None:
    """A reason is any text a caller sent: in a table no escape sequence or tab reaches the terminal."""
    with httpx.Client(base_url=agent.url, verify=agent.ssl_context(), headers=agent.headers("operator")) as http:
        assert http.post(routes.UPGRADES_CHECK, json={"reason": HOSTILE}).status_code in (200, 202)
    table = get(inventory, "audit", "tiny", "-o", "wide")
    assert "\x1b" not in table.stdout and "\x07" not in table.stdout and "\t" not in table.stdout
    assert "[red]x[/]" in table.stdout  # shown as the text it is
    as_json = get(inventory, "audit", "tiny", "-o", "json")
    assert "\x1b" not in as_json.stdout and "\\u001b]52" in as_json.stdout
    assert HOSTILE in [item["record"]["reason"] for item in json.loads(as_json.stdout)]
    as_yaml = get(inventory, "audit", "tiny", "-o", "yaml")
    assert "\x1b" not in as_yaml.stdout and HOSTILE in [i["record"]["reason"] for i in yaml.safe_load(as_yaml.stdout)]


def test_one_tree_completes_every_command_and_says_its_exit_codes() -> None:
    script = subprocess.run(
        [sys.executable, "-m", "lifsea_tui.tui.cli", "completion", "bash"], capture_output=True, text=True, check=True
    ).stdout
    for word in ("shell", "get", "play", "rollout", "audit", "deployments", "--output", "--max-unavailable"):
        assert word in script, word
    zsh = subprocess.run(
        [sys.executable, "-m", "lifsea_tui.tui.cli", "completion", "zsh"], capture_output=True, text=True, check=True
    )
    assert "#compdef lifsea-tui" in zsh.stdout
    helped = build_parser().format_help()
    assert "exit codes" in helped and "3  the fleet store" in helped
    assert CONTEXT_ENV in build_parser().format_help()


def test_verify_audit_json(agent: RunningAgent, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "lifsea_tui.agent.cli", "verify-audit", str(agent.config.audit_dir), "--json"]
    good = subprocess.run(command, capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    verdict = json.loads(good.stdout)
    assert verdict["ok"] is True and verdict["records"] >= 1 and verdict["first_bad_seq"] is None
    log = next(agent.config.audit_dir.glob("*.jsonl"))
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(log.read_bytes().replace(b'"seq":0', b'"seq":7', 1))
    bad = subprocess.run([*command[:-2], str(copy), "--json"], capture_output=True, text=True)
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["ok"] is False and json.loads(bad.stdout)["first_bad_seq"] is not None
