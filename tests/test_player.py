"""Recordings are hostile input: the parser survives and reports; the player plays, seeks and jumps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lifsea_tui.tui.cast import MAX_LINE, parse
from lifsea_tui.tui.plain import visible
from lifsea_tui.tui.player import PlayerApp, PlayerScreen

HEADER = json.dumps({"version": 2, "width": 40, "height": 10, "title": "node1: INC-1"})


def cast_file(*events: object, header: str = HEADER) -> bytes:
    return (header + "\n" + "".join(json.dumps(e) + "\n" for e in events)).encode()


def test_hostile_recording_is_survived_and_reported() -> None:
    data = (
        cast_file(
            [0.1, "o", "$ ls\r\n"],
            [0.2, "o", "\x1b]0;innocent title\x07\x1b]52;c;cm0gLXJmIC8=\x07"],
            [0.3, "o", "\x1b[8msecret-invisible\x1b[0m"],
            [0.25, "o", "rm -rf /data\rls          \r\n"],  # time goes back; a line drawn over
            [0.4, "o", "\x1bP+q\x1b\\\u202ereversed"],
            [0.5, "x", "unknown kind"],
            [0.6, "r", "9999999x1"],
            [0.7, "m", "marker one"],
        )
        + b"{broken json\n"
        + b'[0.8, "o", "'
        + b"A" * (MAX_LINE + 100)
        + b'"]\n'
        + b"[1, 2]\n"
    )
    cast = parse(data)
    findings = "\n".join(cast.findings())
    for expected in (
        "clipboard",
        "window title",
        "concealed",
        "device control",
        "bidirectional",
        "time goes back",
        "unknown event kind",
        "bad resize",
        "not JSON",
        "cut",
        "not an event",
    ):
        assert expected in findings, expected
    assert cast.rewrites["carriage return over shown text"] >= 1
    assert [e.kind for e in cast.events] == ["o", "o", "o", "o", "o", "m"]
    times = [e.at for e in cast.events]
    assert times == sorted(times)
    # The transcript shows what the screen hides.
    shown = visible(cast.events[3].data)
    assert "rm -rf /data␍ls" in shown and "\r" not in shown
    assert "<U+202E>" in visible(cast.events[4].data)


def test_absurd_header_and_garbage_do_not_break_parsing() -> None:
    cast = parse(b'{"version": 2, "width": 1000000, "height": -3}\n[0, "o", "hi"]\n')
    assert cast.width == 500 and cast.height == 24 and cast.events[0].data == "hi"
    assert "absurd" in " ".join(cast.problems)
    assert parse(b"").problems == ["empty recording"]
    binary = parse(bytes(range(256)) * 100)
    assert binary.events == [] and binary.problems


def test_asciicast_v3_intervals_comments_and_exit_are_read() -> None:
    """asciinema 3 records v3 by default: the size is in `term`, times are intervals since the event
    before, `#` lines are comments, and `x` is the exit status."""
    header = json.dumps({"version": 3, "term": {"cols": 90, "rows": 30, "type": "xterm"}, "title": "v3"})
    data = (
        header + "\n# a comment\n"
        '[0.25, "o", "one\\r\\n"]\n[1.0, "o", "two"]\n# another\n[0.5, "r", "100x40"]\n'
        '[700, "m", "after a long pause"]\n[0.1, "x", "0"]\n[-1, "o", "bad"]\n'
    ).encode()
    cast = parse(data)
    assert (cast.width, cast.height, cast.title) == (90, 30, "v3")
    assert [(e.kind, round(e.time, 2)) for e in cast.events] == [
        ("o", 0.25), ("o", 1.25), ("r", 1.75), ("m", 701.75), ("x", 701.85),
    ]  # fmt: skip
    assert round(cast.events[3].at, 2) == 3.75  # the long pause shortened on the timeline, as in v2
    assert cast.problems == ["line 9: time -1 is not a time; skipped"]
    assert parse(cast_file([0, "x", "0"])).problems == ["line 2: unknown event kind 'x'; skipped"]  # not in v2


def test_idle_pauses_are_shortened() -> None:
    cast = parse(cast_file([0.5, "o", "a"], [600.5, "o", "b"], [601.0, "m", "end"]))
    assert [round(e.at, 2) for e in cast.events] == [0.5, 2.5, 3.0]
    assert cast.events[1].time == 600.5


async def test_player_plays_seeks_and_jumps_to_markers() -> None:
    data = cast_file(
        [0.0, "m", "session start"],
        [0.2, "o", "first line\r\n"],
        [1.0, "m", "attached"],
        [1.5, "o", "\x1b[?1049h\x1b[2Jfull screen app\x1b[?1049l"],
        [2.0, "r", "60x12"],
        [3.0, "o", "after resize\r\n"],
        [3.5, "m", "session end: exited"],
    )
    app = PlayerApp(parse(data), "test.cast")
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.1)
        screen = app.screen
        assert isinstance(screen, PlayerScreen)
        await pilot.press("space")  # pause
        assert not screen.playing
        await pilot.press("end")
        text = screen.terminal.text()
        assert "first line" in text and "after resize" in text
        assert "full screen app" not in text  # the alternate screen was left: the shell's screen is back
        assert (screen.terminal.cols, screen.terminal.rows) == (60, 12)
        await pilot.press("home")
        assert "first line" not in screen.terminal.text()
        await pilot.press("right_square_bracket")  # next marker: attached (1.0 s)
        assert abs(screen.position - 1.0) < 0.01 and "first line" in screen.terminal.text()
        await pilot.press("right_square_bracket", "left_square_bracket")
        assert abs(screen.position - 1.0) < 0.01
        await pilot.press("plus", "plus")
        assert "4x" in str(screen.query_one("#status").content)
        await pilot.press("space")
        await pilot.pause(1.0)
        assert screen.position >= 3.5 and "after resize" in screen.terminal.text()
        await pilot.press("t")
        assert screen.query_one("#transcript").has_class("shown")
        await pilot.press("q")
    assert app.return_code == 0


def test_play_command_reports_findings(tmp_path: Path) -> None:
    path = tmp_path / "x.cast"
    path.write_bytes(cast_file([0.1, "o", "\x1b]52;c;Zm9v\x07"]))
    result = subprocess.run(
        [sys.executable, "-m", "lifsea_tui.tui.cli", "play", str(path), "--findings"], capture_output=True, text=True
    )
    assert result.returncode == 1 and "clipboard" in result.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "lifsea_tui.tui.cli", "play", str(path), "--findings", "--json"],
        capture_output=True,
        text=True,
    )
    found = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and found["clean"] is False and found["recording"] == "x.cast"
    assert any("clipboard" in what for what in found["hostile"]) and found["events"] == 1
    path.write_bytes(cast_file([0.1, "o", "hello\r\n"]))
    clean = subprocess.run(
        [sys.executable, "-m", "lifsea_tui.tui.cli", "play", str(path), "--findings", "--json"],
        capture_output=True,
        text=True,
    )
    assert clean.returncode == 0 and json.loads(clean.stdout)["clean"] is True
    missing = subprocess.run(
        [sys.executable, "-m", "lifsea_tui.tui.cli", "play", str(tmp_path / "nope.cast")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "nope.cast" in missing.stderr


def test_sequences_the_emulator_cannot_parse_do_not_stop_the_terminal() -> None:
    """vim's CSI > 4 ; m once stopped pyte cold: every later byte was lost to the screen."""
    from lifsea_tui.tui.terminal import TerminalView

    view = TerminalView(40, 5)
    view.feed(b"\x1b[?1049hin vim\x1b[>4;m\x1b[?1049lback in the shell\r\n")
    view.feed(b"\x1b[?9999;;;;;X\x1b]\x07\x1bP\x1b\\still here")
    assert "back in the shell" in view.text() and "still here" in view.text()
    assert "in vim" not in view.text()
