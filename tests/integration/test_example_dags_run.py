"""The example DAGs run to success in `dag.test()` against the Cloud Healthcare emulator and the
BigQuery and GCS stand-ins, exactly as shipped (copied into the DAGs folder; configured through
run conf). The cohort DAG re-run as the same run leaves the same tables and objects; runs with no
logical date (the Airflow 3 default of the UI and `airflow dags trigger`) work and get their own
outputs; successful exports record asset events for the tables and prefixes they wrote."""

from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path

import pytest

from airflow_provider_dicom.model.naming import run_key
from tests.helpers.airflow_versions import AIRFLOW_2, asset_event_model, asset_event_uri, dag_test
from tests.helpers.dag_runs import load_dag, xcom

# Tests marked `matrix` also run on the older Airflow sets (scripts/matrix.sh): together they run
# every example DAG here once; the others repeat runs to check naming, which is Airflow-independent.
pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "example_dags"
FILES = ["CT_small.dcm", "MR_small.dcm", "examples_overlay.dcm", "J2K_pixelrep_mismatch.dcm", "rtplan.dcm"]
LOGICAL_DATE = datetime.datetime(2025, 3, 1, tzinfo=datetime.timezone.utc)


@pytest.fixture(scope="module")
def dags_folder(airflow_db) -> Path:
    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    for name in ("example_dicom_cohort.py", "example_dicom_scheduled_export.py", "example_dicom_guide_analyses.py",
                 "example_dicom_cohort_on_export.py", "example_dicom_store_export.py"):
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
    dag_run = dag_test(load_dag(folder, dag_id), **kwargs)
    return dag_run, {ti.task_id: ti.state for ti in dag_run.get_task_instances()}



def asset_events(dag_run) -> list[tuple[str, list[str]]]:
    """(asset URI, alias names) of every asset event `dag_run` recorded, in order."""
    from airflow.utils.session import create_session

    AssetEvent = asset_event_model()  # noqa: N806 - the model class

    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .filter(AssetEvent.source_dag_id == dag_run.dag_id, AssetEvent.source_run_id == dag_run.run_id)
            .order_by(AssetEvent.id)
            .all()
        )
        return [(asset_event_uri(e), sorted(a.name for a in e.source_aliases)) for e in events]


def sop(pydicom_corpus: Path, name: str) -> str:
    import pydicom

    return str(pydicom.dcmread(pydicom_corpus / name, stop_before_pixels=True).SOPInstanceUID)


def table_rows(client, table_id: str) -> list[str]:
    return sorted(r["SOPInstanceUID"] for r in client.query(f"SELECT SOPInstanceUID FROM `{table_id}`").result())


