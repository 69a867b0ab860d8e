"""The fleet: every node in one table, a version-drift summary, and actions on a selection of nodes.

It also shows what the fleet store says of the fleet (a running rollout in the header, nodes whose audit
log no longer holds what the controller collected off them, in their rows). What a row and the version
bar look like is widgets/fleet_table.py; this screen decides which rows, when, and what keys do.
"""

from __future__ import annotations

import asyncio
import collections
import time

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Input, Static

from lifsea_tui.api import ActionRequest
from lifsea_tui.client import rollouts as store_keys
from lifsea_tui.client.etcd import Store, StoreUnavailable
from lifsea_tui.client.fleet import NodeSnapshot, version_drift
from lifsea_tui.client.node import NodeError
from lifsea_tui.client.trail import read_states
from lifsea_tui.tui.plain import plain
from lifsea_tui.tui.screens.base import ConsoleScreen
from lifsea_tui.tui.screens.modals import ReasonModal, RebootModal
from lifsea_tui.tui.widgets import fleet_table
from lifsea_tui.tui.widgets.fleet_table import COLUMNS, NodeTable, ago, share_bar

SORTS = ("name", "state", "booted", "latency")
BUSY_STATES = ("checking", "staging")
REBOOT_SLOTS = 1  # nodes a multi-node reboot from the fleet takes down at once
ROLLOUT_POLL = 3.0


