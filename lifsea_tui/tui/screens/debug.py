"""Guided debugging: runbooks proposed by what the node shows, walked step by step with live results.

The Debug screen of a node runs every runbook's first checks (read-only, through the node API) and
lists the runbooks, those that found a problem first. enter walks the one under the cursor: its checks
run on their own and show their findings with evidence; an action (restart a unit, roll back, reboot)
waits for enter and a reason; a shell step opens the break-glass shell with the runbook's suggested
commands beside it, never typed. Every step is kept on the node's audit log as one walk, and ctrl+s
writes the walk as Markdown for the incident report.

The fleet's Debug screen runs the same first checks on the selected nodes (or all) and lists what fires
where; enter walks that runbook on that node.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header, RichLog, Static

from lifsea_tui.api import ACCESS_TEXT, OpsSessionRequest
from lifsea_tui.client.node import NodeClient, NodeError
from lifsea_tui.client.runbook import (
    SHIPPED,
    Finding,
    LoadError,
    Proposal,
    Runbook,
    Status,
    Walk,
    load,
    markdown,
    triage,
)
from lifsea_tui.tui.keys import key_of
from lifsea_tui.tui.locations import config_dir
from lifsea_tui.tui.plain import file_part, plain, visible
from lifsea_tui.tui.screens.base import Console, ConsoleScreen, ShellClosed
from lifsea_tui.tui.screens.modals import OpsModal, ReasonModal
from lifsea_tui.tui.tables import PlainTable

# Each finding's mark, and the theme variable that colours it.
MARK = {Status.problem: ("●", "node-down"), Status.unknown: ("?", "pending"), Status.ok: ("○", "node-ok")}


def user_runbooks() -> Path:
    return config_dir() / "runbooks"


def runbooks() -> tuple[list[Runbook], list[LoadError]]:
    """The shipped runbooks, then the user's (which replace a shipped one of the same id)."""
    return load([SHIPPED, user_runbooks()])


class Marks:
    """A finding's mark in the theme's colours."""

    lifsea: Console

    def mark(self, status: Status) -> tuple[str, str]:
        mark, variable = MARK[status]
        return mark, self.lifsea.colour(variable)


