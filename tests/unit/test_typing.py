"""The package is type-clean under mypy, with the settings in pyproject.toml's [tool.mypy].

The wheel ships py.typed, which tells users' type checkers to trust our hints; this keeps them
worth trusting. mypy is in the `test` extra, so CI (scripts/test.sh installs that extra) always
runs this; a development venv without it skips, unless CI is set. `MYPY=/path/to/mypy` runs a mypy
installed elsewhere against this interpreter's packages.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _mypy_command() -> list[str]:
    if os.environ.get("MYPY"):
        return [os.environ["MYPY"], "--python-executable", sys.executable]
    if importlib.util.find_spec("mypy") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("mypy is not installed: it is in the test extra (pip install -e '.[test]')")
        pytest.skip("mypy is not installed in this venv (it is in the test extra); set MYPY to use another")
    return [sys.executable, "-m", "mypy"]


def test_mypy_finds_no_error_in_the_package():
    command = [*_mypy_command(), "--no-error-summary", "--hide-error-context", "airflow_provider_dicom"]
    # mypy's cache goes to .mypy_cache in the checkout (git-ignored): a second run takes seconds.
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert errors == [], "\n".join(errors)
    assert done.returncode == 0, done.stdout + done.stderr
