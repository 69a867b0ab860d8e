"""The break-glass shell against OpenSSH, measured in the same run on this machine.

OpenSSH's sshd from Debian listens on a loopback port only for this benchmark (nodes have no sshd); the
ops shell runs on a real lab node (runc container in an nspawn machine, recorded). Both are driven the
same way: the client (`lifsea-tui shell` or `ssh -tt`) runs in a pseudo-terminal whose master this
script writes keys to and reads the screen from.

- keystroke echo round trip: type a character, wait for its echo; p50 and p99 over many keys;
- bulk output: `seq` printing ~15 MB, bytes per second at the client (recording on for the ops shell);
- request to first prompt: API (POST session, attach, prompt) in-process, and each client from its
  process start to the prompt;
- agent memory per open session: the agent's RSS with N attached sessions against none; sshd's
  per-connection processes for comparison.

Prints each figure with its ratio to the peer and appends JSON lines to benchmarks/results/ops_shell.jsonl.
Run as root: `make bench` or `python -m benchmarks.ops_shell [--keys N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import pty
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

from benchmarks.results import pct, recorder
from lifsea_tui.api import EndRequest, OpsSessionRequest
from lifsea_tui.client.netloop import new_event_loop
from lifsea_tui.client.node import NodeClient, NodeTarget
from lifsea_tui.client.ops import OpsShell, Output
from lifsea_tui.lab import targets

record = recorder("ops_shell.jsonl")
PROMPT = b"BENCH$ "


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Terminal:
    """A client program in a pseudo-terminal: keys in, screen bytes out, with timing."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.started = time.perf_counter()
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execvpe(argv[0], argv, env or dict(os.environ))
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.seen = bytearray()

    def read_until(self, needle: bytes, timeout: float = 30.0, start: int = 0) -> float:
        deadline = time.perf_counter() + timeout
        searched = start  # only new bytes are searched: megabytes of output must not cost O(n²)
        while self.seen.find(needle, searched) < 0:
            searched = max(start, len(self.seen) - len(needle) + 1)
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError(f"no {needle!r}; last output {bytes(self.seen[-300:])!r}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 1 << 16)
                except OSError:
                    raise TimeoutError(f"the client ended before {needle!r}: {bytes(self.seen[-300:])!r}") from None
                self.seen += chunk
        return time.perf_counter()

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def set_prompt(self) -> None:
        mark = len(self.seen)
        self.write(b"PS1='BENCH''$ '\r")
        self.read_until(PROMPT, start=mark)  # the echoed command reads BENCH''$, so this is the prompt

    def close(self) -> None:
        """Exit the remote shell (an ops session left detached would count against the node's limits)."""
        with contextlib.suppress(OSError):
            self.write(b"\x15exit\r")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if select.select([self.fd], [], [], 0.05)[0]:
                    os.read(self.fd, 1 << 16)
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                break
        else:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


def echo_latencies(term: Terminal, keys: int) -> list[float]:
    """Milliseconds from writing a key to reading its echo."""
    out = []
    for _ in range(keys):
        mark = len(term.seen)
        started = time.perf_counter()
        term.write(b"x")
        out.append((term.read_until(b"x", start=mark) - started) * 1000)
        mark = len(term.seen)
        term.write(b"\x7f")
        term.read_until(b"\x08", start=mark)
    return out


def throughput(term: Terminal, count: int) -> tuple[float, int]:
    """Bytes per second of `seq 1 count` as the client's terminal receives it."""
    mark = len(term.seen)
    started = time.perf_counter()
    term.write(f"seq 1 {count}; echo DONE''MARK\r".encode())
    ended = term.read_until(b"DONEMARK", timeout=300, start=mark)
    received = len(term.seen) - mark
    term.read_until(PROMPT, start=term.seen.index(b"DONEMARK", mark))
    return received / (ended - started), received


def start_sshd(work: Path) -> tuple[int, Path, subprocess.Popen[bytes]]:
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / name)], check=True)
    (work / "authorized_keys").write_text((work / "client_key.pub").read_text())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = work / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {work / 'host_key'}\n"
        f"AuthorizedKeysFile {work / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"PidFile {work / 'sshd.pid'}\nPrintMotd no\nUseDNS no\nLogLevel ERROR\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("sshd did not start") from None
            time.sleep(0.05)
    return port, work / "client_key", proc


def ssh_argv(port: int, key: Path) -> list[str]:
    return [
        "ssh", "-tt", "-i", str(key), "-p", str(port), "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "root@127.0.0.1",
        "env PS1='BENCH''$ ' bash --norc -i",
    ]  # fmt: skip


