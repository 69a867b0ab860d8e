"""The lab supervisor: one process that runs the update server, every node machine and every agent.

It plays the bootloader and the host's init: a node is a systemd-nspawn machine booted from its
sysroot's default deployment (/usr read-only, /etc the deployment's own, /var the stateroot's); when
the node reboots (nspawn exits with 133) the supervisor boots the new default deployment. Agents are
restarted when they die, as systemd would. SIGTERM stops everything and leaves nothing running.

Run by `lifsea-lab up` as `python -m lifsea_tui.lab.supervisor LAB_DIR`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from lifsea_tui import agentimage
from lifsea_tui.lab import cgroups, sysroot
from lifsea_tui.lab.image import ImageError
from lifsea_tui.lab.layout import LabSpec, Layout, NodeLayout, lab_etcd
from lifsea_tui.lab.updateserver import UpdateServer

log = logging.getLogger("lifsea.lab")

REBOOT_STATUS = 133  # systemd-nspawn's exit status when the machine's systemd asked for a reboot
STOP_GRACE = 20.0
CRASH_RETRIES = 5


def _init_of(nspawn_pid: int) -> int | None:
    """The machine's PID 1: the child of nspawn that is PID 1 in its own pid namespace."""
    try:
        for task in os.listdir(f"/proc/{nspawn_pid}/task"):
            with open(f"/proc/{nspawn_pid}/task/{task}/children") as handle:
                for kid in handle.read().split():
                    with open(f"/proc/{kid}/status") as status:
                        nspid = next((line.split()[1:] for line in status if line.startswith("NSpid:")), [])
                    if len(nspid) > 1 and nspid[-1] == "1":
                        return int(kid)
    except OSError:
        pass
    return None


async def _terminate(proc: asyncio.subprocess.Process, grace: float) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


