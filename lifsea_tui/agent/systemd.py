"""The node's systemd, over the node's system bus (D-Bus), with dbus-fast.

Each call opens its own connection: the node reboots under the agent, and a fresh bus after a reboot can
sit at the same path, device and inode as the old one, so a kept connection cannot tell it is stale.
Connecting over a unix socket costs about a millisecond.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from lifsea_tui.agent.errors import BackendError
from lifsea_tui.api import UnitInfo

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
CONNECT_TIMEOUT = 3.0
CALL_TIMEOUT = 10.0


class SystemdBackend:
    def __init__(self, bus_path: Path) -> None:
        self.bus_path = bus_path
        # What a listing asks of each unit besides ListUnits (since when; a service's PID, restarts,
        # result), by object path, kept while watch_units holds its subscription: every one of these
        # is signalled in PropertiesChanged, which drops the unit's entry. Kept only for units at rest
        # (a unit starting, stopping or waiting to restart changes by the second, and a signal the bus
        # dropped for a slow reader would leave it wrong), and for KEPT_SECONDS at most. MemoryCurrent
        # is not signalled, so it is asked for on every listing (units with processes only).
        self._details: dict[str, tuple[float, dict[str, Any]]] = {}
        self._changes: dict[str, int] = {}  # PropertiesChanged seen per path, so a read racing one is not kept
        self._subscribed = False

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
        async with self._connection() as bus:
            return await _call(bus, member, signature, body, interface, path)

    async def manager_property(self, name: str) -> Any:
        body = await self.call("Get", "ss", [MANAGER, name], interface="org.freedesktop.DBus.Properties")
        return body[0].value

    async def uptime_seconds(self) -> float:
        """Seconds since the node's systemd started (its userspace start; in the lab, the machine's boot)."""
        started_us = float(await self.manager_property("UserspaceTimestamp"))
        return max(0.0, time.time() - started_us / 1_000_000)

    async def ready_seconds(self) -> float | None:
        """Seconds since systemd finished starting the node (its default target reached, failed units
        or not); None while it is still starting."""
        finished_us = await self.manager_property("FinishTimestamp")
        return max(0.0, time.time() - finished_us / 1_000_000) if finished_us else None

    # -- units ---------------------------------------------------------------------------------------

    async def units(self) -> list[UnitInfo]:
        """Every unit systemd has loaded; services with their main PID, restarts, memory and result."""
        async with self._connection() as bus:
            (rows,) = await _call(bus, "ListUnits")
            # The system bus allows a connection only so many calls awaiting replies (128 on Debian):
            # past that it answers with errors. Keep well below.
            limit = asyncio.Semaphore(IN_FLIGHT)

            async def one(row: list[Any]) -> UnitInfo:
                async with limit:
                    return await self._unit_info(bus, row)

            units = list(await asyncio.gather(*(one(row) for row in rows)))
        listed = {str(row[6]) for row in rows}
        for kept in (self._details, self._changes):
            for path in [path for path in kept if path not in listed]:  # unloaded since
                del kept[path]
        return units

    async def _unit_info(self, bus: MessageBus, row: list[Any]) -> UnitInfo:
        """A ListUnits row with what the Services tab shows besides: since when, and for services their
        main PID, restarts, memory and result. Each asked for by name (one Get each, all at once): a
        GetAll of the Service interface answers some 150 properties, and reading them was most of a
        listing's time. Kept between listings while the watch says nothing changed (see __init__)."""
        name, _description, _load, active_state, sub_state, _followed, path = row[:7]
        service = str(name).endswith(".service")
        keep = self._subscribed and active_state in AT_REST and sub_state != "auto-restart"
        kept = self._details.get(path) if keep else None
        cached = kept[1] if kept is not None and time.monotonic() - kept[0] < KEPT_SECONDS else None
        wanted = [] if cached is not None else [(UNIT, "StateChangeTimestamp")]
        if service and cached is None:
            wanted += [(SERVICE, prop) for prop in SERVICE_DETAILS]
        if service and active_state not in ("inactive", "failed"):
            wanted.append((SERVICE, "MemoryCurrent"))  # not signalled: asked every time there are processes
        changes = self._changes.get(path, 0)
        values: dict[str, Any] = dict(cached or {})
        answers = None
        for _ in range(2):  # an error answer (a busy bus refusing, a unit gone) is asked again, once
            try:
                answers = await asyncio.gather(
                    *(_call(bus, "Get", "ss", [iface, prop], interface=PROPERTIES, path=path) for iface, prop in wanted)
                )
                break
            except BackendError as error:
                if error.code == "unavailable":  # no answer in CALL_TIMEOUT: asking again would double the wait
                    break
        # None: the unit went away between the listing and this read (or the bus would not say): its row
        # says what the listing said
        if answers is not None:
            values.update({prop: answer[0].value for (_, prop), answer in zip(wanted, answers, strict=True)})
            if cached is None and keep and self._changes.get(path, 0) == changes:
                kept_values = {key: value for key, value in values.items() if key != "MemoryCurrent"}
                self._details[path] = (time.monotonic(), kept_values)
        return _unit(row, values)

    async def unit(self, name: str) -> UnitInfo:
        async with self._connection() as bus:
            try:
                (path,) = await _call(bus, "GetUnit", "s", [name])
            except BackendError as error:
                if "not loaded" in error.detail or "NoSuchUnit" in error.detail:
                    raise BackendError("not_found", f"no unit {name} is loaded") from error
                raise
            props = await _call(bus, "GetAll", "s", [UNIT], interface=PROPERTIES, path=path)
            values = {key: variant.value for key, variant in props[0].items()}
            row = [name, values.get("Description", ""), values.get("LoadState", ""), values.get("ActiveState", ""),
                   values.get("SubState", ""), "", path]  # fmt: skip
            return await self._unit_info(bus, row)

    async def unit_names(self, name: str) -> list[str]:
        """Every name the unit `name` goes by (its id and aliases: runlevel0.target is poweroff.target)."""
        async with self._connection() as bus:
            (path,) = await _call(bus, "LoadUnit", "s", [name])
            (names,) = await _call(bus, "Get", "ss", [UNIT, "Names"], interface=PROPERTIES, path=path)
            return [str(item) for item in names.value]

    async def unit_action(self, name: str, action: str) -> str:
        """Start, stop or restart a unit (mode "replace"); returns systemd's job path."""
        member = {"start": "StartUnit", "stop": "StopUnit", "restart": "RestartUnit"}[action]
        (job,) = await self.call(member, "ss", [name, "replace"])
        return str(job)

    async def watch_units(
        self, changed: Callable[[str, dict[str, Any]], None], subscribed: Callable[[list[UnitInfo]], None]
    ) -> None:
        """Call `changed(unit, properties)` for every unit state change systemd signals; runs until cancelled.

        One connection subscribed to systemd's PropertiesChanged signals (no polling): a change reaches
        the caller as soon as systemd makes it. When the bus goes away (a reboot) it connects again.
        `subscribed(units)` gets every unit's state once the subscription stands (and again after each
        reconnect), so the caller can start from a complete picture.
        """
        while True:
            try:
                async with self._connection() as bus:

                    def on_message(message: Message) -> None:
                        if message.member != "PropertiesChanged" or not message.body:
                            return
                        path = message.path or ""
                        self._details.pop(path, None)
                        self._changes[path] = self._changes.get(path, 0) + 1
                        if message.body[0] != UNIT:
                            return
                        values = {key: variant.value for key, variant in message.body[1].items()}
                        if "ActiveState" in values or "SubState" in values:
                            changed(unit_name_of(message.path or ""), values)

                    bus.add_message_handler(on_message)
                    rule = (
                        "type='signal',sender='org.freedesktop.systemd1',interface='org.freedesktop.DBus.Properties',"
                        "member='PropertiesChanged',path_namespace='/org/freedesktop/systemd1/unit'"
                    )
                    await _call(bus, "AddMatch", "s", [rule], interface="org.freedesktop.DBus",
                                path="/org/freedesktop/DBus", destination="org.freedesktop.DBus")  # fmt: skip
                    await _call(bus, "Subscribe")
                    self._subscribed = True
                    subscribed(await self.units())
                    await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]  # dbus-fast leaves it untyped
            except BackendError:
                pass
            except Exception:  # noqa: BLE001 - a broken bus must not end the watch; it reconnects
                pass
            finally:  # changes are no longer heard: nothing kept can be trusted
                self._subscribed = False
                self._details.clear()
                self._changes.clear()
            await asyncio.sleep(1.0)

    async def reboot(self) -> None:
        """Ask systemd to reboot the node. A bus that cannot be reached is an error (503): nothing was asked."""
        async with self._connection() as bus:  # raises 'unavailable' when there is no bus to ask
            try:
                await _call(bus, "Reboot")
            except BackendError as error:
                # systemd may tear the bus down before its reply reaches us; once asked, a reboot that has
                # begun looks like exactly that, so it counts as done when the bus socket goes away soon.
                if error.code != "unavailable" or not await self._goes_away(5.0):
                    raise

    async def _goes_away(self, timeout: float) -> bool:
        for _ in range(int(timeout * 10)):
            if not self.bus_path.exists():
                return True
            await asyncio.sleep(0.1)
        return False


