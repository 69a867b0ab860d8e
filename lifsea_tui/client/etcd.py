"""The fleet's store: etcd v3 over TLS, through aetcd (asyncio, gRPC underneath).

Every failure of the store reaches callers as one exception, `StoreUnavailable`, whose text says what a
person needs: unreachable, no quorum, refused. gRPC and aetcd (etcd_wire.py, some 15 MiB and 60 ms of
imports) are loaded when a store is first used, not by everything that names one: a console with no
store never loads them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from lifsea_tui.client.etcd_wire import TlsClient

T = TypeVar("T")


def _wire() -> ModuleType:
    from lifsea_tui.client import etcd_wire

    return etcd_wire


class StoreUnavailable(Exception):
    """etcd did not answer, or answered that it cannot (no leader, no quorum, not allowed)."""


@dataclass(frozen=True)
class EtcdTarget:
    endpoints: tuple[str, ...]  # host:port of each member
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None  # the name the members' certificates carry, if not the endpoint's
    prefix: str = "/lifsea/"
    timeout: float = 5.0

    def describe(self) -> str:
        return ",".join(self.endpoints)

    @property
    def user(self) -> str | None:
        """The etcd user this client is, once etcd's auth is on: its certificate's common name."""
        return cert_user(self.cert_file) if self.cert_file is not None else None

    @classmethod
    def from_flags(
        cls,
        endpoints: str,
        ca_file: Path | None,
        cert_file: Path | None,
        key_file: Path | None,
        server_name: str | None,
    ) -> EtcdTarget:
        """From command-line flags: `endpoints` is host:port[,host:port...]."""
        return cls(tuple(endpoints.split(",")), ca_file, cert_file, key_file, server_name)

    @classmethod
    def from_json(cls, data: dict[str, Any], user: str) -> EtcdTarget:
        """From the `etcd` object of `lifsea-lab status --json`, as the client certificate of `user`."""
        creds = data.get("users", {}).get(user)
        if creds is None:
            raise KeyError(f"no etcd credentials for {user!r} (known: {', '.join(data.get('users', {}))})")
        return cls(
            endpoints=tuple(data["endpoints"]),
            ca_file=Path(data["ca_file"]),
            cert_file=Path(creds["cert"]),
            key_file=Path(creds["key"]),
            server_name=data.get("server_name"),
        )


@lru_cache(maxsize=16)
def cert_user(cert_file: Path) -> str | None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError):
        return None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


@dataclass(frozen=True)
class KV:
    key: str  # without the store's prefix
    value: bytes
    mod_revision: int
    create_revision: int

    def json(self) -> Any:
        return json.loads(self.value)


@dataclass
class Store:
    """Keys under the target's prefix; JSON values; transactions; leases."""

    target: EtcdTarget
    _client: TlsClient | None = field(default=None, init=False)

    @property
    def client(self) -> TlsClient:
        if self._client is None:
            self._client = _wire().TlsClient(self.target)
        return self._client

    @property
    def ops(self) -> Any:
        """Builders for transaction compares and operations (aetcd's)."""
        return self.client.transactions

    def key(self, key: str) -> bytes:
        return (self.target.prefix + key).encode()

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        wire = _wire()
        try:
            return await asyncio.wait_for(call(), self.target.timeout + 1)
        except wire.FAILURES as error:
            raise StoreUnavailable(wire.explain(error, self.target.describe())) from error

    async def get(self, key: str) -> KV | None:
        got = await self._call(lambda: self.client.get(self.key(key)))
        if got is None:
            return None
        return KV(key, got.value, got.mod_revision, got.create_revision)

    async def get_json(self, key: str) -> Any:
        found = await self.get(key)
        return None if found is None else found.json()

    async def range(self, prefix: str, *, keys_only: bool = False) -> list[KV]:
        got = await self._call(lambda: self.client.get_prefix(self.key(prefix), keys_only=keys_only))
        cut = len(self.target.prefix)
        return [KV(kv.key.decode()[cut:], kv.value, kv.mod_revision, kv.create_revision) for kv in got]

    async def put_json(self, key: str, value: Any, *, lease: Any = None) -> None:
        data = json.dumps(value).encode()
        await self._call(lambda: self.client.put(self.key(key), data, lease=lease))

    async def delete(self, key: str) -> None:
        await self._call(lambda: self.client.delete(self.key(key)))

    async def txn(self, compare: list[Any], success: list[Any], failure: list[Any] | None = None) -> bool:
        ok, _ = await self._call(
            lambda: self.client.transaction(compare=compare, success=success, failure=failure or [])
        )
        return bool(ok)

    def put_op(self, key: str, value: Any, *, lease: Any = None) -> Any:
        return self.ops.put(self.key(key), json.dumps(value).encode(), lease=lease)

    def put_bytes_op(self, key: str, value: bytes) -> Any:
        return self.ops.put(self.key(key), value)

    def delete_op(self, key: str) -> Any:
        return self.ops.delete(self.key(key))

    async def lease(self, ttl: int) -> Any:
        return await self._call(lambda: self.client.lease(ttl))

    async def refresh(self, lease: Any) -> int:
        """Keep a lease alive; its remaining TTL (0 or less: it had already expired)."""
        reply = await self._call(lease.refresh)
        return int(reply.TTL) if reply is not None else 0

    async def revoke(self, lease: Any) -> None:
        await self._call(lease.revoke)

    async def health(self) -> str | None:
        """None when the store takes a linearizable read, else why not."""
        try:
            await self.get("health")
        except StoreUnavailable as error:
            return str(error)
        return None

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await asyncio.wait_for(client.close(), 5)
            except _wire().FAILURES:
                pass
