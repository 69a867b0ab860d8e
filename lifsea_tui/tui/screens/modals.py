"""Small modal screens: confirm an action that changes nodes, with the reason the nodes will audit."""

from __future__ import annotations

from pydantic import ValidationError
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Select, Static

from lifsea_tui.api import ACCESS_TEXT, OpsAccess, OpsSessionRequest
from lifsea_tui.tui.plain import plain

# What each action does, in the words of the confirmation.
ACTION_TEXT = {
    "check": "Check for updates (pulls from the update server)",
    "stage": "Stage the newest update as the next boot",
    "cancel": "Cancel the staged update (undeploy it)",
    "rollback": "Make the rollback deployment the next boot",
    "reboot": "REBOOT into the next-boot deployment",
}


class ReasonModal(ModalScreen[str | None]):
    """Confirm `action` on `nodes`; dismisses with the reason, or None when cancelled."""

    DEFAULT_CSS = """
    ReasonModal {
        align: center middle;
        & > Vertical {
            width: 72; height: auto; padding: 1 2; overflow: hidden;
            border: thick $warning; background: $panel;
        }
        #title { text-style: bold; color: $warning; }
        #nodes { color: $text-muted; margin-bottom: 1; }
        #problem { color: $error; height: auto; }
        #keys { color: $text-muted; margin-top: 1; }
    }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="modal-cancel")]

    def __init__(self, action: str, nodes: list[str], *, title: str | None = None, noun: str = "node") -> None:
        super().__init__()
        self.action_name = action
        self.nodes = nodes
        self.title_text = title or ACTION_TEXT.get(action, action)
        self.noun = noun

    def compose(self) -> ComposeResult:
        count = len(self.nodes)
        shown = ", ".join(self.nodes[:6]) + (f" and {count - 6} more" if count > 6 else "")
        with Vertical():
            yield Label(plain(self.title_text), id="title")
            yield Static(plain(f"on {count} {self.noun}{'s' if count != 1 else ''}: {shown}"), id="nodes")
            yield Input(placeholder="reason (required; written to each node's audit log)", id="reason", max_length=500)
            yield Static("", id="problem")
            yield Static("enter confirm · esc cancel", id="keys")

    @on(Input.Submitted, "#reason")
    def confirm(self, event: Input.Submitted) -> None:
        reason = event.value.strip()
        if not reason:
            self.query_one("#problem", Static).update("A reason is required: it goes into the audit log.")
            return
        self.dismiss(reason)

    def action_cancel(self) -> None:
        self.dismiss(None)


class RebootModal(ModalScreen[tuple[str, bool] | None]):
    """Confirm a reboot of several nodes: one at a time (the default) or, said explicitly, all at once.
    Dismisses with (reason, all_at_once), or None."""

    DEFAULT_CSS = ReasonModal.DEFAULT_CSS.replace("ReasonModal", "RebootModal")
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="reboot-modal-cancel")]

    def __init__(self, nodes: list[str], slots: int) -> None:
        super().__init__()
        self.nodes = nodes
        self.slots = slots

    def compose(self) -> ComposeResult:
        count = len(self.nodes)
        shown = ", ".join(self.nodes[:6]) + (f" and {count - 6} more" if count > 6 else "")
        with Vertical():
            yield Label(plain(ACTION_TEXT["reboot"]), id="title")
            yield Static(plain(f"on {count} nodes: {shown}"), id="nodes")
            yield Select(
                [
                    (f"rolling: {self.slots} at a time, each back before the next", False),
                    (f"ALL AT ONCE: all {count} nodes down together", True),
                ],
                value=False,
                allow_blank=False,
                id="how",
            )
            yield Input(placeholder="reason (required; written to each node's audit log)", id="reason", max_length=500)
            yield Static("", id="problem")
            yield Static("enter confirm · esc cancel", id="keys")

    def on_mount(self) -> None:
        self.query_one("#reason", Input).focus()

    @on(Select.Changed, "#how")
    def _chosen(self) -> None:
        self.query_one("#reason", Input).focus()

    @on(Input.Submitted, "#reason")
    def confirm(self, event: Input.Submitted) -> None:
        reason = event.value.strip()
        if not reason:
            self.query_one("#problem", Static).update("A reason is required: it goes into the audit log.")
            return
        self.dismiss((reason, bool(self.query_one("#how", Select).value)))

    def action_cancel(self) -> None:
        self.dismiss(None)


class OpsModal(ModalScreen[OpsSessionRequest | None]):
    """Ask for what a break-glass shell needs: reason, ticket, access level, TTL. Dismisses with the request
    the node is sent, or None.

    With `access` (a runbook's step names one) the level is fixed and said; otherwise the person picks,
    read-only first."""

    DEFAULT_CSS = """
    OpsModal {
        align: center middle;
        & > Vertical {
            width: 76; height: auto; padding: 1 2; overflow: hidden;
            border: thick $error; background: $panel;
        }
        #title { text-style: bold; color: $error; }
        #what { color: $text-muted; margin-bottom: 1; }
        #access-fixed { margin-bottom: 1; text-style: bold; }
        #problem { color: $error; height: auto; }
        #keys { color: $text-muted; margin-top: 1; }
    }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="ops-modal-cancel")]
    DURATIONS = {"s": 1, "m": 60, "h": 3600}

    def __init__(self, node: str, *, access: OpsAccess | None = None) -> None:
        super().__init__()
        self.node = node
        self.fixed = access

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(plain(f"Open a break-glass ops shell on {self.node}"), id="title")
            yield Static(
                "A temporary ops container in the node's namespaces, its root at /host. "
                "Every byte is recorded by the node; start and end go into its audit log.",
                id="what",
            )
            yield Input(placeholder="reason (required)", id="reason", max_length=500)
            yield Input(placeholder="ticket (if your node requires one)", id="ticket", max_length=200)
            if self.fixed is not None:
                yield Static(plain(f"Access asked by the runbook: {ACCESS_TEXT[self.fixed]}"), id="access-fixed")
            else:
                yield Select(
                    [(ACCESS_TEXT[level], level) for level in OpsAccess],
                    value=OpsAccess.read_only,
                    allow_blank=False,
                    id="access",
                )
            yield Input(value="15m", placeholder="time to live: 900, 15m, 1h", id="ttl", max_length=8)
            yield Static("", id="problem")
            yield Static("tab next field · enter open · esc cancel", id="keys")

    @on(Select.Changed, "#access")
    def _level_chosen(self) -> None:
        """Back to the reason, where enter opens the shell (enter on the list would open the list again)."""
        self.query_one("#reason", Input).focus()

    @on(Input.Submitted)
    def confirm(self, event: Input.Submitted) -> None:
        reason = self.query_one("#reason", Input).value.strip()
        ticket = self.query_one("#ticket", Input).value.strip() or None
        ttl_text = self.query_one("#ttl", Input).value.strip().lower()
        problem = self.query_one("#problem", Static)
        if not reason:
            problem.update("A reason is required: it goes into the node's audit log.")
            self.query_one("#reason", Input).focus()
            return
        try:
            unit = self.DURATIONS.get(ttl_text[-1:], 0)
            ttl = int(ttl_text[:-1]) * unit if unit else int(ttl_text)
        except ValueError:
            ttl = 0
        if ttl < 10:
            problem.update("Time to live: a number of seconds, or like 15m or 1h (at least 10 s).")
            self.query_one("#ttl", Input).focus()
            return
        access = self.fixed if self.fixed is not None else OpsAccess(str(self.query_one("#access", Select).value))
        try:
            request = OpsSessionRequest(reason=reason, ticket=ticket, ttl_seconds=ttl, access=access)
        except ValidationError as error:  # what the API takes: a day at most, a ticket without blanks
            problem.update(plain("; ".join(str(item["msg"]) for item in error.errors()[:2])))
            return
        self.dismiss(request)

    def action_cancel(self) -> None:
        self.dismiss(None)
