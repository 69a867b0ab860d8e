"""What every console screen shares: the console it belongs to, read-only mode, and the one place where
a worker's failure is shown.

A screen sees the console through `Console`, a protocol: what it reads (the fleet, the network loop,
the mode, the theme's colours) and where it may send the person (`open_...`). Screens never import the
app or each other; the app, which knows every screen, does the navigating.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast

from textual import on
from textual.screen import Screen
from textual.widget import Widget
from textual.worker import Worker, WorkerState

from lifsea_tui.api import OpsSession, OpsSessionRequest
from lifsea_tui.client.etcd import Store
from lifsea_tui.client.fleet import Fleet
from lifsea_tui.client.netloop import NetworkLoop
from lifsea_tui.tui.cast import Cast

ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class ShellClosed:
    """What a shell screen leaves with: the session it had (None when none started) and how it ended."""

    session: str | None
    state: str


class Console(Protocol):
    fleet: Fleet
    net: NetworkLoop
    rollout_store: Store | None  # etcd, where rollouts live; None when the console was given none
    read_only: bool
    refresh_interval: float
    events_limit: int

    def colour(self, variable: str) -> str: ...

    def open_node(self, name: str, tab: str | None = None) -> None: ...

    def open_failed_units(self) -> None: ...

    def open_fleet_debug(self, nodes: list[str]) -> None: ...

    def open_debug(self, node: str, start: str | None = None) -> None: ...

    def open_logs(self, node: str, unit: str | None = None) -> None: ...

    def open_shell(
        self,
        node: str,
        session: OpsSession | OpsSessionRequest,
        *,
        hints: list[str] | None = None,
        hint_title: str = "",
        then: Callable[[ShellClosed | None], None] | None = None,
    ) -> None: ...

    def open_player(self, recording: Cast, name: str) -> None: ...

    def open_rollouts(self, nodes: list[str] | None = None) -> None: ...


log = logging.getLogger("lifsea.console")


def report_worker_failure(widget: Widget, event: Worker.StateChanged) -> bool:
    """A worker that failed: told to the person, once, where they look, and written with its traceback
    to the console's log. True when it had failed."""
    error = event.worker.error
    if event.state != WorkerState.ERROR or error is None:
        return False
    log.error("worker %s failed", event.worker.name, exc_info=error)
    widget.notify(f"{event.worker.name} failed: {type(error).__name__}: {error}", severity="error", timeout=15)
    return True


class ConsoleScreen(Screen[ResultT]):
    @property
    def lifsea(self) -> Console:
        return cast(Console, self.app)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Every action that changes a node is `act`; read-only mode hides it (and its keys) everywhere."""
        return not (action == "act" and self.lifsea.read_only)

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        """Worker messages do not bubble, so each screen listens for its own workers' failures and shows them
        to the user: never swallowed, never a traceback on the screen."""
        report_worker_failure(self, event)
