"""The node's audit log, a page at a time (older, newer), and the check of its chain on request; beside
it, the copy the fleet controller collected off the node (etcd holds its newest records): each record
of the node's page says whether it is the one collected, and `t` shows the collected copy itself."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.widgets import Static

from lifsea_tui.api import AuditPage, AuditRecord, EventKind
from lifsea_tui.api.trail import NodeTrail
from lifsea_tui.client.etcd import StoreUnavailable
from lifsea_tui.client.node import NodeError
from lifsea_tui.client.trail import read_recent, state_key
from lifsea_tui.tui.keys import hints, key_of
from lifsea_tui.tui.plain import plain, plain_lines
from lifsea_tui.tui.tables import PlainTable
from lifsea_tui.tui.widgets.node.base import NodeTab, when

AUDIT_PAGE = 50
RECHECK_SECONDS = 3.0  # the fleet controller collects every 2 s


class AuditTab(NodeTab):
    # Every change the node makes is audited: the log has news whenever anything else does.
    REACTS_TO = frozenset({EventKind.deployments, EventKind.update, EventKind.ops})

    def __init__(self, node: str, **kwargs: str) -> None:
        super().__init__(node, **kwargs)
        self.before: int | None = None
        self.page: AuditPage | None = None
        self.collected_view = False  # the table shows the collected copy instead of the node's log
        self.recheck_pending = False

    def compose(self) -> ComposeResult:
        yield Static("", id="chain", classes="note")
        yield Static("", id="copy", classes="note")
        # Kept apart from #chain, which every reload rewrites: a verdict stays until asked again.
        yield Static("", id="verify", classes="note")
        audit = PlainTable(id="audit-table", cursor_type="row")
        for label in ("Seq", "Time", "Actor", "Role", "Action", "Reason", "Outcome", "Copy"):
            audit.add_column(label, key=label)
        yield audit

    def on_mount(self) -> None:
        key = key_of(self, "node-verify")
        if key:
            self.query_one("#verify", Static).update(plain(f"press {key} to verify the audit chain"))
        super().on_mount()

    async def collected(self) -> tuple[NodeTrail | None, list[AuditRecord], str | None]:
        """What the fleet controller collected off this node (its state and the newest records etcd holds),
        or why that cannot be known."""
        store = self.lifsea.rollout_store
        if store is None:
            return None, [], "no fleet store: nothing collected off the node is known here"
        try:
            found = await self.lifsea.net.run(store.get(state_key(self.node)))
            recent = await self.lifsea.net.run(read_recent(store, self.node))
        except StoreUnavailable as error:
            return None, [], f"the collected copy cannot be read: {error}"
        try:
            state = NodeTrail.model_validate_json(found.value) if found is not None else None
        except ValueError:
            state = None
        return state, recent.get(self.node, []), None

    def _copy_line(self, state: NodeTrail | None, why: str | None) -> Text:
        key = key_of(self, "node-collected")
        other = "the node's log" if self.collected_view else "the collected copy"
        toggle = f" · {key}: {other}"
        if why is not None:
            return plain(why)
        if state is None:
            return plain("not collected off the node yet")
        if state.problem is not None:
            return plain(
                f"⚠ its log no longer holds what was collected, from record {state.problem.first_bad_seq}: "
                f"{state.problem.what}. The collected copy is the evidence" + (toggle if key else ""),
                self.lifsea.colour("node-down"),
            )
        lag = f", lag {state.lag:.1f} s" if state.lag is not None else ""
        return plain(f"✓ collected off the node up to record {state.collected_seq}{lag}" + (toggle if key else ""))

    @work(exclusive=True, group="node-audit", exit_on_error=False)
    async def load(self) -> None:
        before = self.before
        table = self.query_one("#audit-table", PlainTable)
        state, copy, why = await self.collected()
        self.query_one("#copy", Static).update(self._copy_line(state, why))
        down = self.lifsea.colour("node-down")
        if self.collected_view:
            table.clear()
            for record in reversed(copy):
                self._add(table, record, Text("collected"))
            self.query_one("#chain", Static).update(
                plain(f"the collected copy: its newest {len(copy)} records, as etcd holds them (all of them: "
                      f"lifsea-tui audit export {self.node})")
            )  # fmt: skip
            return
        try:
            page = await self.lifsea.net.run(self.client.audit(before=before, limit=AUDIT_PAGE))
        except NodeError as error:
            table.clear()
            self.problem("#chain", error)
            return
        table.clear()
        self.page = page
        collected = {record.seq: record.hash for record in copy}
        if state is not None and page.head_seq > state.collected_seq and not self.recheck_pending:
            # Records newer than the copy: look once more when the controller's next pass should have them.
            self.recheck_pending = True
            self.set_timer(RECHECK_SECONDS, self._recheck)
        for record in reversed(page.records):
            if record.seq in collected:
                same = collected[record.seq] == record.hash
                mark = Text("✓" if same else "✗ differs", style="" if same else down)
            else:  # not collected yet, or older than etcd holds (or nothing is known of a copy)
                mark = Text("…" if state is not None and record.seq > state.collected_seq else "")
            self._add(table, record, mark)
        first = page.records[0].seq if page.records else None
        where = "newest" if before is None else f"before {before}"
        keys = hints(self, "node-older", "node-newer")
        self.query_one("#chain", Static).update(
            plain(
                f"{len(page.records)} records ({where}); head seq {page.head_seq}"
                + (f" · {keys}" if keys else "")
                + (f" · oldest shown {first}" if first is not None else "")
            )
        )

    def _add(self, table: PlainTable, record: AuditRecord, mark: Text) -> None:
        alarming = record.outcome.startswith(("refused", "failed", "interrupted"))
        table.add_row(
            str(record.seq), when(record.time), record.actor, record.role or "", record.action, record.reason or "",
            Text(record.outcome, style=self.lifsea.colour("node-down") if alarming else ""), mark,
        )  # fmt: skip

    def _recheck(self) -> None:
        self.recheck_pending = False
        self.load()

    def toggle_collected(self) -> None:
        self.collected_view = not self.collected_view
        self.load()

    def older(self) -> None:
        if self.page and self.page.records and self.page.records[0].seq > 0:
            self.before = self.page.records[0].seq
            self.load()

    def newer(self) -> None:
        if self.before is not None:
            newer = self.before + AUDIT_PAGE
            self.before = None if self.page is None or newer > self.page.head_seq else newer
            self.load()

    @work(group="node-verify", exit_on_error=False)
    async def verify(self) -> None:
        verdict = self.query_one("#verify", Static)
        verdict.update("verifying the audit chain…")
        try:
            result = await self.lifsea.net.run(self.client.audit_verify())
        except NodeError as error:
            verdict.update(plain(f"✗ cannot verify: {error}", self.lifsea.colour("node-down")))
            return
        if result.ok:
            verdict.update(
                Text(
                    f"✓ chain verified: {result.records} records, head {result.head_seq}, matches what the agent "
                    f"wrote; {result.recordings_checked} sealed recordings match",
                    style=self.lifsea.colour("node-ok"),
                )
            )
            return
        problems = [f"✗ AUDIT LOG NOT INTACT: {result.problem}"]
        if result.first_bad_seq is not None:
            problems[0] += f" (first bad record {result.first_bad_seq})"
        problems += [
            f"✗ recording {bad.id} (sealed in record {bad.audit_seq}): {bad.problem}" for bad in result.bad_recordings
        ]
        verdict.update(plain_lines(problems, self.lifsea.colour("node-down")))
