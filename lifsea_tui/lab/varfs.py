"""Each lab node's /var is a filesystem of its own: a loop-mounted ext4 image at the stateroot's var.

On a real host /var is a partition, and a full /var is a full node, not a full machine room. In the
lab the stateroot's var directory would otherwise be part of the lab host's disk, so filling a node's
/var would fill the host. `lifsea-lab up` mounts each node's image before the machine boots and
`down` unmounts it. The image is sparse: it takes what the node writes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

SIZE = 2 * 1024**3


class VarError(Exception):
    pass


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise VarError(f"{' '.join(argv[:2])}: {result.stderr.strip() or result.returncode}")


def mount(image: Path, var_dir: Path) -> None:
    """Mount the node's /var image at `var_dir`, making it (with what var_dir held) the first time."""
    if os.path.ismount(var_dir):
        return
    var_dir.mkdir(parents=True, exist_ok=True)
    if not image.exists():
        partial = image.with_suffix(".partial")
        with partial.open("wb") as handle:
            handle.truncate(SIZE)
        # No blocks reserved for root: the node's services run as root, and a full /var must be full.
        _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-L", "lifsea-var", str(partial)])
        with tempfile.TemporaryDirectory(prefix="lifsea-var-") as staging:
            _run(["mount", "-o", "loop", str(partial), staging])
            try:
                _run(["cp", "-a", f"{var_dir}/.", staging])
            finally:
                unmount(Path(staging))
        for child in var_dir.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        partial.rename(image)
    _run(["mount", "-o", "loop", str(image), str(var_dir)])


def unmount(var_dir: Path, wait: float = 10.0) -> None:
    """Unmount, waiting for the last processes of a stopped machine to let go; lazily as a last resort."""
    deadline = time.monotonic() + wait
    while os.path.ismount(var_dir):
        result = subprocess.run(["umount", str(var_dir)], capture_output=True)
        if result.returncode == 0:
            return
        if time.monotonic() > deadline:
            subprocess.run(["umount", "--lazy", str(var_dir)], capture_output=True)
            return
        time.sleep(0.1)


def is_own_filesystem(var_dir: Path) -> bool:
    return os.path.ismount(var_dir)
