"""Rollouts: every fleet rollout from etcd, the chosen one live (progress, each node and why, the
decisions log, an ETA), a form to start one with a preview, and keys to steer it.

The screen only reads etcd and writes intents there; lifsea-fleetd does the work. Closing the console
(or killing it) changes nothing about a rollout.
"""

from __future__ import annotations

import time
from datetime import datetime

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, ProgressBar, Static

from lifsea_tui.api.rollouts import (
    FINISHED,
    Intent,
    NodeState,
    Rollout,
    RolloutSpec,
)
from lifsea_tui.client import rollouts as store_keys
from lifsea_tui.client.etcd import StoreUnavailable
from lifsea_tui.tui.plain import plain, plain_lines
from lifsea_tui.tui.screens.base import ConsoleScreen
from lifsea_tui.tui.screens.modals import ReasonModal
from lifsea_tui.tui.screens.rollout_form import NewRolloutModal, limits_line
from lifsea_tui.tui.tables import PlainTable

POLL = 1.0
DETAIL_EVERY = 5.0
NODE_COLUMNS = ("name", "batch", "state", "booted", "why")
LOG_LINES = 8
STATE_STYLE = {
    NodeState.done: "node-ok",
    NodeState.reverted: "node-ok",
    NodeState.failed: "node-down",
    NodeState.staging: "pending",
    NodeState.rebooting: "pending",
    NodeState.verifying: "pending",
}
INTENT_TEXT = {
    "pause": "Pause the rollout (nodes in flight finish; nothing new starts)",
    "resume": "Resume the rollout",
    "abort": "Abort the rollout (nodes in flight finish; the rest are skipped)",
    "rollback": "ROLL BACK every node the rollout moved, rolling",
}


def rollout_revision(rollout: Rollout, parsed: store_keys.Parsed) -> int:
    """The newest etcd revision among the rollout's keys that the reader has seen."""
    prefix = f"{store_keys.ROLLOUTS}{rollout.spec.id}/"
    return max((revision for key, (revision, _) in parsed.items() if key.startswith(prefix)), default=0)


def progress_of(rollout: Rollout) -> tuple[int, int]:
    """Nodes settled, of the nodes this phase moves."""
    back = [n for n in rollout.nodes if n.direction == "back"]
    moving = back if back else rollout.nodes
    settled = sum(
        1 for n in moving if n.state in (NodeState.done, NodeState.failed, NodeState.skipped, NodeState.reverted)
    )
    return settled, len(moving)


