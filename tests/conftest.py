"""Shared fixtures: a private Airflow home, the local stand-ins for BigQuery and GCS, fresh datasets.

Airflow reads AIRFLOW_HOME and its configuration once, when first imported, so the environment is
set here at import time, before any test module can import airflow. The stand-ins start lazily,
once per run, only when an integration test asks for them, and stop at the end of the run.
Nothing heavy is imported at module level: unit tests check what importing our modules pulls in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

if "airflow" in sys.modules:  # pragma: no cover - a plugin imported airflow before us
    raise RuntimeError("airflow was imported before tests/conftest.py could set AIRFLOW_HOME")

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_AIRFLOW_HOME / "dags")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}"
PROJECT = "local-dicom"  # the stand-ins' project: dicom_standins.STANDIN_PROJECT
os.environ.setdefault(
    "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT",
    '{"conn_type": "google_cloud_platform", "extra": {"is_anonymous": true, "project": "%s"}}' % PROJECT,
)
(_AIRFLOW_HOME / "dags").mkdir()

STANDIN_FIXTURES = frozenset(
    {
        "bigquery_server", "bigquery_standin", "bq_dataset", "gcs_server", "gcs_standin", "gcs_bucket",
        "orthanc_standin", "healthcare_emulator", "healthcare", "dicom_store", "healthcare_hook",
    }
)


# The Cloud Healthcare emulator fixtures (healthcare_emulator, healthcare, dicom_store, ...).
pytest_plugins = ["tests.integration.conftest_healthcare"]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a cancelled or timed-out CI job) ends the run as Ctrl-C does: pytest then tears the
    fixtures down, which stops the stand-ins and the deployment tier's Airflow processes. By
    default SIGTERM would kill pytest at once and leave them all running."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Unit tests must run without servers: refuse a stand-in to any test not marked integration."""
    wanted = STANDIN_FIXTURES.intersection(getattr(item, "fixturenames", ()))
    if wanted and item.get_closest_marker("integration") is None:
        pytest.fail(f"{item.nodeid} uses {sorted(wanted)} but is not marked @pytest.mark.integration")


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> Path:
    """An sqlite metadata database migrated once per run, for dag.test() and the CLI."""
    completed = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=dict(os.environ), capture_output=True, text=True, timeout=300,
    )
    if completed.returncode != 0:
        pytest.fail(f"airflow db migrate failed ({completed.returncode}):\n{completed.stdout[-3000:]}\n"
                    f"{completed.stderr[-3000:]}")
    return airflow_home / "airflow.db"


def _serving(standin) -> Iterator:
    """Yield a started stand-in with its environment (e.g. BIGQUERY_EMULATOR_HOST) set for the
    session, then stop it: clients built anywhere in the tests find it the way users' would."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in standin.env.items():
            patch.setenv(key, value)
        try:
            yield standin
        finally:
            standin.stop()


@pytest.fixture(scope="session")
def bigquery_server() -> Iterator:
    """The BigQuery stand-in (a Standin: .url, .env, .extra['grpc_port']), with BIGQUERY_EMULATOR_HOST set."""
    from dicom_standins import start_bigquery

    yield from _serving(start_bigquery(project=PROJECT))


@pytest.fixture(scope="session")
def bigquery_standin(bigquery_server) -> Iterator:
    """A google.cloud.bigquery.Client on the stand-in (project PROJECT, anonymous credentials)."""
    from dicom_standins import bigquery_client

    client = bigquery_client(bigquery_server, PROJECT)
    yield client
    client.close()


@pytest.fixture
def bq_dataset(bigquery_standin) -> Iterator[str]:
    """A fresh, empty dataset for one test, as "PROJECT.<dataset>"; deleted with its tables afterwards."""
    dataset_id = f"{PROJECT}.t_{uuid.uuid4().hex[:12]}"
    bigquery_standin.create_dataset(dataset_id)
    yield dataset_id
    bigquery_standin.delete_dataset(dataset_id, delete_contents=True, not_found_ok=True)


@pytest.fixture(scope="session")
def gcs_server() -> Iterator:
    """The GCS stand-in (a Standin: .url, .env), with STORAGE_EMULATOR_HOST set."""
    from dicom_standins import start_gcs

    yield from _serving(start_gcs())


@pytest.fixture(scope="session")
def gcs_standin(gcs_server) -> Iterator:
    """A google.cloud.storage.Client on the GCS stand-in."""
    from dicom_standins import storage_client

    client = storage_client(gcs_server, PROJECT)
    yield client
    client.close()


@pytest.fixture
def gcs_bucket(gcs_standin):
    """A fresh bucket for one test."""
    bucket = gcs_standin.create_bucket(f"test-{uuid.uuid4().hex[:12]}")
    yield bucket
    for blob in gcs_standin.list_blobs(bucket):
        blob.delete()
    bucket.delete()


@pytest.fixture(scope="session")
def orthanc_standin(pydicom_corpus: Path) -> Iterator:
    """Orthanc with its DICOMweb plugin on 127.0.0.1, loaded with pydicom's corpus through its REST
    API (POST /instances). A Standin whose `extra` holds `dicomweb_url`, `username`, `password`
    (basic auth is on) and `corpus`: each corpus file's path -> Orthanc's answer ("Status"
    Success / AlreadyStored, or "HttpStatus" for a file it refused). Skips the test, saying why,
    when Orthanc is not installed (scripts/install-standins.sh installs it with apt-get)."""
    from dicom_standins import StandinError, orthanc_paths, orthanc_upload, start_orthanc

    try:
        orthanc_paths()
    except StandinError as exc:
        pytest.skip(str(exc))
    standin = start_orthanc()
    try:
        files = sorted(path for path in pydicom_corpus.rglob("*") if path.is_file())
        standin.extra["corpus"] = orthanc_upload(standin, files)
        yield standin
    finally:
        standin.stop()


@pytest.fixture(scope="session")
def pydicom_corpus() -> Path:
    """pydicom's own test corpus folder (never get_testdata_files(): it tries the network)."""
    import pydicom

    return Path(pydicom.__file__).parent / "data" / "test_files"