class ApiShell:
    """An ops session through the API alone (no `lifsea-tui shell` process, no terminal on this side),
    its output gathered as it comes; ended and closed on the way out. `started` and `created` are when
    the POST was sent and answered."""

    def __init__(self, target: NodeTarget, reason: str, ttl: int) -> None:
        self.target, self.request = target, OpsSessionRequest(reason=reason, ttl_seconds=ttl)
        self.client = NodeClient(target)
        self.arrived: asyncio.Queue[bytes] = asyncio.Queue()

    async def __aenter__(self) -> ApiShell:
        self.started = time.perf_counter()
        self.session = await self.client.ops_start(self.request)
        self.created = time.perf_counter()
        self.shell = OpsShell(self.target, self.session.id)
        self.reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for event in self.shell.events():
            if isinstance(event, Output):
                self.arrived.put_nowait(event.data)

    async def until(self, needle: bytes) -> None:
        seen = b""
        while needle not in seen:
            seen += await asyncio.wait_for(self.arrived.get(), 10)

    async def __aexit__(self, *_: object) -> None:
        self.reader.cancel()
        await self.client.ops_end(self.session.id, EndRequest(reason="benchmark done"))
        await self.shell.close()
        await self.client.aclose()


async def api_first_prompt(target: NodeTarget) -> tuple[float, float]:
    """Seconds from the POST to the first prompt, and from the POST to the session's answer."""
    async with ApiShell(target, "benchmark: request to first prompt", 60) as api:
        await api.until(b" OPS ")
        prompt = time.perf_counter()
    return prompt - api.started, api.created - api.started


async def api_echo(target: NodeTarget, keys: int) -> list[float]:
    """Key echo through the API alone: what the agent, its TLS websocket, the session's terminal and the
    recording cost, for the per-hop figures."""
    out = []
    async with ApiShell(target, "benchmark: echo through the API", 120) as api:
        await api.until(b" OPS ")
        for _ in range(keys):
            started = time.perf_counter()
            await api.shell.send(b"x")
            await api.until(b"x")
            out.append((time.perf_counter() - started) * 1000)
            await api.shell.send(b"\x7f")
            await api.until(b"\x08")
    return out


def raise_limits(lab_dir: Path, node: str, count: int) -> int:
    """Let one user open `count` sessions on the benchmark's own lab node; returns the new agent's pid."""
    config = lab_dir / "nodes" / node / "agent.toml"
    text = config.read_text().replace("[ops]\n", f"[ops]\nmax_sessions = {count}\nmax_sessions_per_user = {count}\n", 1)
    config.write_text(text)
    pid_file = lab_dir / "nodes" / node / "agent.pid"
    old = int(pid_file.read_text())
    os.kill(old, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text())
            if pid != old and subprocess.run(["pgrep", "-f", str(config)], capture_output=True).returncode == 0:
                time.sleep(2)  # its TLS port answers
                return pid
        time.sleep(0.2)
    raise RuntimeError("the agent did not restart")


