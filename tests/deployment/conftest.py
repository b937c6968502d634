"""Fixtures of the deployment tier: one running Airflow (tests/deployment/airflow_deployment.py) for all
the tier's tests, started when the first of them needs it and stopped after the last, with the
stand-ins (BigQuery, GCS, the Cloud Healthcare emulator) seeded once and named in Airflow Variables.

Two Airflow versions, one after the other (never side by side: 2 cores): every test of the tier runs
on Airflow 3.3 (the main .venv), and the tests marked `airflow2` run on Airflow 2.11 too (the matrix
env .matrix/airflow-2.11). The package-scoped fixture `airflow` is parametrized with both flavours
(test ids `[airflow-3.3]`, `[airflow-2.11]`); pytest groups the tests by it and tears the 3.3
deployment (and its seeded data) down before it starts the 2.11 one. The 2.11 items of unmarked tests
are deselected.

Outside CI the tier skips, saying why, when PostgreSQL or Redis is neither running nor startable;
with CI=true it fails instead: a CI run must never pass without it."""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deployment import airflow_deployment
from tests.deployment.airflow_deployment import FLAVOURS, Deployment, DeploymentUnavailable, Flavour

PROJECT = "local-dicom"
LOCATION = "us-central1"
CORPUS = ["CT_small.dcm", "MR_small.dcm", "examples_overlay.dcm", "J2K_pixelrep_mismatch.dcm", "rtplan.dcm"]
# One CT study per day around the backfill range, and around today for the scheduled run: a run
# that selects its own day finds exactly one of them.
BACKFILL_DAYS = [datetime.date(2025, 3, d) for d in range(1, 7)]
FOLDER_INSTANCES = 1500


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that needs a deployment gets one item per Airflow flavour (deselected below unless
    the flavour is 3.3 or the test is marked `airflow2`)."""
    if "airflow" in metafunc.fixturenames:
        metafunc.parametrize("airflow", list(FLAVOURS), indirect=True, scope="package",
                             ids=[f"airflow-{name}" for name in FLAVOURS])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    deselected = [item for item in items if _flavour_of(item) not in (None, "3.3")
                  and item.get_closest_marker("airflow2") is None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        dropped = set(deselected)
        items[:] = [item for item in items if item not in dropped]


def _flavour_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("airflow") if callspec is not None else None


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"deployment tier cannot run in CI: {reason}")
    pytest.skip(f"deployment tier skipped: {reason}")


@pytest.fixture(scope="package")
def services() -> None:
    try:
        airflow_deployment.ensure_services()
    except DeploymentUnavailable as exc:
        _unavailable(str(exc))


@pytest.fixture(scope="package")
def airflow(request: pytest.FixtureRequest, services) -> Flavour:
    """The Airflow flavour of this part of the tier (3.3 or 2.11); the 2.11 env comes from
    `scripts/matrix.sh build`, which scripts/test.sh runs first."""
    flavour = FLAVOURS[request.param]
    reason = flavour.unavailable()
    if reason:
        _unavailable(reason)
    return flavour


@dataclass
class Seeded:
    """What the stand-ins hold for the tier, and where."""

    store: str
    healthcare_dataset: str
    dataset: str  # BigQuery dataset id (in PROJECT)
    bucket: str
    folder: Path  # FOLDER_INSTANCES small DICOM files, each its own SOPInstanceUID
    daily_uids: dict[datetime.date, str] = field(default_factory=dict)  # StudyDate -> SOPInstanceUID
    corpus_uids: dict[str, str] = field(default_factory=dict)  # corpus file name -> SOPInstanceUID
    guide_table: str = ""  # bq:// table of the corpus, exported before Airflow starts (Variable dicom_table)
    corpus_folder: Path | None = None  # the CORPUS files: the folder the Variables name (small: few shards)

    @property
    def table_prefix(self) -> str:
        return f"{PROJECT}.{self.dataset}"


def _ct_instance(study_date: datetime.date, patient: str) -> bytes:
    from tests.unit.dicom_factory import make_dataset, to_file_bytes

    ds = make_dataset(Modality="CT", StudyDate=study_date.strftime("%Y%m%d"), PatientID=patient,
                      BodyPartExamined="CHEST")
    return to_file_bytes(ds)


@pytest.fixture(scope="package")
def seeded(launcher, healthcare_emulator, bigquery_standin, gcs_standin, pydicom_corpus) -> Iterator[Seeded]:
    import pydicom

    from dicom_standins.emulator import EmulatorClient

    client = EmulatorClient(healthcare_emulator.url)
    tag = uuid.uuid4().hex[:8]
    hc_dataset = client.create_dataset(PROJECT, LOCATION, f"deploy_{tag}")
    store = client.create_dicom_store(hc_dataset, "store")
    files: list = [pydicom_corpus / name for name in CORPUS]
    today = datetime.datetime.now(datetime.UTC).date()
    days = sorted(set(BACKFILL_DAYS) | {today - datetime.timedelta(days=n) for n in range(0, 3)})
    daily = {}
    for number, day in enumerate(days):
        data = _ct_instance(day, f"DAY{number:03d}")
        daily[day] = str(pydicom.dcmread(__import__("io").BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
        files.append(data)
    client.store_instances(store, files)
    dataset = f"deploy_{tag}"
    bigquery_standin.create_dataset(f"{PROJECT}.{dataset}")
    bucket = gcs_standin.create_bucket(f"deploy-{tag}")
    folder = Path(tempfile.mkdtemp(prefix="deploy-dicom-folder-"))
    from tests.unit.dicom_factory import make_dataset, to_file_bytes

    for number in range(FOLDER_INSTANCES):
        ds = make_dataset(Modality="OT", StudyDate="20240101", PatientID=f"F{number % 7}")
        (folder / f"{number:05d}.dcm").write_bytes(to_file_bytes(ds))
    corpus_uids = {name: str(pydicom.dcmread(pydicom_corpus / name, stop_before_pixels=True).SOPInstanceUID)
                   for name in CORPUS}
    # An exported table for the DAGs that read one (a user who sets dicom_table has one).
    from airflow_provider_dicom.export.bigquery import export_to_bigquery

    guide_table = f"bq://{PROJECT}.{dataset}.corpus"
    corpus_folder = Path(tempfile.mkdtemp(prefix="deploy-dicom-corpus-"))
    for name in CORPUS:
        shutil.copy(pydicom_corpus / name, corpus_folder / name)
    try:
        export_to_bigquery(corpus_folder, guide_table, client=bigquery_standin)
        yield Seeded(store, hc_dataset, dataset, bucket.name, folder, daily, corpus_uids, guide_table, corpus_folder)
    finally:
        shutil.rmtree(corpus_folder, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
        bigquery_standin.delete_dataset(f"{PROJECT}.{dataset}", delete_contents=True, not_found_ok=True)
        for blob in gcs_standin.list_blobs(bucket):
            blob.delete()
        bucket.delete()


# Every Variable the example DAGs read when a Param is left empty (grep `var.value.get` and
# `Variable.get` in example_dags/): with these set, every example DAG runs with its form's defaults.
def variables(seeded: Seeded) -> dict[str, str]:
    return {
        "dicom_store": seeded.store,  # store, cohort and scheduled-export DAGs
        "dicom_project": PROJECT,
        "dicom_dataset": seeded.dataset,
        "dicom_bucket": seeded.bucket,
        "dicom_table": seeded.guide_table,  # guide analyses; cohort-on-export when not asset-triggered
        # The small corpus folder: the sharded DAG's default of 16 shards then makes one per study
        # (5), not 16 tasks per run; the 1500-file folder is for the sharding and kill tests.
        "dicom_source_folder": str(seeded.corpus_folder),  # folder DAG
        "dicom_source": str(seeded.corpus_folder),  # sharded DAG: a folder every worker sees (one machine)
        "dicom_staging": f"gs://{seeded.bucket}/defaults/staging",  # sharded DAG
    }


@pytest.fixture(scope="package")
def launcher(services, airflow: Flavour) -> Iterator[airflow_deployment.Launcher]:
    """Creates the database and runs `airflow db migrate` in a background thread while the stand-ins
    start and are seeded (the two slowest steps of the tier's start, side by side)."""
    import threading

    home = Path(tempfile.mkdtemp(prefix=f"airflow-deploy-{airflow.name}-"))
    launcher = airflow_deployment.Launcher(home, airflow)
    errors: list[BaseException] = []

    def prepare() -> None:
        try:
            launcher.prepare()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread by `deployment`
            errors.append(exc)

    launcher.thread = threading.Thread(target=prepare, name="deployment-prepare", daemon=True)
    launcher.errors = errors
    launcher.thread.start()
    try:
        yield launcher
    finally:
        launcher.thread.join(600)
        pids = launcher.deployment.pids() if launcher.deployment else set()
        launcher.cleanup()
        shutil.rmtree(home, ignore_errors=True)
        import psutil

        leftovers = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        assert not leftovers, f"deployment processes left running: {leftovers}"


@pytest.fixture(scope="package")
def deployment(launcher, bigquery_server, gcs_server, healthcare_emulator, seeded) -> Deployment:
    """The running Airflow with its Variables set; stopped after the tier's last test (the database
    dropped, the Redis db flushed, the process groups killed) by `launcher`."""
    launcher.thread.join(600)
    if launcher.errors:
        raise launcher.errors[0]
    extra_env = {**bigquery_server.env, **gcs_server.env, "HEALTHCARE_EMULATOR_HOST": healthcare_emulator.url}
    extra_env["AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"] = os.environ["AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"]
    deployment = launcher.launch(extra_env)
    for key, value in variables(seeded).items():
        deployment.set_variable(key, value)
    return deployment
