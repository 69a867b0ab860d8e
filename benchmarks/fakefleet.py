"""Many lightweight nodes in one process: one TLS port per node, answering the read routes the console's
fleet refresh calls, with the API's own models. A real agent needs ~70 MB, so a thousand of them do not
fit this machine; these stand in for them in the fleet benchmark only.

Run: python -m benchmarks.fakefleet COUNT CERT KEY; prints {"ports": [...]} on one line, then serves
until stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from datetime import UTC, datetime

from lifsea_tui.api import Capability, Deployment, DeploymentList, NodeInfo, NodeSummary, UpdateState, UpdateStatus
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


async def serve_node(answers: dict[str, bytes], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            body = answers.get(path)
            status = b"200 OK" if body is not None else b"404 Not Found"
            body = body if body is not None else b'{"error":"not_found","detail":"no such route"}'
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
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    servers, ports = [], []
    for index in range(count):
        answers = bodies(f"fake-{index:04}", index)
        server = await asyncio.start_server(
            lambda rd, wr, a=answers: serve_node(a, rd, wr), "127.0.0.1", 0, ssl=context, backlog=64
        )
        servers.append(server)
        ports.append(server.sockets[0].getsockname()[1])
    print(json.dumps({"ports": ports}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main())
