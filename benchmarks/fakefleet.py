"""Many lightweight nodes in one process: one TLS port per node, answering the read routes the console's
fleet refresh calls, with the API's own models. A real agent needs ~70 MB, so a thousand of them do not
fit this machine; these stand in for them in the fleet benchmark only.

With --upgrades STAGE REBOOT each node also runs the upgrade state machine a rollout drives (check,
stage taking STAGE seconds, reboot taking REBOOT seconds during which the node does not answer, rollback),
so the fleet controller can be measured against a thousand of them.

Run: python -m benchmarks.fakefleet COUNT CERT KEY [--upgrades STAGE REBOOT]; prints {"ports": [...]} on
one line, then serves until stdin closes.

Each node also serves /v1/events as the agent does: a websocket that opens with a hello (the node's
state), answers pings and stays open (it pushes nothing after the hello), so a console that follows its
nodes' streams (up to its events_limit) holds them as it would real ones.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import time
from datetime import UTC, datetime

from websockets.server import ServerProtocol

from lifsea_tui.api import (
    AuditHead,
    Capability,
    Deployment,
    DeploymentList,
    EventsHello,
    HelloEvent,
    NodeInfo,
    NodeSummary,
    UpdateState,
    UpdateStatus,
    UpdateTarget,
)
from lifsea_tui.api import routes as r


def bodies(name: str, index: int) -> dict[str, bytes]:
    now = datetime.now(UTC)
    version = "1.1" if index % 7 == 0 else "1.0"
    checksum = f"{index:064x}"
    deployment = Deployment(
        index=0,
        osname="lifsea",
        checksum=checksum,
        serial=0,
        version=version,
        timestamp=now,
        subject=f"LifseaOS {version}",
        origin_refspec="lab:lifsea/x86_64/stable",
        booted=True,
        default=True,
        pending=False,
        rollback=False,
        pinned=False,
    )
    info = NodeInfo(
        name=name,
        machine_id=f"{index:032x}",
        os_name="LifseaOS",
        os_version=version,
        kernel="6.1",
        uptime_seconds=3600.0,
        agent_version="bench",
        booted_checksum=checksum,
        capabilities={"deployments": Capability(available=True)},
    )
    update = UpdateStatus(
        state=UpdateState.idle,
        refspec="lab:lifsea/x86_64/stable",
        booted_checksum=checksum,
        targets=[],
        operation=None,
        last_error=None,
        last_checked=None,
        changed_at=now,
    )
    listing = DeploymentList(deployments=[deployment], booted_known=True)
    return {
        r.SUMMARY: NodeSummary(deployments=listing, update=update, audit_head_seq=41, audit_head_hash="f" * 64)
        .model_dump_json()
        .encode(),
        r.NODE: info.model_dump_json().encode(),
        r.DEPLOYMENTS: listing.model_dump_json().encode(),
        r.UPGRADES: update.model_dump_json().encode(),
    }


OLD, NEW = "a" * 64, "b" * 64


class UpgradingNode:
    """One node's deployments and update state, moved by the routes a rollout calls, in real time."""

    def __init__(self, name: str, index: int, stage_delay: float, reboot_delay: float) -> None:
        self.name, self.index = name, index
        self.stage_delay, self.reboot_delay = stage_delay, reboot_delay
        self.booted, self.default, self.other = OLD, OLD, None  # checksums
        self.state = UpdateState.idle
        self.staged_at: float | None = None
        self.boot_time = time.time() - 3600
        self.down_until = 0.0

    def down(self) -> bool:
        now = time.time()
        if self.down_until and now >= self.down_until:  # the reboot ends: boot the default deployment
            self.down_until = 0.0
            self.booted, self.boot_time = self.default, now
            self.state = UpdateState.idle
        return now < self.down_until

    def _deployment(self, index: int, checksum: str) -> Deployment:
        version = "1.1" if checksum == NEW else "1.0"
        return Deployment(
            index=index,
            osname="lifsea",
            checksum=checksum,
            serial=0,
            version=version,
            timestamp=None,
            subject=f"LifseaOS {version}",
            origin_refspec="lab:lifsea/x86_64/stable",
            booted=checksum == self.booted,
            default=index == 0,
            pending=index == 0 and checksum != self.booted,
            rollback=index == 1 and checksum != self.booted,
            pinned=False,
        )

    def summary(self) -> bytes:
        if self.state is UpdateState.staging and self.staged_at and time.time() >= self.staged_at:
            self.state, self.other, self.default = UpdateState.staged, self.default, NEW
        order = [self.default] + [c for c in (self.booted, self.other) if c and c != self.default]
        listing = DeploymentList(
            deployments=[self._deployment(i, c) for i, c in enumerate(order[:2])], booted_known=True
        )
        targets = (
            []
            if NEW in order
            else [UpdateTarget(checksum=NEW, version="1.1", timestamp=None, subject="LifseaOS 1.1", diff=None)]
        )
        update = UpdateStatus(
            state=self.state,
            refspec="lab:lifsea/x86_64/stable",
            booted_checksum=self.booted,
            targets=targets,
            operation="stage" if self.state is UpdateState.staging else None,
            last_error=None,
            last_checked=None,
            changed_at=datetime.now(UTC),
        )
        return (
            NodeSummary(deployments=listing, update=update, audit_head_seq=1, audit_head_hash=None, failed_units=[])
            .model_dump_json()
            .encode()
        )

    def info(self) -> bytes:
        version = "1.1" if self.booted == NEW else "1.0"
        return (
            NodeInfo(
                name=self.name,
                machine_id=f"{self.index:032x}",
                os_name="LifseaOS",
                os_version=version,
                kernel="6.1",
                uptime_seconds=time.time() - self.boot_time,
                agent_version="bench",
                booted_checksum=self.booted,
                capabilities={"deployments": Capability(available=True)},
            )
            .model_dump_json()
            .encode()
        )

    def answer(self, method: str, path: str) -> tuple[int, bytes] | None:
        """(status, body), or None: the node is rebooting and does not answer at all."""
        if self.down():
            return None
        if method == "GET" and path == r.SUMMARY:
            return 200, self.summary()
        if method == "GET" and path == r.NODE:
            return 200, self.info()
        if method == "POST":
            if path == r.UPGRADES_STAGE:
                self.state, self.staged_at = UpdateState.staging, time.time() + self.stage_delay
            elif path == r.UPGRADES_CANCEL:
                self.state, self.default = UpdateState.idle, self.booted
            elif path == r.ROLLBACK and self.other:
                self.default, self.other = self.other, self.default
            elif path == r.REBOOT:
                self.down_until = time.time() + self.reboot_delay
            elif path != r.UPGRADES_CHECK:
                return 404, b'{"error":"not_found","detail":"no such route"}'
            result = {
                "operation": path,
                "accepted": True,
                "audit_seq": 1,
                "status": json.loads(self.summary())["update"],
            }
            return (202 if path == r.UPGRADES_STAGE else 200), json.dumps(result).encode()
        return 404, b'{"error":"not_found","detail":"no such route"}'