def test_cohort_dag_twice_for_one_logical_date(
    dags_folder, env, loaded_store, bq_dataset, bigquery_standin, gcs_bucket, pydicom_corpus
):
    project, dataset = bq_dataset.split(".")
    conf = {
        "store": loaded_store, "project": project, "dataset": dataset, "bucket": gcs_bucket.name,
        "modality": "MR", "study_date_from": "2004-01-01", "study_date_to": "2005-12-31",
    }
    expected = sorted(sop(pydicom_corpus, name) for name in ("MR_small.dcm", "examples_overlay.dcm"))
    # Two manual runs (dag.test() makes a new run id each time, from the trigger instant): each
    # writes its own table and folder, and each holds exactly the cohort. (A cleared run keeps its
    # run id and rewrites its own outputs: the deployment tier clears runs.)
    snapshots = []
    for _ in range(2):
        dag_run, states = run(dags_folder, "example_dicom_cohort", run_conf=conf, logical_date=LOGICAL_DATE)
        assert set(states.values()) == {"success"}, states
        interval = run_key(dag_run.run_id)  # a manual run's outputs are named by its run id
        report = xcom(dag_run, "report")
        assert report["cohort"] == {"studies": 2, "series": 2, "instances": 2, "rejected": 0}
        assert report["metadata_exported"] == 2 and report["files_exported"] == 2
        assert len(table_rows(bigquery_standin, f"{bq_dataset}.instances")) == len(FILES)
        assert table_rows(bigquery_standin, f"{bq_dataset}.cohort_{interval}") == expected
        text = gcs_bucket.blob(f"cohorts/{interval}/filter.txt").download_as_text()
        assert sorted(line.rsplit("/", 1)[1] for line in text.splitlines()) == expected
        objects = sorted(b.name for b in gcs_bucket.list_blobs(prefix=f"cohorts/{interval}/"))
        assert objects == sorted(
            [f"cohorts/{interval}/filter.txt"]
            + [name for name in objects if name.startswith(f"cohorts/{interval}/dicom/")]
        )
        assert sorted(name.rsplit("/", 1)[1] for name in objects if "/dicom/" in name) == [f"{u}.dcm" for u in expected]
        snapshots.append((interval, [o.split("/", 2)[2] for o in objects], text))
    if AIRFLOW_2:
        # Airflow 2 has one run per logical date: the second dag.test() re-ran the same run, which
        # rewrote its own outputs (what a clear does).
        assert snapshots[0][0] == snapshots[1][0]
    else:
        assert snapshots[0][0] != snapshots[1][0]
    assert snapshots[0][1:] == snapshots[1][1:]  # the same cohort, in two places
    tables = sorted(t.table_id for t in bigquery_standin.list_tables(bq_dataset))
    assert tables == sorted({"instances"} | {f"cohort_{key}" for key, _, _ in snapshots})


@pytest.mark.matrix
def test_cohort_dag_with_an_empty_cohort_skips_the_re_export(dags_folder, env, loaded_store, bq_dataset, gcs_bucket):
    project, dataset = bq_dataset.split(".")
    conf = {"store": loaded_store, "project": project, "dataset": dataset, "bucket": gcs_bucket.name,
            "modality": "MR", "study_date_from": "2004-01-01", "study_date_to": "2005-12-31",
            "patient_ids": ["nobody"], "body_part": "ABDOMEN"}
    dag_run, states = run(dags_folder, "example_dicom_cohort", run_conf=conf)
    assert states["export_metadata"] == "success" and states["build_filter"] == "skipped"
    assert [uri for uri, _ in asset_events(dag_run)] == [f"bigquery://{project}/{dataset}/instances"]
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
    tables = []
    for _ in range(2):  # manual runs never replace each other's (or a scheduled day's) table
        dag_run, states = run(dags_folder, "example_dicom_scheduled_export", run_conf=conf, logical_date=LOGICAL_DATE)
        assert set(states.values()) == {"success"}, states
        tables.append(f"instances_{run_key(dag_run.run_id)}")  # a manual run: its own table
        assert len(table_rows(bigquery_standin, f"{bq_dataset}.{tables[-1]}")) == len(FILES)
    # (Airflow 2: one run per logical date, so both runs wrote the same table.)
    assert sorted(t.table_id for t in bigquery_standin.list_tables(bq_dataset)) == sorted(set(tables))
    assert len(set(tables)) == (1 if AIRFLOW_2 else 2)


@pytest.mark.matrix
def test_guide_analyses(dags_folder, env, loaded_store, bq_dataset, bigquery_standin, pydicom_corpus):
    project, dataset = bq_dataset.split(".")
    export_run, states = run(dags_folder, "example_dicom_scheduled_export",
                             run_conf={"source": loaded_store, "project": project, "dataset": dataset},
                             logical_date=LOGICAL_DATE)
    table = f"bq://{bq_dataset}.instances_{run_key(export_run.run_id)}"
    dag_run, states = run(dags_folder, "example_dicom_guide_analyses", run_conf={"table": table, "patient_id": "4MR1"})
    assert set(states.values()) == {"success"}, states
    paths = xcom(dag_run, "patient_dicomweb_paths")
    assert paths["count"] == 1 and paths["paths"][0].endswith(sop(pydicom_corpus, "MR_small.dcm"))
    latest = xcom(dag_run, "latest_studies")
    assert latest["count"] == len(FILES)  # five studies
    assert latest["studies"][0]["StudyDateTime"].startswith("2019-10-19")  # the newest first