async def agent_memory(target: NodeTarget, agent_pid: int, count: int) -> tuple[int, int]:
    """The agent's RSS (KiB) with no session, and with `count` sessions attached and printing."""
    client = NodeClient(target)
    await asyncio.sleep(1)
    before = rss_kib(agent_pid)
    shells, tasks = [], []
    sessions = [
        await client.ops_start(OpsSessionRequest(reason=f"benchmark: memory {n}", ttl_seconds=300))
        for n in range(count)
    ]

    async def drain(shell: OpsShell) -> None:
        async for _ in shell.events():
            pass

    for session in sessions:
        shell = OpsShell(target, session.id)
        shells.append(shell)
        tasks.append(asyncio.create_task(drain(shell)))
    await asyncio.sleep(2)
    for shell in shells:
        await shell.send(b"seq 1 20000\r")  # fill each session's screen tail and recording
    await asyncio.sleep(3)
    during = rss_kib(agent_pid)
    for session in sessions:
        await client.ops_end(session.id, EndRequest(reason="benchmark done"))
    for task in tasks:
        task.cancel()
    await client.aclose()
    return before, during


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=300, help="keystrokes to time on each side")
    parser.add_argument("--lines", type=int, default=2_000_000, help="seq count for the bulk output")
    parser.add_argument("--sessions", type=int, default=10, help="sessions open for the memory figure")
    args = parser.parse_args()
    if os.geteuid() != 0 or (shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists()):
        print("needs root and openssh-server (./scripts/setup.sh --bench)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="lifsea-bench-ssh-"))
    lab_dir = work / "lab"
    env = {**os.environ, "LIFSEA_LAB_DIR": str(lab_dir)}
    lab = [sys.executable, "-m", "lifsea_tui.lab.cli"]
    print("bringing up a 1-node lab …", flush=True)
    subprocess.run([*lab, "up", "--nodes", "1"], env=env, check=True)
    port, key, sshd = start_sshd(work)
    try:
        target = targets.from_lab(role="admin", lab_dir=lab_dir)[0]
        ours_argv = [sys.executable, "-m", "lifsea_tui.tui.cli", "shell", target.name, "--reason", "benchmark",
                     "--lab-dir", str(lab_dir)]  # fmt: skip

        # Request to first prompt.
        api = [asyncio.run(api_first_prompt(target)) for _ in range(5)]
        prompt_api = statistics.median(a[0] for a in api)
        created_api = statistics.median(a[1] for a in api)
        starts: dict[str, list[float]] = {"ops": [], "ssh": []}
        for _ in range(3):
            for side, argv, needle in (("ops", ours_argv, b" OPS "), ("ssh", ssh_argv(port, key), PROMPT)):
                term = Terminal(argv)
                starts[side].append(term.read_until(needle) - term.started)
                term.close()
        ops_start, ssh_start = statistics.median(starts["ops"]), statistics.median(starts["ssh"])
        record(
            "first prompt",
            api_s=round(prompt_api, 3),
            api_session_created_s=round(created_api, 3),
            ops_client_s=round(ops_start, 3),
            ssh_client_s=round(ssh_start, 3),
            ratio_clients=round(ops_start / ssh_start, 2),
        )

        # Keystroke echo and bulk output, one side after the other, twice in alternating order.
        echo: dict[str, list[float]] = {"ops": [], "ssh": []}
        rates: dict[str, list[float]] = {"ops": [], "ssh": []}
        for order in (("ops", "ssh"), ("ssh", "ops")):
            for side in order:
                term = Terminal(ours_argv if side == "ops" else ssh_argv(port, key))
                term.read_until(b" OPS " if side == "ops" else PROMPT)
                term.set_prompt()
                echo[side] += echo_latencies(term, args.keys // 2)
                rate, _ = throughput(term, args.lines)
                rates[side].append(rate)
                term.close()
        for side in ("ops", "ssh"):
            values = echo[side]
            print(f"  {side}: echo p50 {pct(values, 50):.2f} ms, p99 {pct(values, 99):.2f} ms, n={len(values)}")
        with asyncio.Runner(loop_factory=new_event_loop) as runner:  # the shell's loop
            api = runner.run(api_echo(target, args.keys))
        record(
            "keystroke echo",
            ops_p50_ms=round(pct(echo["ops"], 50), 2),
            ops_p99_ms=round(pct(echo["ops"], 99), 2),
            ssh_p50_ms=round(pct(echo["ssh"], 50), 2),
            ssh_p99_ms=round(pct(echo["ssh"], 99), 2),
            ratio_p50=round(pct(echo["ops"], 50) / pct(echo["ssh"], 50), 2),
            ratio_p99=round(pct(echo["ops"], 99) / pct(echo["ssh"], 99), 2),
            api_p50_ms=round(pct(api, 50), 3),  # the same echo without the client process and its terminal
            api_p99_ms=round(pct(api, 99), 3),
        )
        ops_rate, ssh_rate = statistics.median(rates["ops"]), statistics.median(rates["ssh"])
        record(
            "bulk output",
            ops_mb_s=round(ops_rate / 1e6, 1),
            ssh_mb_s=round(ssh_rate / 1e6, 1),
            ratio=round(ops_rate / ssh_rate, 2),
            recording="on",
        )

        # Memory per session.
        agent_pid = raise_limits(lab_dir, target.name, args.sessions)
        before, during = asyncio.run(agent_memory(target, agent_pid, args.sessions))
        term = Terminal(ssh_argv(port, key))
        term.read_until(PROMPT)
        children = subprocess.run(["pgrep", "-P", str(sshd.pid)], capture_output=True, text=True).stdout.split()
        family = set(children)
        for child in children:
            family |= set(subprocess.run(["pgrep", "-P", child], capture_output=True, text=True).stdout.split())
        ssh_kib = sum(rss_kib(int(pid)) for pid in family if Path(f"/proc/{pid}/comm").read_text().startswith("sshd"))
        term.close()
        record(
            "memory per session",
            agent_idle_mib=round(before / 1024, 1),
            agent_with_sessions_mib=round(during / 1024, 1),
            sessions=args.sessions,
            agent_per_session_kib=round((during - before) / args.sessions),
            sshd_per_connection_kib=ssh_kib,
        )
    finally:
        sshd.terminate()
        sshd.wait()
        subprocess.run([*lab, "down", "--purge"], env=env, check=False)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
