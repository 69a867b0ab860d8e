"""A pull's progress on the node screen and in the fleet row, from a real agent on a tiny ostree node."""

from __future__ import annotations

import asyncio
import time

import httpx
from textual.containers import Horizontal
from textual.widgets import DataTable, Label, ProgressBar

from lifsea_tui.api import routes
from lifsea_tui.client.fleet import Fleet
from lifsea_tui.client.node import NodeTarget
from lifsea_tui.lab import image
from lifsea_tui.tui.app import LifseaApp
from lifsea_tui.tui.screens.node import NodeScreen
from lifsea_tui.tui.widgets.node.upgrades import UpgradesTab
from tests.helpers import RunningAgent, TinyNode


async def test_a_check_shows_its_pull_as_a_bar_with_objects_and_bytes(agent: RunningAgent, tiny_node: TinyNode) -> None:
    image.publish(tiny_node.repo, "1.1", extra={f"/usr/share/bulk/{n}": f"{n} " * 300 for n in range(6000)})
    target = NodeTarget(name="tiny", url=agent.url, token=agent.tokens["operator"], ca_file=agent.ca_file)
    app = LifseaApp(Fleet([target]), refresh_interval=1.0)
    async with app.run_test(size=(150, 40)) as pilot:
        app.push_screen(NodeScreen("tiny", tab="tab-upgrades"))
        await pilot.pause(1.0)
        tab = app.screen.query_one(UpgradesTab)
        async with httpx.AsyncClient(
            base_url=agent.url, verify=agent.ssl_context(), headers=agent.headers("operator"), timeout=60
        ) as http:
            checking = asyncio.ensure_future(http.post(routes.UPGRADES_CHECK, json={"reason": "bulk"}))
            seen: set[str] = set()
            deadline = time.monotonic() + 60
            while not checking.done():
                assert time.monotonic() < deadline
                if tab.query_one("#pull", Horizontal).has_class("running"):
                    figures = str(tab.query_one("#pull-figures", Label).render())
                    if " objects · " in figures:
                        seen.add(figures)
                        bar = tab.query_one("#pull-bar", ProgressBar)
                        assert bar.total is not None and bar.progress <= bar.total
                await pilot.pause(0.1)
            assert (await checking).status_code == 200
        assert seen, "no progress was shown while the check pulled"
        deadline = time.monotonic() + 10
        while tab.query_one("#pull", Horizontal).has_class("running"):  # gone once the check is done
            assert time.monotonic() < deadline
            await pilot.pause(0.1)
        await pilot.press("escape")
        await pilot.pause(0.5)
        row = app.screen.query_one("#nodes", DataTable).get_row("tiny")
        assert "available" in str(row[5])