class Machine:
    """One node: boots it, reboots it into the default deployment, stops it."""

    def __init__(self, node: NodeLayout, *, bus_outside: bool = False) -> None:
        self.node = node
        # For an agent run from its image: the machine's /run/dbus is a directory of the lab's, so the
        # container can have the bus at /host/run/dbus (a mount of another mount namespace cannot be).
        self.bus_outside = bus_outside
        self.proc: asyncio.subprocess.Process | None = None
        self.stopping = False
        self.boots = 0

    def _set(self, state: str, **extra: object) -> None:
        self.node.write_state(state=state, boots=self.boots, time=time.time(), **extra)

    async def run(self) -> None:
        crashes = 0
        while not self.stopping:
            try:
                deployment = sysroot.default_deployment(self.node.sysroot)
            except ImageError as error:
                self._set("failed", error=str(error))
                return
            status = await self._boot(deployment)
            if self.stopping:
                break
            if status == REBOOT_STATUS:
                log.info("%s rebooting into the default deployment", self.node.name)
                crashes = 0
                continue
            if status == 0:
                self._set("powered-off")
                return
            crashes += 1
            if crashes > CRASH_RETRIES:
                self._set("failed", error=f"systemd-nspawn exited {status} {crashes} times; see nspawn.log")
                return
            await asyncio.sleep(2)
        self._set("stopped")

    async def _boot(self, deployment: Path) -> int:
        self.boots += 1
        self._set("booting", deployment=str(deployment))
        stateroot_var = sysroot.stateroot_var(self.node.sysroot)
        binds = []
        if self.bus_outside:
            shutil.rmtree(self.node.dbus_dir, ignore_errors=True)  # no socket of the last boot
            self.node.dbus_dir.mkdir(parents=True)
            binds.append(f"--bind={self.node.dbus_dir}:/run/dbus")
        own_cgroup = cgroups.prepare(cgroups.name(self.node.lab.root, self.node.name))
        log_file = open(self.node.root / "nspawn.log", "ab")
        try:
            argv = [
                "systemd-nspawn",
                "--register=no",
                "--keep-unit",
                "--console=passive",
                "--private-network",
                "-D",
                str(deployment),
                f"--bind-ro={deployment}/usr:/usr",
                f"--bind={stateroot_var}:/var",
                *binds,
                f"--machine={self.node.name}",
                f"--hostname={self.node.name}",
                "-b",
            ]
            self.proc = await asyncio.create_subprocess_exec(
                *cgroups.join_argv(own_cgroup, argv),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log_file.close()
        waiter = asyncio.create_task(self._wait_leader(self.proc.pid, deployment))
        status = await self.proc.wait()
        waiter.cancel()
        cgroups.remove(own_cgroup)
        for link in (self.node.host_root, self.node.namespaces):
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
        self._set("down", last_exit=status)
        return status

    async def _wait_leader(self, nspawn_pid: int, deployment: Path) -> None:
        """Find the machine's init (nspawn's child), point host_root at it, and wait for its bus."""
        leader = None
        while leader is None:
            leader = _init_of(nspawn_pid)
            await asyncio.sleep(0.05)
        for link, target in ((self.node.host_root, "root"), (self.node.namespaces, "ns")):
            tmp = link.with_name(f"{link.name}.tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(f"/proc/{leader}/{target}")
            os.replace(tmp, link)
        while not self.node.bus.exists():
            await asyncio.sleep(0.05)
        self._set("running", leader=leader, deployment=str(deployment))

    async def stop(self) -> None:
        self.stopping = True
        if self.proc is not None:
            # nspawn forwards SIGTERM to the machine's systemd as a clean shutdown.
            await _terminate(self.proc, STOP_GRACE)


class Supervised:
    """A process restarted when it dies, as systemd would restart a service: an agent, etcd, the controller."""

    def __init__(self, name: str, argv: list[str], log_path: Path, pid_path: Path | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.pid_path = pid_path
        self.proc: asyncio.subprocess.Process | None = None
        self.stopping = False

    async def run(self) -> None:
        while not self.stopping:
            status = await self._run_once()
            if not self.stopping:
                log.warning("%s exited %s; restarting", self.name, status)
                await asyncio.sleep(1)

    async def _run_once(self) -> int:
        log_file = open(self.log_path, "ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=asyncio.subprocess.STDOUT
            )
        finally:
            log_file.close()
        if self.pid_path is not None:  # replaced whole: a reader never sees it empty
            fresh = self.pid_path.with_suffix(".tmp")
            fresh.write_text(str(self.proc.pid))
            os.replace(fresh, self.pid_path)
        return await self.proc.wait()

    async def stop(self) -> None:
        self.stopping = True
        if self.proc is not None:
            await _terminate(self.proc, 10)


def agent(node: NodeLayout) -> Supervised:
    argv = [sys.executable, "-m", "lifsea_tui.agent.cli", "serve", "--config", str(node.agent_config)]
    return Supervised(f"agent of {node.name}", argv, node.root / "agent.log", node.root / "agent.pid")


class ImageAgent(Supervised):
    """A node's agent run from the agent image by runc, as the DaemonSet runs it on a host: the node's
    root at /host, its sysroot, its bus under /host/run, the node's pid namespace (so /proc/1/ns is the
    node's, for ops sessions). Started once the machine runs, and again after each boot: the node's pid
    namespace ends with the machine, and the agent with it, as a pod's containers end with their node's
    reboot. Its network is the lab's (the machines' own is private), so the console reaches it."""

    def __init__(self, node: NodeLayout) -> None:
        self.node = node
        self.container = f"lifsea-agent-{node.name}"
        self.runc = ["runc", f"--root={node.root / 'runc'}"]
        run = [*self.runc, "run", "--bundle", str(node.agent_bundle), self.container]
        super().__init__(f"agent of {node.name} (image)", run, node.root / "agent.log", node.root / "agent.pid")

    async def run(self) -> None:
        while not self.stopping:
            state = self.node.state()
            leader, deployment = state.get("leader"), state.get("deployment")
            if state.get("state") != "running" or not isinstance(leader, int) or not isinstance(deployment, str):
                await asyncio.sleep(0.2)
                continue
            await self._delete()
            agentimage.write_config(
                self.node.agent_bundle,
                agentimage.Mounts(
                    host_root=Path(deployment),
                    sysroot=self.node.sysroot,
                    var=sysroot.stateroot_var(self.node.sysroot),
                    run=self.node.dbus_dir,
                    run_at="/host/run/dbus",
                    config=self.node.agent_etc,
                    state=self.node.agent_state,
                    pid_namespace=Path(f"/proc/{leader}/ns/pid"),
                ),
            )
            status = await self._run_once()
            if not self.stopping:
                log.warning("%s exited %s; starting it again on the node as it is now", self.name, status)
                await asyncio.sleep(0.5)

    async def _delete(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self.runc, "delete", "--force", self.container,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await proc.wait()

    async def stop(self) -> None:
        self.stopping = True
        if self.proc is not None and self.proc.returncode is None:
            kill = await asyncio.create_subprocess_exec(
                *self.runc, "kill", self.container, "TERM",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            await kill.wait()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                await _terminate(self.proc, 1)
        await self._delete()


def etcd(layout: Layout, spec: LabSpec) -> Supervised:
    member = lab_etcd(layout, spec).members[0]
    return Supervised("etcd", lab_etcd(layout, spec).argv(member), layout.etcd_dir / "etcd.log")


def controller(layout: Layout, spec: LabSpec) -> Supervised:
    argv = [
        sys.executable,
        "-m",
        "lifsea_tui.fleetd.cli",
        "--lab-dir",
        str(layout.root),
        "--id",
        "lab-fleetd",
        "--fleetlock",
        f"127.0.0.1:{spec.fleetlock_port}",
        "--proven-writers",
        "--trail",
        str(layout.root / "trail"),
    ]
    return Supervised("lifsea-fleetd", argv, layout.root / "fleetd.log", layout.root / "fleetd.pid")


async def supervise(layout: Layout) -> None:
    spec = layout.read_spec()
    if spec is None:
        raise SystemExit(f"no lab spec at {layout.spec_file}; run lifsea-lab up")
    server = UpdateServer(layout.repo, port=spec.update_port).start()
    image = spec.agent == "image"
    machines = [Machine(layout.node(node.name), bus_outside=image) for node in spec.nodes]
    agents = [ImageAgent(layout.node(n.name)) if image else agent(layout.node(n.name)) for n in spec.nodes]
    store, fleetd = etcd(layout, spec), controller(layout, spec)
    running: list[Machine | Supervised] = [*machines, *agents, store, fleetd]
    tasks = [asyncio.create_task(item.run()) for item in running]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("lab up: update server %s, nodes %s", server.url, ", ".join(n.name for n in spec.nodes))
    await stop.wait()
    log.info("stopping the lab")
    await fleetd.stop()
    await asyncio.gather(*(item.stop() for item in agents))
    await asyncio.gather(*(machine.stop() for machine in machines))
    await store.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    server.stop()


def main() -> None:
    layout = Layout(Path(sys.argv[1]))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    layout.pid_file.write_text(str(os.getpid()))
    try:
        asyncio.run(supervise(layout))
    finally:
        with contextlib.suppress(FileNotFoundError):
            layout.pid_file.unlink()


if __name__ == "__main__":
    main()
