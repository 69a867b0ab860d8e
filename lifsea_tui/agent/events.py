"""Fan-out of node events to /v1/events subscribers, each with a bounded queue.

A subscriber that cannot keep up loses its backlog and gets one `lagged` event, telling it to re-read
state over plain GETs; the agent never buffers without bound for a slow console.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from lifsea_tui.api import Event, EventKind

QUEUE_SIZE = 256


class EventHub:
    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[Event]] = set()

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    def publish(self, kind: EventKind, data: dict[str, Any]) -> None:
        event = Event(kind=kind, time=datetime.now(UTC), data=data)
        for queue in self._queues:
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(Event(kind=EventKind.lagged, time=event.time, data={"dropped": QUEUE_SIZE}))

    @contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[Event]]:
        queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_SIZE)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)
