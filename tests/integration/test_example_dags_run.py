"""The example DAGs run to success in `dag.test()` against the Cloud Healthcare emulator and the
BigQuery and GCS stand-ins, exactly as shipped (copied into the DAGs folder; configured through
run conf). The cohort DAG run twice for the same interval leaves the same tables and objects."""

from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path

import pytest
from tests.helpers.dag_runs import xcom


pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "example_dags"
FILES = ["CT_small.dcm", "MR_small.dcm", "examples_overlay.dcm", "J2K_pixelrep_mismatch.dcm", "rtplan.dcm"]
LOGICAL_DATE = datetime.datetime(2025, 3, 1, tzinfo=datetime.timezone.utc)


@pytest.fixture(scope="module")
def dags_folder(airflow_db) -> Path:
    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    for name in ("example_dicom_cohort.py", "example_dicom_scheduled_export.py", "example_dicom_guide_analyses.py"):
        shutil.copy(EXAMPLES / name, folder / name)
    return folder


@pytest.fixture
def env(healthcare_emulator, bigquery_server, gcs_server, monkeypatch):
    monkeypatch.setenv("HEALTHCARE_EMULATOR_HOST", healthcare_emulator.url)
    monkeypatch.setenv("DICOM_EXAMPLE_POLL_SECONDS", "0.2")


@pytest.fixture
def loaded_store(healthcare, dicom_store, pydicom_corpus) -> str:
    healthcare.store_instances(dicom_store, [pydicom_corpus / name for name in FILES])
    return dicom_store


def run(folder: Path, dag_id: str, **kwargs):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(folder), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    dag_run = bag.dags[dag_id].test(**kwargs)
    return dag_run, {ti.task_id: ti.state for ti in dag_run.get_task_instances()}



def sop(pydicom_corpus: Path, name: str) -> str:
    import pydicom

    return str(pydicom.dcmread(pydicom_corpus / name, stop_before_pixels=True).SOPInstanceUID)


def table_rows(client, table_id: str) -> list[str]:
    return sorted(r["SOPInstanceUID"] for r in client.query(f"SELECT SOPInstanceUID FROM `{table_id}`").result())


def test_cohort_dag_twice_for_one_interval(
    dags_folder, env, loaded_store, bq_dataset, bigquery_standin, gcs_bucket, pydicom_corpus
):
    project, dataset = bq_dataset.split(".")
    conf = {
        "store": loaded_store, "project": project, "dataset": dataset, "bucket": gcs_bucket.name,
        "modality": "MR", "study_date_from": "2004-01-01", "study_date_to": "2005-12-31",
    }
    expected = sorted(sop(pydicom_corpus, name) for name in ("MR_small.dcm", "examples_overlay.dcm"))
    snapshots = []
    for _ in range(2):
        dag_run, states = run(dags_folder, "example_dicom_cohort", run_conf=conf, logical_date=LOGICAL_DATE)
        assert set(states.values()) == {"success"}, states
        interval = dag_run.data_interval_start.strftime("%Y%m%d")
        report = xcom(dag_run, "report")
        assert report["cohort"] == {"studies": 2, "series": 2, "instances": 2, "rejected": 0}
        assert report["metadata_exported"] == 2 and report["files_exported"] == 2
        assert len(table_rows(bigquery_standin, f"{bq_dataset}.instances")) == len(FILES)
        assert table_rows(bigquery_standin, f"{bq_dataset}.cohort_{interval}") == expected
        text = gcs_bucket.blob(f"cohorts/{interval}/filter.txt").download_as_text()
        assert sorted(line.rsplit("/", 1)[1] for line in text.splitlines()) == expected
        objects = sorted(b.name for b in gcs_bucket.list_blobs())
        assert objects == sorted(
            [f"cohorts/{interval}/filter.txt"]
            + [name for name in objects if name.startswith(f"cohorts/{interval}/dicom/")]
        )
        assert sorted(name.rsplit("/", 1)[1] for name in objects if "/dicom/" in name) == [f"{u}.dcm" for u in expected]
        tables = sorted(t.table_id for t in bigquery_standin.list_tables(bq_dataset))
        snapshots.append((objects, tables, text))
    assert snapshots[0] == snapshots[1]
    assert snapshots[0][1] == sorted(["instances", f"cohort_{interval}"])


