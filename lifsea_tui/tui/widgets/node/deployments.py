"""The node's deployments (boot order, flags, what an update would change) and its history."""

from __future__ import annotations

import asyncio

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from lifsea_tui.api import Deployment, DeploymentList, EventKind, HistoryList, UpdateStatus
from lifsea_tui.tui.plain import plain
from lifsea_tui.tui.tables import PlainTable
from lifsea_tui.tui.widgets.node.base import NodeTab, short, when


class DeploymentsTab(NodeTab):
    REACTS_TO = frozenset({EventKind.deployments, EventKind.update})

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            deployments = PlainTable(id="deployments", cursor_type="row")
            for label in ("#", "Version", "Checksum", "State", "Origin", "Committed", "Subject"):
                deployments.add_column(label, key=label)
            yield deployments
            yield Static("", id="deployment-detail", classes="note")
            yield Static("History", classes="note")
            history = PlainTable(id="history", cursor_type="row")
            for label in ("When", "Event", "Version", "Who", "Why"):
                history.add_column(label, key=label)
            yield history

    @work(exclusive=True, group="node-deployments", exit_on_error=False)
    async def load(self) -> None:
        client = self.client

        async def fetch() -> tuple[
            DeploymentList | BaseException, UpdateStatus | BaseException, HistoryList | BaseException
        ]:
            return await asyncio.gather(
                client.deployments(), client.upgrades(), client.history(), return_exceptions=True
            )

        listing, update, history = await self.lifsea.net.run(fetch())
        self._show_deployments(listing, update)
        self._show_history(history)

    def _show_deployments(self, listing: object, update: object) -> None:
        table = self.query_one("#deployments", PlainTable)
        detail = self.query_one("#deployment-detail", Static)
        table.clear()
        if not isinstance(listing, DeploymentList):
            detail.update(plain(f"✗ {listing}", self.lifsea.colour("node-down")))
            return
        for deployment in listing.deployments:
            table.add_row(
                str(deployment.index),
                deployment.version or "?",
                short(deployment.checksum),
                self._flags(deployment),
                deployment.origin_refspec or "",
                when(deployment.timestamp),
                deployment.subject or "",
                key=deployment.checksum + str(deployment.serial),
            )
        note = "" if listing.booted_known else "The booted deployment cannot be determined (node down?). "
        if isinstance(update, UpdateStatus) and update.targets and update.targets[0].diff:
            target, diff = update.targets[0], update.targets[0].diff
            note += (
                f"Update {target.version} against booted: {diff.added} added, {diff.modified} changed, "
                f"{diff.removed} removed files"
            )
            if diff.packages_added or diff.packages_removed or diff.packages_changed:
                note += (
                    f"; packages +{len(diff.packages_added)} -{len(diff.packages_removed)} "
                    f"~{len(diff.packages_changed)}"
                )
        detail.update(plain(note))

    def _flags(self, deployment: Deployment) -> Text:
        text = Text()
        for flag, variable in (
            ("booted", "booted"),
            ("pending", "pending"),
            ("rollback", "node-unknown"),
            ("pinned", "node-unknown"),
        ):
            if getattr(deployment, flag):
                text.append(f"{flag} ", style=self.lifsea.colour(variable))
        if deployment.default and not deployment.pending:
            text.append("default")
        return text

    def _show_history(self, history: object) -> None:
        table = self.query_one("#history", PlainTable)
        table.clear()
        if not isinstance(history, HistoryList):
            table.add_row("", f"✗ {history}", "", "", "")
            return
        for entry in history.entries[:200]:
            table.add_row(
                when(entry.time),
                entry.event,
                entry.version or short(entry.checksum),
                entry.actor or "",
                entry.reason or "",
            )
