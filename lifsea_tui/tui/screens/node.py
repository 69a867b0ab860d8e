"""One node: overview, deployments and history, upgrades, audit; live from the node's event stream."""

from __future__ import annotations

import asyncio
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane

from lifsea_tui.api import (
    ActionRequest,
    AuditPage,
    Deployment,
    EventKind,
    HistoryList,
    NodeInfo,
    OpsSession,
    OpsSessionList,
    OpsSessionRequest,
    RecordingList,
    UnitInfo,
    UpdateStatus,
)
from lifsea_tui.client.node import NodeError
from lifsea_tui.tui.cast import parse
from lifsea_tui.tui.plain import plain
from lifsea_tui.tui.screens.base import ConsoleScreen
from lifsea_tui.tui.screens.modals import OpsModal, ReasonModal
from lifsea_tui.tui.tables import PlainTable

POLL_SECONDS = 3.0
AUDIT_PAGE = 50


def _short(checksum: str | None) -> str:
    return checksum[:12] if checksum else "?"


def _label_grid() -> Table:
    """Two columns: a bold label and its value."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    return table


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "?"


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
        self.audit_before: int | None = None
        self.audit_page: AuditPage | None = None
        self.live_text = "connecting…"
        self.open_sessions: dict[str, OpsSession] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(plain(self.live_text), id="live")
        with TabbedContent(id="tabs", initial=self.first_tab or ""):
            with TabPane("Overview", id="tab-overview"), VerticalScroll():
                yield Static("loading…", id="overview")
            with TabPane("Deployments & history", id="tab-deployments"), VerticalScroll():
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
            with TabPane("Upgrades", id="tab-upgrades"), VerticalScroll():
                yield Static("loading…", id="upgrades")
            with TabPane("Services", id="tab-services"), VerticalScroll():
                yield Static("loading…", id="services-note", classes="note")
                units = PlainTable(id="services", cursor_type="row")
                for label in ("Unit", "State", "Since", "Restarts", "PID", "Memory", "Description"):
                    units.add_column(label, key=label)
                yield units
            with TabPane("Ops sessions & recordings", id="tab-ops"), VerticalScroll():
                yield Static("Open ops sessions (enter re-attaches your own)", classes="note")
                sessions = PlainTable(id="ops-sessions", cursor_type="row")
                for label in ("Session", "Who", "Access", "State", "Reason", "Ticket", "Ends"):
                    sessions.add_column(label, key=label)
                yield sessions
                yield Static("Recordings (enter plays; each viewing is audited on the node)", classes="note")
                recordings = PlainTable(id="recordings", cursor_type="row")
                for label in ("Recording", "Who", "Started", "Size", "Sealed", "Ended because", "Reason"):
                    recordings.add_column(label, key=label)
                yield recordings
            with TabPane("Audit", id="tab-audit"):
                yield Static("", id="chain", classes="note")
                # Kept apart from #chain, which every reload rewrites: a verdict stays until asked again.
                yield Static("press v to verify the audit chain", id="verify", classes="note")
                audit = PlainTable(id="audit-table", cursor_type="row")
                for label in ("Seq", "Time", "Actor", "Role", "Action", "Reason", "Outcome"):
                    audit.add_column(label, key=label)
                yield audit
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"node {self.node_name}"
        self.load()
        self.follow()
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.load())  # cells carry its colours

    # -- loading ---------------------------------------------------------------------------------------

    @work(exclusive=True, group="node-load", exit_on_error=False)
    async def load(self) -> None:
        client = self.lifsea.fleet.client(self.node_name)
        before = self.audit_before

        async def fetch() -> list[Any]:  # runs on the network loop
            return await asyncio.gather(
                client.node(),
                client.deployments(),
                client.history(),
                client.upgrades(),
                client.audit(before=before, limit=AUDIT_PAGE),
                client.ops_sessions(),
                client.recordings(),
                return_exceptions=True,
            )

        info, deployments, history, update, audit, sessions, recordings = await self.lifsea.net.run(fetch())
        self.load_services()
        self._show_ops(sessions, recordings)
        self._show_overview(info)
        self._show_deployments(deployments, update)
        self._show_history(history)
        self._show_upgrades(update)
        self._show_audit(audit)

    @work(exclusive=True, group="node-follow", exit_on_error=False)
    async def follow(self) -> None:
        """Reload when the node pushes a change; poll while its event stream is down."""
        client = self.lifsea.fleet.client(self.node_name)
        ui_loop = asyncio.get_running_loop()

        def arrived(event: Any) -> None:
            self._set_live("live: following the node's events")
            if event.kind == EventKind.hello:
                return
            if event.kind == EventKind.services:
                self.load_services()  # units change often (a crash loop): reload only them
            else:
                self.load()

        async def stream() -> None:  # runs on the network loop
            async for event in client.events():
                ui_loop.call_soon_threadsafe(arrived, event)

        while True:
            try:
                await self.lifsea.net.run(stream())
            except NodeError as error:
                self._set_live(f"polling every {POLL_SECONDS:.0f} s (event stream: {error})")
            await asyncio.sleep(POLL_SECONDS)
            self.load()

    def _set_live(self, text: str) -> None:
        if text != self.live_text:
            self.live_text = text
            self.query_one("#live", Static).update(plain(text))

    def _problem(self, widget_id: str, error: BaseException) -> None:
        self.query_one(widget_id, Static).update(plain(f"✗ {error}", self.lifsea.colour("node-down")))

    def _show_overview(self, info: NodeInfo | BaseException) -> None:
        if isinstance(info, BaseException):
            self._problem("#overview", info)
            return
        table = _label_grid()
        uptime = _duration(info.uptime_seconds)
        for label, value in (
            ("Name", info.name),
            ("OS", f"{info.os_name or '?'} {info.os_version or ''}"),
            ("Booted commit", info.booted_checksum or "unknown"),
            ("Kernel", info.kernel),
            ("Uptime", uptime),
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

    def _show_deployments(self, listing: Any, update: Any) -> None:
        table = self.query_one("#deployments", DataTable)
        detail = self.query_one("#deployment-detail", Static)
        table.clear()
        if isinstance(listing, BaseException):
            detail.update(plain(f"✗ {listing}", self.lifsea.colour("node-down")))
            return
        for deployment in listing.deployments:
            table.add_row(
                str(deployment.index),
                deployment.version or "?",
                _short(deployment.checksum),
                self._flags(deployment),
                deployment.origin_refspec or "",
                _when(deployment.timestamp),
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

    def _show_history(self, history: HistoryList | BaseException) -> None:
        table = self.query_one("#history", DataTable)
        table.clear()
        if isinstance(history, BaseException):
            table.add_row("", f"✗ {history}", "", "", "")
            return
        for entry in history.entries[:200]:
            table.add_row(
                _when(entry.time),
                entry.event,
                entry.version or _short(entry.checksum),
                entry.actor or "",
                entry.reason or "",
            )

    def _show_upgrades(self, update: UpdateStatus | BaseException) -> None:
        if isinstance(update, BaseException):
            self._problem("#upgrades", update)
            return
        table = _label_grid()
        state = Text(
            update.state.value,
            style=self.lifsea.colour(
                "pending"
                if update.state.value in ("available", "staged", "checking", "staging")
                else "node-down"
                if update.state.value == "failed"
                else "node-ok"
            ),
        )
        if update.operation:
            state.append(f"  ({update.operation} running…)")
        table.add_row("State", state)
        table.add_row("Follows", plain(update.refspec or "?"))
        table.add_row("Last checked", _when(update.last_checked) if update.last_checked else "never")
        if update.last_error:
            table.add_row("Last error", plain(update.last_error, self.lifsea.colour("node-down"), multiline=True))
        table.add_row("", "")
        if not update.targets:
            table.add_row("Targets", "none known: press c to check")
        for target in update.targets:
            table.add_row(
                plain(f"→ {target.version or _short(target.checksum)}"),
                plain(f"{_when(target.timestamp)}  {target.subject or ''}"),
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
        table.add_row("", "")
        table.add_row("Keys", "c check · s stage · x cancel staged · b rollback · r reboot")
        self.query_one("#upgrades", Static).update(table)

    def _show_audit(self, page: AuditPage | BaseException) -> None:
        table = self.query_one("#audit-table", DataTable)
        table.clear()
        if isinstance(page, BaseException):
            self._problem("#chain", page)
            return
        self.audit_page = page
        for record in reversed(page.records):
            outcome_style = (
                self.lifsea.colour("node-down")
                if record.outcome.startswith(("refused", "failed", "interrupted"))
                else ""
            )
            table.add_row(
                str(record.seq),
                _when(record.time),
                record.actor,
                record.role or "",
                record.action,
                record.reason or "",
                Text(record.outcome, style=outcome_style),
            )
        first = page.records[0].seq if page.records else None
        where = "newest" if self.audit_before is None else f"before {self.audit_before}"
        self.query_one("#chain", Static).update(
            Text(
                f"{len(page.records)} records ({where}); head seq {page.head_seq} · n older · p newer"
                + (f" · oldest shown {first}" if first is not None else "")
            )
        )

    @work(exclusive=True, group="node-services", exit_on_error=False)
    async def load_services(self) -> None:
        client = self.lifsea.fleet.client(self.node_name)
        try:
            listing = await self.lifsea.net.run(client.services(kind="service"))
        except NodeError as error:
            self._problem("#services-note", error)
            self.query_one("#services", DataTable).clear()
            return
        self._show_services(listing.units)

    def _show_services(self, units: list[UnitInfo]) -> None:
        table = self.query_one("#services", DataTable)
        cursor = self._cursor_key(table)
        table.clear()
        colours = {
            "failed": self.lifsea.colour("node-down"),
            "active": self.lifsea.colour("node-ok"),
            "activating": self.lifsea.colour("pending"),
            "deactivating": self.lifsea.colour("pending"),
            "reloading": self.lifsea.colour("pending"),
        }
        # What needs eyes first: failed, then changing, then running, then stopped; units that are only
        # referenced (not-found) are left out and counted.
        order = {"failed": 0, "activating": 1, "deactivating": 1, "reloading": 1, "active": 2}
        missing = sum(1 for u in units if u.load_state == "not-found")
        units = sorted(
            (u for u in units if u.load_state != "not-found"), key=lambda u: (order.get(u.active_state, 3), u.name)
        )
        for unit in units:
            state = Text(f"{unit.active_state}/{unit.sub_state}", style=colours.get(unit.active_state, "dim"))
            memory = f"{unit.memory_bytes / 2**20:.1f} MiB" if unit.memory_bytes is not None else ""
            restarts = Text(str(unit.restarts or 0), style=colours["failed"] if unit.restarts else "")
            table.add_row(
                unit.name, state, _when(unit.since), restarts, str(unit.main_pid or ""), memory, unit.description,
                key=unit.name,
            )  # fmt: skip
        if cursor is not None and cursor in table.rows:
            table.move_cursor(row=table.get_row_index(cursor))
        failed = sum(1 for u in units if u.active_state == "failed")
        self.query_one("#services-note", Static).update(
            Text(
                f"{len(units)} services, {failed} failed (failed first)"
                + (f", {missing} referenced but not installed (hidden)" if missing else "")
                + " · l logs · R restart · S start · X stop"
            )
        )

    @staticmethod
    def _cursor_key(table: DataTable[Any]) -> str | None:
        if not table.row_count:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001 - no cursor row
            return None

    def _show_ops(self, sessions: OpsSessionList | BaseException, recordings: RecordingList | BaseException) -> None:
        table = self.query_one("#ops-sessions", DataTable)
        table.clear()
        if isinstance(sessions, BaseException):
            table.add_row("", "", "", "", f"cannot list: {sessions}", "", "")
        else:
            self.open_sessions = {s.id: s for s in sessions.sessions}
            for session in sessions.sessions:
                table.add_row(
                    session.id, session.actor, session.access.value, session.state.value, session.reason,
                    session.ticket or "", _when(session.expires_at), key=session.id,
                )  # fmt: skip
        table = self.query_one("#recordings", DataTable)
        table.clear()
        if isinstance(recordings, BaseException):
            why = "needs the admin or auditor role" if getattr(recordings, "status", None) == 403 else str(recordings)
            table.add_row("", "", "", "", "", f"recordings: {why}", "")
            return
        for item in recordings.recordings:
            sealed = Text("yes", style="") if item.sha256 else Text("open", style=self.lifsea.colour("pending"))
            ended = item.end_reason or ""
            alarming = ended.startswith(("interrupted", "recording", "failed"))
            ended_text = Text(ended, style=self.lifsea.colour("node-down") if alarming else "")
            table.add_row(
                item.id, item.actor, _when(item.started), f"{item.size:,}", sealed, ended_text, item.reason, key=item.id
            )  # fmt: skip

    @on(DataTable.RowSelected, "#recordings")
    def _play(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.play(event.row_key.value)

    @work(group="node-play", exit_on_error=False)
    async def play(self, recording_id: str) -> None:
        client = self.lifsea.fleet.client(self.node_name)
        try:
            data = await self.lifsea.net.run(client.recording(recording_id))
        except NodeError as error:
            self.notify(f"Recording {recording_id}: {error}", severity="error", timeout=10)
            return
        self.lifsea.open_player(parse(data), f"{self.node_name}/{recording_id}")

    @on(DataTable.RowSelected, "#ops-sessions")
    def _reattach(self, event: DataTable.RowSelected) -> None:
        session = self.open_sessions.get(event.row_key.value or "")
        if session is None:
            return
        if self.lifsea.read_only:
            self.notify("read-only console: no ops shells, not even re-attaching", severity="warning")
            return
        self.lifsea.open_shell(self.node_name, session)

    # -- actions ---------------------------------------------------------------------------------------

    def action_reload(self) -> None:
        self.load()

    def action_older(self) -> None:
        if self.audit_page and self.audit_page.records and self.audit_page.records[0].seq > 0:
            self.audit_before = self.audit_page.records[0].seq
            self.load()

    def action_newer(self) -> None:
        if self.audit_before is not None:
            newer = self.audit_before + AUDIT_PAGE
            self.audit_before = None if self.audit_page is None or newer > self.audit_page.head_seq else newer
            self.load()

    @work(group="node-verify", exit_on_error=False)
    async def action_verify(self) -> None:
        chain = self.query_one("#verify", Static)
        chain.update("verifying the audit chain…")
        try:
            result = await self.lifsea.net.run(self.lifsea.fleet.client(self.node_name).audit_verify())
        except NodeError as error:
            chain.update(plain(f"✗ cannot verify: {error}", self.lifsea.colour("node-down")))
            return
        if result.ok:
            chain.update(
                Text(
                    f"✓ chain verified: {result.records} records, head {result.head_seq}, matches what the agent "
                    f"wrote; {result.recordings_checked} sealed recordings match",
                    style=self.lifsea.colour("node-ok"),
                )
            )
        else:
            problems = [f"✗ AUDIT LOG NOT INTACT: {result.problem}"]
            if result.first_bad_seq is not None:
                problems[0] += f" (first bad record {result.first_bad_seq})"
            problems += [
                f"✗ recording {bad.id} (sealed in record {bad.audit_seq}): {bad.problem}"
                for bad in result.bad_recordings
            ]
            chain.update(plain("\n".join(problems), self.lifsea.colour("node-down"), multiline=True))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "unit":  # the unit keys belong to the Services tab
            if self.lifsea.read_only:
                return False
            return self.query_one("#tabs", TabbedContent).active == "tab-services"
        return super().check_action(action, parameters)

    @on(TabbedContent.TabActivated)
    def _tab_changed(self) -> None:
        self.refresh_bindings()

    def action_debug(self) -> None:
        self.lifsea.open_debug(self.node_name)

    def action_logs(self) -> None:
        """The selected unit's logs on the Services tab; the whole journal elsewhere."""
        unit = None
        if self.query_one("#tabs", TabbedContent).active == "tab-services":
            unit = self._cursor_key(self.query_one("#services", DataTable))
        self.lifsea.open_logs(self.node_name, unit)

    def action_unit(self, action: str) -> None:
        unit = self._cursor_key(self.query_one("#services", DataTable))
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
                self.run_action(action, reason)

        self.app.push_screen(ReasonModal(action, [self.node_name]), chosen)

    def _open_shell(self, request: OpsSessionRequest | None) -> None:
        if request is not None:
            self.lifsea.open_shell(self.node_name, request)

    @work(group="node-actions", exit_on_error=False)
    async def run_action(self, action: str, reason: str) -> None:
        self._set_live(f"{action}: sent…")
        try:
            result = await self.lifsea.net.run(
                self.lifsea.fleet.client(self.node_name).action(action, ActionRequest(reason=reason))
            )
        except NodeError as error:
            self.notify(f"{action} on {self.node_name}: {error}", severity="error", timeout=10)
            self._set_live(f"{action} failed: {error}")
        else:
            self.notify(
                f"{action} on {self.node_name}: {result.status.state.value} (audit record {result.audit_seq})",
                timeout=6,
            )
            self._set_live(f"{action}: {result.status.state.value}")
        self.load()