def test_cohort_dag_with_an_empty_cohort_skips_the_re_export(dags_folder, env, loaded_store, bq_dataset, gcs_bucket):
    project, dataset = bq_dataset.split(".")
    conf = {"store": loaded_store, "project": project, "dataset": dataset, "bucket": gcs_bucket.name,
            "modality": "MR", "study_date_from": "2004-01-01", "study_date_to": "2005-12-31",
            "patient_ids": ["nobody"], "body_part": "ABDOMEN"}
    _, states = run(dags_folder, "example_dicom_cohort", run_conf=conf)
    assert states["export_metadata"] == "success" and states["build_filter"] == "skipped"
    assert [b.name for b in gcs_bucket.list_blobs()] == []  # no 0-line filter file left behind
    assert {states["export_cohort_metadata"], states["export_cohort_files"], states["report"]} == {"skipped"}


def test_cohort_body_part_and_patient_filters(
    dags_folder, env, loaded_store, bq_dataset, bigquery_standin, gcs_bucket, pydicom_corpus
):
    import pydicom

    project, dataset = bq_dataset.split(".")
    patient = str(pydicom.dcmread(pydicom_corpus / "examples_overlay.dcm", stop_before_pixels=True).PatientID)
    conf = {"store": loaded_store, "project": project, "dataset": dataset, "bucket": gcs_bucket.name,
            "modality": "", "study_date_from": "2000-01-01", "study_date_to": "2030-01-01",
            "patient_ids": [patient], "body_part": "ABDOMEN"}
    dag_run, states = run(dags_folder, "example_dicom_cohort", run_conf=conf)
    assert set(states.values()) == {"success"}, states
    assert xcom(dag_run, "build_filter")["instances"] == 1


def test_scheduled_export_writes_the_interval_table(dags_folder, env, loaded_store, bq_dataset, bigquery_standin):
    project, dataset = bq_dataset.split(".")
    conf = {"source": loaded_store, "project": project, "dataset": dataset}
    for _ in range(2):  # a re-run of the same interval replaces its table
        dag_run, states = run(dags_folder, "example_dicom_scheduled_export", run_conf=conf, logical_date=LOGICAL_DATE)
        assert set(states.values()) == {"success"}, states
        table = f"{bq_dataset}.instances_{dag_run.data_interval_start:%Y%m%d}"
        assert len(table_rows(bigquery_standin, table)) == len(FILES)
    assert [t.table_id for t in bigquery_standin.list_tables(bq_dataset)] == [table.rsplit(".", 1)[1]]


def test_guide_analyses(dags_folder, env, loaded_store, bq_dataset, bigquery_standin, pydicom_corpus):
    project, dataset = bq_dataset.split(".")
    _, states = run(dags_folder, "example_dicom_scheduled_export",
                    run_conf={"source": loaded_store, "project": project, "dataset": dataset},
                    logical_date=LOGICAL_DATE)
    table = f"bq://{bq_dataset}.instances_20250301"
    dag_run, states = run(dags_folder, "example_dicom_guide_analyses", run_conf={"table": table, "patient_id": "4MR1"})
    assert set(states.values()) == {"success"}, states
    paths = xcom(dag_run, "patient_dicomweb_paths")
    assert paths["count"] == 1 and paths["paths"][0].endswith(sop(pydicom_corpus, "MR_small.dcm"))
    latest = xcom(dag_run, "latest_studies")
    assert latest["count"] == len(FILES)  # five studies
    assert latest["studies"][0]["StudyDateTime"].startswith("2019-10-19")  # the newest first
