"""The node screen's tabs load their own data, and again only for the events that concern them: a real
server counts every GET while its event stream pushes a burst of unit changes, then an ops change."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from lifsea_tui.api import NodeSummary, OpsAccess, OpsChanged, OpsEvent, OpsSession, OpsSessionState
from lifsea_tui.api import routes as r
from lifsea_tui.client.fleet import Fleet
from lifsea_tui.client.node import NodeTarget
from lifsea_tui.tui.app import LifseaApp
from lifsea_tui.tui.screens.node import NodeScreen
from tests.frozen import DEPLOYMENTS, UPDATE, FrozenClient
from tests.helpers import Served, issue_pki, serve

READS = {
    r.NODE: "node", r.DEPLOYMENTS: "deployments", r.HISTORY: "history", r.UPGRADES: "upgrades", r.AUDIT: "audit",
    r.SERVICES: "services", r.OPS_SESSIONS: "ops_sessions", r.RECORDINGS: "recordings",
}  # fmt: skip


def counting_node(asked: Counter[str], go: asyncio.Event) -> Starlette:
    frozen = FrozenClient("n")

    async def read(request: Request) -> JSONResponse:
        template = request.scope["route"].path
        asked[template] += 1
        if template == r.SUMMARY:
            summary = NodeSummary(deployments={"deployments": DEPLOYMENTS, "booted_known": True}, update=UPDATE,  # type: ignore[arg-type]
                                  audit_head_seq=3, audit_head_hash="1" * 64)  # fmt: skip
            return JSONResponse(summary.model_dump(mode="json"))
        answer = await getattr(frozen, READS[template])()
        return JSONResponse(answer.model_dump(mode="json"))

    async def events(websocket: WebSocket) -> None:
        await websocket.accept()
        now = datetime.now(UTC).isoformat()
        await websocket.send_json({"kind": "hello", "time": now, "data": {"node": "n"}})
        await asyncio.sleep(1.5)  # the tabs have loaded
        go.set()
        for _ in range(20):  # a crash loop's burst of unit changes
            await websocket.send_json({"kind": "services", "time": now, "data": {"unit": "x.service"}})
        await asyncio.sleep(1.0)
        session = OpsSession(
            id="0" * 16, node="n", actor="me", reason="INC-12", ticket=None, access=OpsAccess.read_only,
            state=OpsSessionState.ended, created=datetime.now(UTC), expires_at=datetime.now(UTC), recording="0" * 16,
            audit_seq=1,
        )  # fmt: skip
        await websocket.send_text(OpsEvent(time=datetime.now(UTC), data=OpsChanged(session=session)).model_dump_json())
        await asyncio.sleep(1.0)
        await websocket.send_json({"kind": "lagged", "time": now, "data": {"dropped": 256}})
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            return

    routes = [Route(path, read) for path in [*READS, r.SUMMARY]]
    return Starlette(routes=[*routes, WebSocketRoute(r.EVENTS, events)])


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Served, Path, Counter[str], asyncio.Event]]:
    ca, cert, key = issue_pki(tmp_path / "pki", "counter")
    asked: Counter[str] = Counter()
    go = asyncio.Event()
    served = serve(uvicorn.Config(counting_node(asked, go), ssl_certfile=str(cert), ssl_keyfile=str(key),
                                  log_level="critical", lifespan="off", ws="websockets-sansio"))  # fmt: skip
    yield served, ca, asked, go
    served.stop()


async def test_each_tab_loads_again_only_for_what_concerns_it(
    node: tuple[Served, Path, Counter[str], asyncio.Event], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every event once reloaded all seven reads of the screen."""
    monkeypatch.setenv("LIFSEA_TUI_STATE_DIR", str(tmp_path / "state"))
    served, ca, asked, _ = node
    app = LifseaApp(Fleet([NodeTarget(name="n", url=served.url, token="t", ca_file=ca)]), refresh_interval=3600)
    async with app.run_test(size=(120, 32)) as pilot:
        app.push_screen(NodeScreen("n"))
        await pilot.pause(1.2)
        first = Counter({path: asked[path] for path in READS})
        deadline = time.monotonic() + 15
        while asked[r.RECORDINGS] < first[r.RECORDINGS] + 2:  # the ops change, then the lagged stream
            assert time.monotonic() < deadline, sorted(asked.items())
            await pilot.pause(0.1)
        await pilot.pause(0.5)
    assert all(first[path] == (2 if path == r.UPGRADES else 1) for path in READS), first  # once a tab, at the start
    after = {path: asked[path] - first[path] for path in READS}
    assert 1 <= after[r.SERVICES] <= 5, after  # 20 unit changes coalesce: a few loads (a loaded CI: 4), not 20
    assert after[r.NODE] == 1 and after[r.DEPLOYMENTS] == 1 and after[r.HISTORY] == 1, after  # only the lag
    assert after[r.OPS_SESSIONS] == 2 and after[r.AUDIT] == 2, after  # the ops change, then the lag
    assert after[r.UPGRADES] == 2, after  # the lag, for each of the two tabs that show the update