@pytest.mark.matrix
def test_manual_runs_without_logical_date_get_their_own_outputs_and_asset_events(
    dags_folder, env, loaded_store, bq_dataset, bigquery_standin, gcs_bucket, pydicom_corpus
):
    """Two same-day manual cohort runs with no logical date and different params: each run's
    table and folder hold exactly its own cohort; the exports record their assets. (Airflow 2
    gives every run a logical date, the trigger's instant: the rest holds there too.)"""
    project, dataset = bq_dataset.split(".")
    base = {"store": loaded_store, "project": project, "dataset": dataset, "bucket": gcs_bucket.name,
            "study_date_from": "2000-01-01", "study_date_to": "2030-01-01"}
    import pydicom

    modalities = {name: str(pydicom.dcmread(pydicom_corpus / name, stop_before_pixels=True).Modality) for name in FILES}
    cohorts = {m: [name for name in FILES if modalities[name] == m] for m in ("MR", "CT")}
    assert cohorts["MR"] and cohorts["CT"]
    runs = {}
    for modality, names in cohorts.items():
        dag_run, states = run(dags_folder, "example_dicom_cohort", run_conf={**base, "modality": modality},
                              logical_date=None)
        assert (dag_run.logical_date is None) is not AIRFLOW_2
        assert set(states.values()) == {"success"}, states
        runs[modality] = dag_run
        key = run_key(dag_run.run_id)
        expected = sorted(sop(pydicom_corpus, name) for name in names)
        assert table_rows(bigquery_standin, f"{bq_dataset}.cohort_{key}") == expected
        files = sorted(b.name.rsplit("/", 1)[1] for b in gcs_bucket.list_blobs(prefix=f"cohorts/{key}/dicom/"))
        assert files == [f"{u}.dcm" for u in expected]
        alias = "dicom-export/example_dicom_cohort/"
        assert sorted(asset_events(dag_run)) == sorted([
            (f"bigquery://{project}/{dataset}/instances", [alias + "export_metadata"]),
            (f"gs://{gcs_bucket.name}/cohorts/{key}/filter.txt", [alias + "build_filter"]),
            (f"bigquery://{project}/{dataset}/cohort_{key}", [alias + "export_cohort_metadata"]),
            (f"gs://{gcs_bucket.name}/cohorts/{key}/dicom", [alias + "export_cohort_files"]),
        ])
    assert runs["MR"].run_id != runs["CT"].run_id

    export_run, states = run(dags_folder, "example_dicom_scheduled_export", logical_date=None,
                             run_conf={"source": loaded_store, "project": project, "dataset": dataset})
    assert set(states.values()) == {"success"}, states
    table = f"instances_{run_key(export_run.run_id)}"
    assert len(table_rows(bigquery_standin, f"{bq_dataset}.{table}")) == len(FILES)
    assert asset_events(export_run) == [
        (f"bigquery://{project}/{dataset}/{table}", ["dicom-export/example_dicom_scheduled_export/export_snapshot"])
    ]


@pytest.mark.matrix
def test_cohort_on_export_selects_from_the_table_it_is_given(dags_folder, env, loaded_store, bq_dataset, gcs_bucket):
    """The asset-scheduled DAG, run by hand on an export's table (the deployment tier checks that
    the scheduler starts it after the export)."""
    project, dataset = bq_dataset.split(".")
    export_run, _ = run(dags_folder, "example_dicom_scheduled_export", logical_date=None,
                        run_conf={"source": loaded_store, "project": project, "dataset": dataset})
    table = f"bq://{bq_dataset}.instances_{run_key(export_run.run_id)}"
    dag_run, states = run(dags_folder, "example_dicom_cohort_on_export", logical_date=None,
                          run_conf={"table": table, "bucket": gcs_bucket.name, "modality": "MR"})
    assert set(states.values()) == {"success"}, states
    assert xcom(dag_run, "build_filter")["instances"] == 2
    assert gcs_bucket.blob(f"cohorts/{run_key(dag_run.run_id)}/filter.txt").exists()


