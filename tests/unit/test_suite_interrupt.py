"""Stopping the test run with SIGTERM (a CI job cancelled or timed out) still stops the servers the
fixtures started: the deployment tier's Airflow processes, the stand-ins. Without it they outlive
the run and hold ports and a PostgreSQL database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]

INNER = '''
import subprocess, sys, time, pytest

@pytest.fixture(scope="session")
def server(tmp_path_factory):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    (tmp_path_factory.getbasetemp().parent / "child.pid").write_text(str(child.pid))
    yield child
    child.kill()
    child.wait()

def test_waits(server):
    time.sleep(120)
'''


def test_sigterm_runs_fixture_teardown(tmp_path):
    (tmp_path / "test_inner.py").write_text(INNER)
    # The repository's tests/conftest.py is what installs the handler: run the inner test as one of
    # ours, from a temporary package inside tests/ would pollute the tree, so load the conftest
    # as a plugin instead.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = tmp_path / "base"
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "--basetemp", str(base), "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path / "test_inner.py")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    pid_file = tmp_path / "child.pid"
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.1)
    assert pid_file.exists(), run.communicate()[0] if run.poll() is not None else "no child started"
    child = int(pid_file.read_text())
    time.sleep(0.5)
    run.send_signal(signal.SIGTERM)
    output, _ = run.communicate(timeout=60)
    gone = not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    if not gone:
        os.kill(child, signal.SIGKILL)
    assert gone, f"fixture's process {child} outlived the SIGTERM'd run:\n{output[-2000:]}"
    assert run.returncode != 0
