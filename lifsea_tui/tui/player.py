"""The recording player: an ops session played back through the terminal emulator, with its findings.

Keys: space play/pause, left/right 5 s back/forward, +/- speed, [ and ] previous/next marker, home/end,
t transcript (every byte, control characters visible), q or esc back. Pauses longer than two seconds
are shortened on the player's timeline. `lifsea-tui play FILE` (or `play NODE RECORDING_ID`) runs it on
its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, RichLog, Static

from lifsea_tui.tui.cast import Cast, parse, size_of
from lifsea_tui.tui.plain import plain_lines, visible
from lifsea_tui.tui.terminal import TerminalView

SPEEDS = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
TICK = 1 / 30


class PlayerScreen(Screen[None]):
    BINDINGS = [
        Binding("space", "play_pause", "Play/pause", id="player-toggle"),
        Binding("left", "seek(-5)", "-5 s", id="player-back"),
        Binding("right", "seek(5)", "+5 s", id="player-forward"),
        Binding("minus", "speed(-1)", "Slower", key_display="-", id="player-slower"),
        Binding("plus,equals_sign", "speed(1)", "Faster", key_display="+", id="player-faster"),
        Binding("left_square_bracket", "marker(-1)", "Prev marker", key_display="[", id="player-prev"),
        Binding("right_square_bracket", "marker(1)", "Next marker", key_display="]", id="player-next"),
        Binding("home", "seek_to(0)", "Start", show=False, id="player-home"),
        Binding("end", "seek_to(-1)", "End", show=False, id="player-end"),
        Binding("t", "transcript", "Transcript", id="player-transcript"),
        Binding("q,escape", "back", "Back", id="player-back-screen"),
    ]
    DEFAULT_CSS = """
    PlayerScreen {
        #info { height: auto; padding: 0 1; background: $panel; }
        #findings { height: auto; max-height: 6; padding: 0 1; color: $warning; }
        #stage { height: 1fr; }
        #stage TerminalView { width: 1fr; height: 1fr; border: round $primary; }
        #transcript { width: 1fr; display: none; border: round $warning; }
        #transcript.shown { display: block; }
        #status { height: 1; padding: 0 1; background: $panel; }
    }
    """

    def __init__(self, cast: Cast, name: str) -> None:
        super().__init__()
        self.cast = cast
        self.source = name
        self.position = 0.0
        self.index = 0  # events before this one are on the screen
        self.speed_index = SPEEDS.index(1.0)
        self.playing = True
        self._last_tick = time.monotonic()

    def compose(self) -> ComposeResult:
        cast = self.cast
        yield Static(
            Text.assemble(
                ("recording ", "bold"),
                f"{self.source} · {cast.title or 'untitled'} · {cast.width}x{cast.height} · "
                f"{len(cast.events)} events · {cast.duration:.1f} s · {len(cast.markers)} markers",
            ),
            id="info",
        )
        findings = cast.findings()
        rewrites = ", ".join(f"{what} {count}×" for what, count in cast.rewrites.most_common())
        lines = [f"⚠ {item}" for item in findings]
        if rewrites:
            lines.append(f"redraws (check the transcript, t): {rewrites}")
        yield Static(plain_lines(lines or ["no findings: the stream does nothing unusual"]), id="findings")
        with Horizontal(id="stage"):
            yield TerminalView(cast.width, cast.height, id="screen")
            yield RichLog(id="transcript", wrap=True, markup=False, max_lines=20000)
        yield Static("", id="status")
        yield Footer()

    @property
    def terminal(self) -> TerminalView:
        return self.query_one("#screen", TerminalView)

    def on_mount(self) -> None:
        transcript = self.query_one("#transcript", RichLog)
        for event in self.cast.events:
            prefix = {"o": "", "i": "[input] ", "r": "[resize] ", "m": "[marker] "}[event.kind]
            transcript.write(Text(f"{event.time:9.3f} {prefix}{visible(event.data)}"))
        self.set_interval(TICK, self._tick)
        self._show_status()

    def _tick(self) -> None:
        now = time.monotonic()
        elapsed, self._last_tick = now - self._last_tick, now
        if not self.playing:
            return
        self.position = min(self.position + elapsed * SPEEDS[self.speed_index], self.cast.duration)
        self._advance()
        if self.position >= self.cast.duration:
            self.playing = False
        self._show_status()

    def _advance(self) -> None:
        """Put every event up to the position on the screen."""
        events = self.cast.events
        output = bytearray()
        while self.index < len(events) and events[self.index].at <= self.position:
            event = events[self.index]
            if event.kind == "o":
                output += event.data.encode()
            elif event.kind == "r":
                if output:
                    self.terminal.feed(bytes(output))
                    output.clear()
                self.terminal.resize_screen(*size_of(event, self.cast))
            self.index += 1
        if output:
            self.terminal.feed(bytes(output))

    def seek(self, position: float) -> None:
        self.position = max(0.0, min(position, self.cast.duration))
        self.index = 0
        self.terminal.reset(self.cast.width, self.cast.height)
        self._advance()
        self._show_status()

    def _show_status(self) -> None:
        markers = self.cast.markers
        upcoming = next((m for m in markers if m.at > self.position), None)
        text = Text()
        text.append("▶ " if self.playing else "⏸ ", style="bold")
        text.append(f"{self.position:7.1f} / {self.cast.duration:.1f} s · {SPEEDS[self.speed_index]:g}x")
        if upcoming is not None:
            text.append(f" · next marker at {upcoming.at:.1f} s: {visible(upcoming.data)[:60]}")
        self.query_one("#status", Static).update(text)

    def action_play_pause(self) -> None:
        if not self.playing and self.position >= self.cast.duration:
            self.seek(0)
        self.playing = not self.playing
        self._show_status()

    def action_seek(self, delta: float) -> None:
        self.seek(self.position + delta)

    def action_seek_to(self, position: float) -> None:
        self.seek(self.cast.duration if position < 0 else position)

    def action_speed(self, step: int) -> None:
        self.speed_index = max(0, min(len(SPEEDS) - 1, self.speed_index + step))
        self._show_status()

    def action_marker(self, direction: int) -> None:
        markers = self.cast.markers
        if direction > 0:
            target = next((m.at for m in markers if m.at > self.position + 1e-6), None)
        else:
            target = next((m.at for m in reversed(markers) if m.at < self.position - 1e-6), None)
        if target is not None:
            self.seek(target)

    def action_transcript(self) -> None:
        self.query_one("#transcript", RichLog).toggle_class("shown")

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()
        else:
            self.app.exit()


class PlayerApp(App[None]):
    TITLE = "lifsea-tui play"

    def __init__(self, cast: Cast, name: str) -> None:
        super().__init__()
        self.cast = cast
        self.source = name

    def on_mount(self) -> None:
        self.push_screen(PlayerScreen(self.cast, self.source))


def findings_json(cast: Cast, title: str) -> dict[str, object]:
    """What --findings --json prints: a damaged file's problems, what its output tries to do (counted), and
    the ordinary redraws that can hide what was shown."""
    return {
        "recording": title,
        "width": cast.width,
        "height": cast.height,
        "duration_seconds": round(cast.duration, 3),
        "events": len(cast.events),
        "problems": cast.problems,
        "hostile": dict(cast.hostile.most_common()),
        "rewrites": dict(cast.rewrites.most_common()),
        "clean": not cast.findings(),
    }


def play_main(args: argparse.Namespace) -> int:
    """`lifsea-tui play FILE | NODE RECORDING_ID [--findings [--json]]` (the arguments: lifsea_tui.tui.cli)."""
    if args.recording is None:
        title = Path(args.source).name
        try:
            data = Path(args.source).read_bytes()
        except OSError as error:
            print(f"lifsea-tui play: {args.source}: {error.strerror or error}", file=sys.stderr)
            return 2
    else:
        from lifsea_tui.tui.audit_cli import recording

        args.node = args.source
        title = f"{args.node} {args.recording}"
        try:
            data, where = asyncio.run(recording(args))
        except (LookupError, ValueError) as error:
            print(visible(f"lifsea-tui play: {error}", keep_newlines=False), file=sys.stderr)
            return 1
        print(visible(f"lifsea-tui play: {title}: {where}", keep_newlines=False), file=sys.stderr)
    cast = parse(data)
    if args.findings:
        if args.json:
            print(json.dumps(findings_json(cast, title), indent=2))
        else:
            for line in cast.findings() or ["no findings"]:
                print(line)
            for what, count in cast.rewrites.most_common():
                print(f"redraw: {what} ({count}×)")
        return 1 if cast.findings() else 0
    PlayerApp(cast, title).run()
    return 0
