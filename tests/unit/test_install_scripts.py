"""What scripts/install-standins.sh installs on the machine, and that it says so first.

The demo uses no Orthanc, PostgreSQL, Redis or browser, so `--demo` must install nothing
system-wide; the test command's run announces each system-wide install before apt-get runs. The
script runs here in a copy of the checkout with a fake `apt-get` (and a fake `id` saying root), so
nothing is installed: the fake only records how it was called.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "install-standins.sh"


def _fake_machine(tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    """A checkout copy whose BigQuery stand-in counts as installed, and a PATH holding only the
    tools the script needs, a fake `id` (root) and a fake `apt-get` that logs its arguments."""
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy2(SCRIPT, checkout / "scripts" / SCRIPT.name)
    (checkout / ".standins").mkdir()
    (checkout / ".standins" / ".bigquery-installed-v2").touch()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "apt-get.log"
    for tool in ("dirname", "env", "mkdir", "touch"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    (bin_dir / "id").write_text("#!/bin/sh\necho 0\n")
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> "{log}"\nexit 0\n')
    (bin_dir / "dpkg").write_text("#!/bin/sh\nexit 1\n")
    for fake in ("id", "apt-get", "dpkg"):
        (bin_dir / fake).chmod(0o755)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    return checkout, env, log


def _run(checkout: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    bash = shutil.which("bash")
    assert bash
    return subprocess.run(
        [bash, str(checkout / "scripts" / SCRIPT.name), *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.mark.skipif(os.name != "posix", reason="a bash script")
def test_demo_mode_installs_nothing_system_wide(tmp_path):
    checkout, env, log = _fake_machine(tmp_path)
    result = _run(checkout, env, "--demo")
    assert result.returncode == 0, result.stderr
    assert not log.exists(), f"apt-get ran for the demo: {log.read_text()}"
    assert "installing" not in result.stdout


@pytest.mark.skipif(os.name != "posix", reason="a bash script")
def test_test_mode_says_what_it_installs_system_wide(tmp_path):
    """No psql, postgres or redis-server on this PATH: the deployment tier's packages are wanted,
    and the script names them, and says system-wide, before apt-get installs them."""
    checkout, env, log = _fake_machine(tmp_path)
    result = _run(checkout, env)
    assert result.returncode == 0, result.stderr
    installs = [line for line in log.read_text().splitlines() if line.startswith("install")]
    assert any("postgresql" in line and "redis-server" in line for line in installs), installs
    announced = [line for line in result.stdout.splitlines() if line.startswith("==> installing")]
    assert any(
        "postgresql" in line and "redis-server" in line and "system-wide" in line for line in announced
    ), result.stdout


@pytest.mark.skipif(os.name != "posix", reason="a bash script")
def test_unknown_argument_is_refused(tmp_path):
    checkout, env, log = _fake_machine(tmp_path)
    result = _run(checkout, env, "--all")
    assert result.returncode == 2
    assert "usage: scripts/install-standins.sh [--demo]" in result.stderr
    assert not log.exists()
