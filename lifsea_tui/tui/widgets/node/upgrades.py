"""The node's update state: what it follows, what is newer, what an update changes, the last error."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Label, ProgressBar, Static

from lifsea_tui.api import EventKind, UpdateProgress
from lifsea_tui.client.node import NodeError
from lifsea_tui.client.runbook.checks import human_size
from lifsea_tui.tui.keys import hints, key_of
from lifsea_tui.tui.plain import plain
from lifsea_tui.tui.widgets.node.base import NodeTab, label_grid, short, when

STATE_COLOUR = {"available": "pending", "staged": "pending", "checking": "pending", "staging": "pending",
                "failed": "node-down"}  # fmt: skip


class UpgradesTab(NodeTab):
    REACTS_TO = frozenset({EventKind.update})  # while a pull runs, the node sends one a second
    DEFAULT_CSS = """
    UpgradesTab #pull { height: 1; display: none; }
    UpgradesTab #pull.running { display: block; }
    UpgradesTab #pull ProgressBar { width: 60; }
    UpgradesTab #pull Label { margin-left: 2; }
    UpgradesTab #pull.deploying PercentageStatus, UpgradesTab #pull.deploying ETAStatus { display: none; }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            with Horizontal(id="pull"):
                yield ProgressBar(id="pull-bar")
                yield Label("", id="pull-figures")
            yield Static("loading…", id="upgrades")

    def show_progress(self, progress: UpdateProgress | None) -> None:
        """The pull as a bar with its ETA (from how fast the objects arrive), the objects and bytes beside."""
        row = self.query_one("#pull", Horizontal)
        row.set_class(progress is not None, "running")
        row.set_class(progress is not None and progress.phase == "deploying", "deploying")  # no count, no ETA
        if progress is None:
            return
        bar = self.query_one("#pull-bar", ProgressBar)
        if progress.phase == "deploying":
            bar.update(total=None)  # no count to show: libostree checks the tree out
            figures = "deploying: checking the new tree out beside the booted one"
        else:
            bar.update(total=max(progress.requested, 1), progress=progress.fetched)
            rate = f" at {human_size(int(progress.bytes_per_second))}/s" if progress.bytes_per_second else ""
            figures = (
                f"{progress.fetched:,} of {progress.requested:,} objects · "
                f"{human_size(progress.bytes_transferred)}{rate}"
            )
        self.query_one("#pull-figures", Label).update(figures)

    @work(exclusive=True, group="node-upgrades", exit_on_error=False)
    async def load(self) -> None:
        try:
            update = await self.lifsea.net.run(self.client.upgrades())
        except NodeError as error:
            self.problem("#upgrades", error)
            return
        self.show_progress(update.progress)
        table = label_grid()
        state = Text(update.state.value, style=self.lifsea.colour(STATE_COLOUR.get(update.state.value, "node-ok")))
        if update.operation:
            state.append(f"  ({update.operation} running…)")
        table.add_row("State", state)
        table.add_row("Follows", plain(update.refspec or "?"))
        table.add_row("Last checked", when(update.last_checked) if update.last_checked else "never")
        if update.last_error:
            table.add_row("Last error", plain(update.last_error, self.lifsea.colour("node-down"), multiline=True))
        table.add_row("", "")
        if not update.targets:
            check = key_of(self, "node-check")
            table.add_row("Targets", plain(f"none known: press {check} to check" if check else "none known"))
        for target in update.targets:
            table.add_row(
                plain(f"→ {target.version or short(target.checksum)}"),
                plain(f"{when(target.timestamp)}  {target.subject or ''}"),
            )
            if target.diff:
                diff = target.diff
                table.add_row("", f"{diff.added} added, {diff.modified} changed, {diff.removed} removed files")
                for line in diff.sample:
                    table.add_row("", plain(line, "dim"))
                for package in diff.packages_added:
                    table.add_row("", plain(f"+ {package}"))
                for package in diff.packages_removed:
                    table.add_row("", plain(f"- {package}"))
                for package in diff.packages_changed:
                    table.add_row("", plain(f"~ {package}"))
        keys = hints(self, "node-check", "node-stage", "node-cancel", "node-rollback", "node-reboot")
        if keys:
            table.add_row("", "")
            table.add_row("Keys", plain(keys))
        self.query_one("#upgrades", Static).update(table)
