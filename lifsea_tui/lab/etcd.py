"""Real etcd members (Debian's etcd-server) on loopback, with mutual TLS from the lab's CA.

The lab runs one member under its supervisor; tests run one or three with `EtcdCluster`, and stop and
start members to see what a rollout does without quorum.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from aetcd import rpc

from lifsea_tui.client.etcd import EtcdTarget, Store
from lifsea_tui.lab import certs
from lifsea_tui.lab.procs import free_port, stop

ETCD = "etcd"
ROOT = "root"
# What each kind of user may do, as key prefixes under the store's prefix ("" is all of it). Every user
# may also write writers/USER/ (and only its own), where it marks the log entries it writes.
ROLES: dict[str, list[tuple[int, str]]] = {
    "lifsea-fleetd": [(rpc.Permission.READWRITE, "")],
    "lifsea-console": [(rpc.Permission.READ, ""), (rpc.Permission.READWRITE, "rollouts/"),
                       (rpc.Permission.READWRITE, "slots/")],
}  # fmt: skip


def _range_end(key: bytes) -> bytes:
    """The end of the range of keys that start with `key` (etcd's prefix convention)."""
    return key[:-1] + bytes([key[-1] + 1])


MISSING = "etcd is missing (apt-get install etcd-server)"


def missing() -> str | None:
    return MISSING if shutil.which(ETCD) is None else None


@dataclass(frozen=True)
class Member:
    name: str
    client_port: int
    peer_port: int


class EtcdCluster:
    """Members' data, certificates and command lines under `root`; clients get certificates by name."""

    def __init__(self, root: Path, ca_dir: Path, members: list[Member]) -> None:
        self.root = root
        self.ca_dir = ca_dir
        self.members = members
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @classmethod
    def fresh(cls, root: Path, ca_dir: Path, size: int = 1) -> EtcdCluster:
        return cls(root, ca_dir, [Member(f"etcd{i}", free_port(), free_port()) for i in range(1, size + 1)])

    @property
    def ca_file(self) -> Path:
        return certs.ensure_ca(self.ca_dir)[0]

    def client_cert(self, user: str) -> tuple[Path, Path]:
        """A client certificate whose common name is `user` (etcd's user, once auth is on)."""
        out = self.root / "clients"
        cert, key = out / f"{user}.pem", out / f"{user}.key"
        if not cert.exists():
            certs.issue(self.ca_dir, out, user, client=True)
        return cert, key

    def target(self, user: str, *, timeout: float = 3.0) -> EtcdTarget:
        cert, key = self.client_cert(user)
        return EtcdTarget(
            endpoints=tuple(f"127.0.0.1:{m.client_port}" for m in self.members),
            ca_file=self.ca_file,
            cert_file=cert,
            key_file=key,
            server_name="localhost",
            timeout=timeout,
        )

    def argv(self, member: Member) -> list[str]:
        cert, key = self.root / member.name / f"{member.name}.pem", self.root / member.name / f"{member.name}.key"
        if not cert.exists():
            certs.issue(self.ca_dir, self.root / member.name, member.name, peer=True)
        cluster = ",".join(f"{m.name}=https://127.0.0.1:{m.peer_port}" for m in self.members)
        ca = str(self.ca_file)
        return [
            ETCD,
            f"--name={member.name}",
            f"--data-dir={self.root / member.name / 'data'}",
            f"--listen-client-urls=https://127.0.0.1:{member.client_port}",
            f"--advertise-client-urls=https://127.0.0.1:{member.client_port}",
            f"--listen-peer-urls=https://127.0.0.1:{member.peer_port}",
            f"--initial-advertise-peer-urls=https://127.0.0.1:{member.peer_port}",
            f"--initial-cluster={cluster}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token=lifsea-{self.root.name}",
            f"--cert-file={cert}",
            f"--key-file={key}",
            f"--trusted-ca-file={ca}",
            "--client-cert-auth",
            f"--peer-cert-file={cert}",
            f"--peer-key-file={key}",
            f"--peer-trusted-ca-file={ca}",
            "--peer-client-cert-auth",
            "--logger=zap",
            "--log-outputs=stderr",
        ]

    async def enable_auth(self, users: dict[str, str]) -> None:
        """Turn etcd's authentication on: `users` maps each user (a certificate's common name) to its role
        in ROLES, and each gets writer-USER for its own writers/USER/ keys. Safe to run again."""
        store = Store(self.target(ROOT))
        try:
            await store.client.connect()
            auth = rpc.AuthStub(store.client.channel)
            prefix = store.target.prefix.encode()

            async def call(method: str, request: object) -> None:
                try:
                    await getattr(auth, method)(request, timeout=10)
                except grpc.aio.AioRpcError as error:  # already there (a lab brought up again), or auth on
                    if "already" not in (error.details() or "") and "enabled" not in (error.details() or ""):
                        raise

            async def role(name: str, grants: list[tuple[int, str]]) -> None:
                await call("RoleAdd", rpc.AuthRoleAddRequest(name=name))
                for kind, sub in grants:
                    key = prefix + sub.encode()
                    permission = rpc.Permission(permType=kind, key=key, range_end=_range_end(key))
                    await call("RoleGrantPermission", rpc.AuthRoleGrantPermissionRequest(name=name, perm=permission))

            await call("UserAdd", rpc.AuthUserAddRequest(name=ROOT, options=rpc.UserAddOptions(no_password=True)))
            await call("UserGrantRole", rpc.AuthUserGrantRoleRequest(user=ROOT, role="root"))
            for name, grants in ROLES.items():
                await role(name, grants)
            for user, kind in users.items():
                await role(f"writer-{user}", [(rpc.Permission.READWRITE, f"writers/{user}/")])
                await call("UserAdd", rpc.AuthUserAddRequest(name=user, options=rpc.UserAddOptions(no_password=True)))
                for granted in (kind, f"writer-{user}"):
                    await call("UserGrantRole", rpc.AuthUserGrantRoleRequest(user=user, role=granted))
            await call("AuthEnable", rpc.AuthEnableRequest())
        finally:
            await store.aclose()

    # -- for tests: members as child processes -----------------------------------------------------------

    def start(self, name: str | None = None) -> None:
        for member in self.members:
            if name not in (None, member.name) or member.name in self.procs:
                continue
            (self.root / member.name).mkdir(parents=True, exist_ok=True)
            log = open(self.root / member.name / "etcd.log", "ab")
            with log:
                self.procs[member.name] = subprocess.Popen(
                    self.argv(member), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
                )

    def stop(self, name: str | None = None) -> None:
        for member_name in [n for n in self.procs if name in (None, n)]:
            stop(self.procs.pop(member_name))

    async def wait_ready(self, user: str = "root", timeout: float = 30.0) -> None:
        store = Store(self.target(user))
        deadline = time.monotonic() + timeout
        try:
            while (why := await store.health()) is not None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"etcd did not come up: {why} (see {self.root}/*/etcd.log)")
                with contextlib.suppress(Exception):
                    await store.aclose()
                store = Store(self.target(user))
                time.sleep(0.2)
        finally:
            await store.aclose()