class DebugScreen(Marks, ConsoleScreen[None]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="debug-back"),
        Binding("enter", "go", "Walk / take step", id="debug-go", priority=True),
        Binding("x", "stop", "Stop walk", id="debug-stop"),
        Binding("t", "triage", "Check again", id="debug-triage"),
        Binding("ctrl+s", "export", "Export Markdown", id="debug-export"),
    ]
    DEFAULT_CSS = """
    DebugScreen {
        #debug-status { height: auto; padding: 0 1; background: $panel; }
        #debug-body { height: 1fr; }
        #debug-runbooks { width: 50; }
        #debug-walk { width: 1fr; padding: 0 1; }
        #debug-next { height: auto; padding: 0 1; background: $boost; text-style: bold; }
    }
    """

    def __init__(self, node: str, start: str | None = None) -> None:
        """Debug `node`; with `start` (a runbook id), walk that runbook at once."""
        super().__init__()
        self.node_name = node
        self.start_with = start
        self.books: dict[str, Runbook] = {}
        self.load_errors: list[LoadError] = []
        self.proposals: list[Proposal] = []
        self.walk: Walk | None = None
        self.busy = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="debug-status")
        with Horizontal(id="debug-body"):
            table = PlainTable(id="debug-runbooks", cursor_type="row")
            table.add_column(" ", key="mark", width=1)
            table.add_column("Runbook", key="title")
            yield table
            yield RichLog(id="debug-walk", wrap=True, markup=False, highlight=False)
        yield Static("", id="debug-next")
        yield Footer()

    @property
    def client(self) -> NodeClient:
        return self.lifsea.fleet.client(self.node_name)

    @property
    def log_view(self) -> RichLog:
        return self.query_one("#debug-walk", RichLog)

    def on_mount(self) -> None:
        self.title = f"debug {self.node_name}"
        found, errors = runbooks()
        self.books = {book.id: book for book in found}
        self.load_errors = errors
        self._write_errors()
        if errors:
            self.notify(f"{len(errors)} runbook file(s) have errors; the others are loaded", severity="warning")
        self.run_triage()
        if self.start_with and self.start_with in self.books:
            self.begin(self.books[self.start_with])
        self._show_next()

    # -- proposing ------------------------------------------------------------------------------------

    def action_triage(self) -> None:
        if self.walk is not None and self.walk.resolved is None:
            self.notify("a walk is in progress: take its step, or x to stop it, first", severity="warning")
            return
        self.run_triage()

    @work(group="debug-triage", exclusive=True, exit_on_error=False)
    async def run_triage(self) -> None:
        status = self.query_one("#debug-status", Static)
        status.update(plain(f"running the first checks of {len(self.books)} runbooks on {self.node_name}…"))
        self.proposals = await self.lifsea.net.run(triage(self.client, list(self.books.values())))
        table = self.query_one("#debug-runbooks", DataTable)
        table.clear()
        for proposal in self.proposals:
            mark, style = self.mark(proposal.status)
            table.add_row(Text(mark, style=style), proposal.runbook.title, key=proposal.runbook.id)
        firing = [p for p in self.proposals if p.status == Status.problem]
        status.update(
            plain(
                f"{self.node_name}: {len(firing)} of {len(self.proposals)} runbooks find trouble"
                + (f" · first: {firing[0].runbook.title}: {firing[0].summary}" if firing else "")
                + " · enter walks the runbook under the cursor"
            )
        )
        if self.walk is None:
            log = self.log_view
            log.clear()
            self._write_errors()
            for proposal in self.proposals:
                mark, style = self.mark(proposal.status)
                line = plain(f"{mark} {proposal.runbook.title}: ", f"bold {style}")
                line.append_text(plain(proposal.summary))
                log.write(line)
        self._show_next()

    # -- walking --------------------------------------------------------------------------------------

    def action_go(self) -> None:
        if self.busy:
            return
        walk = self.walk
        if walk is None or walk.step is None:
            runbook_id = self._cursor()
            if runbook_id in self.books:
                self.begin(self.books[runbook_id])
            return
        if walk.step.kind == "action":
            if self.lifsea.read_only:
                self.notify("read-only console: actions are off", severity="warning")
                return
            what = walk.describe_action(walk.step)

            def chosen(reason: str | None) -> None:
                if reason:
                    self.take_action(reason)

            self.app.push_screen(ReasonModal(what, [self.node_name]), chosen)
        elif walk.step.kind == "shell":
            if self.lifsea.read_only:
                self.notify("read-only console: no ops shells; x stops the walk here", severity="warning")
                return
            self.app.push_screen(OpsModal(self.node_name, access=walk.step.access), self._open_shell)

    def _cursor(self) -> str | None:
        table = self.query_one("#debug-runbooks", DataTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def begin(self, runbook: Runbook) -> None:
        self.walk = Walk(runbook, self.client, self.node_name)
        log = self.log_view
        log.clear()
        self._write_errors()
        log.write(plain(runbook.title, "bold"))
        log.write(plain(runbook.symptom, "italic"))
        self.continue_walk(start=True)

    @work(group="debug-walk", exclusive=True, exit_on_error=False)
    async def continue_walk(self, start: bool = False) -> None:
        """Run checks until the walk reaches a step that needs the person, or its end."""
        walk = self.walk
        if walk is None:
            return
        self.busy = True
        try:
            if start:
                await self.lifsea.net.run(walk.begin("walked from the console"))
            while walk.step is not None and walk.step.kind in ("check", "end"):
                step = walk.step
                if step.kind == "end":
                    await self.lifsea.net.run(walk.finish())
                    break
                self._step_header(walk.text(step.explain) or step.what)
                self._show_next(f"checking: {walk.text(step.explain) or step.what}…")
                finding = await self.lifsea.net.run(walk.check())
                self._show_finding(finding)
        finally:
            self.busy = False
        if walk.step is not None:
            self._step_header(walk.text(walk.step.explain))
        else:
            self._show_outcome()
        self._show_next()

    @work(group="debug-walk", exclusive=True, exit_on_error=False)
    async def take_action(self, reason: str) -> None:
        walk = self.walk
        step = walk.step if walk is not None else None
        if walk is None or step is None:
            return
        self.busy = True
        self._show_next(f"{walk.describe_action(step)}: sent…")
        asked = time.monotonic()
        try:
            outcome = await self.lifsea.net.run(walk.act(reason))
        except NodeError as error:
            self.log_view.write(plain(f"✗ {error}", f"bold {self.lifsea.colour('node-down')}"))
            self.notify(f"{self.node_name}: {error}", severity="error", timeout=10)
            self.busy = False
            self._show_next()
            return
        self.log_view.write(plain(f"✓ {outcome}", f"bold {self.lifsea.colour('node-ok')}"))
        if step.what == "reboot":
            self._show_next("waiting for the node to come back…")
            await self._wait_back(asked)
        self.busy = False
        self.continue_walk()

    async def _wait_back(self, asked: float, timeout: float = 240.0) -> None:
        """After a reboot asked for at `asked` (monotonic): until the node answers from a boot younger than
        that (a lab node can be back before the answer to the reboot is), or the timeout."""
        while time.monotonic() - asked < timeout:
            await asyncio.sleep(2.0)
            try:
                info = await self.lifsea.net.run(self.client.node())
            except NodeError:
                continue
            if info.uptime_seconds is not None and info.uptime_seconds < time.monotonic() - asked:
                await asyncio.sleep(5.0)  # let its services start before the next check looks at them
                return

    def _open_shell(self, request: OpsSessionRequest | None) -> None:
        walk = self.walk
        if request is None or walk is None or walk.step is None:
            return
        step = walk.step
        hints = [walk.text(command) for command in step.params.get("commands", [])]
        self.lifsea.open_shell(
            self.node_name,
            request.model_copy(update={"reason": walk.reason(request.reason)}),
            hints=hints,
            hint_title=walk.text(step.what),
            then=self._shell_closed,
        )

    def _shell_closed(self, closed: ShellClosed | None) -> None:
        walk = self.walk
        if walk is None or walk.step is None or walk.step.kind != "shell":
            return
        session = closed.session if closed else None
        note = f"break-glass shell {session} closed" if session else f"no shell: {closed.state if closed else 'closed'}"
        self.log_view.write(plain(f"▸ {note}", "bold"))
        self.after_shell(session, note)

    @work(group="debug-walk", exclusive=True, exit_on_error=False)
    async def after_shell(self, session: str | None, note: str) -> None:
        walk = self.walk
        if walk is None:
            return
        await self.lifsea.net.run(walk.shell_done(session, note))
        self.continue_walk()

    def action_stop(self) -> None:
        walk = self.walk
        if walk is None or walk.step is None or self.busy:
            return
        self.stop_walk()

    @work(group="debug-walk", exclusive=True, exit_on_error=False)
    async def stop_walk(self) -> None:
        walk = self.walk
        if walk is None:
            return
        await self.lifsea.net.run(walk.decline())
        self._show_outcome()
        self._show_next()

    def action_export(self) -> None:
        walk = self.walk
        if walk is None:
            self.notify("no walk to export yet", severity="warning")
            return
        stamp = walk.started.strftime("%Y%m%dT%H%M%SZ")
        path = Path.cwd() / f"lifsea-debug-{file_part(self.node_name)}-{file_part(walk.runbook.id)}-{stamp}.md"
        try:
            path.write_text(visible(markdown(walk)))  # a file someone will cat: no escape sequences in it
        except OSError as error:
            self.notify(f"could not write {path}: {error.strerror}", severity="error", timeout=10)
            return
        self.notify(f"walk written to {path}", timeout=8)

    # -- showing --------------------------------------------------------------------------------------

    def _write_errors(self) -> None:
        for error in self.load_errors:
            self.log_view.write(
                plain(f"runbook file not loaded: {error}", f"bold {self.lifsea.colour('node-down')}", multiline=True)
            )

    def _step_header(self, text: str) -> None:
        walk = self.walk
        if walk is None or walk.step is None:
            return
        self.log_view.write(Text())
        self.log_view.write(plain(f"▸ {walk.step.name}: {text}", "bold"))

    def _show_finding(self, finding: Finding) -> None:
        mark, style = self.mark(finding.status)
        self.log_view.write(plain(f"  {mark} {finding.summary}", f"bold {style}"))
        for line in finding.evidence:
            self.log_view.write(plain(f"      {line}", "dim"))

    def _show_outcome(self) -> None:
        walk = self.walk
        if walk is None or not walk.entries:
            return
        last = walk.entries[-1]
        style = f"bold {self.lifsea.colour('node-ok' if walk.resolved else 'pending')}"
        self.log_view.write(Text())
        self.log_view.write(plain(f"■ {last.summary}", style))
        if walk.unrecorded:
            self.log_view.write(
                Text(
                    f"  {walk.unrecorded} record(s) not yet on the node's audit log",
                    style=self.lifsea.colour("node-down"),
                )
            )

    def _key(self, binding_id: str) -> str:
        return key_of(self, binding_id) or "?"

    def _show_next(self, busy: str | None = None) -> None:
        walk = self.walk
        bar = self.query_one("#debug-next", Static)
        go, stop, again = self._key("debug-go"), self._key("debug-stop"), self._key("debug-triage")
        if busy:
            text = busy
        elif walk is None:
            text = f"{go}: walk the runbook under the cursor · {again}: check again"
        elif walk.step is None:
            outcome = "resolved" if walk.resolved else "not resolved"
            export = self._key("debug-export")
            text = f"walk {outcome} · {export}: export as Markdown · {go}: walk another · {again}: check again"
        elif walk.step.kind == "action":
            text = f"{go}: {walk.describe_action(walk.step)} (asks for a reason) · {stop}: stop here"
        elif walk.step.kind == "shell":
            text = (
                f"{go}: open a break-glass shell ({ACCESS_TEXT[walk.step.access]}), commands suggested beside it"
                f" · {stop}: stop here"
            )
        else:
            return
        bar.update(plain(text))


class FleetDebugScreen(Marks, ConsoleScreen[None]):
    """The first checks of every runbook on many nodes: what fires where."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back", id="fleet-debug-back")]
    DEFAULT_CSS = """
    FleetDebugScreen {
        #fleet-debug-status { height: auto; padding: 0 1; background: $panel; }
    }
    """

    def __init__(self, nodes: list[str]) -> None:
        super().__init__()
        self.nodes = nodes
        self.books: list[Runbook] = []
        self._done = 0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="fleet-debug-status")
        table = PlainTable(id="fleet-debug", cursor_type="row")
        table.add_column(" ", key="mark", width=1)
        table.add_column("Node", key="node")
        table.add_column("Runbook", key="runbook")
        table.add_column("Finding", key="finding")
        yield table
        yield Footer()

    def on_mount(self) -> None:
        self.title = "debug the fleet"
        found, errors = runbooks()
        if errors:
            self.notify(f"{len(errors)} runbook file(s) have errors: {errors[0]}", severity="warning", timeout=10)
        self.books = found
        self.query_one("#fleet-debug-status", Static).update(
            f"running the first checks of {len(found)} runbooks on {len(self.nodes)} nodes…"
        )
        self.check_nodes()

    @work(group="fleet-debug", exclusive=True, exit_on_error=False)
    async def check_nodes(self) -> None:
        """The first checks on every node, at most the fleet's concurrency of nodes at once; each node's
        findings shown as it answers."""
        ui_loop = asyncio.get_running_loop()

        async def every() -> None:  # runs on the network loop
            async for node, proposals in self.lifsea.fleet.each(self.nodes, lambda client: triage(client, self.books)):
                ui_loop.call_soon_threadsafe(self._show_node, node, proposals)

        await self.lifsea.net.run(every())

    def _show_node(self, node: str, proposals: list[Proposal]) -> None:
        table = self.query_one("#fleet-debug", DataTable)
        shown = [p for p in proposals if p.status != Status.ok]
        for proposal in shown:
            mark, style = self.mark(proposal.status)
            table.add_row(
                Text(mark, style=style), node, proposal.runbook.title, proposal.summary,
                key=f"{node}/{proposal.runbook.id}",
            )  # fmt: skip
        if shown:
            # Nodes answer in any order; the list should not. Cells are Text: sort by what they say.
            table.sort("node", "runbook", key=lambda cells: tuple(str(cell) for cell in cells))
        self._done += 1
        self.query_one("#fleet-debug-status", Static).update(
            f"{self._done} of {len(self.nodes)} nodes checked · {table.row_count} findings"
            f" · checked {datetime.now(UTC):%H:%M:%S} UTC · enter walks the runbook on that node"
        )

    @on(DataTable.RowSelected, "#fleet-debug")
    def _open(self, event: DataTable.RowSelected) -> None:
        node, _, runbook = (event.row_key.value or "").partition("/")
        self.lifsea.open_debug(node, start=runbook)