def eta(rollout: Rollout, now: float) -> str:
    """From the measured time of the nodes that finished: what is left, at max_unavailable at a time."""
    spans = [n.finished_at - n.started_at for n in rollout.nodes if n.started_at and n.finished_at]
    if rollout.status.phase in FINISHED:
        return ""
    settled, total = progress_of(rollout)
    if not spans or settled >= total:
        return "ETA: after the first node"
    per_node = sum(spans) / len(spans)
    batches_left = -(-(total - settled) // rollout.spec.max_unavailable)
    soak = rollout.spec.soak * batches_left
    seconds = int(per_node * batches_left + soak)
    return f"ETA ~{seconds // 60} min {seconds % 60:02d} s ({per_node:.0f} s a node)"


class RolloutsScreen(ConsoleScreen[None]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="rollouts-back"),
        Binding("n", "act('new')", "New rollout", id="rollouts-new"),
        Binding("p", "act('pause')", "Pause", id="rollouts-pause"),
        Binding("u", "act('resume')", "Resume", id="rollouts-resume"),
        Binding("A", "act('abort')", "Abort", id="rollouts-abort"),
        Binding("b", "act('rollback')", "Roll back", id="rollouts-rollback"),
    ]
    DEFAULT_CSS = """
    RolloutsScreen {
        #store-line, #detail-head { height: auto; padding: 0 1; background: $panel; }
        #rollouts { height: auto; max-height: 8; }
        #overall { padding: 0 1; }
        #rollout-nodes { height: 1fr; }
        #decisions { height: auto; max-height: 10; padding: 0 1; color: $text-muted; }
    }
    """

    def __init__(self, nodes: list[str] | None = None) -> None:
        """`nodes`: what a new rollout moves (the fleet's selection), every node when None."""
        super().__init__()
        self.nodes = nodes
        self.rollouts: list[Rollout] = []
        self.chosen: str | None = None
        self.problem: str | None = None
        self.unreadable: dict[str, str] = {}  # rollouts in etcd that do not parse: named, not shown
        self._shown: tuple[object, ...] = ()
        self._node_rows: dict[str, tuple[object, ...]] = {}
        self._parsed: store_keys.Parsed = {}  # what read_all need not parse again
        self._detail_of: tuple[tuple[str, int], float] | None = None  # ((rollout, etcd revision), when) shown
        self._node_rows_of: tuple[str, list[str]] | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="store-line")
        table = PlainTable(id="rollouts", cursor_type="row")
        for key, label, width in (
            ("id", "Rollout", 24),
            ("phase", "Phase", 12),
            ("target", "Target", 10),
            ("progress", "Nodes", 8),
            ("by", "Started by", 18),
            ("message", "Why", 50),
        ):
            table.add_column(label, key=key, width=width)
        yield table
        yield Static("", id="detail-head")
        yield ProgressBar(id="overall", show_eta=False)
        nodes = PlainTable(id="rollout-nodes", cursor_type="row", zebra_stripes=True)
        for key, label, width in zip(
            NODE_COLUMNS, ("Node", "Batch", "State", "Booted", "Why"), (14, 5, 12, 10, 70), strict=True
        ):
            nodes.add_column(label, key=key, width=width)
        yield nodes
        yield Static("", id="decisions")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "rollouts"
        self.query_one("#rollouts", DataTable).focus()
        if self.lifsea.rollout_store is None:
            self.query_one("#store-line", Static).update(
                "No fleet store: rollouts need etcd. Start the console on the lab, or give --etcd (see README)."
            )
            return
        self.poll()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "act" and self.lifsea.rollout_store is None:
            return False
        return super().check_action(action, parameters)

    @work(exclusive=True, group="rollouts-poll", exit_on_error=False)
    async def poll(self) -> None:
        import asyncio

        store = self.lifsea.rollout_store
        assert store is not None
        while True:
            try:
                unreadable: dict[str, str] = {}
                self.rollouts = await self.lifsea.net.run(store_keys.read_all(store, self._parsed, unreadable))
                self.unreadable = unreadable
                self.problem = None
            except StoreUnavailable as error:
                self.problem = str(error)
            self._show()
            await asyncio.sleep(POLL)

    def _show(self) -> None:
        store = self.lifsea.rollout_store
        running = [r for r in self.rollouts if r.status.phase not in FINISHED]
        if self.problem:
            line = plain(
                f"✗ store unreachable: {self.problem} (what is shown is the last read)", self.lifsea.colour("node-down")
            )
        else:
            members = len(store.target.endpoints) if store else 0
            where = f"etcd ({members} member{'' if members == 1 else 's'})"
            count = len(self.rollouts)
            unreadable = "".join(f" · {rid} cannot be read ({why})" for rid, why in self.unreadable.items())
            line = plain(
                f"store: {where} · {count} rollout{'' if count == 1 else 's'} · {len(running)} not finished · "
                f"↑↓ chooses one{'' if self.lifsea.read_only else ' · n starts one'}{unreadable}"
            )
        self.query_one("#store-line", Static).update(line)
        table = self.query_one("#rollouts", DataTable)
        rows = [
            (
                r.spec.id,
                r.status.phase.value,
                r.spec.target_version,
                "{}/{}".format(*progress_of(r)),
                r.spec.created_by,
                r.status.message,
            )
            for r in reversed(self.rollouts)
        ]
        if tuple(rows) != self._shown:
            self._shown = tuple(rows)
            cursor = table.cursor_row
            table.clear()
            for row in rows:
                table.add_row(*row, key=row[0])
            if rows:
                table.move_cursor(row=min(cursor, len(rows) - 1))
        if self.chosen is None and rows:
            self.chosen = rows[0][0]
        self._detail()

    @on(DataTable.RowHighlighted, "#rollouts")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None and event.row_key.value != self.chosen:
            self.chosen = str(event.row_key.value)
            self._detail(force=True)

    def current(self) -> Rollout | None:
        return next((r for r in self.rollouts if r.spec.id == self.chosen), None)

    def _detail(self, *, force: bool = False) -> None:
        rollout = self.current()
        # Unchanged in etcd (the same parsed object): rebuild only every few seconds, for the ETA and the
        # booted versions the fleet refresh brings.
        now = time.monotonic()
        seen = (rollout.spec.id, rollout_revision(rollout, self._parsed)) if rollout else None
        if not force and seen is not None and self._detail_of is not None:
            if self._detail_of[0] == seen and now - self._detail_of[1] < DETAIL_EVERY:
                return
        self._detail_of = (seen, now) if seen is not None else None
        head = self.query_one("#detail-head", Static)
        nodes = self.query_one("#rollout-nodes", DataTable)
        decisions = self.query_one("#decisions", Static)
        bar = self.query_one("#overall", ProgressBar)
        bar.display = rollout is not None
        if rollout is None:
            head.update("No rollout yet: n starts one." if not self.problem else "")
            nodes.clear()
            decisions.update("")
            return
        spec, status = rollout.spec, rollout.status
        settled, total = progress_of(rollout)
        bar.update(total=max(total, 1), progress=settled)
        batch_nodes = [n for n in rollout.nodes if n.batch == status.batch and n.direction == "forward"]
        batch_done = sum(1 for n in batch_nodes if n.state is NodeState.done)
        back = [n for n in rollout.nodes if n.direction == "back"]
        if back:
            where_now = f"going back: {sum(1 for n in back if n.state is NodeState.reverted)}/{len(back)} back"
        else:
            where_now = f"this batch {batch_done}/{len(batch_nodes)}"
        head.update(
            Text("\n").join(
                [
                    plain(
                        f"{spec.id} · {status.phase.value} · → {spec.target_version} · batch "
                        f"{status.batch + 1}/{len(spec.batches())} · max unavailable {spec.max_unavailable}",
                        "bold",
                    ),
                    plain(status.message),
                    *([plain(limits_line(spec))] if limits_line(spec) else []),
                    plain(f"{where_now} · {eta(rollout, time.time())}".rstrip(" ·")),
                ]
            )
        )
        snapshots = self.lifsea.fleet.snapshots
        rows: dict[str, tuple[object, ...]] = {}
        for node in rollout.nodes:
            style = self.lifsea.colour(STATE_STYLE.get(node.state, ""))
            live = snapshots[node.name].booted_version if node.name in snapshots else None  # fresher than etcd's
            state = node.state.value + (" ←" if node.direction == "back" else "")
            rows[node.name] = (node.name, str(node.batch + 1), plain(state, style),
                               live or node.booted_version or "", node.reason)  # fmt: skip
        if (rollout.spec.id, list(rows)) != self._node_rows_of:
            # Another rollout, or its first read: build the table. After that only changed cells are
            # repainted (a thousand rows rebuilt every second would cost every key press its time).
            self._node_rows_of = (rollout.spec.id, list(rows))
            cursor = nodes.cursor_row
            nodes.clear()
            for name, row in rows.items():
                nodes.add_row(*row, key=name)
            if rows:
                nodes.move_cursor(row=min(cursor, len(rows) - 1))
        else:
            for name, row in rows.items():
                if self._node_rows.get(name) != row:
                    for key, cell in zip(NODE_COLUMNS, row, strict=True):
                        nodes.update_cell(name, key, cell)
        self._node_rows = rows
        lines = []
        for entry in rollout.log[-LOG_LINES:]:
            when = datetime.fromtimestamp(entry.time).strftime("%H:%M:%S")
            who = entry.who  # a person's intent also names the etcd user that wrote it
            if entry.kind == "intent" and entry.writer not in (None, entry.who):
                who = f"{entry.who} (etcd user {entry.writer})"
            lines.append(f"{when} {who}: {entry.action}: {entry.reason}")
        decisions.update(plain_lines(lines))

    # -- steering --------------------------------------------------------------------------------------

    def action_act(self, what: str) -> None:
        if what == "new":
            self._new()
            return
        rollout = self.current()
        if rollout is None:
            return

        def chosen(reason: str | None) -> None:
            if reason:
                self.ask(rollout.spec.id, Intent(action=what, reason=reason))  # type: ignore[arg-type]

        self.app.push_screen(ReasonModal(what, [rollout.spec.id], title=INTENT_TEXT[what], noun="rollout"), chosen)

    def _new(self) -> None:
        fleet = self.lifsea.fleet
        nodes = self.nodes or sorted(fleet.snapshots)
        booted = {name: fleet.snapshots[name].booted_version for name in nodes if name in fleet.snapshots}
        labels = {name: fleet.snapshots[name].labels for name in nodes if name in fleet.snapshots}
        offered: dict[str, str] = {}
        for snapshot in fleet.snapshots.values():
            for target in snapshot.update.targets if snapshot.update else []:
                if target.version and target.version not in offered:
                    diff = target.diff
                    offered[target.version] = (
                        f"{target.subject or ''} · files +{diff.added} ~{diff.modified} -{diff.removed}"
                        if diff
                        else (target.subject or "")
                    )

        def chosen(spec: RolloutSpec | None) -> None:
            if spec is not None:
                self.start(spec)

        self.app.push_screen(NewRolloutModal(nodes, booted, offered, labels), chosen)

    @work(group="rollouts-write", exit_on_error=False)
    async def start(self, spec: RolloutSpec) -> None:
        store = self.lifsea.rollout_store
        assert store is not None
        try:
            await self.lifsea.net.run(store_keys.start(store, spec))
        except (store_keys.RolloutRefused, StoreUnavailable) as error:
            self.notify(f"rollout not started: {error}", severity="error", timeout=15)
            return
        self.chosen = spec.id
        self.notify(f"rollout {spec.id} written; the controller takes it from here", timeout=6)

    @work(group="rollouts-write", exit_on_error=False)
    async def ask(self, rollout_id: str, intent: Intent) -> None:
        store = self.lifsea.rollout_store
        assert store is not None
        try:
            await self.lifsea.net.run(store_keys.ask(store, rollout_id, intent, store_keys.who()))
        except (store_keys.RolloutRefused, StoreUnavailable) as error:
            self.notify(f"{intent.action}: {error}", severity="error", timeout=15)
            return
        self.notify(f"{intent.action} asked of {rollout_id}; the controller acts on it within a second", timeout=6)
