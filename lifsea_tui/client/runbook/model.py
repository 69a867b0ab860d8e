"""What a runbook is: its steps, what a check finds, and the facts a finding leaves for the text after it."""

from __future__ import annotations

import enum
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifsea_tui.api import OpsAccess

SHIPPED = Path(__file__).resolve().parents[2] / "runbooks"
ACTIONS = ("start", "stop", "restart", "rollback", "reboot")
UNIT_ACTIONS = ("start", "stop", "restart")
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,79}$")


class Status(enum.StrEnum):
    problem = "problem"
    ok = "ok"
    unknown = "unknown"  # the check could not look (node unreachable, capability missing)


@dataclass
class Finding:
    status: Status
    summary: str
    evidence: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    name: str
    kind: str  # check, action, shell or end
    what: str  # the check's or action's kind, the shell's title, the end's text
    explain: str
    params: Mapping[str, Any]
    next: Mapping[str, str]  # problem/ok/unknown for a check; "then" for an action or a shell

    @property
    def access(self) -> OpsAccess:
        """What a shell step's break-glass shell may do to the node (read-only unless it says)."""
        return OpsAccess(self.params.get("access", OpsAccess.read_only.value))


@dataclass(frozen=True)
class Runbook:
    id: str
    title: str
    symptom: str
    start: str
    steps: Mapping[str, Step]
    source: Path
    applies: tuple[str, ...]  # the checks that propose it when one finds a problem (default: the first)

    @property
    def first(self) -> Step:
        return self.steps[self.start]


@dataclass(frozen=True)
class LoadError:
    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


class RunbookError(Exception):
    pass


class _Facts(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(text: str, facts: Mapping[str, str]) -> str:
    """Text with `{fact}` replaced by what the walk has found; unknown names and stray braces stay."""
    try:
        return string.Formatter().vformat(text, (), _Facts(facts))
    except (ValueError, IndexError, KeyError, AttributeError):
        return text
