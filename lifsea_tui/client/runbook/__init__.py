"""Runbooks: guided debugging as data, and the checks they run against a node's API.

A runbook is a TOML file: a symptom, and steps by name. A step is one of
- a check (`check = "disk"`, ...): a read-only look through the node API that gives a finding with
  evidence, and goes on to the step named by `problem`, `ok` or `unknown` (what the finding was);
- an action (`action = "restart"`, ...): something that changes the node, done only when the person says
  so and gives a reason, then `then`;
- a shell (`shell = "title"`): a break-glass shell, with `commands` suggested beside it (never typed), then
  `then`;
- an end (`end = "text"`): where the walk stops, `resolved = true` when the trouble is gone.
Text may name facts found by earlier checks, like `{unit}`; a fact not found yet stays as written.

The first step's check says whether the runbook applies: the console proposes the runbooks whose first
check finds a problem. Runbooks ship with the package and more can be put in the user's config dir; a
file with errors is reported with what is wrong and where, and the others still load.
"""

from lifsea_tui.client.runbook.checks import CHECKS, Proposal, run_check, triage
from lifsea_tui.client.runbook.export import markdown
from lifsea_tui.client.runbook.loader import load, parse
from lifsea_tui.client.runbook.model import SHIPPED, Finding, LoadError, Runbook, RunbookError, Status, Step, fill
from lifsea_tui.client.runbook.walk import Entry, Walk

__all__ = [
    "CHECKS", "SHIPPED", "Entry", "Finding", "LoadError", "Proposal", "Runbook", "RunbookError", "Status", "Step",
    "Walk", "fill", "load", "markdown", "parse", "run_check", "triage",
]  # fmt: skip
