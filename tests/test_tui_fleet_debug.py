"""The fleet's Debug screen asks a big fleet at a bounded pace: a real server in front of 60 node
targets counts how many nodes it is being asked about at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from textual.widgets import Static

from lifsea_tui.client.fleet import Fleet
from lifsea_tui.client.node import NodeTarget
from lifsea_tui.tui.app import LifseaApp
from tests.helpers import Served, issue_pki, serve

NODES = 60
BOUND = 8


class Counter:
    def __init__(self) -> None:
        self.in_flight: dict[str, int] = {}
        self.most_nodes = 0
        self.asked: set[str] = set()


def counting_node(counter: Counter) -> Starlette:
    """Every node answers slowly that its backend is down: what matters is how many are asked at once."""

    async def answer(request: Request) -> JSONResponse:
        node = request.headers.get("authorization", "")
        counter.asked.add(node)
        counter.in_flight[node] = counter.in_flight.get(node, 0) + 1
        counter.most_nodes = max(counter.most_nodes, sum(1 for n in counter.in_flight.values() if n))
        try:
            await asyncio.sleep(0.1)
        finally:
            counter.in_flight[node] -= 1
        return JSONResponse({"error": "unavailable", "detail": "down for the test"}, status_code=503)

    return Starlette(routes=[Route("/{path:path}", answer, methods=["GET", "POST"])])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Served, Path, Counter]]:
    ca, cert, key = issue_pki(tmp_path / "pki", "counter")
    counter = Counter()
    served = serve(uvicorn.Config(counting_node(counter), ssl_certfile=str(cert), ssl_keyfile=str(key),
                                  log_level="critical", lifespan="off"))  # fmt: skip
    yield served, ca, counter
    served.stop()


async def test_fleet_debug_asks_at_most_the_fleets_concurrency_of_nodes_at_once(
    server: tuple[Served, Path, Counter], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It once started one worker per node with no bound: 1,000 nodes, 1,000 check sets at once."""
    monkeypatch.setenv("LIFSEA_TUI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LIFSEA_TUI_CONFIG_DIR", str(tmp_path / "config"))
    served, ca, counter = server
    targets = [NodeTarget(name=f"n{i:02}", url=served.url, token=f"t{i}", ca_file=ca) for i in range(NODES)]
    app = LifseaApp(Fleet(targets, concurrency=BOUND), refresh_interval=3600)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause(0.5)
        counter.most_nodes = 0
        await pilot.press("d")
        deadline = time.monotonic() + 60
        while f"{NODES} of {NODES} nodes checked" not in str(
            app.screen.query_one("#fleet-debug-status", Static).content
        ):
            assert time.monotonic() < deadline, "the fleet debug screen did not finish"
            await pilot.pause(0.1)
    assert len(counter.asked) == NODES
    assert 1 < counter.most_nodes <= BOUND, counter.most_nodes
