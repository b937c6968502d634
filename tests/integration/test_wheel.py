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


def _uv() -> Path:
    """uv of this environment, else the checkout's main .venv's (the version matrix's envs have none)."""
    here = Path(sys.executable).with_name("uv")
    return here if here.exists() else ROOT / ".venv" / "bin" / "uv"


@pytest.fixture(scope="module")
def wheel_path(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    uv = _uv()
    # sdist first, then the wheel from it (what uv and pip do by default): no stale build/ folder
    # of the checkout can leak into the wheel.
    command = [str(uv), "build", "--out-dir", str(out), str(ROOT)] if uv.exists() else [
        sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(ROOT)
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (built,) = out.glob("airflow_provider_dicom-*.whl")
    return built


@pytest.fixture(scope="module")
def wheel(wheel_path) -> zipfile.ZipFile:
    with zipfile.ZipFile(wheel_path) as archive:
        yield archive


PARSE_EXAMPLES = """
import json, sys
import airflow_provider_dicom
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:
    from airflow.models.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])  # [core] load_examples is off in the tests
print(json.dumps({"package": airflow_provider_dicom.__file__, "dags": sorted(bag.dag_ids),
                  "errors": {k: v[-500:] for k, v in bag.import_errors.items()}}))
"""


@pytest.mark.integration
@pytest.mark.matrix  # also on Composer's Airflow 3.1.0 set and on Airflow 2.11 (scripts/matrix.sh)
def test_the_wheel_installs_beside_this_airflow_and_parses_every_example_dag(wheel_path, tmp_path, airflow_db):
    """What a user of this Airflow gets from `pip install`: the wheel's requirements are met by
    what is installed (nothing of Airflow's is up- or downgraded), and the wheel's own code, not
    the checkout's, parses every example DAG without an import error (a DAG scheduled on an asset
    alias reads the metadata database while it is parsed on Airflow 2.11: `airflow_db`)."""
    import json
    import os

    plan = subprocess.run(
        [str(_uv()), "pip", "install", "--dry-run", "--python", sys.executable, str(wheel_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert plan.returncode == 0, plan.stderr[-3000:]
    changes = [line.strip() for line in (plan.stdout + plan.stderr).splitlines() if line.strip()[:2] in ("+ ", "- ")]
    assert changes and all(c[2:].startswith("airflow-provider-dicom") for c in changes), changes

    site = tmp_path / "site"
    with zipfile.ZipFile(wheel_path) as archive:
        archive.extractall(site)
    examples = sorted(p.stem for p in (ROOT / "example_dags").glob("example_*.py"))
    env = {**os.environ, "PYTHONPATH": str(site), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run(
        [sys.executable, "-c", PARSE_EXAMPLES, str(ROOT / "example_dags")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    parsed = json.loads(done.stdout.strip().splitlines()[-1])
    assert parsed["package"].startswith(str(site)), parsed["package"]
    assert parsed["errors"] == {}
    assert len(parsed["dags"]) >= len(examples), (parsed["dags"], examples)


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
