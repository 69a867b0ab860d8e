"""Where a keystroke's echo spends its time: the floor of each hop the break-glass shell adds, measured
alone in the same run, so the full figure of ops_shell.py can be read hop by hop.

Each line is a round trip of one byte, p50 and p99 over many, client on uvloop (as `lifsea-tui shell`):

- pty: a shell in a pseudo-terminal echoing a key (the floor ssh and the ops shell both pay);
- tcp: an echo server in another Python process on uvloop (two processes' loop wake-ups);
- tls: the same with TLS on both sides (uvloop's own TLS);
- tls-asyncio: the server's TLS done by asyncio's TLS protocol in Python, as the agent does it (it puts
  the protocol on each connection itself, to hear failed handshakes and bound them);
- websocket: a websockets client and uvicorn's websockets-sansio server over TLS (the agent's own
  server stack with an echo app instead of a session): framing and ASGI on top of tls;
- ops (from ops_shell.py, not here): websocket plus the agent's session, its PTY and the recording.

Prints each figure and appends JSON lines to benchmarks/results/echo_hops.jsonl.
Run: `python -m benchmarks.echo_hops [--keys N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pty
import select
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import websockets

from benchmarks.results import pct, recorder
from lifsea_tui.client.netloop import new_event_loop
from lifsea_tui.lab import certs

record = recorder("echo_hops.jsonl")

# The echo servers, each in a process of its own (as the agent is), on uvloop. argv: kind port cert key.
SERVER = r"""
import asyncio, ssl, sys, uvloop
kind, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
if kind == "websocket":
    import uvicorn
    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            await send({"type": "websocket.send", "bytes": message["bytes"]})
    uvicorn.run(app, host="127.0.0.1", port=port, ssl_certfile=cert, ssl_keyfile=key, loop="uvloop",
                ws="websockets-sansio", log_level="warning")
else:
    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
        def data_received(self, data):
            self.transport.write(data)
    class PythonTls(asyncio.Protocol):  # what the agent does (agent/limits.py): asyncio's TLS protocol
        def connection_made(self, transport):
            from lifsea_tui.agent.limits import SmallBufferSSLProtocol
            secure = SmallBufferSSLProtocol(asyncio.get_running_loop(), Echo(), context, None, server_side=True)
            transport.set_protocol(secure)
            secure.connection_made(transport)
    async def main():
        loop = asyncio.get_running_loop()
        factory = PythonTls if kind == "tls-asyncio" else Echo
        server = await loop.create_server(factory, "127.0.0.1", port, ssl=context if kind == "tls" else None)
        print("ready", flush=True)
        await server.serve_forever()
    uvloop.run(main())
"""


def pty_echo(keys: int) -> list[float]:
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe("/bin/sh", ["sh", "-i"], {"PS1": "P$ ", "PATH": "/usr/bin:/bin", "TERM": "xterm"})
    seen = b""
    while b"P$ " not in seen:
        select.select([fd], [], [], 5)
        seen += os.read(fd, 4096)
    out = []
    for _ in range(keys):
        started = time.perf_counter()
        os.write(fd, b"x")
        while b"x" not in os.read(fd, 4096):
            pass
        out.append((time.perf_counter() - started) * 1000)
        os.write(fd, b"\x7f")  # erase it again
        select.select([fd], [], [], 1)
        os.read(fd, 4096)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return out


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def stream_echo(port: int, context: ssl.SSLContext | None, keys: int) -> list[float]:
    for _ in range(100):
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1" if context else None
            )
            break
        except OSError:
            await asyncio.sleep(0.05)
    out = []
    for _ in range(keys):
        started = time.perf_counter()
        writer.write(b"x")
        await reader.readexactly(1)
        out.append((time.perf_counter() - started) * 1000)
    writer.close()
    return out


async def websocket_echo(port: int, context: ssl.SSLContext, keys: int) -> list[float]:
    for _ in range(100):
        try:
            socket = await websockets.connect(f"wss://127.0.0.1:{port}/", ssl=context, compression=None)
            break
        except OSError:
            await asyncio.sleep(0.05)
    out = []
    async with socket:
        for _ in range(keys):
            started = time.perf_counter()
            await socket.send(b"x")
            await socket.recv()
            out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lifsea-bench-hops-"))
    cert, key = certs.issue(work / "ca", work / "certs", "echo")
    context = ssl.create_default_context(cafile=str(work / "ca" / "ca.pem"))
    figures: dict[str, list[float]] = {"pty": pty_echo(args.keys)}
    for kind in ("tcp", "tls", "tls-asyncio", "websocket"):
        port = free_port()
        server = subprocess.Popen([sys.executable, "-c", SERVER, kind, str(port), str(cert), str(key)])
        try:
            with asyncio.Runner(loop_factory=new_event_loop) as runner:
                if kind == "websocket":
                    figures[kind] = runner.run(websocket_echo(port, context, args.keys))
                else:
                    tls = context if kind.startswith("tls") else None
                    figures[kind] = runner.run(stream_echo(port, tls, args.keys))
        finally:
            server.kill()
            server.wait()
    below = {"tcp": None, "tls": "tcp", "tls-asyncio": "tcp", "websocket": "tls"}  # what each adds to
    for kind, values in figures.items():
        base = below.get(kind)
        record(
            f"echo hop: {kind}",
            keys=len(values),
            p50_ms=round(pct(values, 50), 3),
            p99_ms=round(pct(values, 99), 3),
            over=base,
            added_p50_ms=round(pct(values, 50) - pct(figures[base], 50), 3) if base else None,
        )


if __name__ == "__main__":
    main()
