"""Real trouble on a lab node, made and cleared on purpose: `lifsea-lab break` and `lifsea-lab fix`.

Each scenario changes the running node the way an incident would: through the node's own systemctl
(run inside the machine's namespaces) and files in its writable /etc. Nothing is simulated in the
agent or the console; they see what they would see on a real node. `fix` undoes a scenario and is
safe to run when it was never applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lifsea_tui.agent.errors import BackendError
from lifsea_tui.agent.ostree import OstreeBackend
from lifsea_tui.lab.image import OSNAME, REF, publish
from lifsea_tui.lab.layout import NodeLayout
from lifsea_tui.lab.sysroot import REMOTE, stateroot_var
from lifsea_tui.lab.varfs import is_own_filesystem

CRASHLOOP_UNIT = "lifsea-app.service"
CRASHLOOP = """[Unit]
Description=Example workload (lab scenario crash-loop)
StartLimitIntervalSec=0

[Service]
ExecStart=/bin/sh -c 'sleep 1.5; \
    echo "lifsea-app: cannot parse /etc/lifsea-app.conf: line 3: unknown key listen_port" >&2; exit 3'
Restart=always
RestartSec=1
"""
BROKEN_NGINX = "server { listen 8080 this line is not nginx syntax }\n"


class ScenarioError(Exception):
    pass


def in_node(node: NodeLayout, *argv: str) -> str:
    """Run a command inside the running machine (its mount, pid, net, ipc and uts namespaces)."""
    leader = node.state().get("leader")
    if node.state().get("state") != "running" or not isinstance(leader, int):
        raise ScenarioError(f"{node.name} is not running")
    result = subprocess.run(
        ["nsenter", f"--target={leader}", "--mount", "--uts", "--ipc", "--net", "--pid", *argv],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if result.returncode != 0 and argv[:2] != ("systemctl", "reset-failed"):
        raise ScenarioError(f"{' '.join(argv)} in {node.name}: {result.stderr.strip() or result.returncode}")
    return result.stdout


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    apply: Callable[[NodeLayout], None]
    undo: Callable[[NodeLayout], None]


def _stop_nginx(node: NodeLayout) -> None:
    in_node(node, "systemctl", "stop", "nginx.service")


def _start_nginx(node: NodeLayout) -> None:
    in_node(node, "systemctl", "reset-failed", "nginx.service")
    in_node(node, "systemctl", "start", "nginx.service")


def _crashloop(node: NodeLayout) -> None:
    (node.host_root / "etc" / "systemd" / "system" / CRASHLOOP_UNIT).write_text(CRASHLOOP)
    in_node(node, "systemctl", "daemon-reload")
    in_node(node, "systemctl", "start", "--no-block", CRASHLOOP_UNIT)


def _no_crashloop(node: NodeLayout) -> None:
    unit = node.host_root / "etc" / "systemd" / "system" / CRASHLOOP_UNIT
    if unit.exists():
        in_node(node, "systemctl", "stop", CRASHLOOP_UNIT)
        unit.unlink()
        in_node(node, "systemctl", "daemon-reload")
    in_node(node, "systemctl", "reset-failed", CRASHLOOP_UNIT)


def _broken_config(node: NodeLayout) -> None:
    (node.host_root / "etc" / "nginx" / "sites-enabled" / "lifsea-broken").write_text(BROKEN_NGINX)
    # A restart after a config change is what turns a typo into an outage.
    try:
        in_node(node, "systemctl", "restart", "nginx.service")
    except ScenarioError:
        pass  # expected: nginx refuses the configuration and the unit fails


def _good_config(node: NodeLayout) -> None:
    (node.host_root / "etc" / "nginx" / "sites-enabled" / "lifsea-broken").unlink(missing_ok=True)
    _start_nginx(node)


BALLAST = "lifsea-ballast"


def _var_dir(node: NodeLayout) -> Path:
    return stateroot_var(node.sysroot)


def _fill_var(node: NodeLayout) -> None:
    var = _var_dir(node)
    if not is_own_filesystem(var):
        raise ScenarioError(
            f"{node.name}'s /var is not a filesystem of its own (a lab from before it was): "
            "`lifsea-lab down` and `up` once, and it is"
        )
    # Everything that is left, as one file a person would find with du: what a runaway log does.
    stats = os.statvfs(var)
    free = stats.f_bavail * stats.f_frsize
    with (var / BALLAST).open("wb") as handle:
        while free > 0:
            try:
                os.posix_fallocate(handle.fileno(), 0, free)
                break
            except OSError:
                free -= 1024 * 1024
    with contextlib.suppress(OSError), (var / BALLAST).open("ab", buffering=0) as handle:
        while True:  # and the last blocks, one at a time
            handle.write(b"\0" * 4096)
            handle.flush()


def _empty_var(node: NodeLayout) -> None:
    (_var_dir(node) / BALLAST).unlink(missing_ok=True)


def _stop_resolver(node: NodeLayout) -> None:
    in_node(node, "systemctl", "stop", "systemd-resolved.service")


def _start_resolver(node: NodeLayout) -> None:
    in_node(node, "systemctl", "start", "systemd-resolved.service")


BAD_UNIT = "lifsea-storage.service"
BAD_UPGRADE = {
    f"/usr/lib/systemd/system/{BAD_UNIT}": """[Unit]
