"""What the shell screen sends, read by a real websocket server on the other side: a node that records
every frame of the attach protocol. Pasted text must arrive as typed, whatever it looks like."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from textual import events

from lifsea_tui.api import OpsSessionRequest
from lifsea_tui.api import ops as proto
from lifsea_tui.client.fleet import Fleet
from lifsea_tui.client.node import NodeTarget
from lifsea_tui.tui.app import LifseaApp
from lifsea_tui.tui.screens.shell import ShellScreen
from tests.attach import attach_node
from tests.helpers import Served, issue_pki, serve


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Served, Path, list[bytes]]]:
    ca, cert, key = issue_pki(tmp_path / "pki", "recorder")
    frames: list[bytes] = []
    served = serve(uvicorn.Config(attach_node(frames), ssl_certfile=str(cert), ssl_keyfile=str(key),
                                  log_level="critical", lifespan="off", ws="websockets-sansio"))  # fmt: skip
    yield served, ca, frames
    served.stop()


async def test_a_paste_that_looks_like_a_resize_is_sent_as_typed(
    node: tuple[Served, Path, list[bytes]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resizes once went through the input stream with a "\\x00resize:" prefix: a paste starting with it
    was taken as a resize, and a malformed one stopped all input for good."""
    monkeypatch.setenv("LIFSEA_TUI_STATE_DIR", str(tmp_path / "state"))
    served, ca, frames = node
    fleet = Fleet([NodeTarget(name="n", url=served.url, token="t", ca_file=ca)])
    app = LifseaApp(fleet, refresh_interval=3600)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = ShellScreen("n", fleet.client("n"), OpsSessionRequest(reason="INC-12", ttl_seconds=600))
        await app.push_screen(screen)
        deadline = time.monotonic() + 10
        while screen.state != "attached":
            assert time.monotonic() < deadline, screen.state
            await pilot.pause(0.05)
        for text in ("\x00resize:12x34", "\x00resize:bogus"):
            screen.terminal.post_message(events.Paste(text))
            await pilot.press("a")
        await pilot.resize_terminal(90, 28)
        await pilot.press("b")
        deadline = time.monotonic() + 10
        while not any(frame.endswith(b"b") for frame in frames):
            assert time.monotonic() < deadline, frames
            await asyncio.sleep(0.05)
    stdin = b"".join(frame[1:] for frame in frames if frame[0] == proto.STDIN)
    assert b"\x00resize:12x34" in stdin and b"\x00resize:bogus" in stdin and stdin.endswith(b"ab")
    controls = [frame[1:] for frame in frames if frame[0] == proto.CONTROL]
    assert not any(b"12" in c and b"34" in c for c in controls)  # never taken as a size
    assert any(b'"resize"' in c for c in controls)  # a real resize still goes as a control message
