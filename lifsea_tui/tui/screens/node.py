"""One node: its tabs (tui/widgets/node), live from the node's event stream, and the actions on it.

The screen follows the node's /v1/events and tells each tab what changed (NodeChanged); a tab loads
only its own data, and only for the changes that concern it. While the stream is down it polls, and
says which at the top.
"""

from __future__ import annotations

import asyncio

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, Static, TabbedContent, TabPane

from lifsea_tui.api import ActionRequest, Event, EventKind, OpsSessionRequest
from lifsea_tui.client.node import NodeError
from lifsea_tui.tui.plain import plain
from lifsea_tui.tui.screens.base import ConsoleScreen
from lifsea_tui.tui.screens.modals import OpsModal, ReasonModal
from lifsea_tui.tui.widgets.node import (
    AuditTab,
    DeploymentsTab,
    NodeChanged,
    NodeTab,
    OpsTab,
    OverviewTab,
    ServicesTab,
    UpgradesTab,
)

POLL_SECONDS = 3.0


class NodeScreen(ConsoleScreen[None]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="node-back"),
        Binding("c", "act('check')", "Check", id="node-check"),
        Binding("s", "act('stage')", "Stage", id="node-stage"),
        Binding("x", "act('cancel')", "Cancel update", id="node-cancel"),
        Binding("b", "act('rollback')", "Rollback", id="node-rollback"),
        Binding("r", "act('reboot')", "Reboot", id="node-reboot"),
        Binding("o", "act('ops')", "Ops shell", id="node-ops"),
        Binding("l", "logs", "Logs", id="node-logs"),
        Binding("d", "debug", "Debug", id="node-debug"),
        Binding("R", "unit('restart')", "Restart unit", id="unit-restart"),
        Binding("S", "unit('start')", "Start unit", id="unit-start"),
        Binding("X", "unit('stop')", "Stop unit", id="unit-stop"),
        Binding("v", "verify", "Verify audit", id="node-verify"),
        Binding("n", "older", "Older audit", id="node-older", show=False),
        Binding("p", "newer", "Newer audit", id="node-newer", show=False),
        Binding("t", "collected", "Collected copy", id="node-collected", show=False),
        Binding("ctrl+r", "reload", "Refresh", id="node-refresh"),
    ]
    DEFAULT_CSS = """
    NodeScreen {
        #live { height: 1; padding: 0 1; background: $panel; }
        #tabs { height: 1fr; }
        TabPane { height: 1fr; }
        .note { padding: 0 1; color: $text-muted; }
        .problem { padding: 0 1; color: $error; }
        DataTable { height: auto; max-height: 16; }
        #history { max-height: 12; }
        #audit-table { height: 1fr; max-height: 100%; }
    }
    """

    def __init__(self, name: str, tab: str | None = None) -> None:
        super().__init__()
        self.node_name = name
        self.first_tab = tab
        self.live_text = "connecting…"

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(plain(self.live_text), id="live")
        with TabbedContent(id="tabs", initial=self.first_tab or ""):
            for title, tab_id, tab in (
                ("Overview", "tab-overview", OverviewTab),
                ("Deployments & history", "tab-deployments", DeploymentsTab),
                ("Upgrades", "tab-upgrades", UpgradesTab),
                ("Services", "tab-services", ServicesTab),
                ("Ops sessions & recordings", "tab-ops", OpsTab),
                ("Audit", "tab-audit", AuditTab),
            ):
                with TabPane(title, id=tab_id):
                    yield tab(self.node_name)
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"node {self.node_name}"
        self.follow()
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.changed(None))  # cells carry its colours

    def changed(self, kind: EventKind | None) -> None:
        """Tell every tab; each decides whether it concerns it."""
        for tab in self.query(NodeTab):
            tab.post_message(NodeChanged(kind))

    @work(exclusive=True, group="node-follow", exit_on_error=False)
    async def follow(self) -> None:
        """Pass on what the node pushes; poll while its event stream is down."""
        client = self.lifsea.fleet.client(self.node_name)
        ui_loop = asyncio.get_running_loop()

        def arrived(event: Event) -> None:
            self._set_live("live: following the node's events")
            if event.kind != EventKind.hello:  # the tabs loaded when they were mounted
                self.changed(None if event.kind == EventKind.lagged else event.kind)

        async def stream() -> None:  # runs on the network loop
            async for event in client.events():
                ui_loop.call_soon_threadsafe(arrived, event)

        while True:
            try:
                await self.lifsea.net.run(stream())
            except NodeError as error:
                self._set_live(f"polling every {POLL_SECONDS:.0f} s (event stream: {error})")
            await asyncio.sleep(POLL_SECONDS)
            self.changed(None)

    def _set_live(self, text: str) -> None:
        if text != self.live_text:
            self.live_text = text
            self.query_one("#live", Static).update(plain(text))

    # -- keys ------------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "unit":  # the unit keys belong to the Services tab
            if self.lifsea.read_only:
                return False
            return self.query_one("#tabs", TabbedContent).active == "tab-services"
        return super().check_action(action, parameters)

    @on(TabbedContent.TabActivated)
    def _tab_changed(self) -> None:
        self.refresh_bindings()

    def action_reload(self) -> None:
        self.changed(None)

    def action_older(self) -> None:
        self.query_one(AuditTab).older()

    def action_newer(self) -> None:
        self.query_one(AuditTab).newer()

    def action_collected(self) -> None:
        self.query_one(AuditTab).toggle_collected()

    def action_verify(self) -> None:
        self.query_one(AuditTab).verify()

    def action_debug(self) -> None:
        self.lifsea.open_debug(self.node_name)

    def action_logs(self) -> None:
        """The selected unit's logs on the Services tab; the whole journal elsewhere."""
        unit = None
        if self.query_one("#tabs", TabbedContent).active == "tab-services":
            unit = self.query_one(ServicesTab).cursor_unit()
        self.lifsea.open_logs(self.node_name, unit)

    # -- actions that change the node ------------------------------------------------------------------

    def action_unit(self, action: str) -> None:
        unit = self.query_one(ServicesTab).cursor_unit()
        if unit is None:
            return

        def chosen(reason: str | None) -> None:
            if reason:
                self.run_unit_action(unit, action, reason)

        self.app.push_screen(ReasonModal(f"{action.capitalize()} {unit}", [self.node_name]), chosen)

    @work(group="node-actions", exit_on_error=False)
    async def run_unit_action(self, unit: str, action: str, reason: str) -> None:
        client = self.lifsea.fleet.client(self.node_name)
        try:
            result = await self.lifsea.net.run(client.service_action(unit, action, ActionRequest(reason=reason)))
        except NodeError as error:
            self.notify(f"{action} {unit} on {self.node_name}: {error}", severity="error", timeout=10)
            return
        self.notify(f"{action} {unit}: queued (audit record {result.audit_seq})", timeout=5)

    def action_act(self, action: str) -> None:
        if action == "ops":
            self.app.push_screen(OpsModal(self.node_name), self._open_shell)
            return

        def chosen(reason: str | None) -> None:
            if reason:
                self.act_on_node(action, reason)

        self.app.push_screen(ReasonModal(action, [self.node_name]), chosen)

    def _open_shell(self, request: OpsSessionRequest | None) -> None:
        if request is not None:
            self.lifsea.open_shell(self.node_name, request)

    @work(group="node-actions", exit_on_error=False)
    async def act_on_node(self, action: str, reason: str) -> None:
        self._set_live(f"{action}: sent…")
        client = self.lifsea.fleet.client(self.node_name)
        try:
            result = await self.lifsea.net.run(client.action(action, ActionRequest(reason=reason)))
        except NodeError as error:
            self.notify(f"{action} on {self.node_name}: {error}", severity="error", timeout=10)
            self._set_live(f"{action} failed: {error}")
        else:
            self.notify(
                f"{action} on {self.node_name}: {result.status.state.value} (audit record {result.audit_seq})",
                timeout=6,
            )
            self._set_live(f"{action}: {result.status.state.value}")
        self.changed(None)