Description=Storage driver (new in this release; lab scenario bad-upgrade)

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo "lifsea-storage: cannot open /dev/lifsea0: No such device" >&2; exit 1'
""",
    f"/usr/lib/systemd/system/multi-user.target.wants/{BAD_UNIT}": f"-> ../{BAD_UNIT}",
}
LOOPING_UNIT = "lifsea-cache.service"
LOOPING_UPGRADE = {  # a release whose new unit never stays up, yet is never "failed": systemd restarts it
    f"/usr/lib/systemd/system/{LOOPING_UNIT}": """[Unit]
Description=Cache warmer (new in this release; lab crash-looping release)
StartLimitIntervalSec=0

[Service]
ExecStart=/bin/sh -c 'echo "lifsea-cache: cannot bind 127.0.0.1:6380: Address in use" >&2; exit 2'
Restart=always
RestartSec=1
""",
    f"/usr/lib/systemd/system/multi-user.target.wants/{LOOPING_UNIT}": f"-> ../{LOOPING_UNIT}",
}
BOOT_TIMEOUT = 120.0


def _ostree(*argv: str) -> str:
    result = subprocess.run(["ostree", *argv], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise ScenarioError(f"ostree {' '.join(argv[:2])}: {result.stderr.strip() or result.returncode}")
    return result.stdout.strip()


def _reboot(node: NodeLayout) -> None:
    """Reboot the machine from inside and wait until it runs again (the supervisor boots the default)."""
    boots = node.state().get("boots", 0)
    with contextlib.suppress(ScenarioError):  # the machine may go before systemctl says anything
        in_node(node, "systemctl", "reboot")
    deadline = time.monotonic() + BOOT_TIMEOUT
    while not (node.state().get("state") == "running" and node.state().get("boots", 0) != boots):
        if time.monotonic() > deadline:
            raise ScenarioError(f"{node.name} did not come back within {BOOT_TIMEOUT:.0f} s of its reboot")
        time.sleep(0.5)


def _bad_marker(node: NodeLayout) -> Path:
    return node.root / "bad-upgrade.json"


def _bad_upgrade(node: NodeLayout) -> None:
    lab = node.lab
    parent = _ostree(f"--repo={lab.repo}", "rev-parse", REF)
    version = f"{_ostree(f'--repo={lab.repo}', 'show', '--print-metadata-key=version', REF).strip(chr(39))}.1-bad"
    bad = publish(lab.repo, version, f"LifseaOS {version}: adds a storage driver (lab scenario bad-upgrade)",
                  extra=BAD_UPGRADE)  # fmt: skip
    _bad_marker(node).write_text(json.dumps({"bad": bad, "parent": parent}))
    repo = node.sysroot / "ostree" / "repo"
    _ostree(f"--repo={repo}", "pull", REMOTE, REF)
    _ostree("admin", "deploy", f"--sysroot={node.sysroot}", f"--os={OSNAME}", f"{REMOTE}:{REF}")
    _reboot(node)


def _good_upgrade(node: NodeLayout) -> None:
    """Take the bad release off the update server and the node, booting what it ran before."""
    try:
        marker = json.loads(_bad_marker(node).read_text())
    except (OSError, ValueError):
        return
    lab = node.lab
    if _ostree(f"--repo={lab.repo}", "rev-parse", REF) == marker["bad"]:
        _ostree(f"--repo={lab.repo}", "reset", REF, marker["parent"])
        _ostree(f"--repo={lab.repo}", "summary", "--update")
    booted = node.state().get("deployment")
    if isinstance(booted, str) and Path(booted).name.startswith(marker["bad"]):
        # Still running it: make the release before the next boot (the agent's own rollback, through
        # libostree), then reboot into it. Undeploying the running tree first would pull it from under
        # the machine.
        backend = OstreeBackend(node.sysroot, node.host_root, OSNAME)
        with contextlib.suppress(BackendError):
            asyncio.run(backend.rollback())
        _reboot(node)
    # Deployments in boot order (no "*" from out here: this machine did not boot the sysroot).
    status = _ostree("admin", "status", f"--sysroot={node.sysroot}")
    deployments = re.findall(rf"^[* ]*{OSNAME} ([0-9a-f]{{64}})\.\d+", status, re.MULTILINE)
    if marker["bad"] in deployments:
        _ostree("admin", "undeploy", f"--sysroot={node.sysroot}", str(deployments.index(marker["bad"])))
    _bad_marker(node).unlink()


SCENARIOS = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            "stopped-service", "nginx.service stopped (as if someone stopped it by hand)", _stop_nginx, _start_nginx
        ),
        Scenario(
            "crash-loop",
            f"{CRASHLOOP_UNIT} runs 1.5 s, exits with a config error, and systemd restarts it a second later",
            _crashloop,
            _no_crashloop,
        ),
        Scenario(
            "var-full",
            f"the node's /var filesystem filled to the last block (a file /var/{BALLAST})",
            _fill_var,
            _empty_var,
        ),
        Scenario(
            "bad-upgrade",
            f"a release whose new {BAD_UNIT} fails at boot, deployed and booted (the rollback target is the old one)",
            _bad_upgrade,
            _good_upgrade,
        ),
        Scenario(
            "dns",
            "systemd-resolved stopped: /etc/resolv.conf names 127.0.0.53 and nothing answers there",
            _stop_resolver,
            _start_resolver,
        ),
        Scenario(
            "broken-config",
            "a syntax error in /etc/nginx/sites-enabled, then nginx restarted: the unit fails",
            _broken_config,
            _good_config,
        ),
    )
}


def break_node(node: NodeLayout, name: str) -> Scenario:
    scenario = SCENARIOS.get(name)
    if scenario is None:
        raise ScenarioError(f"no scenario {name!r}; there are: {', '.join(SCENARIOS)}")
    scenario.apply(node)
    return scenario


def fix_node(node: NodeLayout, name: str | None) -> list[str]:
    """Undo one scenario, or all of them; returns what was undone."""
    if name and name not in SCENARIOS:
        raise ScenarioError(f"no scenario {name!r}; there are: {', '.join(SCENARIOS)}")
    # All of them: in reverse, so that a service a later scenario broke is repaired before it is started.
    chosen = [SCENARIOS[name]] if name else list(reversed(SCENARIOS.values()))
    for scenario in chosen:
        scenario.undo(node)
    return [scenario.name for scenario in chosen]
