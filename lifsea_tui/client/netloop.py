"""A second asyncio loop, on its own thread, for all of the console's network I/O.

Parsing a thousand nodes' answers costs CPU; on the UI's loop it would delay every key press. Here it
runs beside the UI, which only awaits results: `await net.run(coroutine)`. Cancelling the awaiting side
cancels the work on the network loop.

Every loop of the console and its commands is uvloop where it is installed: besides its speed, its TLS
transport does not allocate and zero a 256 KiB read buffer per connection as asyncio's does (1,000 TLS
connections measured at 285 MB on asyncio's loop, 49 MB on uvloop), and the console follows the event
stream of every node.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed, else asyncio's (see above)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class NetworkLoop:
    def __init__(self) -> None:
        self.loop = new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="lifsea-network", daemon=True)
        self._thread.start()

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop))

    async def cancel_all(self) -> None:
        """Cancel whatever still runs on the network loop (event streams, refreshes) and wait for it to end."""

        async def cancel() -> None:
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        await self.run(cancel())

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
