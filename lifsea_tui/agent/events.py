"""Fan-out of node events to /v1/events subscribers, each with a bounded queue.

A subscriber that cannot keep up loses its backlog and gets one `lagged` event, telling it to re-read
state over plain GETs; the agent never buffers without bound for a slow console.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from lifsea_tui.api import (
    DeploymentsChanged,
    DeploymentsEvent,
    Event,
    Lagged,
    LaggedEvent,
    OpsChanged,
    OpsEvent,
    ServicesEvent,
    UnitChanged,
    UpdateEvent,
    UpdateStatus,
)

QUEUE_SIZE = 256
Change = DeploymentsChanged | UpdateStatus | OpsChanged | UnitChanged


def event_of(change: Change) -> Event:
    """The event that carries `change`, stamped now."""
    now = datetime.now(UTC)
    if isinstance(change, DeploymentsChanged):
        return DeploymentsEvent(time=now, data=change)
    if isinstance(change, UpdateStatus):
        return UpdateEvent(time=now, data=change)
    if isinstance(change, OpsChanged):
        return OpsEvent(time=now, data=change)
    return ServicesEvent(time=now, data=change)


class EventHub:
    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[Event]] = set()

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    def publish(self, change: Change) -> None:
        event = event_of(change)
        for queue in self._queues:
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(LaggedEvent(time=event.time, data=Lagged(dropped=QUEUE_SIZE)))

    @contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[Event]]:
        queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_SIZE)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)
