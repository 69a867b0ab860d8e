"""lifsea-lab: a real lab fleet on one machine (up, status, publish, down)."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lifsea_tui import __version__, agentimage
from lifsea_tui.agent.config import token_entry
from lifsea_tui.agent.ostree import LIBOSTREE_ERROR
from lifsea_tui.api import Role
from lifsea_tui.lab import certs, image, scenarios, sysroot, varfs
from lifsea_tui.lab.layout import LabSpec, Layout, NodeSpec, cache_dir, lab_etcd
from lifsea_tui.lab.procs import free_port

NEEDED_COMMANDS = {
    "ostree": "ostree",
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "runc": "runc",
    "mkfs.ext4": "e2fsprogs",
    "etcd": "etcd-server",
}
READY_TIMEOUT = 120.0


def progress(text: str) -> None:
    print(f"lifsea-lab: {text}", file=sys.stderr, flush=True)


def preflight() -> list[str]:
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root (systemd-nspawn and ostree deployments need it)")
    missing = [package for command, package in NEEDED_COMMANDS.items() if shutil.which(command) is None]
    if missing:
        problems.append(f"missing packages: {' '.join(missing)} (apt-get install {' '.join(missing)})")
    if LIBOSTREE_ERROR:
        problems.append(LIBOSTREE_ERROR)
    if not Path("/dev/loop-control").exists():
        problems.append("no loop devices (/dev/loop-control): each node's /var is a loop-mounted filesystem")
    return problems


def ensure_image(layout: Layout) -> None:
    """The lab's update repo holds the OS image and the ops image: from the cache, built into it when cold."""
    cache_repo = cache_dir() / f"repo-{image.recipe()}"
    for stale in cache_dir().glob("repo*"):  # images of another recipe: never used again
        if stale != cache_repo and stale.is_dir():
            shutil.rmtree(stale)
    builders = {image.REF: ("the OS image", image.build_base), image.OPS_REF: ("the ops image", image.build_ops)}
    for ref, (what, build) in builders.items():
        if image.has_ref(layout.repo, ref):
            continue
        if not image.has_ref(cache_repo, ref):
            started = time.monotonic()
            progress(f"building {what} once (cached in {cache_dir()})")
            build(cache_repo, cache_dir(), progress)
            progress(f"{what} built in {time.monotonic() - started:.0f} s")
        image.init_repo(layout.repo)
        subprocess.run(
            ["ostree", f"--repo={layout.repo}", "pull-local", str(cache_repo), ref], check=True, capture_output=True
        )
        subprocess.run(["ostree", f"--repo={layout.repo}", "summary", "--update"], check=True, capture_output=True)


def lab_labels(name: str) -> dict[str, str]:
    """Two zones, taken in turn (node1 a, node2 b, node3 a, ...), so that per-zone limits can be tried."""
    number = int("".join(c for c in name if c.isdigit()) or 1)
    return {"zone": "ab"[(number - 1) % 2], "pool": "lab"}


def _tokens(spec: NodeSpec) -> str:
    """The node's [[tokens]]: the entries `lifsea-agent token new` prints."""
    return "".join(
        "\n" + token_entry(name, Role(role), token)
        for name, role, token in [
            *((f"lab-{role}", role, token) for role, token in spec.tokens.items()),
            ("lifsea-fleetd", "operator", spec.controller_token),
        ]
    )


