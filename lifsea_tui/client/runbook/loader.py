"""Runbooks read from TOML files: every error named with its file and where; the other files still load."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lifsea_tui.api import OpsAccess
from lifsea_tui.client.runbook.checks import CHECK_PARAMS, CHECKS
from lifsea_tui.client.runbook.model import ACTIONS, NAME, UNIT_ACTIONS, LoadError, Runbook, RunbookError, Step


def _text(table: Mapping[str, Any], key: str, where: str, required: bool = True) -> str:
    value = table.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise RunbookError(f"{where}: `{key}` must be a non-empty string")
    return value


def parse(text: str, source: Path) -> Runbook:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RunbookError(f"not valid TOML: {error}") from error
    unknown = set(data) - {"id", "title", "symptom", "start", "applies", "steps"}
    if unknown:
        raise RunbookError(f"unknown keys: {', '.join(sorted(unknown))}")
    runbook_id = _text(data, "id", "runbook")
    if not NAME.match(runbook_id):
        raise RunbookError(f"id {runbook_id!r}: lowercase letters, digits and dashes only")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, dict) or not raw_steps:
        raise RunbookError("no [steps.NAME] tables")
    steps = {name: _step(name, table) for name, table in raw_steps.items()}
    start = _text(data, "start", "runbook")
    if start not in steps:
        raise RunbookError(f"start names {start!r}, which is not a step")
    if steps[start].kind != "check":
        raise RunbookError(f"the first step ({start}) must be a check: it decides whether the runbook applies")
    applies = data.get("applies", [start])
    if not isinstance(applies, list) or not applies or not all(isinstance(a, str) for a in applies):
        raise RunbookError("`applies` must be a list of step names")
    for name in applies:
        if name not in steps or steps[name].kind != "check":
            raise RunbookError(f"applies names {name!r}, which is not a check step")
    for step in steps.values():
        for outcome, target in step.next.items():
            if target not in steps:
                raise RunbookError(f"step {step.name}: `{outcome}` names {target!r}, which is not a step")
    return Runbook(
        id=runbook_id,
        title=_text(data, "title", "runbook"),
        symptom=_text(data, "symptom", "runbook"),
        start=start,
        steps=steps,
        source=source,
        applies=tuple(applies),
    )


def _step(name: str, table: Any) -> Step:
    where = f"step {name}"
    if not NAME.match(name):
        raise RunbookError(f"{where}: a step name is lowercase letters, digits and dashes (at most 80)")
    if not isinstance(table, dict):
        raise RunbookError(f"{where}: must be a table")
    kinds = [kind for kind in ("check", "action", "shell", "end") if kind in table]
    if len(kinds) != 1:
        raise RunbookError(f"{where}: needs exactly one of check, action, shell or end")
    kind = kinds[0]
    what = _text(table, kind, where)
    explain = _text(table, "explain", where, required=False)
    nexts = {key: table[key] for key in ("problem", "ok", "unknown", "then") if key in table}
    for key, value in nexts.items():
        if not isinstance(value, str):
            raise RunbookError(f"{where}: `{key}` must name a step")
    params = {k: v for k, v in table.items() if k not in {kind, "explain", *nexts}}
    if kind == "check":
        if what not in CHECKS:
            raise RunbookError(f"{where}: no check {what!r} (there are: {', '.join(sorted(CHECKS))})")
        if "then" in nexts:
            raise RunbookError(f"{where}: a check goes on by `problem`, `ok` or `unknown`, not `then`")
        allowed = CHECK_PARAMS[what]
    elif kind == "action":
        if what not in ACTIONS:
            raise RunbookError(f"{where}: no action {what!r} (there are: {', '.join(ACTIONS)})")
        if what in UNIT_ACTIONS and not isinstance(table.get("unit"), str):
            raise RunbookError(f"{where}: `{what}` needs `unit`")
        allowed = {"unit"}
    elif kind == "shell":
        commands = table.get("commands", [])
        if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
            raise RunbookError(f"{where}: `commands` must be a list of strings")
        if table.get("access", OpsAccess.read_only.value) not in {level.value for level in OpsAccess}:
            levels = ", ".join(f'"{level.value}"' for level in OpsAccess)
            raise RunbookError(f"{where}: `access` must be one of {levels}")
        allowed = {"commands", "access"}
    else:
        if not isinstance(table.get("resolved", False), bool):
            raise RunbookError(f"{where}: `resolved` must be true or false")
        allowed = {"resolved"}
    if kind != "check" and kind != "end" and "then" not in nexts:
        raise RunbookError(f"{where}: needs `then`, the step after it")
    if kind == "end" and nexts:
        raise RunbookError(f"{where}: an end goes nowhere")
    extra = set(params) - allowed
    if extra:
        raise RunbookError(f"{where}: unknown keys {', '.join(sorted(extra))}")
    return Step(name=name, kind=kind, what=what, explain=explain, params=params, next=nexts)


def load(directories: list[Path]) -> tuple[list[Runbook], list[LoadError]]:
    """Every runbook in the directories, in order; a later one with the same id replaces an earlier."""
    found: dict[str, Runbook] = {}
    errors = []
    for directory in directories:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.toml")):
            try:
                runbook = parse(path.read_text(errors="replace"), path)
            except (OSError, RunbookError) as error:
                errors.append(LoadError(path, str(error)))
                continue
            found[runbook.id] = runbook
    return list(found.values()), errors
