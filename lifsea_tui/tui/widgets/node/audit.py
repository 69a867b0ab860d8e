"""The node's audit log, a page at a time (older, newer), and the check of its chain on request."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.widgets import Static

from lifsea_tui.api import AuditPage, EventKind
from lifsea_tui.client.node import NodeError
from lifsea_tui.tui.keys import hints, key_of
from lifsea_tui.tui.plain import plain, plain_lines
from lifsea_tui.tui.tables import PlainTable
from lifsea_tui.tui.widgets.node.base import NodeTab, when

AUDIT_PAGE = 50


class AuditTab(NodeTab):
    # Every change the node makes is audited: the log has news whenever anything else does.
    REACTS_TO = frozenset({EventKind.deployments, EventKind.update, EventKind.ops})

    def __init__(self, node: str, **kwargs: str) -> None:
        super().__init__(node, **kwargs)
        self.before: int | None = None
        self.page: AuditPage | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="chain", classes="note")
        # Kept apart from #chain, which every reload rewrites: a verdict stays until asked again.
        yield Static("", id="verify", classes="note")
        audit = PlainTable(id="audit-table", cursor_type="row")
        for label in ("Seq", "Time", "Actor", "Role", "Action", "Reason", "Outcome"):
            audit.add_column(label, key=label)
        yield audit

    def on_mount(self) -> None:
        key = key_of(self, "node-verify")
        if key:
            self.query_one("#verify", Static).update(plain(f"press {key} to verify the audit chain"))
        super().on_mount()

    @work(exclusive=True, group="node-audit", exit_on_error=False)
    async def load(self) -> None:
        before = self.before
        table = self.query_one("#audit-table", PlainTable)
        try:
            page = await self.lifsea.net.run(self.client.audit(before=before, limit=AUDIT_PAGE))
        except NodeError as error:
            table.clear()
            self.problem("#chain", error)
            return
        table.clear()
        self.page = page
        down = self.lifsea.colour("node-down")
        for record in reversed(page.records):
            alarming = record.outcome.startswith(("refused", "failed", "interrupted"))
            table.add_row(
                str(record.seq), when(record.time), record.actor, record.role or "", record.action, record.reason or "",
                Text(record.outcome, style=down if alarming else ""),
            )  # fmt: skip
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
