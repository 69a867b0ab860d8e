"""Key hints drawn from the live bindings, so that what a screen says its keys do is what they do (a
user's keymap included, and read-only mode's hidden actions left out)."""

from __future__ import annotations

from textual.dom import DOMNode


def hints(node: DOMNode, *ids: str) -> str:
    """'c check · s stage · …' for the bindings with these ids that are active on `node`'s screen."""
    found = {active.binding.id: active for active in node.screen.active_bindings.values() if active.enabled}
    parts = []
    for binding_id in ids:
        active = found.get(binding_id)
        if active is not None:
            description = active.binding.description
            parts.append(f"{node.app.get_key_display(active.binding)} {description[:1].lower()}{description[1:]}")
    return " · ".join(parts)


def key_of(node: DOMNode, binding_id: str) -> str | None:
    """The key that does the binding `binding_id` on `node`'s screen now, if it is active."""
    for active in node.screen.active_bindings.values():
        if active.enabled and active.binding.id == binding_id:
            return node.app.get_key_display(active.binding)
    return None
