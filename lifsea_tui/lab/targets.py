"""A running lab as a fleet: its status file read in place (no process to start), its nodes as targets.

The console, the controller and the audit CLI take their nodes from here when no inventory is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lifsea_tui.client.inventory import InventoryError
from lifsea_tui.client.node import NodeTarget
from lifsea_tui.lab.layout import Layout


def lab_status(lab_dir: Path | None = None) -> dict[str, Any]:
    """The running lab's status (`lifsea-lab status --json`): its nodes, etcd and controller."""
    status = Layout(lab_dir).running_status()
    if status is None:
        raise InventoryError("no running lab (start one with `lifsea-lab up`, or give --inventory FILE)")
    return status


def from_lab(
    role: str = "operator", lab_dir: Path | None = None, status: dict[str, Any] | None = None
) -> list[NodeTarget]:
    """The running lab's nodes; `role` "controller" takes the fleet controller's own token."""
    status = status or lab_status(lab_dir)
    return [
        NodeTarget(
            name=node["name"],
            url=node["url"],
            token=node["controller_token"] if role == "controller" else node["tokens"][role],
            ca_file=Path(node["ca_file"]),
        )
        for node in status["nodes"]
    ]
