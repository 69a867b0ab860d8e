"""Debian's Chromium, headless, driven over the Chrome DevTools Protocol (its own websocket, no driver).

Enough of CDP to try a page as a person would: open it, press keys, read what the page's websockets
received, and take a screenshot. The terminal in textual-serve's page draws on a canvas, so what it shows
is read from the bytes its websocket received (the console's own drawing of the screen).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import websockets

from lifsea_tui.lab.procs import stop

KEYS = {"Enter": (13, "\r"), "Escape": (27, ""), "Tab": (9, "\t")}


class Page:
    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.ids = itertools.count(1)
        self.answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.received = bytearray()  # every websocket frame the page received, in order
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.socket:
            message = json.loads(raw)
            if "id" in message and message["id"] in self.answers:
                self.answers.pop(message["id"]).set_result(message)
            elif message.get("method") == "Network.webSocketFrameReceived":
                frame = message["params"]["response"]
                data = frame["payloadData"]
                self.received += base64.b64decode(data) if frame.get("opcode") == 2 else data.encode()

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self.ids)
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.answers[number] = answer
        await self.socket.send(json.dumps({"id": number, "method": method, "params": params}))
        result = await asyncio.wait_for(answer, 30)
        if "error" in result:
            raise RuntimeError(f"{method}: {result['error']}")
        return dict(result.get("result", {}))

    def text(self) -> str:
        """What the page's websockets carried, escape sequences removed: the words drawn on the screen."""
        plain = re.sub(
            rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[@-_]", b"", bytes(self.received)
        )
        return plain.decode("utf-8", "replace")

    async def focus(self, selector: str) -> None:
        """Give the element the keyboard focus (xterm.js listens on a hidden textarea)."""
        found = await self.call(
            "Runtime.evaluate",
            expression=f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
            "if (!e) return false; e.focus(); return document.activeElement === e; })()",
            returnByValue=True,
        )
        assert found["result"]["value"] is True, f"no element {selector} to focus"

    async def press(self, key: str) -> None:
        code, text = KEYS[key] if key in KEYS else (ord(key.upper()), key)
        for kind in ("keyDown", "keyUp"):
            params: dict[str, Any] = {"type": kind, "key": key, "windowsVirtualKeyCode": code}
            if kind == "keyDown" and text:
                params["text"] = text
            await self.call("Input.dispatchKeyEvent", **params)

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))


@contextlib.asynccontextmanager
async def chromium(url: str, size: tuple[int, int] = (1400, 900)) -> AsyncIterator[Page]:
    """A headless Chromium showing `url`; its page's websocket frames are recorded from the start."""
    binary = shutil.which("chromium")
    if binary is None:
        raise FileNotFoundError("chromium is not installed (scripts/setup.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="lifsea-chromium-") as profile:
        process = subprocess.Popen(
            [
                binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
                f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}", "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            assert process.stderr is not None
            port = None
            for _ in range(200):
                line = (await asyncio.to_thread(process.stderr.readline)).decode(errors="replace")
                if found := re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line):
                    port = int(found.group(1))
                    break
                if not line and process.poll() is not None:
                    break
            assert port is not None, "chromium did not open its DevTools port"
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                pages = (await http.get("/json/list")).json()
                target = next(p for p in pages if p["type"] == "page")
            async with websockets.connect(target["webSocketDebuggerUrl"], max_size=None) as socket:
                page = Page(socket)
                await page.call("Network.enable")
                await page.call("Page.enable")
                await page.call("Page.navigate", url=url)
                try:
                    yield page
                finally:
                    page.reader.cancel()
        finally:
            stop(process)
