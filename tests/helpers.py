"""Real parts for tests: a small ostree image and sysroot, an update server, an agent on loopback TLS."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn

from lifsea_tui.agent.app import create_app
from lifsea_tui.agent.config import AgentConfig, LimitsConfig, OpsConfig, ServicesConfig, TokenEntry, hash_token
from lifsea_tui.agent.ostree import LIBOSTREE_ERROR
from lifsea_tui.agent.serving import uvicorn_config
from lifsea_tui.api import Role, routes
from lifsea_tui.client.ops import OpsShell, Output
from lifsea_tui.lab import certs, image, sysroot
from lifsea_tui.lab.updateserver import UpdateServer


def ostree_missing() -> str | None:
    if shutil.which("ostree") is None:
        return "the ostree CLI is not installed (apt-get install ostree)"
    return LIBOSTREE_ERROR


def tiny_tree(root: Path, version: str) -> Path:
    """A few files in the ostree layout: enough for ostree to deploy and the agent to describe."""
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("tiny\n")
    (root / "var" / "lib" / "tiny").mkdir(parents=True)
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "hello").write_text("#!/bin/sh\necho hello\n")
    image.to_ostree_layout(root, version)
    (root / "usr" / "share" / "lifsea" / "packages.list").write_text("base-files 12\nlibc6 2.36\n")
    return root


@dataclass
class TinyNode:
    repo: Path
    server: UpdateServer
    sysroot: Path

    @property
    def host_root(self) -> Path:
        """What the node 'booted': the deployment a bootloader would pick, as the lab's supervisor does."""
        return sysroot.default_deployment(self.sysroot)

    def close(self) -> None:
        """Stop its update server, and leave its sysroot removable (pytest deletes old temporary
        directories; ostree's immutable deployment roots made that fail, and the runs piled up)."""
        self.server.stop()
        sysroot.release(self.sysroot)


def make_tiny_node(base: Path) -> TinyNode:
    repo = base / "repo"
    image.init_repo(repo)
    image.commit(repo, [f"dir={tiny_tree(base / 'tree', '1.0')}"], "1.0", "LifseaOS 1.0: base image")
    server = UpdateServer(repo).start()
    sysroot.create(base / "sysroot", server.url)
    return TinyNode(repo=repo, server=server, sysroot=base / "sysroot")


@dataclass
class RunningAgent:
    url: str
    ca_file: Path
    config: AgentConfig
    tokens: dict[str, str]
    server: uvicorn.Server
    thread: threading.Thread
    app: object = field(repr=False, default=None)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def issue_pki(base: Path, name: str) -> tuple[Path, Path, Path]:
    cert, key = certs.issue(base / "ca", base / "certs", name)
    return base / "ca" / "ca.pem", cert, key


def start_agent(
    base: Path,
    *,
    host_root: Path,
    sysroot_path: Path,
    bus: Path | None = None,
    name: str = "tiny",
    watch_interval: float = 0.2,
    max_body: int = 64 * 1024,
    ops: OpsConfig | None = None,
    services: ServicesConfig | None = None,
    limits: LimitsConfig | None = None,
) -> RunningAgent:
    ca, cert, key = issue_pki(base / "pki", name)
    tokens = {role.value: secrets.token_urlsafe(24) for role in Role}
    config = AgentConfig(
        node_name=name,
        host_root=host_root,
        sysroot=sysroot_path,
        system_bus=bus or base / "no-bus" / "system_bus_socket",
        audit_dir=base / "audit",
        tls_cert=cert,
        tls_key=key,
        tokens=[
            TokenEntry(name=f"{role}-user", role=Role(role), sha256=hash_token(token)) for role, token in tokens.items()
        ],
        watch_interval=watch_interval,
        max_body_bytes=max_body,
        ops=ops or OpsConfig(),
        services=services or ServicesConfig(),
        limits=limits or LimitsConfig(),
    )
    app = create_app(config)
    served = serve(uvicorn_config(app, config))
    return RunningAgent(
        url=served.url, ca_file=ca, config=config, tokens=tokens, server=served.server, thread=served.thread, app=app
    )