UNIT = "org.freedesktop.systemd1.Unit"
SERVICE = "org.freedesktop.systemd1.Service"
PROPERTIES = "org.freedesktop.DBus.Properties"
UNSET = 2**64 - 1  # systemd's "no value" for a uint64 property
IN_FLIGHT = 24  # units at once, each with up to 5 calls: below the bus's 128 pending replies


async def _call(
    bus: MessageBus,
    member: str,
    signature: str = "",
    body: list[Any] | None = None,
    interface: str = MANAGER,
    path: str = MANAGER_PATH,
    destination: str = SYSTEMD,
) -> list[Any]:
    message = Message(
        destination=destination, path=path, interface=interface, member=member, signature=signature, body=body or []
    )
    try:
        reply = await asyncio.wait_for(bus.call(message), CALL_TIMEOUT)
    except (OSError, TimeoutError, EOFError) as error:
        raise BackendError("unavailable", f"systemd {member}: {str(error) or type(error).__name__}") from error
    if reply is None or reply.message_type == MessageType.ERROR:
        detail = reply.body[0] if reply is not None and reply.body else reply.error_name if reply else "no reply"
        raise BackendError("failed", f"systemd {member}: {detail}")
    return list(reply.body)


def unit_name_of(path: str) -> str:
    """systemd's object path for a unit back to its name (each byte not [A-Za-z0-9] is _xx)."""
    tail = path.rsplit("/", 1)[-1]
    return re.sub(r"_([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), tail)


AT_REST = ("active", "inactive", "failed")  # a unit's details are kept only in these states
KEPT_SECONDS = 30.0  # and for this long at most, whatever the signals say
SERVICE_DETAILS = ("MainPID", "NRestarts", "Result")  # kept between listings; MemoryCurrent is asked each time


def _unit(row: list[Any], values: dict[str, Any]) -> UnitInfo:
    name, description, load_state, active_state, sub_state = row[:5]
    changed = values.get("StateChangeTimestamp")
    memory = values.get("MemoryCurrent")
    return UnitInfo(
        name=name, description=description, load_state=load_state, active_state=active_state, sub_state=sub_state,
        since=datetime.fromtimestamp(changed / 1_000_000, UTC) if changed else None,
        main_pid=values.get("MainPID") or None, restarts=values.get("NRestarts"),
        memory_bytes=None if memory in (None, UNSET) else memory, result=values.get("Result"),
    )  # fmt: skip