def write_agent_config(layout: Layout, spec: NodeSpec) -> None:
    node = layout.node(spec.name)
    cert, key = node.certs / f"{spec.name}.pem", node.certs / f"{spec.name}.key"
    if not cert.exists():
        certs.issue(layout.pki / "ca", node.certs, spec.name)
    var = sysroot.stateroot_var(node.sysroot)
    audit_dir = var / "lib" / "lifsea-agent" / "audit"
    tokens = _tokens(spec)
    node.agent_config.write_text(
        f'node_name = "{spec.name}"\n\n[paths]\nhost_root = "{node.host_root}"\nsysroot = "{node.sysroot}"\n'
        f'system_bus = "{node.bus}"\n'
        f'journal = ["{node.host_root}/var/log/journal", "{node.host_root}/run/log/journal"]\n\n'
        f'[listen]\nhost = "127.0.0.1"\nport = {spec.port}\n\n[tls]\ncert = "{cert}"\nkey = "{key}"\n\n'
        f'[audit]\ndir = "{audit_dir}"\n\n'
        f'[ops]\nimage = "{sysroot.REMOTE}:{image.OPS_REF}"\nnamespaces = "{node.namespaces}"\n'
        # A full /var is cleared from the ops shell, so the lab lets an admin ask for every level.
        f'dir = "{node.ops_dir}"\naccess = ["read-only", "debug", "writable"]\n'
        f'recordings = "{var / "lib" / "lifsea-agent" / "recordings"}"\n\n[labels]\n'
        + "".join(f'{key} = "{value}"\n' for key, value in lab_labels(spec.name).items())
        + tokens
    )
    node.agent_config.chmod(0o600)


ETCD_USERS = {"lifsea-fleetd": "lifsea-fleetd", "console": "lifsea-console"}  # user -> its role


def status_json(layout: Layout, spec: LabSpec) -> dict[str, Any]:
    store = lab_etcd(layout, spec)
    users = {}
    for user in ETCD_USERS:
        cert, key = store.client_cert(user)
        users[user] = {"cert": str(cert), "key": str(key)}
    return {
        "update_server": f"http://127.0.0.1:{spec.update_port}",
        "etcd": {
            "endpoints": [f"127.0.0.1:{member.client_port}" for member in store.members],
            "ca_file": str(layout.ca_file),
            "server_name": "localhost",
            "users": users,
            "auth": True,  # etcd's authentication is on: each user writes only what its role allows
            "log": str(layout.etcd_dir / "etcd.log"),
        },
        "controller": {
            "id": "lab-fleetd",
            "fleetlock": f"http://127.0.0.1:{spec.fleetlock_port}",
            "log": str(layout.root / "fleetd.log"),
            "trail": str(layout.root / "trail"),  # the audit records it collected off the nodes
        },
        "nodes": [
            {
                "name": node.name,
                "url": f"https://127.0.0.1:{node.port}",
                "ca_file": str(layout.ca_file),
                "tokens": node.tokens,
                "controller_token": node.controller_token,
            }
            for node in spec.nodes
        ],
    }


def _agent_ready(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", context=context, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _etcd_ready(layout: Layout, spec: LabSpec) -> bool:
    cert, key = lab_etcd(layout, spec).client_cert("console")
    context = ssl.create_default_context(cafile=str(layout.ca_file))
    context.load_cert_chain(cert, key)
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{spec.etcd_port}/health", context=context, timeout=2) as answer:
            return bool(json.loads(answer.read()).get("health") == "true")
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_ready(layout: Layout, spec: LabSpec, alive: Callable[[], bool], timeout: float = READY_TIMEOUT) -> list[str]:
    """Wait until every node runs, every agent answers and etcd is healthy; return what is still not ready."""
    context = ssl.create_default_context(cafile=str(layout.ca_file))
    deadline = time.monotonic() + timeout
    while True:
        waiting = [] if _etcd_ready(layout, spec) else ["etcd: not healthy"]
        for node in spec.nodes:
            state = layout.node(node.name).state().get("state")
            if state != "running":
                waiting.append(f"{node.name}: machine {state or 'not started'}")
            elif not _agent_ready(f"https://127.0.0.1:{node.port}", context):
                waiting.append(f"{node.name}: agent not answering")
        if not waiting or time.monotonic() > deadline or not alive():
            return waiting
        time.sleep(0.2)


def ensure_agent_image(layout: Layout) -> str:
    """The agent image for `--agent image`: built from this tree into the cache, again only when the
    tree has changed since (a tree with uncommitted changes is built anyway, its label says -dirty)."""
    out = cache_dir() / "agent-image"

    def git(*args: str) -> bytes:
        argv = ["git", "-C", str(agentimage.ROOT), *args]
        return subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL).stdout

    changes = hashlib.sha256(git("diff", "HEAD") + git("status", "--porcelain")).hexdigest()[:16]
    key = f"{git('rev-parse', 'HEAD').decode().strip()} {changes} {__version__}"
    stamp = cache_dir() / "agent-image.key"
    reference = f"{out}:{__version__}"
    if stamp.exists() and stamp.read_text() == key and (out / "index.json").exists():
        return reference
    started = time.monotonic()
    progress(f"building the agent image (cached in {out})")
    shutil.rmtree(out, ignore_errors=True)
    agentimage.build(out, dirty=True, progress=progress)
    stamp.write_text(key)
    progress(f"the agent image built in {time.monotonic() - started:.0f} s")
    return reference


