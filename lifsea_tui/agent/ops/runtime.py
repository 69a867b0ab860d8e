"""The container runtime of ops sessions: the ops image, runc, and the terminal runc hands over.

The ops image is checked out of the node's ostree repo once per commit (pulled first if the node does
not have it). A session's container is started with `runc run --detach --console-socket`: runc hands
back the terminal's master side over a unix socket, and the agent, a child subreaper, adopts the shell
when runc exits, so it learns the shell's exit status. Each agent keeps runc's state in a root of its
own, so another agent on the machine (the lab runs one a node) never touches its containers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import re
import secrets
import socket
import tempfile
from pathlib import Path
from typing import Any

from lifsea_tui.agent.config import OpsConfig
from lifsea_tui.agent.errors import BackendError
from lifsea_tui.agent.ops import access
from lifsea_tui.agent.process import run

log = logging.getLogger("lifsea.agent.ops")

CONTAINER_PREFIX = "lifsea-ops-"
RUNC_TIMEOUT = 20.0
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Adopt orphaned descendants (the shell, once `runc run -d` exits) so their exit status is ours."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


class Runtime:
    def __init__(self, ops: OpsConfig, repo: Path, pull_timeout: float) -> None:
        self.ops = ops
        self.repo = repo
        self.pull_timeout = pull_timeout
        self.runc = ["runc", f"--root={ops.dir / 'runc'}"]
        self._image_lock = asyncio.Lock()

    async def version_problem(self) -> str | None:
        """Why this runc cannot hold the access levels, or None (None too when it cannot be asked)."""
        with contextlib.suppress(BackendError):
            return access.runc_too_old(await run([*self.runc, "--version"], RUNC_TIMEOUT, "runc --version"))
        return None

    async def containers(self) -> list[str]:
        """This agent's ops containers that runc knows of."""
        with contextlib.suppress(BackendError):
            listing = json.loads(await run([*self.runc, "list", "--format=json"], RUNC_TIMEOUT, "runc list") or "null")
            return [str(c.get("id", "")) for c in listing or [] if str(c.get("id", "")).startswith(CONTAINER_PREFIX)]
        return []

    async def image_root(self) -> Path:
        """The ops image checked out of the node's repo (pulled first if the node does not have it)."""
        assert self.ops.image is not None
        repo = self.repo
        async with self._image_lock:
            try:
                rev = (
                    await run(["ostree", f"--repo={repo}", "rev-parse", self.ops.image], 30, "find the ops image")
                ).strip()
            except BackendError:
                if ":" not in self.ops.image:
                    raise
                remote, ref = self.ops.image.split(":", 1)
                await run(["ostree", f"--repo={repo}", "pull", remote, ref], self.pull_timeout, "pull the ops image")
                rev = (
                    await run(["ostree", f"--repo={repo}", "rev-parse", self.ops.image], 30, "find the ops image")
                ).strip()
            root = self.ops.dir / "images" / rev
            if not root.is_dir():
                tmp = root.with_name(f"{rev}.tmp-{secrets.token_hex(4)}")
                tmp.parent.mkdir(parents=True, exist_ok=True)
                await run(["ostree", f"--repo={repo}", "checkout", rev, str(tmp)], 300, "check out the ops image")
                os.replace(tmp, root)
            return root

    async def start(self, spec: dict[str, Any], bundle: Path, container: str) -> tuple[int, int]:
        """Start the container of `spec` in `bundle`; the terminal's master side (non-blocking) and the
        shell's pid."""
        (bundle / "config.json").write_text(json.dumps(spec))
        pid_file = bundle / "pid"
        # A socket path must fit in 108 bytes, which the bundle's may not: a private directory in /tmp.
        with tempfile.TemporaryDirectory(prefix="lifsea-ops-") as private, socket.socket(socket.AF_UNIX) as listener:
            console = Path(private) / "console.sock"
            listener.bind(str(console))
            listener.listen(1)
            try:
                await run(
                    [*self.runc, "run", "--detach", f"--console-socket={console}", f"--pid-file={pid_file}",
                     f"--bundle={bundle}", container],
                    RUNC_TIMEOUT, "start the ops container",
                )  # fmt: skip
            except BackendError as error:
                # runc logs warnings (cgroups, freezer) before the error that matters; keep the error.
                errors = re.findall(r'level=error msg="((?:[^"\\]|\\.)*)"', error.detail)
                if errors:
                    error.detail = f"start the ops container: {errors[-1]}"
                raise
            listener.settimeout(5)
            conn, _ = listener.accept()
            with conn:
                _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
        if not fds:
            raise BackendError("failed", "runc did not hand over the container's terminal")
        os.set_blocking(fds[0], False)
        return fds[0], int(pid_file.read_text().strip())

    async def delete(self, container: str) -> None:
        try:
            await run([*self.runc, "delete", "--force", container], RUNC_TIMEOUT, "remove the ops container")
        except BackendError as error:
            if "does not exist" not in error.detail and "not found" not in error.detail:
                log.warning("%s", error.detail)
