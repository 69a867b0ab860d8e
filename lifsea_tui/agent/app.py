"""The agent's HTTP and websocket application: its routers, each behind one authorization, its error
shape, its limits, and the background work that lives as long as it does."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import AsyncIterator, Callable

from fastapi import Depends, FastAPI

from lifsea_tui import __version__
from lifsea_tui.agent import refusals
from lifsea_tui.agent.agent import Agent
from lifsea_tui.agent.config import AgentConfig
from lifsea_tui.agent.middleware import LimitsMiddleware
from lifsea_tui.agent.routes import ROUTERS

CONFIG_POLL = 5.0  # seconds between looks at the config files (a Secret's update lands without a SIGHUP)


def create_app(config: AgentConfig, reload: Callable[[], AgentConfig] | None = None) -> FastAPI:
    """`reload` reads the config file again: SIGHUP takes its tokens (an agent serving in its own
    process), and so does a change to the config or credentials file."""
    agent = Agent(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        watching = None
        if reload is not None:
            if threading.current_thread() is threading.main_thread():
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, agent.reload, reload)
            watching = asyncio.create_task(agent.watch_sources(reload, CONFIG_POLL))
        await agent.start()
        watcher = asyncio.create_task(agent.watch())
        unit_watcher = asyncio.create_task(agent.services.watch())
        summaries = asyncio.create_task(agent.refusals.run(config.limits.refusal_summary_seconds))
        try:
            yield
        finally:
            watcher.cancel()
            unit_watcher.cancel()
            summaries.cancel()
            if watching is not None:
                watching.cancel()
            await asyncio.gather(summaries, return_exceptions=True)
            await agent.ops.shutdown()
            await agent.updates.shutdown()

    app = FastAPI(title="lifsea-agent", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.agent = agent
    for router in ROUTERS:
        app.include_router(router, dependencies=[Depends(refusals.authorize)])
    refusals.install(app)
    app.add_middleware(LimitsMiddleware, agent=agent)
    return app