def write_image_agent_config(layout: Layout, spec: NodeSpec, image_ref: str) -> None:
    """What a host gives the containerized agent: its config (the production paths, as in the
    DaemonSet's ConfigMap) and certificate in /etc/lifsea-agent, and its bundle."""
    node = layout.node(spec.name)
    node.agent_etc.mkdir(parents=True, exist_ok=True)
    node.agent_state.mkdir(parents=True, exist_ok=True)
    node.dbus_dir.mkdir(parents=True, exist_ok=True)
    for suffix in ("pem", "key"):
        shutil.copy(node.certs / f"{spec.name}.{suffix}", node.agent_etc / f"tls.{suffix}")
    config = (
        f'node_name = "{spec.name}"\n\n[paths]\nhost_root = "/host"\nsysroot = "/host/sysroot"\n'
        'system_bus = "/host/run/dbus/system_bus_socket"\njournal = ["/host/var/log/journal"]\n\n'
        f'[listen]\nhost = "127.0.0.1"\nport = {spec.port}\n\n'
        '[tls]\ncert = "/etc/lifsea-agent/tls.pem"\nkey = "/etc/lifsea-agent/tls.key"\n\n'
        '[audit]\ndir = "/host/var/lib/lifsea-agent/audit"\n\n'
        f'[ops]\nimage = "{sysroot.REMOTE}:{image.OPS_REF}"\nnamespaces = "/proc/1/ns"\n'
        'dir = "/var/lib/lifsea-agent/ops"\naccess = ["read-only", "debug", "writable"]\n'
        'recordings = "/host/var/lib/lifsea-agent/recordings"\n\n[labels]\n'
        + "".join(f'{key} = "{value}"\n' for key, value in lab_labels(spec.name).items())
        + _tokens(spec)
    )
    target = node.agent_etc / "agent.toml"
    target.write_text(config)
    target.chmod(0o600)
    if not (node.agent_bundle / "config.image.json").exists():
        agentimage.bundle(image_ref, node.agent_bundle)


