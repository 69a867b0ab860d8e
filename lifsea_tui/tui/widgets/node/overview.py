"""The node's identity: name, OS, booted commit, kernel, uptime, agent, and what it can do (and why not)."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from lifsea_tui.api import EventKind
from lifsea_tui.client.node import NodeError
from lifsea_tui.tui.plain import plain
from lifsea_tui.tui.widgets.node.base import NodeTab, duration, label_grid


class OverviewTab(NodeTab):
    REACTS_TO = frozenset({EventKind.deployments})  # a boot changes the booted commit and the uptime

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static("loading…", id="overview")

    @work(exclusive=True, group="node-overview", exit_on_error=False)
    async def load(self) -> None:
        try:
            info = await self.lifsea.net.run(self.client.node())
        except NodeError as error:
            self.problem("#overview", error)
            return
        table = label_grid()
        for label, value in (
            ("Name", info.name),
            ("OS", f"{info.os_name or '?'} {info.os_version or ''}"),
            ("Booted commit", info.booted_checksum or "unknown"),
            ("Kernel", info.kernel),
            ("Uptime", duration(info.uptime_seconds)),
            ("Machine id", info.machine_id or "?"),
            ("Agent", info.agent_version),
        ):
            table.add_row(label, plain(value))
        table.add_row("", "")
        table.add_row("Capabilities", "")
        for name, capability in sorted(info.capabilities.items()):
            mark = (
                plain(f"✓ {name}", self.lifsea.colour("node-ok"))
                if capability.available
                else plain(f"✗ {name}", self.lifsea.colour("node-down"))
            )
            table.add_row(mark, plain(capability.reason))
        self.query_one("#overview", Static).update(table)