@dataclass
class Served:
    """A uvicorn server on a loopback port of its own, run by a thread of its own."""

    server: uvicorn.Server
    thread: threading.Thread
    port: int

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.server.force_exit = True
        self.thread.join(5)


def serve(config: uvicorn.Config) -> Served:
    """Start `config`'s app on a free loopback port; back once it accepts connections."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"{type(config.app).__name__} on 127.0.0.1 did not start")
        time.sleep(0.02)
    return Served(server, thread, sock.getsockname()[1])


def write_agent_config(base: Path, *, host_root: Path, sysroot_path: Path, name: str = "tiny") -> tuple[Path, dict]:
    """A TOML config as an operator would write it, for an agent run as its own process."""
    ca, cert, key = issue_pki(base / "pki", name)
    tokens = {role.value: secrets.token_urlsafe(24) for role in Role}
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    entries = "".join(
        f'\n[[tokens]]\nname = "{role}-user"\nrole = "{role}"\nsha256 = "{hash_token(token)}"\n'
        for role, token in tokens.items()
    )
    path = base / "agent.toml"
    path.write_text(
        f'node_name = "{name}"\n[paths]\nhost_root = "{host_root}"\nsysroot = "{sysroot_path}"\n'
        f'system_bus = "{base}/no-bus"\n[listen]\nport = {port}\n[tls]\ncert = "{cert}"\nkey = "{key}"\n'
        f'[audit]\ndir = "{base}/audit"\n{entries}'
    )
    return path, {"url": f"https://127.0.0.1:{port}", "ca": ca, "tokens": tokens, "audit": base / "audit"}


def lab_client(node: dict, role: str) -> httpx.Client:
    """HTTP to a lab node (an entry of `lifsea-lab status --json`) with one of its tokens."""
    return httpx.Client(
        base_url=node["url"],
        verify=ssl.create_default_context(cafile=node["ca_file"]),
        headers={"Authorization": f"Bearer {node['tokens'][role]}"},
        timeout=30,
    )


def serve_agent(config: Path, info: dict, tls: ssl.SSLContext | None = None) -> subprocess.Popen[bytes]:
    """`lifsea-agent serve` in a process (and session) of its own, once its /healthz answers (asked
    with `tls`, when the agent requires a client certificate)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifsea_tui.agent.cli", "serve", "--config", str(config)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            if (
                httpx.get(
                    info["url"] + routes.HEALTHZ,
                    verify=tls or ssl.create_default_context(cafile=str(info["ca"])),
                    timeout=1,
                ).status_code
                == 200
            ):
                return proc
        except httpx.TransportError:
            pass
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "agent exited"
        assert time.monotonic() < deadline, "agent did not start"
        time.sleep(0.1)


def kill_agent(proc: subprocess.Popen[bytes]) -> None:
    """What systemd does to a unit's cgroup on SIGKILL: the agent and anything it started."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


PROMPT = b"OPS"  # the break-glass shell's prompt


class Driver:
    """Types into an OpsShell and waits for what the terminal prints."""

    def __init__(self, shell: OpsShell) -> None:
        self.shell = shell
        self.output = bytearray()
        self.events: list[object] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for event in self.shell.events():
            self.events.append(event)
            if isinstance(event, Output):
                self.output += event.data

    async def expect(self, needle: bytes, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.output:
            assert not self.task.done() or needle in self.output, f"shell ended before {needle!r}: {self.events[-3:]}"
            assert time.monotonic() < deadline, f"no {needle!r} in {bytes(self.output[-600:])!r}"
            await asyncio.sleep(0.02)

    async def run(self, command: str, marker: str, timeout: float = 15.0) -> str:
        """Run a command and return what it printed between its start and the end marker."""
        start = len(self.output)
        await self.shell.send(f"{command}; echo {marker[:3]}''{marker[3:]}\r".encode())
        await self.expect(marker.encode(), timeout)
        return bytes(self.output[start:]).decode(errors="replace")

    async def finished(self, timeout: float = 30.0) -> object:
        await asyncio.wait_for(self.task, timeout)
        return self.events[-1]