def up(layout: Layout, count: int, agent: str = "process") -> int:
    problems = preflight()
    if problems:
        for problem in problems:
            print(f"lifsea-lab: cannot bring the lab up: {problem}", file=sys.stderr)
        return 2
    started = time.monotonic()
    spec = layout.read_spec()
    if layout.supervisor_pid() is not None:
        if spec is not None and len(spec.nodes) == count:
            not_ready = wait_ready(layout, spec, lambda: layout.supervisor_pid() is not None)
            layout.write_status(status_json(layout, spec))  # a lab made before the file existed
            progress("the lab is already up" + (f"; not ready: {'; '.join(not_ready)}" if not_ready else ""))
            return 1 if not_ready else 0
        progress(f"the lab runs with another node count; restarting it with {count} nodes")
        down(layout, purge=False)
    layout.root.mkdir(parents=True, exist_ok=True)
    ensure_image(layout)
    certs.ensure_ca(layout.pki / "ca")
    old = {node.name: node for node in spec.nodes} if spec else {}
    spec = LabSpec(
        update_port=spec.update_port if spec else free_port(),
        etcd_port=(spec and spec.etcd_port) or free_port(),
        etcd_peer_port=(spec and spec.etcd_peer_port) or free_port(),
        fleetlock_port=(spec and spec.fleetlock_port) or free_port(),
        agent=agent,
        agent_image=ensure_agent_image(layout) if agent == "image" else "",
    )
    for index in range(1, count + 1):
        name = f"node{index}"
        node_spec = old.get(name) or NodeSpec(
            name=name, port=free_port(), tokens={role.value: secrets.token_urlsafe(24) for role in Role}
        )
        node_spec.controller_token = node_spec.controller_token or secrets.token_urlsafe(24)
        spec.nodes.append(node_spec)
    layout.write_spec(spec)
    url = f"http://127.0.0.1:{spec.update_port}"
    # The update server must answer while node sysroots are created: serve it from here for that time.
    from lifsea_tui.lab.updateserver import UpdateServer

    server = UpdateServer(layout.repo, port=spec.update_port).start()
    try:
        for node_spec in spec.nodes:
            node = layout.node(node_spec.name)
            node.root.mkdir(parents=True, exist_ok=True)
            if not sysroot.is_created(node.sysroot):
                progress(f"creating {node_spec.name}: its sysroot, deployed from the update server")
                if node.sysroot.exists():
                    shutil.rmtree(node.sysroot)
                sysroot.create(node.sysroot, url)
            else:
                sysroot.set_remote(node.sysroot, url)
            sysroot.pull_ops_image(node.sysroot, layout.repo)
            varfs.mount(node.var_image, sysroot.stateroot_var(node.sysroot))
            write_agent_config(layout, node_spec)
            if spec.agent == "image":
                write_image_agent_config(layout, node_spec, spec.agent_image)
    finally:
        server.stop()
    log = layout.log_file.open("ab")
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "lifsea_tui.lab.supervisor", str(layout.root)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    not_ready = wait_ready(layout, spec, lambda: supervisor.poll() is None)
    if not_ready:
        print(f"lifsea-lab: the lab did not come up: {'; '.join(not_ready)} (see {layout.root})", file=sys.stderr)
        return 1
    # etcd's own users: the controller and the console each write as themselves, and prove it.
    asyncio.run(lab_etcd(layout, spec).enable_auth(ETCD_USERS))
    layout.write_status(status_json(layout, spec))
    progress(f"{count} nodes up in {time.monotonic() - started:.1f} s; `lifsea-lab status` shows them")
    return 0