@pytest.mark.matrix
def test_cohort_on_export_by_hand_reads_the_table_variable(dags_folder, env, loaded_store, bq_dataset, gcs_bucket,
                                                          monkeypatch):
    """A manual run with no table Param selects from the Variable dicom_table (the form's defaults; on
    Airflow 2 `Variable.get` has no `default` keyword: the run failed there with TypeError)."""
    project, dataset = bq_dataset.split(".")
    export_run, _ = run(dags_folder, "example_dicom_scheduled_export", logical_date=None,
                        run_conf={"source": loaded_store, "project": project, "dataset": dataset})
    table = f"bq://{bq_dataset}.instances_{run_key(export_run.run_id)}"
    monkeypatch.setenv("AIRFLOW_VAR_DICOM_TABLE", table)
    dag_run, states = run(dags_folder, "example_dicom_cohort_on_export", logical_date=None,
                          run_conf={"bucket": gcs_bucket.name, "modality": "MR"})
    assert set(states.values()) == {"success"}, states
    assert xcom(dag_run, "exported_table") == table
    assert xcom(dag_run, "build_filter")["instances"] == 2


@pytest.mark.matrix
def test_store_export_example_exports_metadata_and_files(dags_folder, env, loaded_store, bq_dataset, bigquery_standin,
                                                        gcs_bucket, pydicom_corpus):
    """The store export example, both exports deferred to the trigger: the table holds every
    instance, the prefix one file per instance, and `report` reads both summaries."""
    conf = {"store": loaded_store, "table": f"bq://{bq_dataset}.store_instances",
            "gcs_prefix": f"gs://{gcs_bucket.name}/export"}
    dag_run, states = run(dags_folder, "example_dicom_store_export", run_conf=conf)
    assert states == {"export_metadata": "success", "export_files": "success", "report": "success"}, states
    expected = sorted(sop(pydicom_corpus, name) for name in FILES)
    assert table_rows(bigquery_standin, f"{bq_dataset}.store_instances") == expected
    files = sorted(b.name.rsplit("/", 1)[1] for b in gcs_bucket.list_blobs(prefix="export/"))
    assert files == [f"{uid}.dcm" for uid in expected]
    for task_id in ("export_metadata", "export_files"):
        summary = xcom(dag_run, task_id)
        assert (summary["state"], summary["success"], summary["failure"]) == ("SUCCEEDED", len(FILES), 0)


@pytest.mark.matrix
@pytest.mark.skipif(not AIRFLOW_2, reason="Airflow 3 computes links on the worker from the rendered operator")
def test_links_on_airflow_2_use_the_values_the_worker_rendered(dags_folder, env, loaded_store, bq_dataset, gcs_bucket):
    """Airflow 2's webserver asks each link of the *parsed* operator, whose fields are still
    templates in the example DAGs: the links read what the worker rendered for that task instance."""
    table = f"bq://{bq_dataset}.linked"
    dag_run, states = run(dags_folder, "example_dicom_store_export",
                          run_conf={"store": loaded_store, "table": table, "gcs_prefix": f"gs://{gcs_bucket.name}/l"})
    assert set(states.values()) == {"success"}, states
    parsed = load_dag(dags_folder, "example_dicom_store_export")  # unrendered, as the webserver has it
    links = {}
    for ti in dag_run.get_task_instances():
        task = parsed.get_task(ti.task_id)
        links[ti.task_id] = {link.name: link.get_link(task, ti_key=ti.key) for link in task.operator_extra_links}
    project, dataset = bq_dataset.split(".")
    store = loaded_store.split("/")
    assert f"p={project}&d={dataset}&t=linked" in links["export_metadata"]["BigQuery Table"]
    assert f"/datasets/{store[5]}/dicomStores/{store[7]}/" in links["export_metadata"]["DICOM Store"]
    assert links["export_metadata"]["Operation Logs"].startswith("http")
    assert links["export_files"]["Cloud Storage Destination"].endswith(f"/storage/browser/{gcs_bucket.name}/l")
