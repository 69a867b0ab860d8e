"""Long-lived websocket streams: held within the caller's and the agent's limits, drained for closes."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from fastapi import WebSocket, WebSocketDisconnect

from lifsea_tui.agent import audited
from lifsea_tui.agent.limits import LimitReached, StreamLimits
from lifsea_tui.agent.refusals import agent_of
from lifsea_tui.agent.routes.deps import caller
from lifsea_tui.api.routes import CLOSE_TOO_MANY


async def limited(
    websocket: WebSocket, route: str, limits: StreamLimits, serve: Callable[[WebSocket], Awaitable[None]]
) -> None:
    """Serve the (authorized) caller's stream while it, and everyone together, are within `limits`.

    Over them the socket closes with 4429; the caller's first such refusal is recorded at once, repeats
    (a caller retrying in a loop) go into the next summary."""
    identity = caller(websocket)
    try:
        with limits.hold(identity.actor):
            await serve(websocket)
        return
    except LimitReached as error:
        refusal = str(error)
    agent = agent_of(websocket)
    what = f"limit: WS {route}"
    if agent.refusals.first_in_interval(identity.actor, what):
        audited.note(
            agent.audit, identity, route.removeprefix("/v1/").replace("/", "."), f"refused: {refusal}",
            params={"close_code": CLOSE_TOO_MANY},
        )  # fmt: skip
    else:
        agent.refusals.count(what, websocket.client.host if websocket.client else None, identity.actor)
    await websocket.close(CLOSE_TOO_MANY, refusal[:120])


async def drain(websocket: WebSocket) -> None:
    """Read and ignore what the client sends; returns when it goes away."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
