"""Commands the agent runs (ostree, runc): argument lists, a timeout, stderr in the error the user sees."""

from __future__ import annotations

import asyncio

from lifsea_tui.agent.errors import BackendError


async def run(argv: list[str], timeout: float, what: str) -> str:
    """Run a command; raise BackendError naming `what` and the last lines of stderr when it fails."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
        )
    except FileNotFoundError as error:
        raise BackendError("unavailable", f"{what}: {argv[0]} is not installed") from error
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise BackendError("failed", f"{what}: timed out after {timeout:.0f} s") from None
    except asyncio.CancelledError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        lines = [line for line in err.decode(errors="replace").strip().splitlines() if line.strip()]
        raise BackendError("failed", f"{what}: {' / '.join(lines[-3:]) or f'exit status {proc.returncode}'}")
    return out.decode(errors="replace")