class FleetScreen(ConsoleScreen[None]):
    BINDINGS = [
        Binding("space", "toggle_select", "Select", id="fleet-select"),
        Binding("a", "select_all", "Select all", id="fleet-select-all", show=False),
        Binding("slash", "filter", "Filter", key_display="/", id="fleet-filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="fleet-clear"),
        Binding("c", "act('check')", "Check", id="fleet-check"),
        Binding("s", "act('stage')", "Stage", id="fleet-stage"),
        Binding("x", "act('cancel')", "Cancel", id="fleet-cancel", show=False),
        Binding("b", "act('rollback')", "Rollback", id="fleet-rollback"),
        Binding("r", "act('reboot')", "Reboot", id="fleet-reboot"),
        Binding("ctrl+r", "refresh_now", "Refresh", id="fleet-refresh"),
        Binding("o", "sort", "Sort", id="fleet-sort"),
        Binding("g", "group", "Group by label", id="fleet-group", show=False),
        Binding("F", "failed", "Failed units", id="fleet-failed"),
        Binding("d", "debug", "Debug", id="fleet-debug"),
        Binding("R", "rollouts", "Rollouts", id="fleet-rollouts"),
    ]
    DEFAULT_CSS = """
    FleetScreen {
        #drift { height: auto; padding: 0 1; background: $panel; }
        #filter { display: none; }
        #filter.shown { display: block; }
        DataTable { height: 1fr; }
    }
    """

    def __init__(self) -> None:
        super().__init__()
        self.selected: set[str] = set()
        self.filter_text = ""
        self.sort_index = 0
        self.group_by: str | None = None  # a label key: rows in runs of its values
        self._dirty: set[str] = set()
        # Names answered on the network loop, taken into _dirty by the next flush. A deque's append and
        # popleft are safe across threads; waking the UI loop for each of a thousand answers was not
        # free (a thousand wake-ups per refresh, each taking the interpreter from the network thread).
        self._answered: collections.deque[str] = collections.deque()
        self._warned: set[str] = set()  # nodes whose audit-chain warning was shown (network loop only)
        self._rebuild = True
        self._rebuilt_at = 0.0
        self.rollout_line: Text | None = None
        self._drift_shown: Text | None = None
        self.trail_flags: dict[str, str] = {}  # node -> why the collected audit trail flags it

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="drift")
        yield Input(
            placeholder="filter nodes: name, version, state, label=value (esc clears)", id="filter", disabled=True
        )
        table = NodeTable(id="nodes", cursor_type="row", zebra_stripes=True)
        for key, label, width in COLUMNS:
            table.add_column(label, key=key, width=width)
        yield table
        yield Footer()

    def on_mount(self) -> None:
        self._ui_loop = asyncio.get_running_loop()
        self.sub_title = f"{len(self.lifsea.fleet.snapshots)} nodes"
        self.query_one("#nodes", DataTable).focus()
        self.set_interval(0.2, self._flush)
        self.set_interval(1.0, self._tick_ages)
        self.refresh_loop()
        if len(self.lifsea.fleet.snapshots) <= self.lifsea.events_limit:
            self.follow_events()
        self.app.theme_changed_signal.subscribe(self, self._restyle)
        if self.lifsea.rollout_store is not None:
            self.watch_rollouts()
        self._flush()

    def _restyle(self, _theme: object) -> None:
        """Cells carry the theme's colours: a new theme redraws every row and the version line."""
        self._rebuild = True
        self._flush()
        self._update_drift()

    # -- data ------------------------------------------------------------------------------------------

    @work(exclusive=True, group="fleet-refresh", exit_on_error=False)
    async def refresh_loop(self) -> None:
        fleet = self.lifsea.fleet
        while True:
            await self.lifsea.net.run(fleet.refresh(on_result=self._changed))
            busy = any(s.update and s.update.state in BUSY_STATES for s in fleet.snapshots.values())
            await asyncio.sleep(1.0 if busy else self.lifsea.refresh_interval)

    @work(exclusive=True, group="fleet-events", exit_on_error=False)
    async def follow_events(self) -> None:
        """Live changes from every node's event stream; the periodic refresh is the fallback."""
        await self.lifsea.net.run(self.lifsea.fleet.follow(self._changed))

    def _changed(self, snapshot: NodeSnapshot) -> None:
        """Called on the network loop for each answer; the UI loop repaints on its next flush."""
        self._answered.append(snapshot.name)
        if snapshot.audit_warning and snapshot.name not in self._warned:
            self._warned.add(snapshot.name)
            message = f"{snapshot.name}: {snapshot.audit_warning}"
            self._ui_loop.call_soon_threadsafe(lambda: self.notify(message, severity="error", timeout=30))

    def _visible(self) -> list[NodeSnapshot]:
        snapshots = list(self.lifsea.fleet.snapshots.values())
        if self.filter_text:
            snapshots = [s for s in snapshots if self._matches(s, self.filter_text)]
        sort = SORTS[self.sort_index]
        if sort == "state":
            snapshots.sort(key=lambda s: (s.reachable, s.name))
        elif sort == "booted":
            snapshots.sort(key=lambda s: (s.booted_version or "", s.name))
        elif sort == "latency":
            snapshots.sort(key=lambda s: (s.latency_ms is None, s.latency_ms or 0.0))
        else:
            snapshots.sort(key=lambda s: s.name)
        if self.group_by is not None:
            key = self.group_by
            snapshots.sort(key=lambda s: (key not in s.labels, s.labels.get(key, "")))  # stable: sort kept inside
        return snapshots

    def _matches(self, snapshot: NodeSnapshot, text: str) -> bool:
        """Every word of the filter: `key=value` is one of the node's labels (the agent's and the
        inventory's), anything else a piece of its row (name, version, state...)."""
        row: str | None = None
        for word in text.split():
            key, eq, value = word.partition("=")
            if eq and key:
                if snapshot.labels.get(key) != value:
                    return False
                continue
            row = row if row is not None else " ".join(c.plain for c in self._cells(snapshot)).lower()
            if word.lower() not in row:
                return False
        return True

    def _style(self, variable: str) -> str:
        return self.lifsea.colour(variable)

    def _cells(self, snapshot: NodeSnapshot) -> list[Text]:
        name = snapshot.name
        flagged = self.trail_flags.get(name)
        return fleet_table.row(snapshot, self._style, selected=name in self.selected, flagged=flagged)

    def _flush(self) -> None:
        """Repaint what changed since the last flush: a burst of node results costs one repaint."""
        table = self.query_one("#nodes", NodeTable)
        while self._answered:
            self._dirty.add(self._answered.popleft())
        if self._rebuild:
            self._rebuild = False
            self._rebuilt_at = time.monotonic()
            self._dirty.clear()
            cursor = self._cursor_name()
            table.clear()
            shown = self._visible()
            group: str | None = None
            for index, snapshot in enumerate(shown):
                label = None
                if self.group_by is not None:  # the group's value on its first row, as a heading
                    value = snapshot.labels.get(self.group_by, "(none)")
                    label = plain(f"{self.group_by}={value}", self._style("text-muted"), limit=24)
                    if index and value == group:
                        label = Text("")
                    group = value
                table.add_row(*self._cells(snapshot), key=snapshot.name, label=label)
            total = len(self.lifsea.fleet.snapshots)
            nothing = f" · no node matches {self.filter_text!r}" if self.filter_text and not shown else ""
            grouped = f" · grouped by {self.group_by}" if self.group_by is not None else ""
            self.sub_title = f"{total} nodes{grouped}{nothing}"
            if cursor is not None and cursor in table.rows:
                table.move_cursor(row=table.get_row_index(cursor))
        elif self._dirty:
            if self.filter_text or SORTS[self.sort_index] != "name" or self.group_by is not None:
                # Membership or order may have changed: rebuild, but at most once a second.
                if time.monotonic() - self._rebuilt_at >= 1.0:
                    self._rebuild = True
                    self._flush()
                return
            # Only rows on screen are repainted now; the rest stay dirty until they scroll into view.
            first = int(table.scroll_y)
            visible = {str(row.key.value) for row in table.ordered_rows[first : first + table.size.height]}
            dirty = self._dirty & visible
            self._dirty -= dirty
            changes = []
            for name in dirty:
                if name not in table.rows:
                    continue
                current = table.get_row(name)
                for (key, _, _), old, cell in zip(
                    COLUMNS, current, self._cells(self.lifsea.fleet.snapshots[name]), strict=True
                ):
                    if cell != old:  # only what changed is drawn again
                        changes.append((name, key, cell))
            table.update_cells(changes)
        else:
            return
        self._update_drift()

    def _tick_ages(self) -> None:
        """Ages change every second: update only the rows on screen."""
        table = self.query_one("#nodes", NodeTable)
        first = int(table.scroll_y)
        rows = table.ordered_rows[first : first + table.size.height]
        changes = []
        for shown in rows:
            name = str(shown.key.value)
            seen = ago(self.lifsea.fleet.snapshots[name].last_seen)
            if getattr(table.get_cell(name, "seen"), "plain", None) != seen:
                changes.append((name, "seen", seen))
        table.update_cells(changes)

    def _update_drift(self) -> None:
        snapshots = list(self.lifsea.fleet.snapshots.values())
        drift = version_drift(snapshots)
        down = sum(1 for s in snapshots if s.problem)
        text = Text("Versions  ", style="bold")
        text.append_text(share_bar(drift, len(snapshots), self._style))
        if len([v for v in drift if v != "unknown"]) > 1:
            text.append("    (drift)", style=self._style("pending"))
        if self.rollout_line is not None:
            text.append("    ")
            text.append_text(self.rollout_line)
        if down:
            text.append(f"    {down} not answering", style=self._style("node-down"))
        if self.selected:
            text.append(f"    {len(self.selected)} selected", style="bold")
        # An update lays the screen out again (the line may wrap); the line rarely changes while the
        # fleet refreshes, so only a change is shown.
        if text != self._drift_shown:
            self._drift_shown = text
            self.query_one("#drift", Static).update(text)

    @work(exclusive=True, group="fleet-rollouts", exit_on_error=False)
    async def watch_rollouts(self) -> None:
        """A rollout that has not finished shows in the header (etcd, every few seconds)."""
        store = self.lifsea.rollout_store
        assert store is not None
        while True:
            try:
                running = store_keys.active(await self.lifsea.net.run(store_keys.read_all(store)))
            except StoreUnavailable:
                line: Text | None = Text("rollouts: store unreachable", style=self._style("node-down"))
            else:
                line = None
                if running:
                    rollout = running[-1]
                    done = sum(1 for n in rollout.nodes if n.state.value in ("done", "reverted"))
                    line = plain(
                        f"⟳ {rollout.spec.id} {rollout.status.phase.value} → "
                        f"{rollout.spec.target_version} {done}/{len(rollout.nodes)} (R)",
                        "bold",
                    )
                    if len(running) > 1:
                        line.append(f" and {len(running) - 1} more")
            if line != self.rollout_line:
                self.rollout_line = line
                self._update_drift()
            await self._watch_trail(store)
            await asyncio.sleep(ROLLOUT_POLL)

    async def _watch_trail(self, store: Store) -> None:
        """Nodes whose log no longer holds what the controller collected off them: flagged in their row."""
        try:
            states = await self.lifsea.net.run(read_states(store))
        except StoreUnavailable:
            return
        flags = {
            name: f"audit log changed from #{state.problem.first_bad_seq}"  # fits the column; notified whole
            for name, state in states.items()
            if state.problem is not None
        } | {
            name: "quiet with a shell open"
            for name, state in states.items()
            if state.problem is None and state.silent_during
        }
        new = sorted(flags.keys() - self.trail_flags.keys())
        if len(new) > 1:  # one notice for many: a stack of them would cover the rows that say which
            shown = ", ".join(new[:5]) + (f" and {len(new) - 5} more" if len(new) > 5 else "")
            self.notify(
                f"{len(new)} nodes' audit trail needs a look ({shown}): see their rows, and lifsea-tui audit status",
                severity="error",
                timeout=30,
            )
        elif new:
            name, problem = new[0], states[new[0]].problem
            if problem is None:
                sessions = ", ".join(states[name].silent_during)
                text = f"{name} stopped answering while break-glass session(s) {sessions} were open"
            else:
                text = (
                    f"{name}: its audit log no longer holds what was collected off it ({problem.what}). The "
                    f"collected copy is kept: lifsea-tui audit export {name}"
                )
            self.notify(text, severity="error", timeout=30)
        if flags != self.trail_flags:
            self.trail_flags = flags
            self._rebuild = True
            self._flush()

    def _cursor_name(self) -> str | None:
        table = self.query_one("#nodes", DataTable)
        if table.row_count == 0:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return str(row_key.value)

    # -- actions ---------------------------------------------------------------------------------------

    @on(DataTable.RowSelected, "#nodes")
    def _row_chosen(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        name = self._cursor_name()
        if name is not None:
            self.lifsea.open_node(name)

    def action_failed(self) -> None:
        self.lifsea.open_failed_units()

    def action_toggle_select(self) -> None:
        name = self._cursor_name()
        if name is None:
            return
        self.selected.symmetric_difference_update({name})
        self._dirty.add(name)
        self._flush()

    def action_select_all(self) -> None:
        visible = {s.name for s in self._visible()}
        self.selected = set() if visible <= self.selected else visible
        self._rebuild = True
        self._flush()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.disabled = False
        box.add_class("shown")
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self._rebuild = True
        self._flush()

    @on(Input.Submitted, "#filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        self.query_one("#nodes", DataTable).focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.remove_class("shown")
        box.disabled = True
        self.query_one("#nodes", DataTable).focus()

    def action_sort(self) -> None:
        self.sort_index = (self.sort_index + 1) % len(SORTS)
        self.notify(f"sorted by {SORTS[self.sort_index]}", timeout=2)
        self._rebuild = True
        self._flush()

    def action_group(self) -> None:
        """Group rows by the next label key the fleet's nodes carry; after the last, no grouping."""
        keys = sorted({key for s in self.lifsea.fleet.snapshots.values() for key in s.labels})
        if not keys:
            self.notify("no node has labels to group by (the agent's [labels], the inventory's labels)", timeout=4)
            return
        order = [*keys, None]
        self.group_by = order[(order.index(self.group_by) + 1) % len(order)] if self.group_by in order else keys[0]
        self.notify(f"grouped by {self.group_by}" if self.group_by else "not grouped", timeout=2)
        self._rebuild = True
        self._flush()

    def action_refresh_now(self) -> None:
        refresh = self.lifsea.fleet.refresh(force=True, on_result=self._changed)
        self.run_worker(self.lifsea.net.run(refresh), group="fleet-manual", exit_on_error=False)

    def action_rollouts(self) -> None:
        """Rollouts; a new one moves the selected nodes, or every node when none is selected."""
        self.lifsea.open_rollouts(sorted(self.selected) or None)

    def action_debug(self) -> None:
        """The runbooks' first checks on the selected nodes, or on every node when none is selected."""
        self.lifsea.open_fleet_debug(sorted(self.selected) or sorted(self.lifsea.fleet.snapshots))

    def targets(self) -> list[str]:
        if self.selected:
            return sorted(self.selected)
        name = self._cursor_name()
        return [name] if name else []

    def action_act(self, action: str) -> None:
        nodes = self.targets()
        if not nodes:
            return

        def chosen(reason: str | None) -> None:
            if reason:
                self.act_on_nodes(action, nodes, reason)

        def reboot_chosen(answer: tuple[str, bool] | None) -> None:
            if answer is not None:
                reason, all_at_once = answer
                if all_at_once:
                    self.act_on_nodes(action, nodes, f"{reason} (all at once, as asked)")
                else:
                    self.rolling_reboot(nodes, reason)

        if action == "reboot" and len(nodes) > 1:
            self.app.push_screen(RebootModal(nodes, REBOOT_SLOTS), reboot_chosen)
        else:
            self.app.push_screen(ReasonModal(action, nodes), chosen)

    @work(group="fleet-actions", exit_on_error=False)
    async def rolling_reboot(self, nodes: list[str], reason: str) -> None:
        """Reboot `nodes` one at a time: each takes a reboot slot (the same slots rollouts and FleetLock
        clients take, when there is a store), reboots, and is back before the next goes down."""
        fleet, store = self.lifsea.fleet, self.lifsea.rollout_store
        self.notify(f"rolling reboot of {len(nodes)} nodes, {REBOOT_SLOTS} at a time…", timeout=5)
        done, failed = 0, []
        for index, name in enumerate(nodes, start=1):
            why = f"{reason} (rolling reboot {index}/{len(nodes)})"
            try:
                await self.lifsea.net.run(store_keys.reboot_in_slot(fleet.client(name), store, why, REBOOT_SLOTS))
                done += 1
            except (NodeError, StoreUnavailable, TimeoutError) as error:
                failed.append(f"{name}: {error or type(error).__name__}")
                self.notify(f"rolling reboot stopped at {name}: {error}", severity="error", timeout=20)
                break
            finally:
                self._changed(await self.lifsea.net.run(fleet.refresh_node(name)))
        if not failed:
            self.notify(f"rolling reboot: all {done} nodes back", timeout=8)

    @work(group="fleet-actions", exit_on_error=False)
    async def act_on_nodes(self, action: str, nodes: list[str], reason: str) -> None:
        fleet = self.lifsea.fleet
        self.notify(f"{action} on {len(nodes)} node(s)…", timeout=3)

        async def one(name: str) -> tuple[str, str | None]:
            try:
                result = await fleet.client(name).action(action, ActionRequest(reason=reason))
            except NodeError as error:
                return name, str(error)
            finally:
                self._changed(await fleet.refresh_node(name))
            return name, None if result.accepted else "not accepted"

        async def every() -> list[tuple[str, str | None]]:
            return list(await asyncio.gather(*(one(name) for name in nodes)))

        outcomes = await self.lifsea.net.run(every())
        failed = [(name, why) for name, why in outcomes if why]
        if failed:
            lines = "\n".join(f"{name}: {why}" for name, why in failed[:8])
            more = f"\n… and {len(failed) - 8} more" if len(failed) > 8 else ""
            self.notify(
                f"{action}: {len(nodes) - len(failed)} ok, {len(failed)} failed\n{lines}{more}",
                severity="error",
                timeout=15,
            )
        else:
            self.notify(f"{action}: ok on {len(nodes)} node(s)", timeout=5)
