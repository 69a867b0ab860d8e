"""What every console screen shares: the one place where a worker's failure is shown."""

from __future__ import annotations

from textual import on
from textual.screen import Screen
from textual.worker import Worker, WorkerState


class ConsoleScreen(Screen[None]):
    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        """Worker messages do not bubble, so each screen listens for its own workers' failures and shows them
        to the user: never swallowed, never a traceback on the screen."""
        error = event.worker.error
        if event.state == WorkerState.ERROR and error is not None:
            self.log.error(f"worker {event.worker.name} failed", error)
            self.notify(f"{event.worker.name} failed: {type(error).__name__}: {error}", severity="error", timeout=15)
