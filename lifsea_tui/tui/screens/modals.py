"""Small modal screens: confirm an action that changes nodes, with the reason the nodes will audit."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

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

    def __init__(self, action: str, nodes: list[str]) -> None:
        super().__init__()
        self.action_name = action
        self.nodes = nodes

    def compose(self) -> ComposeResult:
        count = len(self.nodes)
        shown = ", ".join(self.nodes[:6]) + (f" and {count - 6} more" if count > 6 else "")
        with Vertical():
            yield Label(ACTION_TEXT.get(self.action_name, self.action_name), id="title")
            yield Static(f"on {count} node{'s' if count != 1 else ''}: {shown}", id="nodes")
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
