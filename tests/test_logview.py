"""The logs pane's view: draws what is on screen from the entries it is given, whatever their number."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime

from rich.text import Text
from textual.app import App, ComposeResult

from lifsea_tui.api import LogEntry
from lifsea_tui.tui.logview import LogView

KEPT = 2000


def entry(n: int, message: str | None = None) -> LogEntry:
    return LogEntry(
        cursor=f"c{n}", time=datetime.now(UTC), unit="app.service", identifier="app", priority=6, pid=7,
        message=message if message is not None else f"line {n}", cut=False, binary=False,
    )  # fmt: skip


class Viewer(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.entries: deque[LogEntry] = deque(maxlen=KEPT)
        self.serial = 0

    def compose(self) -> ComposeResult:
        yield LogView(self.entries, lambda e: Text(f"app: {e.message}"), id="view")

    def add(self, messages: Iterator[str | None] | list[str | None]) -> None:
        batch = []
        for message in messages:
            batch.append(entry(self.serial, message))
            self.serial += 1
        dropped = max(0, len(self.entries) + len(batch) - KEPT)
        self.entries.extend(batch)
        self.query_one(LogView).appended(len(batch), dropped)


async def test_follows_the_tail_through_many_batches_and_keeps_the_newest() -> None:
    app = Viewer()
    async with app.run_test(size=(60, 12)) as pilot:
        view = app.query_one(LogView)
        for _ in range(30):
            app.add([None] * 500)  # 15,000 entries; the deque keeps the newest 2,000
            await pilot.pause(0)
        await pilot.pause(0.1)
        shown = [line.rstrip() for line in view.shown() if line.strip()]
        assert shown[-1] == "app: line 14999"
        assert shown == [f"app: line {n}" for n in range(15000 - len(shown), 15000)]
        view.follow = False
        view.scroll_to(y=0, animate=False)
        await pilot.pause(0.1)
        assert view.shown()[0].rstrip() == f"app: line {15000 - KEPT}"  # the oldest kept, not a stale line
        app.add([None])
        await pilot.pause(0.1)
        assert view.shown()[0].rstrip() == f"app: line {15001 - KEPT}"  # not following: the view stays put


async def test_multi_line_messages_and_wrapping() -> None:
    app = Viewer()
    async with app.run_test(size=(40, 12)) as pilot:
        view = app.query_one(LogView)
        app.add(["first", "one\ntwo\nthree", "x" * 90, "last"])
        await pilot.pause(0.1)
        shown = [line.rstrip() for line in view.shown() if line.strip()]
        assert shown[:4] == ["app: first", "app: one", "two", "three"]
        assert shown[4].startswith("app: xxxx") and shown[5] == "app: last"  # cut at the edge, not wrapped
        view.wrap = True
        view.redraw()
        await pilot.pause(0.1)
        shown = [line.rstrip() for line in view.shown() if line.strip()]
        assert shown[-1] == "app: last"
        assert sum(line.count("x") for line in shown) == 90  # every x on some line
        assert all(len(line) <= 40 for line in shown)


def test_a_burst_goes_out_in_frames_of_bounded_size() -> None:
    """The agent sends a burst of entries as JSON arrays, each small enough for the client to take."""
    import json

    from lifsea_tui.agent.routes.logs import LOG_FRAME_BYTES, log_frames

    burst = [entry(n, "x" * (n * 37 % 6000)) for n in range(600)]  # about 1.8 MB
    frames = list(log_frames(burst))
    assert len(frames) > 1
    assert all(len(frame) <= LOG_FRAME_BYTES + 16 * 1024 for frame in frames)
    got = [item for frame in frames for item in json.loads(frame)]
    assert [item["cursor"] for item in got] == [e.cursor for e in burst]
    assert list(log_frames([])) == []


async def test_a_paused_view_stays_on_its_lines() -> None:
    """Not following, neither new entries, nor old ones falling off, nor wrapping move what is shown."""
    app = Viewer()
    async with app.run_test(size=(40, 8)) as pilot:
        view = app.query_one(LogView)
        app.add([None] * KEPT)
        await pilot.pause(0.1)
        view.follow = False
        view.scroll_to(y=500, animate=False)
        await pilot.pause(0.1)
        assert view.shown()[0].rstrip() == "app: line 500"
        app.add([None] * 300)  # 300 fall off the front
        await pilot.pause(0.1)
        assert view.shown()[0].rstrip() == "app: line 500"
        view.wrap = True
        view.redraw()
        await pilot.pause(0.1)
        assert view.shown()[0].rstrip() == "app: line 500"
