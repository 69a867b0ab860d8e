"""The node screen's tabs, a widget each: it loads only its own data, and only the node's events that
concern it (NodeChanged) make it load again."""

from lifsea_tui.tui.widgets.node.audit import AuditTab
from lifsea_tui.tui.widgets.node.base import NodeChanged, NodeTab
from lifsea_tui.tui.widgets.node.deployments import DeploymentsTab
from lifsea_tui.tui.widgets.node.ops import OpsTab
from lifsea_tui.tui.widgets.node.overview import OverviewTab
from lifsea_tui.tui.widgets.node.services import ServicesTab
from lifsea_tui.tui.widgets.node.upgrades import UpgradesTab

__all__ = [
    "AuditTab",
    "DeploymentsTab",
    "NodeChanged",
    "NodeTab",
    "OpsTab",
    "OverviewTab",
    "ServicesTab",
    "UpgradesTab",
]
