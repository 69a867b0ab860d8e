"""What the node is and runs: health, metrics, identity, deployments, summary, history, live events."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse, Response
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from lifsea_tui.agent import resources
from lifsea_tui.agent.errors import ApiError, BackendError
from lifsea_tui.agent.node import history, node_info
from lifsea_tui.agent.routes.deps import ERRORS, AgentDep
from lifsea_tui.agent.routes.streams import drain, limited
from lifsea_tui.api import (
    AuditHead,
    Capability,
    DeploymentList,
    EventsHello,
    HelloEvent,
    HistoryList,
    NodeInfo,
    NodeSummary,
)
from lifsea_tui.api import routes as r

router = APIRouter(responses=ERRORS)


@router.get(r.HEALTHZ, responses={200: {"content": {"text/plain": {}}}}, response_class=PlainTextResponse)
async def healthz() -> str:
    return "ok\n"


@router.get(r.METRICS, responses={200: {"content": {"text/plain": {}}}}, response_class=Response)
async def metrics(agent: AgentDep) -> Response:
    return Response(await agent.metrics.render(), media_type=CONTENT_TYPE_PLAIN_0_0_4)  # what Prometheus 2 reads


@router.get(r.NODE)
async def get_node(agent: AgentDep) -> NodeInfo:
    config = agent.config
    info = await node_info(
        config.node_name, config.host_root, agent.ostree, agent.systemd, agent.ops.unavailable_reason()
    )
    try:
        agent.journal.sources()
        info.capabilities["logs"] = Capability(available=True, reason=None)
    except BackendError as error:
        info.capabilities["logs"] = Capability(available=False, reason=error.detail)
    info.labels = config.labels
    return info


@router.get(r.DEPLOYMENTS)
async def get_deployments(agent: AgentDep) -> DeploymentList:
    deployments, booted_known = await agent.ostree.deployments()
    agent.note_boot(deployments)
    return DeploymentList(deployments=deployments, booted_known=booted_known)


@router.get(r.SUMMARY)
async def get_summary(agent: AgentDep) -> NodeSummary:
    deployments, booted_known = await agent.ostree.deployments()
    agent.note_boot(deployments)
    head = agent.audit.head
    return NodeSummary(
        deployments=DeploymentList(deployments=deployments, booted_known=booted_known),
        update=await agent.updates.status(),
        audit_head_seq=head.seq,
        audit_head_hash=head.hash if head.seq >= 0 else None,
        ops_sessions=len(agent.ops.sessions),
        failed_units=agent.services.failed_units(),
        labels=agent.config.labels,
        resources=await resources.read(agent.config.host_root, agent.systemd),
    )


@router.get(r.HISTORY)
async def get_history(agent: AgentDep) -> HistoryList:
    return HistoryList(entries=await history(agent.audit, agent.ostree))


@router.websocket(r.EVENTS)
async def events(websocket: WebSocket, agent: AgentDep) -> None:
    """A hello (deployments, update state, audit head), then every change the node makes, as it does."""

    async def stream(websocket: WebSocket) -> None:
        with agent.events.subscribe() as queue:
            try:
                deployments, booted_known = await agent.ostree.deployments()
                hello = EventsHello(
                    node=agent.config.node_name,
                    audit_head=AuditHead(seq=agent.audit.head.seq, hash=agent.audit.head.hash),
                    deployments=deployments,
                    booted_known=booted_known,
                    update=await agent.updates.status(),
                )
            except ApiError as error:
                hello = EventsHello(node=agent.config.node_name, error=error.detail)
            await websocket.send_text(HelloEvent(time=datetime.now(UTC), data=hello).model_dump_json())
            receiver = asyncio.create_task(drain(websocket))
            try:
                while not receiver.done():
                    getter = asyncio.create_task(queue.get())
                    done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
                    if getter not in done:
                        getter.cancel()
                        break
                    await websocket.send_text(getter.result().model_dump_json())
            except (WebSocketDisconnect, RuntimeError, OSError):
                pass
            finally:
                receiver.cancel()

    await limited(websocket, r.EVENTS, agent.event_streams, stream)
