"""The console on the lab as its users reach it: `lifsea-tui serve` in Debian's Chromium (headless), with
the key and the Origin check that keep anyone else from driving it; and `lifsea-tui get` from a script."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from lifsea_tui.lab.layout import Layout
from lifsea_tui.lab.procs import free_port, stop
from lifsea_tui.tui.serve import COOKIE
from tests.browser import Page, chromium

pytestmark = pytest.mark.lab


@contextlib.contextmanager
def serving(env: dict[str, str], state: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "lifsea_tui.tui.cli", "serve", "--port", str(port), *extra],
        env={**env, "LIFSEA_TUI_STATE_DIR": str(state)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.search(r"open (http://\S+)", line)
        assert found, f"serve printed {line!r}; stderr: {process.stderr.read() if process.poll() is not None else ''}"
        yield process, found.group(1)
    finally:
        stop(process, 20)


async def shown(page: Page, *words: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not all(word in page.text() for word in words):
        missing = [word for word in words if word not in page.text()]
        assert time.monotonic() < deadline, f"never shown in the browser: {missing}; last: {page.text()[-1500:]!r}"
        await asyncio.sleep(0.2)


async def test_the_console_in_a_browser_shows_the_lab(
    fleet: tuple[dict, dict[str, str], Layout], tmp_path: Path
) -> None:
    status, env, layout = fleet
    with serving(env, tmp_path / "state", "--lab-dir", str(layout.root)) as (_, url):
        base, key = url.split("/?key=")
        assert httpx.get(f"{base}/").status_code == 403  # no key, no console
        assert httpx.get(f"{base}/?key=not-{key}").status_code == 403
        opened = httpx.get(url)
        assert opened.status_code == 200 and opened.cookies.get(COOKIE) == key
        assert "SameSite=Strict" in opened.headers["set-cookie"] and "HttpOnly" in opened.headers["set-cookie"]
        ws = base.replace("http://", "ws://") + "/ws"
        for headers in ({}, {"Cookie": f"{COOKIE}={key}", "Origin": "http://evil.example"}):
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(ws, additional_headers=headers):
                    pass
            assert refused.value.response.status_code == 403
        async with chromium(url) as page:
            # The lab's nodes, answered (a row says "connecting" until then; "ago" is its last answer).
            await shown(page, *(node["name"] for node in status["nodes"]), "Versions", "lifsea-tui · lab", "s ago")
            await page.screenshot(tmp_path / "fleet.png")
            await page.focus(".xterm-helper-textarea")
            await page.press("Enter")  # open the node under the cursor, as a person would
            await shown(page, "Capabilities", "Resources")
            await page.screenshot(tmp_path / "node.png")
    consoles = subprocess.run(["pgrep", "-f", f"lifsea_tui.tui.cli --lab-dir {layout.root}"], capture_output=True)
    assert consoles.stdout == b"", "a browser's console outlived the server"


def test_serve_off_loopback_says_who_can_reach_it(fleet: tuple[dict, dict[str, str], Layout], tmp_path: Path) -> None:
    _, env, layout = fleet
    with serving(env, tmp_path / "state", "--host", "0.0.0.0", "--lab-dir", str(layout.root)) as (process, url):
        assert url.startswith("http://127.0.0.1:")
        process.terminate()
        process.wait(20)
        assert process.stderr is not None
        said = process.stderr.read()
    assert "every network this machine is on" in said and "can open this console" in said and "TLS proxy" in said


def test_get_lists_the_lab_by_label(fleet: tuple[dict, dict[str, str], Layout]) -> None:
    """`lifsea-tui get` on the lab, as a script would: the agents' own labels select, json carries them."""
    _, env, layout = fleet
    command = [sys.executable, "-m", "lifsea_tui.tui.cli", "get", "nodes", "--lab-dir", str(layout.root)]
    zone_a = subprocess.run([*command, "-l", "zone=a", "-o", "json"], capture_output=True, text=True, env=env)
    assert zone_a.returncode == 0, zone_a.stderr
    listed = json.loads(zone_a.stdout)
    assert [item["node"] for item in listed] == ["node1"] and listed[0]["labels"]["zone"] == "a"
    assert listed[0]["summary"]["resources"]["var_total_bytes"] > 0
    table = subprocess.run([*command, "-o", "wide"], capture_output=True, text=True, env=env)
    assert table.returncode == 0 and [line.split()[0] for line in table.stdout.splitlines()[1:]] == ["node1", "node2"]
    assert "pool=lab,zone=b" in table.stdout
