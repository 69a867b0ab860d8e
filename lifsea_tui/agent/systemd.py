"""The node's systemd, over the node's system bus (D-Bus), with dbus-fast.

Each call opens its own connection: the node reboots under the agent, and a fresh bus after a reboot can
sit at the same path, device and inode as the old one, so a kept connection cannot tell it is stale.
Connecting over a unix socket costs about a millisecond.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from lifsea_tui.agent.errors import BackendError

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
CONNECT_TIMEOUT = 3.0
CALL_TIMEOUT = 10.0


class SystemdBackend:
    def __init__(self, bus_path: Path) -> None:
        self.bus_path = bus_path

    def unavailable_reason(self) -> str | None:
        if not self.bus_path.exists():
            return f"no system bus socket at {self.bus_path} (node down or path wrong)"
        return None

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[MessageBus]:
        reason = self.unavailable_reason()
        if reason:
            raise BackendError("unavailable", reason)
        try:
            bus = await asyncio.wait_for(
                MessageBus(bus_address=f"unix:path={self.bus_path}").connect(), CONNECT_TIMEOUT
            )
        except Exception as error:
            why = str(error) or type(error).__name__
            raise BackendError("unavailable", f"cannot reach the node's system bus: {why}") from error
        try:
            yield bus
        finally:
            bus.disconnect()

    async def call(
        self,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        interface: str = MANAGER,
        path: str = MANAGER_PATH,
    ) -> list[Any]:
        message = Message(
            destination=SYSTEMD, path=path, interface=interface, member=member, signature=signature, body=body or []
        )
        async with self._connection() as bus:
            try:
                reply = await asyncio.wait_for(bus.call(message), CALL_TIMEOUT)
            except (OSError, TimeoutError, EOFError) as error:
                raise BackendError("unavailable", f"systemd {member}: {str(error) or type(error).__name__}") from error
        if reply is None or reply.message_type == MessageType.ERROR:
            detail = reply.body[0] if reply is not None and reply.body else reply.error_name if reply else "no reply"
            raise BackendError("failed", f"systemd {member}: {detail}")
        return list(reply.body)

    async def manager_property(self, name: str) -> Any:
        body = await self.call("Get", "ss", [MANAGER, name], interface="org.freedesktop.DBus.Properties")
        return body[0].value

    async def uptime_seconds(self) -> float:
        """Seconds since the node's systemd started (its userspace start; in the lab, the machine's boot)."""
        started_us = await self.manager_property("UserspaceTimestamp")
        return max(0.0, time.time() - started_us / 1_000_000)

    async def reboot(self) -> None:
        try:
            await self.call("Reboot")
        except BackendError as error:
            # systemd may tear the bus down before its reply reaches us; a reboot that has begun looks like
            # exactly that, so it counts as done when the bus socket goes away within a few seconds.
            if error.code != "unavailable" or not await self._goes_away(5.0):
                raise

    async def _goes_away(self, timeout: float) -> bool:
        for _ in range(int(timeout * 10)):
            if not self.bus_path.exists():
                return True
            await asyncio.sleep(0.1)
        return False
