"""What ships to real nodes, checked by the tools that will read it: the DaemonSet against Kubernetes'
own schemas (kubernetes-validate, which bundles them), the systemd unit by `systemd-analyze verify`,
the agent config inside the manifests by the agent's own loader, and the Containerfile against the
offline image build. The image itself runs on a lab node in test_agent_image_lab.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from lifsea_tui import agentimage
from lifsea_tui.agent.config import load
from lifsea_tui.lab import certs

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
MANIFEST = DEPLOY / "kubernetes" / "lifsea-agent.yaml"
UNIT = DEPLOY / "systemd" / "lifsea-agent.service"
CREDENTIALS, TLS = "/etc/lifsea-agent/credentials", "/etc/lifsea-agent/tls"


def documents() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]


def test_the_daemonset_is_valid_for_kubernetes_and_runs_as_the_agent_needs() -> None:
    docs = documents()
    for doc in docs:  # strict: a misspelled field is an error, not ignored
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    daemonset = next(doc for doc in docs if doc["kind"] == "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["hostPID"] and pod["hostNetwork"] and container["securityContext"]["privileged"]
    assert {"operator": "Exists"} in pod["tolerations"]
    probe = container["readinessProbe"]["httpGet"]
    assert (probe["path"], probe["scheme"]) == ("/healthz", "HTTPS")
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    host_paths = {path: volumes[m["name"]].get("hostPath", {}).get("path") for path, m in mounts.items()}
    assert (
        host_paths["/host"] == "/" and host_paths["/host/sysroot"] == "/sysroot" and host_paths["/host/run"] == "/run"
    )
    assert volumes[mounts["/etc/lifsea-agent/agent.toml"]["name"]]["configMap"]["name"] == "lifsea-agent"
    # The two Secrets the README has people create, by these names; the manifest holds neither.
    secrets = {path: volumes[mounts[path]["name"]]["secret"]["secretName"] for path in (CREDENTIALS, TLS)}
    assert secrets == {CREDENTIALS: "lifsea-agent-credentials", TLS: "lifsea-agent-tls"}
    assert not [doc for doc in docs if doc["kind"] == "Secret"]

    # A mistake the schema catches, so the check above is not a formality.
    broken = {**daemonset, "spec": {**daemonset["spec"], "template": {**daemonset["spec"]["template"]}}}
    broken["spec"]["template"]["spec"] = {**pod, "hostPid": True}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_the_manifests_config_and_secret_load_in_the_agent(tmp_path: Path) -> None:
    """The agent.toml of the ConfigMap, with the example credentials.toml as its Secret, is what the
    agent loads on a node (its paths moved under a temporary root, where a certificate is made for it)."""
    docs = documents()
    config = next(doc for doc in docs if doc["kind"] == "ConfigMap")["data"]["agent.toml"]
    secret = (DEPLOY / "kubernetes" / "credentials.example.toml").read_text()
    etc = tmp_path / "etc" / "lifsea-agent"
    (etc / "credentials").mkdir(parents=True)
    (etc / "tls").mkdir()
    cert, key = certs.issue(tmp_path / "ca", tmp_path / "certs", "node")
    shutil.copy(cert, etc / "tls" / "tls.crt")
    shutil.copy(key, etc / "tls" / "tls.key")
    (etc / "credentials" / "credentials.toml").write_text(secret)
    (etc / "agent.toml").write_text(config.replace("/etc/lifsea-agent/", f"{etc}/"))
    loaded = load(etc / "agent.toml", {"node_name": "edge-7"})
    assert loaded.host_root == Path("/host") and loaded.system_bus == Path("/host/run/dbus/system_bus_socket")
    assert [(t.name, t.role.value) for t in loaded.tokens] == [("alice", "operator")]
    assert str(loaded.ops.namespaces) == "/proc/1/ns"

    (etc / "credentials" / "credentials.toml").write_text(secret + "\n[listen]\nport = 1\n")
    with pytest.raises(Exception, match=r"credentials .*credentials.toml: only \[\[tokens\]\] and \[\[clients\]\]"):
        load(etc / "agent.toml", {"node_name": "edge-7"})


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is missing")
    unit = tmp_path / UNIT.name
    shutil.copy(UNIT, unit)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    problems = [line for line in result.stderr.splitlines() if "lifsea-agent" in line]
    assert result.returncode == 0 and not problems, result.stderr
    # And it does fail on a broken unit: the check has teeth.
    unit.write_text(UNIT.read_text().replace("ExecStart=/usr/sbin/runc", "ExecStart=/usr/sbin/no-such-runc"))
    broken = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    assert broken.returncode != 0 and "no-such-runc" in broken.stderr


def test_the_containerfile_and_the_offline_build_make_the_same_image() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    installed = re.search(r"apt-get install -y --no-install-recommends ([^\\\n]+)", text)
    assert installed is not None
    assert sorted(installed.group(1).split()) == sorted(agentimage.PACKAGES)
    assert f'ENTRYPOINT ["{agentimage.ENTRYPOINT[0]}"]' in text
    assert "CMD [" + ", ".join(f'"{arg}"' for arg in agentimage.CMD) + "]" in text
    assert f"python3 -m venv --system-site-packages {agentimage.VENV}" in text
    assert f"EXPOSE {agentimage.PORT}" in text
    assert f"ENV PATH={agentimage.VENV}/bin:{agentimage.PATH}" in text


def test_an_image_is_not_built_from_a_dirty_tree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    assert re.fullmatch(r"[0-9a-f]{40}", agentimage.source_state(repo))
    (repo / "a.py").write_text("x = 2\n")
    (repo / "new.py").write_text("")
    with pytest.raises(agentimage.ImageError, match=r"uncommitted changes \(a.py, new.py\).*pass --dirty"):
        agentimage.source_state(repo)
    with pytest.raises(agentimage.ImageError, match="uncommitted changes"):
        agentimage.build(tmp_path / "out", repo=repo)  # refused before anything is built
    assert not (tmp_path / "out").exists()


def test_the_runtime_config_is_privileged_with_the_hosts_parts_at_the_production_paths() -> None:
    base = {
        "process": {"args": ["sh"], "capabilities": {"bounding": ["CAP_KILL"]}, "terminal": True},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"}], "seccomp": {}},
    }
    config = agentimage.runtime_config(base, agentimage.Mounts(args=["--node-name", "edge-7"]))
    assert config["process"]["args"] == [*agentimage.ENTRYPOINT, *agentimage.CMD, "--node-name", "edge-7"]
    assert "CAP_SYS_ADMIN" in config["process"]["capabilities"]["bounding"] and "seccomp" not in config["linux"]
    kinds = {ns["type"] for ns in config["linux"]["namespaces"]}
    assert "pid" not in kinds and "network" not in kinds  # the host's, as hostPID and hostNetwork
    binds = {m["destination"]: m["source"] for m in config["mounts"] if m["type"] == "bind"}
    assert binds == {
        "/host": "/",
        "/host/sysroot": "/sysroot",
        "/host/run": "/run",
        "/etc/lifsea-agent": "/etc/lifsea-agent",
        "/var/lib/lifsea-agent": "/var/lib/lifsea-agent",
    }
    assert config["root"]["readonly"] and base["linux"]["seccomp"] == {}  # the image's own left as it was
