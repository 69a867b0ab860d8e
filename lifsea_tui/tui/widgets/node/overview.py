"""The node's identity: name, OS, booted commit, kernel, uptime, agent, and what it can do (and why not);
then what it has left: /var and memory as gauges, load and latency over the last minutes as sparklines
(from the fleet's answers, redrawn as they come: no request of its own).

The sparklines are drawn against a fixed top, not between their own extremes (as Textual's Sparkline
does): load against the node's CPUs, latency against 100 ms (or its worst recent answer), so a steady load of 0.1
looks low and a steady 1.9 on two CPUs looks high."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Label, ProgressBar, Static

from lifsea_tui.api import EventKind, NodeResources
from lifsea_tui.client.node import NodeError
from lifsea_tui.client.runbook.checks import human_size
from lifsea_tui.tui.pictures import LATENCY_TOP_MS, spark
from lifsea_tui.tui.plain import plain
from lifsea_tui.tui.widgets.node.base import NodeTab, duration, label_grid

RESOURCES_EVERY = 1.0  # seconds between redraws of the resources from the fleet's last answer
SPARK_WIDTH = 44  # cells: the last 44 answers


class OverviewTab(NodeTab):
    REACTS_TO = frozenset({EventKind.deployments})  # a boot changes the booted commit and the uptime
    DEFAULT_CSS = """
    OverviewTab .gauge { height: 1; }
    OverviewTab .spark { height: 1; }
    OverviewTab Horizontal > Label { width: 16; text-style: bold; }
    OverviewTab Horizontal > Label.now { width: auto; text-style: none; margin-left: 2; }
    OverviewTab ProgressBar { width: 46; }
    OverviewTab .spark .line { width: 46; }
    OverviewTab #resources-title { margin-top: 1; text-style: bold; }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static("loading…", id="overview")
            yield Static("Resources", id="resources-title")
            yield Static("", id="resources-note")
            for key, label in (("var", "/var used"), ("memory", "Memory used")):
                with Horizontal(classes="gauge"):
                    yield Label(label)
                    yield ProgressBar(total=100, show_eta=False, id=f"{key}-gauge")
                    yield Label("", classes="now", id=f"{key}-now")
            for key, label in (("load", "Load (1 min)"), ("latency", "Latency (ms)")):
                with Horizontal(classes="spark"):
                    yield Label(label)
                    yield Label("", classes="line", id=f"{key}-spark")
                    yield Label("", classes="now", id=f"{key}-now")

    def on_mount(self) -> None:
        super().on_mount()
        self.show_resources()
        self.set_interval(RESOURCES_EVERY, self.show_resources)

    def show_resources(self) -> None:
        snapshot = self.lifsea.fleet.snapshots.get(self.node)
        resources = snapshot.resources if snapshot is not None else None
        note = ""
        if snapshot is None or snapshot.last_seen is None:
            note = "waiting for the node's first answer"
        elif resources is None:
            note = "this agent does not report resources"
        shown = self.query_one("#resources-note", Static)
        shown.update(note)
        shown.display = bool(note)
        for key, ratio, detail in (
            ("var", resources.var_used_ratio if resources else None, _free(resources, "var")),
            ("memory", resources.memory_used_ratio if resources else None, _free(resources, "memory")),
        ):
            gauge = self.query_one(f"#{key}-gauge", ProgressBar)
            gauge.update(progress=round(100 * ratio) if ratio is not None else 0)
            self.query_one(f"#{key}-now", Label).update(detail)
        if snapshot is not None:
            load = resources.load if resources else None
            cpus = resources.cpus if resources else None
            self.query_one("#load-spark", Label).update(spark(snapshot.load_history, SPARK_WIDTH, top=cpus or 1))
            self.query_one("#load-now", Label).update(
                f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {cpus or '?'} CPUs" if load else "?"
            )
            history = snapshot.latency_history
            self.query_one("#latency-spark", Label).update(spark(history, SPARK_WIDTH, top=LATENCY_TOP_MS))
            latest = "?"
            if snapshot.latency_ms is not None:
                latest = f"{snapshot.latency_ms:.0f} ms now, {min(history):.0f}–{max(history):.0f} ms of late"
            self.query_one("#latency-now", Label).update(latest)

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


def _free(resources: NodeResources | None, which: str) -> str:
    if resources is None:
        return "?"
    if which == "var":
        free, total = resources.var_free_bytes, resources.var_total_bytes
    else:
        free, total = resources.memory_available_bytes, resources.memory_total_bytes
    if free is None or total is None:
        return "?"
    return f"{human_size(free)} free of {human_size(total)}"
