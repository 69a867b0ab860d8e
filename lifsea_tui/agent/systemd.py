"""The node's systemd, over the node's system bus (D-Bus), with dbus-fast.

One connection is kept and made again when the node has gone away (a reboot closes it).
"""

from __future__ import annotations

import asyncio
import time
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
        self._bus: MessageBus | None = None
        self._lock = asyncio.Lock()

    def unavailable_reason(self) -> str | None:
        if not self.bus_path.exists():
            return f"no system bus socket at {self.bus_path} (node down or path wrong)"
        return None

    async def _connection(self) -> MessageBus:
        async with self._lock:
            if self._bus is not None and self._bus.connected:
                return self._bus
            reason = self.unavailable_reason()
            if reason:
                raise BackendError("unavailable", reason)
            try:
                bus = MessageBus(bus_address=f"unix:path={self.bus_path}")
                self._bus = await asyncio.wait_for(bus.connect(), CONNECT_TIMEOUT)
            except (OSError, TimeoutError, Exception) as error:  # dbus-fast raises its own auth errors too
                self._bus = None
                raise BackendError("unavailable", f"cannot reach the node's system bus: {error}") from error
            return self._bus

    async def call(
        self,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        interface: str = MANAGER,
        path: str = MANAGER_PATH,
    ) -> list[Any]:
        bus = await self._connection()
        message = Message(
            destination=SYSTEMD,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=body or [],
        )
        try:
            reply = await asyncio.wait_for(bus.call(message), CALL_TIMEOUT)
        except (OSError, TimeoutError, EOFError) as error:
            self.close()
            raise BackendError("unavailable", f"systemd {member}: {error or 'no answer'}") from error
        if reply is None or reply.message_type == MessageType.ERROR:
            detail = reply.body[0] if reply is not None and reply.body else reply.error_name if reply else "no reply"
            raise BackendError("failed", f"systemd {member}: {detail}")
        return list(reply.body)

    async def manager_property(self, name: str) -> Any:
        body = await self.call("Get", "ss", [MANAGER, name], interface="org.freedesktop.DBus.Properties")
        return body[0].value

    async def uptime_seconds(self) -> float:
        """Seconds since the node's systemd started (its userspace start, in the lab the container's)."""
        started_us = await self.manager_property("UserspaceTimestamp")
        return max(0.0, time.time() - started_us / 1_000_000)

    async def reboot(self) -> None:
        await self.call("Reboot")

    def close(self) -> None:
        if self._bus is not None:
            self._bus.disconnect()
            self._bus = None