def down(layout: Layout, purge: bool) -> int:
    pid = layout.supervisor_pid()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while layout.supervisor_pid() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if layout.supervisor_pid() is not None:
            print(f"lifsea-lab: supervisor {pid} did not stop; killing it", file=sys.stderr)
            os.killpg(pid, signal.SIGKILL)
    leftovers = _leftover_processes(layout)
    for leftover in leftovers:
        try:
            os.kill(leftover, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for var_dir in layout.root.glob("nodes/*/sysroot/ostree/deploy/*/var"):
        varfs.unmount(var_dir)
    if purge and layout.root.exists():
        for node_sysroot in layout.root.glob("nodes/*/sysroot"):
            sysroot.release(node_sysroot)
        shutil.rmtree(layout.root)
    progress("the lab is down" + (" and its state removed" if purge else ""))
    return 0


def _leftover_processes(layout: Layout) -> list[int]:
    """Processes still running whose command line names this lab's directory (nspawn, agents)."""
    marker = str(layout.root).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline and b"lifsea-lab" not in cmdline.split(b"\0")[0]:
            found.append(int(entry))
    return found


def status(layout: Layout, as_json: bool) -> int:
    spec = layout.read_spec()
    running = layout.supervisor_pid() is not None
    if spec is None:
        print("lifsea-lab: no lab here; `lifsea-lab up` makes one", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(status_json(layout, spec), indent=2))
        return 0 if running else 1
    print(f"lab {layout.root}: {'up' if running else 'down'}; update server http://127.0.0.1:{spec.update_port}")
    print(
        f"  etcd https://127.0.0.1:{spec.etcd_port}  lifsea-fleetd (FleetLock http://127.0.0.1:{spec.fleetlock_port})"
    )
    for node in spec.nodes:
        state = layout.node(node.name).state()
        print(
            f"  {node.name:8} {state.get('state', 'never booted'):12} https://127.0.0.1:{node.port}  "
            f"boots {state.get('boots', 0)}"
        )
    return 0 if running else 1


def main(argv: list[str] | None = None) -> int:
    top = argparse.ArgumentParser(
        prog="lifsea-lab",
        description="A real lab fleet on this machine: an OS image in "
        "ostree, an update server, and nodes booted with systemd-nspawn, each with an agent.",
    )
    top.add_argument("--version", action="version", version=f"lifsea-lab {__version__}")
    top.add_argument(
        "--dir", type=Path, help="the lab's state directory (default: $LIFSEA_LAB_DIR or the user's state dir)"
    )
    commands = top.add_subparsers(dest="command", required=True)
    up_cmd = commands.add_parser("up", help="build (once) and start the lab; idempotent")
    up_cmd.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    up_cmd.add_argument(
        "--agent",
        choices=("process", "image"),
        default="process",
        help="how each node's agent runs: a process of this machine (default), or the agent image run by "
        "runc with the paths a DaemonSet gives it (/host, /host/sysroot, /host/run, the node's pid namespace)",
    )
    status_cmd = commands.add_parser("status", help="show the lab")
    status_cmd.add_argument("--json", action="store_true", help="machine-readable: update server, nodes, tokens")
    publish_cmd = commands.add_parser("publish", help="commit a new OS version to the update server")
    publish_cmd.add_argument("--version", required=True)
    publish_cmd.add_argument("--subject", help="the commit's subject line")
    publish_cmd.add_argument(
        "--bad",
        action="store_true",
        help=f"a bad release: its new {scenarios.BAD_UNIT} fails at every boot (for rollouts' health gates)",
    )
    publish_cmd.add_argument(
        "--crash-loop",
        action="store_true",
        help=f"a release whose new {scenarios.LOOPING_UNIT} restarts for ever (never 'failed'; a runbook sees it)",
    )
    break_cmd = commands.add_parser("break", help="put real trouble on a running node (see `scenarios`)")
    break_cmd.add_argument("node")
    break_cmd.add_argument("--scenario", required=True, choices=sorted(scenarios.SCENARIOS))
    fix_cmd = commands.add_parser("fix", help="undo a scenario on a node (all of them without --scenario)")
    fix_cmd.add_argument("node")
    fix_cmd.add_argument("--scenario", choices=sorted(scenarios.SCENARIOS))
    commands.add_parser("scenarios", help="list the scenarios `break` can apply")
    down_cmd = commands.add_parser("down", help="stop every node, agent and the update server")
    down_cmd.add_argument("--purge", action="store_true", help="also delete the nodes' sysroots and the lab's state")
    args = top.parse_args(argv)
    layout = Layout(args.dir)
    if args.command == "up":
        if not 1 <= args.nodes <= 50:
            top.error("--nodes must be between 1 and 50")
        try:
            return up(layout, args.nodes, args.agent)
        except (image.ImageError, varfs.VarError, agentimage.ImageError) as error:
            print(f"lifsea-lab: {error}", file=sys.stderr)
            return 1
    if args.command == "status":
        return status(layout, args.json)
    if args.command == "publish":
        try:
            checksum = image.publish(
                layout.repo,
                args.version,
                args.subject,
                extra=scenarios.BAD_UPGRADE if args.bad else scenarios.LOOPING_UPGRADE if args.crash_loop else None,
            )
        except image.ImageError as error:
            print(f"lifsea-lab: {error}", file=sys.stderr)
            return 1
        print(checksum)
        return 0
    if args.command == "scenarios":
        for scenario in scenarios.SCENARIOS.values():
            print(f"{scenario.name:16} {scenario.what}")
        return 0
    if args.command in ("break", "fix"):
        spec = layout.read_spec()
        if spec is None or args.node not in {n.name for n in spec.nodes}:
            print(f"lifsea-lab: no node {args.node!r} in the lab", file=sys.stderr)
            return 2
        node = layout.node(args.node)
        try:
            if args.command == "break":
                scenario = scenarios.break_node(node, args.scenario)
                progress(f"{args.node}: {scenario.name}: {scenario.what}")
            else:
                undone = scenarios.fix_node(node, args.scenario)
                progress(f"{args.node}: fixed {', '.join(undone)}")
        except scenarios.ScenarioError as error:
            print(f"lifsea-lab: {error}", file=sys.stderr)
            return 1
        return 0
    return down(layout, args.purge)


if __name__ == "__main__":
    sys.exit(main())
