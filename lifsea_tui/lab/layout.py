"""Where the lab keeps things: the image cache, and one state directory per lab with its nodes.

LIFSEA_LAB_DIR and LIFSEA_LAB_CACHE override the defaults (the user's state and cache directories), so
tests and several labs can live side by side while sharing one cached image.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from platformdirs import user_cache_dir, user_state_dir

if TYPE_CHECKING:
    from lifsea_tui.lab.etcd import EtcdCluster


def lab_dir() -> Path:
    return Path(os.environ.get("LIFSEA_LAB_DIR") or user_state_dir("lifsea-lab"))


def cache_dir() -> Path:
    return Path(os.environ.get("LIFSEA_LAB_CACHE") or user_cache_dir("lifsea-lab"))


@dataclass
class NodeSpec:
    name: str
    port: int
    tokens: dict[str, str]
    controller_token: str = ""  # the fleet controller's own operator token, so node audit logs name it


@dataclass
class LabSpec:
    """What `up` decided and the supervisor runs: stable across restarts of the lab."""

    update_port: int
    nodes: list[NodeSpec] = field(default_factory=list)
    etcd_port: int = 0
    etcd_peer_port: int = 0
    fleetlock_port: int = 0
    agent: str = "process"  # "image": every agent runs from the agent image, by runc (agentimage.py)
    agent_image: str = ""  # LAYOUT:TAG of that image


class Layout:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or lab_dir()

    @property
    def spec_file(self) -> Path:
        return self.root / "lab.json"

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def ca_file(self) -> Path:
        return self.pki / "ca" / "ca.pem"

    @property
    def pid_file(self) -> Path:
        return self.root / "supervisor.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "supervisor.log"

    @property
    def etcd_dir(self) -> Path:
        return self.root / "etcd"

    def node(self, name: str) -> NodeLayout:
        return NodeLayout(self.root / "nodes" / name, name)

    def read_spec(self) -> LabSpec | None:
        try:
            data = json.loads(self.spec_file.read_text())
        except (OSError, ValueError):
            return None
        nodes = [NodeSpec(**node) for node in data.pop("nodes")]
        known = {"update_port", "etcd_port", "etcd_peer_port", "fleetlock_port", "agent", "agent_image"}
        return LabSpec(nodes=nodes, **{key: value for key, value in data.items() if key in known})

    @property
    def status_file(self) -> Path:
        """What `lifsea-lab status --json` prints, written by `up`: the console and its commands read it
        instead of starting a process (a third of a shell's start)."""
        return self.root / "status.json"

    def write_spec(self, spec: LabSpec) -> None:
        self._write(self.spec_file, asdict(spec))

    def write_status(self, status: dict[str, Any]) -> None:
        self._write(self.status_file, status)

    def _write(self, path: Path, data: dict[str, Any]) -> None:
        """Whole or not at all, readable by root alone (both hold tokens)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
        os.replace(path.with_suffix(".tmp"), path)

    def running_status(self) -> dict[str, Any] | None:
        """The running lab's status (nodes, tokens, etcd, controller); None when no lab runs here."""
        if self.supervisor_pid() is None:
            return None
        try:
            status: dict[str, Any] = json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return None
        return status

    def supervisor_pid(self) -> int | None:
        """The running supervisor's pid, or None when there is none (a stale pid file is ignored)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if b"lifsea_tui.lab.supervisor" in cmdline else None


def lab_etcd(layout: Layout, spec: LabSpec) -> EtcdCluster:
    """The lab's one etcd member, with the lab's CA."""
    from lifsea_tui.lab.etcd import EtcdCluster, Member  # gRPC: not for the readers of the layout

    return EtcdCluster(layout.etcd_dir, layout.pki / "ca", [Member("etcd1", spec.etcd_port, spec.etcd_peer_port)])


class NodeLayout:
    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name

    @property
    def lab(self) -> Layout:
        """The lab this node belongs to (its root is LAB/nodes/NAME)."""
        return Layout(self.root.parent.parent)

    @property
    def sysroot(self) -> Path:
        return self.root / "sysroot"

    @property
    def host_root(self) -> Path:
        """A symlink to /proc/LEADER/root of the running machine, kept by the supervisor."""
        return self.root / "root"

    @property
    def namespaces(self) -> Path:
        """A symlink to /proc/LEADER/ns: the namespaces an ops container joins."""
        return self.root / "ns"

    @property
    def ops_dir(self) -> Path:
        """The agent's ops containers: image checkouts and per-session bundles."""
        return self.root / "ops"

    @property
    def bus(self) -> Path:
        return self.host_root / "run" / "dbus" / "system_bus_socket"

    @property
    def var_image(self) -> Path:
        """The node's /var filesystem (see varfs.py)."""
        return self.root / "var.img"

    @property
    def agent_config(self) -> Path:
        return self.root / "agent.toml"

    # An agent run from the agent image: its bundle, and what a host would give it at /etc/lifsea-agent,
    # /var/lib/lifsea-agent and /run/dbus (bound into the machine, so the bus is reachable from outside).
    @property
    def agent_bundle(self) -> Path:
        return self.root / "agent-bundle"

    @property
    def agent_etc(self) -> Path:
        return self.root / "agent-etc"

    @property
    def agent_state(self) -> Path:
        return self.root / "agent-state"

    @property
    def dbus_dir(self) -> Path:
        return self.root / "run-dbus"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def certs(self) -> Path:
        return self.root / "certs"

    def state(self) -> dict[str, object]:
        try:
            value = json.loads(self.state_file.read_text())
            return value if isinstance(value, dict) else {}
        except (OSError, ValueError):
            return {}

    def write_state(self, **state: object) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_file)
