"""Tokens as an operator manages them: made by `lifsea-agent token new`, refused once expired, and taken
again on SIGHUP by an agent serving in its own process, without dropping the streams that are open."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import websockets

from lifsea_tui.api import routes
from tests.helpers import TinyNode, kill_agent, serve_agent, write_agent_config

EXPIRED = '\n[[tokens]]\nname = "old-bob"\nrole = "reader"\nsha256 = "{digest}"\nexpires = 2020-01-01T00:00:00Z\n'


def token_new(*args: str) -> tuple[str, str]:
    made = subprocess.run(
        [sys.executable, "-m", "lifsea_tui.agent.cli", "token", "new", *args], capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    token, _, entry = made.stdout.partition("\n")
    return token, entry


async def test_tokens_are_made_expire_and_are_taken_again_on_sighup(tmp_path: Path, tiny_node: TinyNode) -> None:
    config, info = write_agent_config(tmp_path / "agent", host_root=tiny_node.host_root, sysroot_path=tiny_node.sysroot)
    bob, _ = token_new("--name", "bob", "--role", "reader")
    digest = subprocess.run(
        [sys.executable, "-m", "lifsea_tui.agent.cli", "hash-token"], input=bob, capture_output=True, text=True
    ).stdout.strip()
    config.write_text(config.read_text() + EXPIRED.format(digest=digest))
    carol, entry = token_new("--name", "carol", "--role", "operator", "--expires", "30d")
    assert carol not in entry and "expires = " in entry and 'role = "operator"' in entry
    refused = subprocess.run(
        [sys.executable, "-m", "lifsea_tui.agent.cli", "token", "new", "--name", "x", "--role", "god"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode == 2 and "invalid choice" in refused.stderr
    proc = serve_agent(config, info)
    events_url = info["url"].replace("https://", "wss://") + routes.EVENTS
    tls = ssl.create_default_context(cafile=str(info["ca"]))
    try:
        async with (
            httpx.AsyncClient(base_url=info["url"], verify=tls) as http,
            websockets.connect(
                events_url, ssl=tls, additional_headers={"Authorization": f"Bearer {info['tokens']['reader']}"}
            ) as stream,
        ):
            assert json.loads(await stream.recv())["kind"] == "hello"

            async def node(token: str) -> httpx.Response:
                return await http.get(routes.NODE, headers={"Authorization": f"Bearer {token}"})

            expired = await node(bob)
            assert expired.status_code == 401
            assert "token old-bob expired at 2020-01-01T00:00:00Z" in expired.json()["detail"]
            assert (await node(carol)).status_code == 401  # not in the config yet

            config.write_text(config.read_text() + "\n" + entry)
            os.kill(proc.pid, signal.SIGHUP)
            deadline = time.monotonic() + 10
            while (await node(carol)).status_code != 200:
                assert time.monotonic() < deadline, "the new token was not taken on SIGHUP"
                await asyncio.sleep(0.1)
            await asyncio.wait_for(await stream.ping(), 5)  # the stream opened before the reload is still open

            # A file that no longer loads changes nothing, and says why.
            good = config.read_text()
            config.write_text(good.replace("[listen]", "[listn]"))
            os.kill(proc.pid, signal.SIGHUP)
            await asyncio.sleep(1)
            assert (await node(carol)).status_code == 200
            operator = {"Authorization": f"Bearer {info['tokens']['operator']}"}
            records = (await http.get(routes.AUDIT, params={"limit": 1000}, headers=operator)).json()["records"]
            reloads = [(r["outcome"], r["params"]) for r in records if r["action"] == "agent.reload"]
            assert reloads[0][0] == "ok" and "carol" in reloads[0][1]["tokens"], reloads
            failed = next(outcome for outcome, _ in reloads if outcome.startswith("failed: "))
            assert "unknown key listn" in failed, reloads
            await asyncio.wait_for(await stream.ping(), 5)

            # No signal at all: a changed file is taken within seconds (a Kubernetes Secret updated).
            dave, dave_entry = token_new("--name", "dave", "--role", "reader")
            config.write_text(good + "\n" + dave_entry)
            deadline = time.monotonic() + 20
            while (await node(dave)).status_code != 200:
                assert time.monotonic() < deadline, "a changed config file was not taken without SIGHUP"
                await asyncio.sleep(0.3)
    finally:
        kill_agent(proc)
