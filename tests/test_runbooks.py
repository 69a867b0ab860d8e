"""Runbook files: the shipped ones load, and a file with errors is reported clearly, never fatally."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifsea_tui.client.runbook import CHECKS, SHIPPED, RunbookError, fill, load, parse
from lifsea_tui.client.runbook.checks import run_check
from lifsea_tui.client.runbook.model import Finding, Status, Step

GOOD = """
id = "mine"
title = "Mine"
symptom = "Something"
start = "look"

[steps.look]
check = "unit"
unit = "x.service"
problem = "fix"

[steps.fix]
action = "restart"
unit = "{unit}"
then = "done"

[steps.done]
end = "{unit} runs again"
resolved = true
"""


def test_shipped_runbooks_load_and_cover_the_named_troubles() -> None:
    books, errors = load([SHIPPED])
    assert errors == []
    ids = {book.id for book in books}
    assert {"node-not-ready", "bad-upgrade", "var-full", "crash-loop", "clock-dns"} <= ids
    for book in books:
        assert book.first.kind == "check" and book.first.what in CHECKS
        # No step is left out: each is reached from the first.
        seen, todo = set(), [book.start]
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(book.steps[name].next.values())
        assert seen == set(book.steps), (book.id, set(book.steps) - seen)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.replace('check = "unit"', 'check = "telepathy"'), "no check 'telepathy'"),
        (lambda t: t.replace('then = "done"', 'then = "nowhere"'), "`then` names 'nowhere', which is not a step"),
        (lambda t: t.replace('start = "look"', 'start = "fix"'), "first step (fix) must be a check"),
        (lambda t: t.replace('then = "done"\n', ""), "needs `then`"),
        (lambda t: t.replace('action = "restart"', 'action = "format-disk"'), "no action 'format-disk'"),
        (lambda t: t.replace('id = "mine"', 'id = "Mine Two"'), "lowercase letters"),
        (lambda t: t.replace('unit = "x.service"', 'unit = "x.service"\nfrobnicate = 1'), "unknown keys frobnicate"),
        (lambda t: t.replace("[steps.look]", "[steps.look\n"), "not valid TOML"),
        (lambda t: t.replace("[steps.done]", '[steps."Done!"]').replace('"done"', '"Done!"'), "a step name is"),
        (lambda t: t.replace('end = "{unit} runs again"', 'end = "x"\nshell = "y"'), "exactly one of"),
    ],
)
def test_a_bad_runbook_says_what_and_where(change, message: str) -> None:
    with pytest.raises(RunbookError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(change(GOOD), Path("mine.toml"))


def test_bad_files_are_reported_and_the_rest_load(tmp_path: Path) -> None:
    (tmp_path / "a-good.toml").write_text(GOOD)
    (tmp_path / "b-broken.toml").write_text("id = \n")
    (tmp_path / "c-binary.toml").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "var-full.toml").write_text(GOOD.replace('id = "mine"', 'id = "var-full"').replace("Mine", "Site /var"))
    books, errors = load([SHIPPED, tmp_path])
    by_id = {book.id: book for book in books}
    assert "mine" in by_id and "node-not-ready" in by_id
    assert by_id["var-full"].title == "Site /var"  # the user's file replaces the shipped one of its id
    assert sorted(e.path.name for e in errors) == ["b-broken.toml", "c-binary.toml"]
    assert all(str(e).startswith(str(tmp_path)) and e.problem for e in errors)


def test_fill_names_facts_and_leaves_the_rest() -> None:
    facts = {"unit": "nginx.service", "largest": "/var/log/huge"}
    assert fill("restart {unit}", facts) == "restart nginx.service"
    assert fill("rm /host{largest}; {unknown}", facts) == "rm /host/var/log/huge; {unknown}"
    assert fill("awk '{print $1}' {unit", facts) == "awk '{print $1}' {unit"  # stray braces stay as written
    assert fill("{0} {unit.attr}", facts) == "{0} {unit.attr}"


async def test_a_check_that_fails_on_what_it_read_gives_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not only a node that cannot answer: a check that trips on an answer (a fault of ours, or text a
    node made to trip it) still gives the screen waiting on it an `unknown` finding that names the fault,
    instead of an exception that leaves the screen waiting for ever."""

    async def trips(client: object, params: object) -> Finding:
        raise KeyError("restarts")

    monkeypatch.setitem(CHECKS, "trips", trips)
    step = Step(name="looping", kind="check", what="trips", explain="", params={}, next={})
    found = await run_check(None, step, {})  # type: ignore[arg-type]  # the check never uses the client
    assert found.status is Status.unknown and found.summary == "could not check: KeyError: 'restarts'", found
