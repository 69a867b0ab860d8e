"""What every console screen shares: the app it belongs to, read-only mode, and the one place where a
worker's failure is shown."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import on
from textual.screen import Screen
from textual.worker import Worker, WorkerState

if TYPE_CHECKING:
    from lifsea_tui.tui.app import LifseaApp


class ConsoleScreen(Screen[None]):
    @property
    def lifsea(self) -> LifseaApp:
        return self.app  # type: ignore[return-value]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Every action that changes a node is `act`; read-only mode hides it (and its keys) everywhere."""
        return not (action == "act" and self.lifsea.read_only)

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        """Worker messages do not bubble, so each screen listens for its own workers' failures and shows them
        to the user: never swallowed, never a traceback on the screen."""
        error = event.worker.error
        if event.state == WorkerState.ERROR and error is not None:
            self.log.error(f"worker {event.worker.name} failed", error)
            self.notify(f"{event.worker.name} failed: {type(error).__name__}: {error}", severity="error", timeout=15)
