"""The store's wire: aetcd's client on a TLS gRPC channel, and what its failures mean to a person.

aetcd opens plain channels only; `TlsClient` opens the same stubs on a TLS channel (mutual TLS when a
client certificate is given) and spreads requests over every member it is given, so losing one member
of a three-member cluster costs nothing. Imported by etcd.py when a store is first used.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import aetcd
import grpc
from aetcd import rpc, watcher

# What a call to the store may raise that means the store did not do it.
FAILURES = (aetcd.exceptions.ClientError, grpc.RpcError, TimeoutError, OSError)


class Target(Protocol):
    """What the client needs of an etcd.EtcdTarget (named here, so that this module does not import the
    one that imports it)."""

    @property
    def endpoints(self) -> tuple[str, ...]: ...
    @property
    def ca_file(self) -> Path | None: ...
    @property
    def cert_file(self) -> Path | None: ...
    @property
    def key_file(self) -> Path | None: ...
    @property
    def server_name(self) -> str | None: ...
    @property
    def timeout(self) -> float: ...


def _grpc_target(endpoints: Sequence[str]) -> str:
    """One gRPC target for all members: the ipv4: scheme takes a list of literal addresses."""
    try:
        for endpoint in endpoints:
            ipaddress.IPv4Address(endpoint.rsplit(":", 1)[0])
    except ValueError:
        return endpoints[0]  # a name: gRPC's resolver finds every address behind it
    return "ipv4:" + ",".join(endpoints)


class TlsClient(aetcd.Client):  # type: ignore[misc]
    def __init__(self, target: Target) -> None:
        options: dict[str, Any] = {"grpc.lb_policy_name": "round_robin", "grpc.enable_retries": 0}
        if target.server_name:
            options["grpc.ssl_target_name_override"] = target.server_name
            options["grpc.default_authority"] = target.server_name
        super().__init__(timeout=target.timeout, options=options, connect_wait_timeout=int(target.timeout))
        self._grpc_target = _grpc_target(target.endpoints)
        self._credentials = None
        if target.ca_file is not None:
            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=target.ca_file.read_bytes(),
                private_key=target.key_file.read_bytes() if target.key_file else None,
                certificate_chain=target.cert_file.read_bytes() if target.cert_file else None,
            )

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        options = list(self._options.items())
        if self._credentials is not None:
            self.channel = grpc.aio.secure_channel(self._grpc_target, self._credentials, options=options)
        else:
            self.channel = grpc.aio.insecure_channel(self._grpc_target, options=options)
        self.kvstub = rpc.KVStub(self.channel)
        self.clusterstub = rpc.ClusterStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.maintenancestub = rpc.MaintenanceStub(self.channel)
        self._watcher = watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout, metadata=None)
        self._connected.set()


def explain(error: BaseException, where: str) -> str:
    """What a failure of the store means, for a person."""
    text = str(error) or type(error).__name__
    if isinstance(error, aetcd.exceptions.ConnectionTimeoutError | TimeoutError):
        return f"store at {where} did not answer in time (no quorum, or unreachable)"
    if "request timed out" in text or "deadline exceeded" in text:
        # A member took the request and could not commit it in time (etcd's own words vary with timing):
        # the store answered, so it is not unreachable.
        return f"store at {where} could not commit in time (no quorum, or overloaded): {text}"
    if isinstance(error, aetcd.exceptions.ConnectionFailedError):
        if "no leader" in text or "leader changed" in text:
            return f"store at {where} has no leader (no quorum): {text}"
        return f"store at {where} unreachable: {text}"
    if "permission denied" in text:
        return f"store at {where} does not allow this user that (etcd: permission denied)"
    if isinstance(error, aetcd.exceptions.UnauthenticatedError):
        return f"store at {where} refused us: {text}"
    return f"store at {where}: {text}"
