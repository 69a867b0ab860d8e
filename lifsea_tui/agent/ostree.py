"""The node's ostree sysroot: deployments, pulls, deploys, rollback and undeploy.

Reads and changes of the deployment list go through libostree (GObject introspection), run in a worker
thread; pulls, deploys and diffs run the `ostree` CLI as a subprocess with a timeout, its stderr carried
into the error. The sysroot is never booted from the agent's point of view (the agent runs beside the
node), so the booted deployment is the one whose directory is the node's host root, by device and
inode, and every write keeps it.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lifsea_tui.agent.errors import BackendError
from lifsea_tui.agent.process import run
from lifsea_tui.api import Deployment, DiffSummary

PACKAGES_FILE = "/usr/share/lifsea/packages.list"
# How many deployments a node keeps: the booted one, the next boot and one to roll back to.
KEEP_DEPLOYMENTS = 3
DIFF_SAMPLE = 12
# How many commits back a check looks for versions newer than the booted one.
HISTORY_DEPTH = 20
PROGRESS_EVERY = 0.5  # seconds between looks at a pull's progress

try:
    import gi

    gi.require_version("OSTree", "1.0")
    from gi.repository import Gio, GLib, OSTree

    LIBOSTREE_ERROR: str | None = None
except (ImportError, ValueError) as _error:
    LIBOSTREE_ERROR = f"libostree bindings unavailable ({_error}); install python3-gi and gir1.2-ostree-1.0"


@dataclass(frozen=True)
class PullFigures:
    fetched: int
    requested: int
    scanned_metadata: int
    bytes_transferred: int
    done: bool = False  # the pull finished: these are its last figures


@dataclass(frozen=True)
class CommitInfo:
    checksum: str
    version: str | None
    timestamp: datetime | None
    subject: str | None
    parent: str | None


class OstreeBackend:
    def __init__(self, sysroot: Path, host_root: Path, osname: str) -> None:
        self.sysroot = sysroot
        self.host_root = host_root
        self.osname = osname
        self.repo_path = sysroot / "ostree" / "repo"
        self._commits: dict[str, CommitInfo] = {}
        self._cache_key: tuple[Any, ...] | None = None
        self._cache: tuple[list[Deployment], bool] | None = None
        self._lock = threading.Lock()

    # -- availability -------------------------------------------------------------------------------

    def unavailable_reason(self) -> str | None:
        if LIBOSTREE_ERROR:
            return LIBOSTREE_ERROR
        if not (self.sysroot / "ostree" / "deploy").is_dir():
            return f"{self.sysroot} is not an ostree sysroot (no ostree/deploy)"
        return None

    def _require(self) -> None:
        reason = self.unavailable_reason()
        if reason:
            raise BackendError("unavailable", reason)

    # -- reading ------------------------------------------------------------------------------------

    def _load(self) -> Any:
        sysroot = OSTree.Sysroot.new(Gio.File.new_for_path(str(self.sysroot)))
        sysroot.load(None)
        return sysroot

    def _host_root_id(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.host_root)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _commit(self, repo: Any, checksum: str) -> CommitInfo:
        cached = self._commits.get(checksum)
        if cached:
            return cached
        try:
            _, variant, _ = repo.load_commit(checksum)
        except Exception:  # noqa: BLE001 - GLib.Error: commit object not in the repo
            return CommitInfo(checksum, None, None, None, None)
        metadata = variant.get_child_value(0)
        version = metadata.lookup_value("version", None)
        subject = variant.get_child_value(3).get_string() or None
        info = CommitInfo(
            checksum=checksum,
            version=version.get_string() if version is not None else None,
            timestamp=datetime.fromtimestamp(OSTree.commit_get_timestamp(variant), UTC),
            subject=subject,
            parent=OSTree.commit_get_parent(variant),
        )
        self._commits[checksum] = info
        return info

    def _boot_entries(self) -> tuple[Any, ...] | None:
        """What changes whenever the deployments do: ostree writes a fresh set of boot entries for every
        new deployment list. Not boot/loader's target alone: that flips between loader.0 and loader.1, so
        a deploy followed by a trim (two writes) brings it back where it was. None: no entries to go by."""
        loader = self.sysroot / "boot" / "loader"
        try:
            with os.scandir(loader / "entries") as entries:
                files = sorted((e.name, e.inode(), e.stat().st_mtime_ns) for e in entries)
            return (os.readlink(loader), *files)
        except OSError:
            return None

    def _forget(self) -> None:
        """This process changed the deployments: the next read reads them again."""
        with self._lock:
            self._cache_key = self._cache = None

    def _read(self) -> tuple[list[Deployment], bool]:
        self._require()
        entries, host_id = self._boot_entries(), self._host_root_id()
        key = (entries, host_id) if entries is not None else None
        with self._lock:
            if self._cache is not None and key is not None and key == self._cache_key:
                return self._cache
        sysroot = self._load()
        _, repo = sysroot.get_repo(None)
        raw = list(sysroot.get_deployments())
        booted_index = None
        for index, deployment in enumerate(raw):
            path = sysroot.get_deployment_directory(deployment).get_path()
            st = os.stat(path)
            if host_id is not None and (st.st_dev, st.st_ino) == host_id:
                booted_index = index
        result = []
        for index, deployment in enumerate(raw):
            origin = deployment.get_origin()
            try:
                refspec = origin.get_string("origin", "refspec") if origin is not None else None
            except Exception:  # noqa: BLE001 - GLib.Error: no refspec key (deployed by checksum)
                refspec = None
            info = self._commit(repo, deployment.get_csum())
            booted = index == booted_index
            result.append(
                Deployment(
                    index=index,
                    osname=deployment.get_osname(),
                    checksum=deployment.get_csum(),
                    serial=deployment.get_deployserial(),
                    version=info.version,
                    timestamp=info.timestamp,
                    subject=info.subject,
                    origin_refspec=refspec,
                    booted=booted,
                    default=index == 0,
                    pending=index == 0 and booted_index is not None and not booted,
                    rollback=booted_index is not None and index == booted_index + 1,
                    pinned=bool(deployment.is_pinned()),
                )
            )
        value = (result, booted_index is not None)
        with self._lock:
            self._cache_key, self._cache = key, value
        return value

    async def booted_directory(self) -> Path | None:
        """The booted deployment's directory (the node's root, as a path this process can mount)."""

        def find() -> Path | None:
            self._require()
            host_id = self._host_root_id()
            sysroot = self._load()
            for deployment in sysroot.get_deployments():
                path = sysroot.get_deployment_directory(deployment).get_path()
                st = os.stat(path)
                if (st.st_dev, st.st_ino) == host_id:
                    return Path(path)
            return None

        return await asyncio.to_thread(find)

    def stateroot_var(self) -> Path:
        """The node's /var: one per stateroot, shared by all its deployments."""
        return self.sysroot / "ostree" / "deploy" / self.osname / "var"

    async def deployments(self) -> tuple[list[Deployment], bool]:
        """The deployments in boot order, and whether the booted one could be determined."""
        return await asyncio.to_thread(self._read)

    async def commit(self, checksum: str) -> CommitInfo:
        self._require()

        def read() -> CommitInfo:
            _, repo = self._load().get_repo(None)
            return self._commit(repo, checksum)

        return await asyncio.to_thread(read)

    async def has_tree(self, checksum: str) -> bool:
        """Whether the commit and its whole tree are in the repo (not just its metadata)."""
        self._require()

        def check() -> bool:
            _, repo = self._load().get_repo(None)
            try:
                _, _, state = repo.load_commit(checksum)
            except Exception:  # noqa: BLE001 - GLib.Error: not in the repo at all
                return False
            return not (state & OSTree.RepoCommitState.PARTIAL)

        return await asyncio.to_thread(check)

    async def resolve(self, refspec: str) -> str:
        out = await run(["ostree", f"--repo={self.repo_path}", "rev-parse", refspec], 30, f"resolve {refspec}")
        return out.strip()

    async def chain(self, newest: str, stop_at: str | None, limit: int = HISTORY_DEPTH) -> list[CommitInfo]:
        """Commits from `newest` back along parents until `stop_at` (excluded) or what the repo lacks."""
        commits: list[CommitInfo] = []
        checksum: str | None = newest
        while checksum and checksum != stop_at and len(commits) < limit:
            info = await self.commit(checksum)
            if info.timestamp is None:
                break
            commits.append(info)
            checksum = info.parent
        return commits

    async def diff(self, old: str, new: str) -> DiffSummary:
        out, (old_packages, new_packages) = await asyncio.gather(
            run(["ostree", f"--repo={self.repo_path}", "diff", old, new], 120, "diff"),
            asyncio.gather(self._packages(old), self._packages(new)),
        )
        counts = {"A": 0, "M": 0, "D": 0}
        sample: list[str] = []
        for line in out.splitlines():
            kind, _, path = line.partition(" ")
            if kind in counts:
                counts[kind] += 1
                if len(sample) < DIFF_SAMPLE:
                    sample.append(f"{kind} {path.strip()}")
        return DiffSummary(
            added=counts["A"],
            modified=counts["M"],
            removed=counts["D"],
            sample=sample,
            packages_added=sorted(f"{name} {new_packages[name]}" for name in new_packages.keys() - old_packages.keys()),
            packages_removed=sorted(old_packages.keys() - new_packages.keys()),
            packages_changed=sorted(
                f"{name} {old_packages[name]} -> {new_packages[name]}"
                for name in old_packages.keys() & new_packages.keys()
                if old_packages[name] != new_packages[name]
            ),
        )

    async def _packages(self, checksum: str) -> dict[str, str]:
        try:
            out = await run(["ostree", f"--repo={self.repo_path}", "cat", checksum, PACKAGES_FILE], 30, "packages")
        except BackendError:
            return {}  # the image does not list its packages
        packages = {}
        for line in out.splitlines():
            name, _, version = line.partition(" ")
            if name:
                packages[name] = version.strip()
        return packages

    # -- changing -----------------------------------------------------------------------------------

    async def pull(self, refspec: str, timeout: float, *, metadata_depth: int | None = None) -> None:
        """Pull the ref's newest commit and tree; with `metadata_depth`, only commit metadata, that deep."""
        remote, _, ref = refspec.rpartition(":")
        if not remote:
            raise BackendError("failed", f"origin {refspec!r} names no remote; nothing to pull from")
        depth = ["--commit-metadata-only", f"--depth={metadata_depth}"] if metadata_depth else []
        await run(["ostree", f"--repo={self.repo_path}", "pull", *depth, remote, ref], timeout, f"pull {refspec}")

    async def pull_watched(
        self, refspec: str, timeout: float, report: Callable[[PullFigures], Awaitable[None]]
    ) -> None:
        """Pull as `pull` does, through libostree itself, handing `report` its progress every
        PROGRESS_EVERY seconds (objects fetched and requested, bytes). A pull past `timeout` is cancelled
        (libostree checks its cancellable between fetches) and is an error, as the CLI's timeout is."""
        self._require()
        remote, _, ref = refspec.rpartition(":")
        if not remote:
            raise BackendError("failed", f"origin {refspec!r} names no remote; nothing to pull from")
        watch = OSTree.AsyncProgress.new()
        cancel = Gio.Cancellable.new()
        options = GLib.Variant("a{sv}", {"refs": GLib.Variant("as", [ref])})

        def work() -> None:
            _, repo = self._load().get_repo(None)
            try:
                repo.pull_with_options(remote, options, watch, cancel)
            except GLib.Error as error:
                raise BackendError("failed", f"pull {refspec}: {error.message}") from None
            finally:
                watch.finish()

        def figures(done: bool = False) -> PullFigures:
            return PullFigures(
                fetched=watch.get_uint("fetched"),
                requested=watch.get_uint("requested"),
                scanned_metadata=watch.get_uint("scanned-metadata"),
                bytes_transferred=watch.get_uint64("bytes-transferred"),
                done=done,
            )

        pulling = asyncio.ensure_future(asyncio.to_thread(work))
        deadline = time.monotonic() + timeout
        try:
            while True:
                done, _ = await asyncio.wait({pulling}, timeout=PROGRESS_EVERY)
                if done:
                    break
                if time.monotonic() > deadline:
                    cancel.cancel()
                    raise BackendError("timeout", f"pull {refspec} took longer than {timeout:.0f} s")
                await report(figures())
            pulling.result()
            await report(figures(done=True))
        finally:
            if not pulling.done():
                cancel.cancel()
                await asyncio.wait({pulling}, timeout=30)
            if pulling.done() and not pulling.cancelled():
                pulling.exception()  # retrieved: its error, if any, is the one raised above

    async def deploy(self, checksum: str, refspec: str, timeout: float) -> None:
        """Deploy `checksum` as the new default, its origin `refspec`; keep the booted deployment."""
        self._require()
        with tempfile.NamedTemporaryFile("w", suffix=".origin", delete=False) as origin:
            origin.write(f"[origin]\nrefspec={refspec}\n")
        try:
            await run(
                [
                    "ostree",
                    "admin",
                    "deploy",
                    f"--sysroot={self.sysroot}",
                    f"--os={self.osname}",
                    "--retain",
                    f"--origin-file={origin.name}",
                    checksum,
                ],
                timeout,
                "deploy",
            )
        finally:
            os.unlink(origin.name)
            self._forget()
        await asyncio.to_thread(self._trim)

    async def cleanup(self) -> None:
        await run(["ostree", "admin", "cleanup", f"--sysroot={self.sysroot}"], 300, "cleanup")

    def _rewrite(self, choose: Any) -> None:
        """Write a new deployment list chosen by `choose(deployments, booted_index)`, under the sysroot lock."""
        sysroot = self._load()
        sysroot.lock()
        try:
            sysroot.load(None)
            raw = list(sysroot.get_deployments())
            host_id = self._host_root_id()
            booted_index = None
            for index, deployment in enumerate(raw):
                st = os.stat(sysroot.get_deployment_directory(deployment).get_path())
                if host_id is not None and (st.st_dev, st.st_ino) == host_id:
                    booted_index = index
            chosen = choose(raw, booted_index)
            if chosen is None:
                return
            if booted_index is not None and raw[booted_index] not in chosen:
                raise BackendError("failed", "refusing to remove the booted deployment")
            sysroot.write_deployments(chosen, None)
            self._forget()
        finally:
            sysroot.unlock()

    def _trim(self) -> None:
        def choose(raw: list[Any], booted: int | None) -> list[Any] | None:
            if len(raw) <= KEEP_DEPLOYMENTS:
                return None
            keep = [d for i, d in enumerate(raw) if i == 0 or i == booted]
            for deployment in raw:
                if len(keep) >= KEEP_DEPLOYMENTS:
                    break
                if deployment not in keep:
                    keep.append(deployment)
            return sorted(keep, key=raw.index)

        self._rewrite(choose)

    async def rollback(self) -> Deployment:
        """Make the rollback deployment (the one after the booted one) the next boot."""
        self._require()
        deployments, booted_known = await self.deployments()
        target = next((d for d in deployments if d.rollback), None)
        if not booted_known or target is None:
            raise BackendError("wrong_state", "there is no rollback deployment")

        def choose(raw: list[Any], booted: int | None) -> list[Any]:
            if booted is None or booted + 1 >= len(raw):
                raise BackendError("wrong_state", "there is no rollback deployment")
            rollback = raw[booted + 1]
            return [rollback] + [d for d in raw if d is not rollback]

        await asyncio.to_thread(self._rewrite, choose)
        return target

    async def undeploy_pending(self) -> Deployment:
        self._require()
        deployments, _ = await self.deployments()
        pending = next((d for d in deployments if d.pending), None)
        if pending is None:
            raise BackendError("wrong_state", "there is no pending deployment to cancel")

        def choose(raw: list[Any], booted: int | None) -> list[Any]:
            if booted is None or booted == 0:
                raise BackendError("wrong_state", "there is no pending deployment to cancel")
            return raw[1:]

        await asyncio.to_thread(self._rewrite, choose)
        return pending
