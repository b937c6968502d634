"""The wheel users install: built from this checkout as `pip install` would build it (a PEP 517
build in isolation, so the declared build requirements are the ones used), then read as a zip.

Integration tier: the isolated build fetches setuptools from the package index."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    uv = Path(sys.executable).with_name("uv")
    # sdist first, then the wheel from it (what uv and pip do by default): no stale build/ folder
    # of the checkout can leak into the wheel.
    command = [str(uv), "build", "--out-dir", str(out), str(ROOT)] if uv.exists() else [
        sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(ROOT)
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (built,) = out.glob("airflow_provider_dicom-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


@pytest.mark.integration
def test_the_wheel_carries_the_license_notice_and_py_typed(wheel):
    names = wheel.namelist()
    assert "airflow_provider_dicom/py.typed" in names
    for required in ("LICENSE", "NOTICE"):
        assert any(n.endswith(f".dist-info/licenses/{required}") for n in names), names


@pytest.mark.integration
def test_the_wheel_declares_the_floors_the_code_needs(wheel):
    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    text = wheel.read(metadata).decode()
    requires = [line.removeprefix("Requires-Dist: ") for line in text.splitlines() if line.startswith("Requires-Dist: ")]
    # airflow.providers.common.compat.sdk exports conf from 1.12; pydicom 3.0.0 downloads on import.
    assert "apache-airflow-providers-common-compat>=1.12" in requires, requires
    assert any(r.startswith("pydicom") and ">=3.0.1" in r for r in requires), requires
    assert "License-Expression: Apache-2.0" in text
    assert "Classifier: Programming Language :: Python :: 3.11" in text


@pytest.mark.integration
def test_the_wheel_carries_no_test_tooling(wheel):
    """The emulator and the stand-in starters need repository scripts and test servers: they live in
    `dicom_standins/` of the checkout, never in what users install."""
    names = wheel.namelist()
    packages = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert packages == {"airflow_provider_dicom"}, packages
    assert not [n for n in names if "/emulator/" in n or "/testing/" in n or "standins" in n]
    # every module of the package is in it (a moved folder without __init__.py would vanish)
    sources = {
        p.relative_to(ROOT).as_posix() for p in (ROOT / "airflow_provider_dicom").rglob("*.py")
    }
    assert sources <= set(names), sorted(sources - set(names))


@pytest.mark.integration
def test_the_wheel_carries_the_project_urls(wheel):
    """Airflow shows the "Documentation" Project-URL as the provider's documentation-url."""
    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    text = wheel.read(metadata).decode()
    urls = dict(
        line.removeprefix("Project-URL: ").split(", ", 1) for line in text.splitlines()
        if line.startswith("Project-URL: ")
    )
    base = "https://github.com/airflow-provider-dicom/airflow-provider-dicom"
    assert urls == {"Documentation": f"{base}#readme", "Source": base, "Issue tracker": f"{base}/issues"}, urls
