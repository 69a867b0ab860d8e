"""The console as a team installs it: the project's wheel in a clean virtual environment (no system
packages, no checkout on the path), started on a real lab; the agent and the controller with their
extras. The wheel is built from a copy of the tree, so the checkout is left as it was."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Console, running_lab

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


def run(*argv: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd="/"
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tree = tmp_path_factory.mktemp("tree") / "lifsea-tui"
    ignored = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")
    shutil.copytree(ROOT, tree, symlinks=True, ignore=ignored)
    out = tmp_path_factory.mktemp("wheel")
    built = run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out, tree, timeout=300
    )
    assert built.returncode == 0, built.stderr
    yield next(out.glob("lifsea_tui-*.whl"))


def venv(path: Path, wheel: Path, extras: str = "") -> Path:
    """A virtual environment with nothing but the wheel and what it asks for (at the locked versions)."""
    made = run(PYTHON, "-m", "venv", path)
    assert made.returncode == 0, made.stderr
    installed = run(
        path / "bin" / "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        "-c",
        LOCK,
        f"{wheel}{extras}",
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr
    return path / "bin"


@pytest.mark.lab
def test_the_console_installs_from_its_wheel_alone_and_starts_on_the_lab(
    wheel: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Its themes, CSS and runbooks come inside the package; the agent's server stack does not come."""
    bin_dir = venv(tmp_path / "console", wheel)
    assert run(bin_dir / "lifsea-tui", "--version").stdout.strip() == "lifsea-tui 0.1.0"
    for module in ("fastapi", "uvicorn", "dbus_fast"):
        assert run(bin_dir / "python", "-c", f"import {module}").returncode != 0, f"{module} came with the console"
    shipped = run(bin_dir / "python", "-c", "from lifsea_tui.tui import locations; print(locations.SHIPPED_THEMES)")
    assert "site-packages" in shipped.stdout and Path(shipped.stdout.strip(), "lifsea-dark.toml").is_file()
    runbooks = run(
        bin_dir / "python", "-c", "from lifsea_tui.client.runbook import SHIPPED, load; print(len(load([SHIPPED])[0]))"
    )
    assert runbooks.returncode == 0 and int(runbooks.stdout) >= 5, runbooks  # read from the package
    serving = run(bin_dir / "lifsea-agent", "serve", "--config", tmp_path / "none.toml")
    assert serving.returncode == 2 and "pip install 'lifsea-tui[agent]'" in serving.stderr, serving.stderr
    # Whoever deploys agents makes their tokens from the console's install (README, step 3).
    made = run(bin_dir / "lifsea-agent", "token", "new", "--name", "alice", "--role", "operator")
    assert made.returncode == 0 and '[[tokens]]\nname = "alice"' in made.stdout, made
    with running_lab(tmp_path_factory, 1, "labwheel") as (_, env, _layout):
        console = Console(env, "wheel", str(bin_dir / "lifsea-tui"))
        try:
            shown = console.until("● ok", 60)
            assert "node1" in shown and "Traceback" not in shown
            console.tmux("send-keys", "-t", "wheel", "d")  # the fleet's first checks: every shipped runbook's
            assert "1 of 1 nodes checked" in console.until("nodes checked", 30)
        finally:
            console.close()


def test_the_agent_and_the_controller_install_with_their_extras(wheel: Path, tmp_path: Path) -> None:
    bin_dir = venv(tmp_path / "agent", wheel, "[agent,fleetd]")
    for program in ("lifsea-agent", "lifsea-fleetd", "lifsea-lab", "lifsea-tui"):
        answer = run(bin_dir / program, "--version")
        assert answer.returncode == 0 and answer.stdout.strip() == f"{program} 0.1.0", (program, answer)
    helped = run(bin_dir / "lifsea-agent", "--help")
    assert helped.returncode == 0 and "serve" in helped.stdout
    served = run(bin_dir / "python", "-c", "import lifsea_tui.agent.app, lifsea_tui.fleetd.fleetlock")
    assert served.returncode == 0, served.stderr
