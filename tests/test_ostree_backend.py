"""The agent's ostree backend on a real sysroot: what it reports follows every change to the deployments."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from lifsea_tui.agent.ostree import KEEP_DEPLOYMENTS, OstreeBackend
from lifsea_tui.lab import image, sysroot
from tests.helpers import make_tiny_node, ostree_missing, tiny_tree

pytestmark = pytest.mark.skipif(ostree_missing() is not None, reason=str(ostree_missing()))


def _release(base: Path, repo: Path, target: Path, version: str) -> str:
    """A new commit of `version` in the update repo, pulled into the node's repo; its checksum."""
    checksum = image.commit(repo, [f"dir={tiny_tree(base / f'tree-{version}', version)}"], version, version)
    subprocess.run(
        ["ostree", f"--repo={target / 'ostree' / 'repo'}", "pull-local", str(repo), checksum],
        check=True,
        capture_output=True,
    )
    return checksum


def test_each_deploy_is_seen_even_when_the_bootloader_flips_back(tmp_path: Path) -> None:
    """ostree swaps boot/loader between loader.0 and loader.1 at each write; a deploy followed by the trim
    to KEEP_DEPLOYMENTS swaps it twice, back to where it was. The backend must still see the new
    deployment: a stale answer once made a rollout stage the same release twice (and lose the node's way
    back to the release it had)."""
    node = make_tiny_node(tmp_path)
    try:
        backend = OstreeBackend(node.sysroot, node.host_root, image.OSNAME)

        async def deploy_and_read(checksum: str) -> list[str | None]:
            await backend.deploy(checksum, f"{sysroot.REMOTE}:{image.REF}", 120)
            deployments, booted_known = await backend.deployments()
            assert booted_known
            return [d.version for d in deployments]

        seen = []
        for version in ("2.0", "3.0", "4.0", "5.0"):
            checksum = _release(tmp_path, node.repo, node.sysroot, version)
            asyncio.run(backend.deployments())  # read (and kept) before the change
            versions = asyncio.run(deploy_and_read(checksum))
            seen.append(versions)
            assert versions[0] == version, f"after deploying {version} the backend still says {versions}"
            assert len(versions) <= KEEP_DEPLOYMENTS
            assert "1.0" in versions  # the booted deployment is never trimmed
    finally:
        node.close()
    assert seen[-1] == ["5.0", "4.0", "1.0"]  # the new default, the newest kept, the booted


def test_a_change_made_behind_the_agents_back_is_seen(tmp_path: Path) -> None:
    """Someone with a root shell on the node runs ostree by hand: the next answer says what is there."""
    node = make_tiny_node(tmp_path)
    try:
        backend = OstreeBackend(node.sysroot, node.host_root, image.OSNAME)
        admin = ["ostree", "admin", f"--sysroot={node.sysroot}"]
        for version in ("2.0", "3.0", "4.0", "5.0"):
            checksum = _release(tmp_path, node.repo, node.sysroot, version)
            asyncio.run(backend.deployments())
            subprocess.run([*admin, "deploy", f"--os={image.OSNAME}", "--retain", checksum], check=True)
            if (
                len(list((node.sysroot / "ostree" / "deploy" / image.OSNAME / "deploy").glob("*.origin")))
                > KEEP_DEPLOYMENTS
            ):
                # the oldest but the booted one (the last): the bootloader flips back, the booted stays
                subprocess.run([*admin, "undeploy", str(KEEP_DEPLOYMENTS - 1)], check=True, capture_output=True)
            versions = [d.version for d in asyncio.run(backend.deployments())[0]]
            assert versions[0] == version, f"after deploying {version} by hand the backend says {versions}"
    finally:
        node.close()


def test_a_sysroot_without_boot_entries_is_answered_not_crashed_on(tmp_path: Path) -> None:
    """No boot entries to key the cache on (a half-written /boot, a loader not yet made): the backend
    reads the deployments afresh and says what ostree says, rather than failing on the missing key."""
    node = make_tiny_node(tmp_path)
    try:
        backend = OstreeBackend(node.sysroot, node.host_root, image.OSNAME)
        assert [d.version for d in asyncio.run(backend.deployments())[0]] == ["1.0"]
        entries = (node.sysroot / "boot" / "loader").resolve() / "entries"
        entries.rename(entries.with_name("entries.away"))
        deployments, booted_known = asyncio.run(backend.deployments())
        assert deployments == [] and not booted_known  # ostree lists none without entries
        entries.with_name("entries.away").rename(entries)
        assert [d.version for d in asyncio.run(backend.deployments())[0]] == ["1.0"]
    finally:
        node.close()