def hello(name: str, summary: bytes) -> str:
    """The first message of a node's event stream, from what its summary says."""
    node = NodeSummary.model_validate_json(summary)
    head = AuditHead(seq=node.audit_head_seq, hash=node.audit_head_hash) if node.audit_head_hash else None
    data = EventsHello(
        node=name,
        audit_head=head,
        deployments=node.deployments.deployments,
        booted_known=node.deployments.booted_known,
        update=node.update,
    )
    return HelloEvent(time=datetime.now(UTC), data=data).model_dump_json()


async def serve_events(head: bytes, first: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The websocket handshake in `head`, the hello, then pongs for pings until the client closes."""
    protocol = ServerProtocol()
    protocol.receive_data(head)
    request = next(event for event in protocol.events_received())
    protocol.send_response(protocol.accept(request))
    if protocol.handshake_exc is None:
        protocol.send_text(first.encode())
    writer.write(b"".join(protocol.data_to_send()))
    while protocol.handshake_exc is None and not protocol.close_expected():
        data = await reader.read(65536)
        if not data:
            return
        protocol.receive_data(data)
        protocol.events_received()  # pings are answered by the protocol itself
        writer.write(b"".join(protocol.data_to_send()))
        await writer.drain()


async def serve_node(
    name: str, answers: dict[str, bytes] | UpgradingNode, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            method, path = (part.decode() for part in head.split(b" ", 2)[:2])
            if path == r.EVENTS and b"upgrade: websocket" in head.lower():
                if isinstance(answers, UpgradingNode) and answers.down():
                    return
                summary = answers.summary() if isinstance(answers, UpgradingNode) else answers[r.SUMMARY]
                await serve_events(head, hello(name, summary), reader, writer)
                return
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                ),
                0,
            )
            if length:
                await reader.readexactly(length)
            path = path.split("?", 1)[0]
            if isinstance(answers, UpgradingNode):
                answered = answers.answer(method, path)
                if answered is None:
                    return  # rebooting: the connection drops, as a node going down drops it
                code, body = answered
                status = {200: b"200 OK", 202: b"202 Accepted"}.get(code, b"404 Not Found")
            else:
                found = answers.get(path)
                status = b"200 OK" if found is not None else b"404 Not Found"
                body = found if found is not None else b'{"error":"not_found","detail":"no such route"}'
            writer.write(
                b"HTTP/1.1 "
                + status
                + b"\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def main() -> None:
    count, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    upgrades = sys.argv[4:5] == ["--upgrades"]
    stage_delay, reboot_delay = (float(sys.argv[5]), float(sys.argv[6])) if upgrades else (0.0, 0.0)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.num_tickets = 0  # as the agent's (agent/tls.py)
    servers, ports = [], []
    for index in range(count):
        name = f"fake-{index:04}"
        answers: dict[str, bytes] | UpgradingNode = (
            UpgradingNode(name, index, stage_delay, reboot_delay) if upgrades else bodies(name, index)
        )
        server = await asyncio.start_server(
            lambda rd, wr, n=name, a=answers: serve_node(n, a, rd, wr), "127.0.0.1", 0, ssl=context, backlog=64
        )
        servers.append(server)
        ports.append(server.sockets[0].getsockname()[1])
    print(json.dumps({"ports": ports}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main())
