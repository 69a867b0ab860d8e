"""The form that starts a rollout: what, where, how fast and when, with a preview of the batches before
anything is written. It returns the spec; the Rollouts screen writes it to etcd."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import ValidationError
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Select, Static

from lifsea_tui.api.rollouts import OnFailure, RolloutSpec, Window, parse_selector, selects
from lifsea_tui.client import rollouts as store_keys
from lifsea_tui.tui.plain import plain, plain_lines


def limits_line(spec: RolloutSpec) -> str:
    """Which nodes, by which labels and when, for a rollout that was narrowed by any of them."""
    parts = []
    if spec.selector:
        parts.append(f"nodes labelled {spec.selector}")
    if spec.group_by is not None:
        limits = ", ".join(f"{group or '(none)'} {limit}" for group, limit in sorted(spec.group_max.items()))
        parts.append(f"at most per {spec.group_by}: {limits}")
    if spec.runbooks:
        parts.append(f"gate runbooks: {', '.join(spec.runbooks)}")
    if spec.windows:
        parts.append(f"starts nodes only within {'; '.join(str(window) for window in spec.windows)}")
    return " · ".join(parts)


class NewRolloutModal(ModalScreen[RolloutSpec | None]):
    """The form for a new rollout, with a preview of what it will do before anything is written."""

    DEFAULT_CSS = """
    NewRolloutModal {
        align: center middle;
        & > Vertical {
            width: 100; height: auto; max-height: 95%; padding: 1 2; overflow-y: auto;
            border: thick $warning; background: $panel;
        }
        #title { text-style: bold; color: $warning; margin-bottom: 1; }
        .row { height: 1; margin-bottom: 1; }
        .row Label { width: 30; color: $text-muted; }
        .row Input, .row Select { width: 1fr; }
        #preview { color: $text; height: auto; margin-top: 1; }
        #problem { color: $error; height: auto; }
        #keys { color: $text-muted; margin-top: 1; }
    }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="rollout-form-cancel")]

    def __init__(
        self,
        nodes: list[str],
        booted: dict[str, str | None],
        offered: dict[str, str],
        labels: dict[str, dict[str, str]] | None = None,
    ) -> None:
        super().__init__()
        self.nodes = nodes
        self.booted = booted
        self.labels = labels or {}  # each node's, as the fleet last heard them
        self.offered = offered  # version -> what the update server says of it (its diff)

    def compose(self) -> ComposeResult:
        newest = next(iter(self.offered), "")
        fields = (
            ("version", "Target version", newest, "none offered yet (c on the fleet checks); e.g. 1.1"),
            ("max-unavailable", "Max unavailable (3 or 10%)", "1", ""),
            ("canary", "Canary nodes (first, alone)", "1", ""),
            ("soak", "Soak after each batch (s)", "0", ""),
            ("selector", "Only nodes labelled", "", "every node; or zone=a,pool!=edge"),
            ("per-group", "At most per label", "", "no limit per label; or zone=1, zone=25%"),
            ("windows", "Maintenance windows", "", "any time; or mon-fri 02:00 4h Europe/Berlin; sat 00:00 8h"),
        )
        with Vertical():
            yield Label(plain(f"New rollout on {len(self.nodes)} node(s)"), id="title")
            for key, label, value, hint in fields:
                with Horizontal(classes="row"):
                    yield Label(label)
                    yield Input(value=value, placeholder=hint, id=key, max_length=128, compact=True)
            with Horizontal(classes="row"):
                yield Label("When a node fails")
                yield Select(
                    [("pause the rollout", "pause"), ("roll back what it moved", "rollback")],
                    value="pause",
                    allow_blank=False,
                    id="on-failure",
                    compact=True,
                )
            with Horizontal(classes="row"):
                yield Label("Reason (required)")
                yield Input(
                    placeholder="in the rollout's log and each node's audit log",
                    id="reason",
                    max_length=500,
                    compact=True,
                )
            yield Static("", id="preview")
            yield Static("", id="problem")
            yield Static("tab next field · enter start · esc cancel", id="keys")

    def on_mount(self) -> None:
        self.query_one("#reason", Input).focus()
        self._preview()

    def build(self) -> RolloutSpec:
        """The spec the form describes; ValueError says what is wrong, in the person's words."""
        value = {
            key: self.query_one(f"#{key}", Input).value.strip()
            for key in ("version", "canary", "soak", "selector", "per-group")
        }
        if not value["version"]:
            raise ValueError("give the target version")
        nodes = self.nodes
        if value["selector"]:
            selector = parse_selector(value["selector"])
            nodes = [name for name in nodes if selects(selector, self.labels.get(name, {}))]
            if not nodes:
                raise ValueError(f"no node is labelled {value['selector']}")
        group_by: str | None = None
        groups: dict[str, str] = {}
        group_max: dict[str, int] = {}
        if value["per-group"]:
            group_by, limit = store_keys.parse_group_limit(value["per-group"])
            nodes, groups, group_max = store_keys.grouped(nodes, self.labels, group_by, limit)
        total = len(nodes)
        try:
            canary, soak = int(value["canary"] or 0), float(value["soak"] or 0)
        except ValueError:
            raise ValueError("canary is a count of nodes and soak a number of seconds") from None
        max_unavailable = store_keys.parse_max_unavailable(self.query_one("#max-unavailable", Input).value, total)
        windows_text = self.query_one("#windows", Input).value
        windows = [Window.parse(text) for text in windows_text.split(";") if text.strip()]
        try:
            return RolloutSpec(
                id=store_keys.new_id(),
                target_version=value["version"],
                nodes=nodes,
                selector=value["selector"] or None,
                group_by=group_by,
                groups=groups,
                group_max=group_max,
                canary=max(0, min(canary, total)),
                max_unavailable=max_unavailable,
                soak=soak,
                windows=windows,
                on_failure=OnFailure(str(self.query_one("#on-failure", Select).value)),
                reason=self.query_one("#reason", Input).value.strip() or "-",
                created_by=store_keys.who(),
                created_at=datetime.now(UTC),
            )
        except ValidationError as error:
            problem = error.errors()[0]
            raise ValueError(f"{'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}") from None

    @on(Input.Changed)
    @on(Select.Changed)
    def _preview(self) -> None:
        preview = self.query_one("#preview", Static)
        try:
            spec = self.build()
        except ValueError as error:
            preview.update(plain(f"Preview: {error}"))
            return
        lines = [f"Preview: {len(spec.nodes)} nodes in {len(spec.batches())} batches, {spec.max_unavailable} at a time"]
        for index, batch in enumerate(spec.batches()[:6]):
            moves = ", ".join(
                f"{name}{f' [{spec.groups[name]}]' if spec.group_by else ''} "
                f"({self.booted.get(name) or '?'} → {spec.target_version})"
                for name in batch[:4]
            )
            more = f" and {len(batch) - 4} more" if len(batch) > 4 else ""
            label = "canary" if index == 0 and spec.canary else f"batch {index + 1}"
            lines.append(f"  {label}: {moves}{more}")
        if len(spec.batches()) > 6:
            lines.append(f"  … {len(spec.batches()) - 6} more batches")
        if limits_line(spec):
            lines.append(f"  {limits_line(spec)}")
        if spec.target_version in self.offered:
            lines.append(f"  {spec.target_version}: {self.offered[spec.target_version]}")
        elif self.offered:
            lines.append(
                f"  {spec.target_version} is not offered now (offered: {', '.join(self.offered)}); "
                "the controller refuses an unknown version"
            )
        preview.update(plain_lines(lines))

    @on(Input.Submitted)
    def confirm(self) -> None:
        problem = self.query_one("#problem", Static)
        if not self.query_one("#reason", Input).value.strip():
            problem.update("A reason is required: it goes into the rollout's log and every node's audit log.")
            self.query_one("#reason", Input).focus()
            return
        try:
            spec = self.build()
        except ValueError as error:
            problem.update(plain(str(error)))
            return
        self.dismiss(spec)

    def action_cancel(self) -> None:
        self.dismiss(None)
