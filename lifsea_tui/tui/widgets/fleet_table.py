"""The fleet table and what it draws: one row per node, and the version-share bar above it.

Every string in a row came from a node or the inventory, so each is made plain. Colours are the
theme's variables, asked of `colour` (the screen's), so a new theme redraws with the same code.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.text import Text
from textual.binding import Binding

from lifsea_tui.client.fleet import NodeSnapshot
from lifsea_tui.tui.pictures import LATENCY_TOP_MS, meter, spark
from lifsea_tui.tui.plain import plain
from lifsea_tui.tui.tables import PlainTable

Colour = Callable[[str], str]  # a theme variable's name -> its style

# Fixed widths: cells change all the time, and measuring a thousand rows on each change would cost more
# than the repaint. Long reasons are cut here and shown whole on the node screen.
COLUMNS = (
    ("sel", " ", 1),
    ("name", "Node", 14),
    ("state", "Reachability", 30),
    ("booted", "Booted", 10),
    ("next", "Next boot", 10),
    ("update", "Update", 16),
    ("failed", "Failed", 6),
    ("ops", "Ops", 4),
    ("load", "Load", 8),
    ("var", "/var", 8),
    ("latency", "Latency", 10),
    ("seen", "Last seen", 9),
)
CELL = 64  # characters of node text a fleet cell keeps (its column is narrower; the node screen has all)
SHARE_WIDTH = 24  # cells of the version-share bar
SPARK = 4  # cells of a row's sparklines: its last answers (the node's overview draws the last 44)
VAR_HIGH, VAR_FULL = 0.8, 0.9  # /var shares drawn as a warning, and as trouble


class NodeTable(PlainTable):
    """The fleet table: enter opens the node under the cursor (and says so in the footer)."""

    BINDINGS = [Binding("enter", "select_cursor", "Open", id="fleet-open")]


def ago(when: float | None) -> str:
    if when is None:
        return "never"
    seconds = max(0, int(time.time() - when))
    if seconds < 60:
        return f"{seconds}s ago"
    if seconds < 3600:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def row(snapshot: NodeSnapshot, colour: Colour, *, selected: bool, flagged: str | None) -> list[Text]:
    """The cells of a node's row, in COLUMNS' order; `flagged` is why the collected audit trail flags it."""
    if snapshot.problem:
        state = plain(f"✗ {snapshot.problem}", colour("node-down"), limit=CELL)
    elif flagged:
        state = plain(f"⚠ {flagged}", colour("node-down"), limit=CELL)
    elif snapshot.audit_warning:
        state = plain(f"⚠ {snapshot.audit_warning}", colour("node-down"), limit=CELL)
    elif snapshot.reachable:
        state = Text("● ok", style=colour("node-ok"))
    else:
        state = Text("… connecting", style=colour("node-unknown"))
    pending = snapshot.pending
    next_boot = plain(pending.version or pending.checksum[:10], colour("pending"), limit=CELL) if pending else Text()
    latency = Text()
    if snapshot.latency_ms is not None:
        latency.append(spark(snapshot.latency_history, SPARK, top=LATENCY_TOP_MS), style=colour("text-muted"))
        latency.append(f" {snapshot.latency_ms:.0f}ms")
    failed, sessions = len(snapshot.failed_units or []), snapshot.ops_sessions
    return [
        Text("●" if selected else " "),
        plain(snapshot.name, limit=CELL),
        state,
        plain(snapshot.booted_version or "?", colour("booted"), limit=CELL),
        next_boot,
        plain(_update(snapshot), limit=CELL),
        Text(str(failed), style=colour("node-down")) if failed else Text(),
        Text(f"● {sessions}", style=colour("recorded")) if sessions else Text(),
        _load(snapshot, colour),
        _var(snapshot, colour),
        latency,
        Text(ago(snapshot.last_seen)),
    ]


def _update(snapshot: NodeSnapshot) -> str:
    update = snapshot.update
    if update is None:
        return ""
    text = update.state.value
    if text == "available" and update.targets:
        text += f" → {update.targets[0].version}"
    if text == "failed" and update.last_error:
        text += f": {update.last_error}"
    progress = update.progress
    if progress is not None and progress.fraction is not None:
        text += f" {meter(progress.fraction, 4)}{100 * progress.fraction:3.0f}%"
    return text


def _load(snapshot: NodeSnapshot, colour: Colour) -> Text:
    """The 1-minute load over the last minutes, scaled to the node's CPUs, and its value now."""
    resources = snapshot.resources
    if resources is None or not resources.load:
        return Text()
    cpus = resources.cpus or 1
    busy = resources.load[0] >= cpus
    text = Text(spark(snapshot.load_history, SPARK, top=cpus), style=colour("text-muted"))
    text.append(f" {resources.load[0]:.1f}", style=colour("node-down") if busy else "")
    return text


def _var(snapshot: NodeSnapshot, colour: Colour) -> Text:
    """How full /var is: a full /var stops the audit log, and with it every action."""
    ratio = snapshot.resources.var_used_ratio if snapshot.resources is not None else None
    if ratio is None:
        return Text()
    style = colour("node-down") if ratio >= VAR_FULL else colour("pending") if ratio >= VAR_HIGH else ""
    return Text(f"{meter(ratio, 4)}{100 * ratio:3.0f}%", style=style)


def share_bar(drift: dict[str, int], total: int, colour: Colour) -> Text:
    """The versions as one bar, each its share of the fleet, then each named with its count."""
    palette = [colour(name) for name in ("booted", "pending", "node-ok", "node-down")]
    # A version keeps its colour while shares change: colours follow the versions' order, not their counts.
    order = sorted(drift)
    colours = {v: colour("node-unknown") if v == "unknown" else palette[order.index(v) % 4] for v in drift}
    text, used = Text(), 0
    for index, (version, count) in enumerate(drift.items()):
        cells = SHARE_WIDTH - used if index == len(drift) - 1 else round(SHARE_WIDTH * count / max(total, 1))
        text.append("█" * cells, style=colours[version])
        used += cells
    for version, count in drift.items():
        text.append("  ■ ", style=colours[version])
        text.append_text(plain(f"{version} {count} ({100 * count // max(total, 1)}%)", limit=40))
    return text
