"""DicomExportToBigQueryOperator in real DAG runs (`dag.test()`, sqlite metadata database) against
the BigQuery stand-in: rows and types in the table, counts in XCom, the failure policy, templated
arguments validated after rendering, and the example DAG re-run idempotently.

Airflow 3.3's dag.test() runs the DAG as serialized from the DAGs folder, so the test DAGs are
written there as files, as a user's would be.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import textwrap
import uuid
from pathlib import Path

import pytest

from tests.helpers.dag_runs import load_dag, xcom

pytestmark = pytest.mark.integration

EXAMPLE_DAG = Path(__file__).resolve().parents[2] / "example_dags" / "example_dicom_folder_to_bigquery.py"

TEST_DAGS = '''
"""DAGs for tests/integration/test_operator_dag.py."""
import datetime
import json
from pathlib import Path

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_dicom.operators.export import DicomExportToBigQueryOperator


def export_dag(dag_id, **operator_kwargs):
    with DAG(
        dag_id,
        schedule=None,
        start_date=datetime.datetime(2025, 1, 1),
        params={
            "folder": "", "project": "", "dataset": "", "table": "", "write_disposition": "WRITE_EMPTY", "record": "",
        },
    ) as dag:
        export = DicomExportToBigQueryOperator(
            task_id="export",
            source="{{ params.folder }}",
            destination_table_uri="bq://{{ params.project }}.{{ params.dataset }}.{{ params.table }}",
            write_disposition="{{ params.write_disposition }}",
            retries=2,
            retry_delay=datetime.timedelta(seconds=1),
            **operator_kwargs,
        )

        @task(trigger_rule="all_done")
        def record(summary, path):
            """What a downstream task sees of the export's result, even when the export failed."""
            Path(path).write_text(json.dumps(summary))

        record(export.output, "{{ params.record }}")
    return dag


strict = export_dag("dicom_export_strict")
tolerant = export_dag("dicom_export_tolerant", max_failed_instances=1)


class DiesAfterTheLoad(DicomExportToBigQueryOperator):
    """The first try of the lineage dies after its load job committed (as a worker killed there would)."""

    def execute(self, context):
        result = super().execute(context)
        if Path(context["params"]["record"] + ".died").exists():
            return result
        Path(context["params"]["record"] + ".died").write_text(result["job_id"])
        raise RuntimeError("worker lost after the load committed")


with DAG(
    "dicom_export_dies_after_load",
    schedule=None,
    start_date=datetime.datetime(2025, 1, 1),
    params={"folder": "", "project": "", "dataset": "", "table": "", "write_disposition": "WRITE_APPEND",
            "record": ""},
):
    DiesAfterTheLoad(
        task_id="export",
        source="{{ params.folder }}",
        destination_table_uri="bq://{{ params.project }}.{{ params.dataset }}.{{ params.table }}",
        write_disposition="{{ params.write_disposition }}",
        retries=1,
        retry_delay=datetime.timedelta(seconds=0),
    )
'''


@pytest.fixture(scope="module")
def dags_folder(airflow_db, airflow_home) -> Path:
    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    (folder / "dicom_export_test_dags.py").write_text(textwrap.dedent(TEST_DAGS))
    shutil.copy(EXAMPLE_DAG, folder / EXAMPLE_DAG.name)
    return folder



@pytest.fixture
def dataset(bq_dataset) -> str:
    """A fresh dataset on the BigQuery stand-in, as "project.dataset"."""
    return bq_dataset


@pytest.fixture
def good_folder(tmp_path, pydicom_corpus) -> Path:
    folder = tmp_path / "dicom"
    (folder / "ct").mkdir(parents=True)
    shutil.copy(pydicom_corpus / "CT_small.dcm", folder / "ct" / "1.dcm")
    shutil.copy(pydicom_corpus / "MR_small.dcm", folder / "mr.dcm")
    (folder / "README.txt").write_text("a file that is not DICOM\n")
    return folder


@pytest.fixture
def folder_with_bad_file(good_folder, pydicom_corpus) -> Path:
    (good_folder / "broken.dcm").write_bytes((pydicom_corpus / "CT_small.dcm").read_bytes()[:200])
    return good_folder


def sop_uids(pydicom_corpus: Path) -> set[str]:
    import pydicom

    return {
        str(pydicom.dcmread(pydicom_corpus / name, stop_before_pixels=True).SOPInstanceUID)
        for name in ("CT_small.dcm", "MR_small.dcm")
    }


def run(dag, tmp_path: Path, dataset: str, **conf):
    """One dag.test() run exporting into `dataset`; returns task instances by id, what the
    downstream task received from the export (None when it got nothing) and the DAG run."""
    import json

    project, dataset_name = dataset.split(".")
    conf = {"project": project, "dataset": dataset_name, **conf}
    record = tmp_path / f"record-{uuid.uuid4().hex[:6]}.json"
    dag_run = dag.test(run_conf={**conf, "record": str(record)})
    states = {ti.task_id: ti for ti in dag_run.get_task_instances()}
    summary = json.loads(record.read_text()) if record.exists() else None
    return states, summary, dag_run


def table_rows(client, table_id: str) -> list[dict]:
    return [dict(row.items()) for row in client.query(f"SELECT * FROM `{table_id}`").result()]



def test_export_loads_rows_with_their_types_and_reports_counts(
    dags_folder, dataset, good_folder, bigquery_standin, pydicom_corpus, tmp_path
):
    dag = load_dag(dags_folder, "dicom_export_strict")
    dataset_name = dataset.split(".")[1]
    states, summary, dag_run = run(dag, tmp_path, dataset, folder=str(good_folder), table="instances")
    assert states["export"].state == "success"
    assert summary["instances_exported"] == 2
    assert summary["failure_count"] == 0 and summary["failures"] == []
    assert summary["not_dicom_count"] == 1
    assert summary["table_uri"] == f"bq://{dataset}.instances"

    rows = table_rows(bigquery_standin, f"{dataset}.instances")
    assert {row["SOPInstanceUID"] for row in rows} == sop_uids(pydicom_corpus)
    ct = next(row for row in rows if row["Modality"] == "CT")
    assert ct["StudyDate"] == dt.date(2004, 1, 19)
    assert isinstance(ct["Rows"], int) and ct["Rows"] == 128
    assert ct["ImageType"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert ct["BlobStorageSize"] == (pydicom_corpus / "CT_small.dcm").stat().st_size
    assert ct["PatientName"]["Alphabetic"]["FamilyName"]

    schema = {field.name: field for field in bigquery_standin.get_table(f"{dataset}.instances").schema}
    assert (schema["StudyDate"].field_type, schema["StudyDate"].mode) == ("DATE", "NULLABLE")
    assert schema["ImageType"].mode == "REPEATED"
    assert schema["PatientName"].field_type in ("RECORD", "STRUCT")

    link = xcom(dag_run, "export", "_link_DicomBigQueryTableLink")
    assert link.startswith("https://console.cloud.google.com/bigquery?")
    assert f"d={dataset_name}" in link and "t=instances" in link


def test_write_empty_into_a_non_empty_table_fails_and_leaves_it_unchanged(
    dags_folder, dataset, good_folder, bigquery_standin, tmp_path, capfd
):
    dag = load_dag(dags_folder, "dicom_export_strict")
    states, _, _ = run(dag, tmp_path, dataset, folder=str(good_folder), table="t")
    assert states["export"].state == "success"
    capfd.readouterr()
    states, summary, _ = run(dag, tmp_path, dataset, folder=str(good_folder), table="t")
    assert states["export"].state == "failed"
    assert summary is None  # no result: the export was refused before reading a file
    assert states["export"].try_number == 1  # the table's state will not change on a retry
    out = "".join(capfd.readouterr())
    assert f"table bq://{dataset}.t is not empty (2 rows)" in out
    assert len(table_rows(bigquery_standin, f"{dataset}.t")) == 2


def test_bad_file_fails_the_task_only_after_the_good_instances_are_loaded(
    dags_folder, dataset, folder_with_bad_file, bigquery_standin, pydicom_corpus, tmp_path, capfd
):
    dag = load_dag(dags_folder, "dicom_export_strict")
    states, summary, _ = run(dag, tmp_path, dataset, folder=str(folder_with_bad_file), table="t")
    export = states["export"]
    assert export.state == "failed"
    assert export.try_number == 1  # not retried despite retries=2: a retry cannot fix a broken file
    assert {row["SOPInstanceUID"] for row in table_rows(bigquery_standin, f"{dataset}.t")} == sop_uids(
        pydicom_corpus
    )
    # The result reaches downstream tasks even though the task failed.
    assert summary["instances_exported"] == 2 and summary["failure_count"] == 1
    assert summary["failures"][0]["path"] == str(folder_with_bad_file / "broken.dcm")
    assert summary["failures"][0]["reason"]
    out = "".join(capfd.readouterr())
    assert "1 DICOM instance failed to export (max_failed_instances=0); the 2 good instances were loaded" in out
    assert f"{folder_with_bad_file / 'broken.dcm'}: " in out


def test_tolerated_failures_let_the_task_succeed(
    dags_folder, dataset, folder_with_bad_file, bigquery_standin, tmp_path
):
    dag = load_dag(dags_folder, "dicom_export_tolerant")
    states, summary, _ = run(dag, tmp_path, dataset, folder=str(folder_with_bad_file), table="t")
    assert states["export"].state == "success"
    assert summary["instances_exported"] == 2 and summary["failure_count"] == 1
    assert len(table_rows(bigquery_standin, f"{dataset}.t")) == 2


def test_templated_argument_is_validated_after_rendering(
    dags_folder, dataset, good_folder, bigquery_standin, tmp_path, capfd
):
    from google.api_core.exceptions import NotFound

    dag = load_dag(dags_folder, "dicom_export_strict")
    states, summary, _ = run(
        dag, tmp_path, dataset, folder=str(good_folder), table="t", write_disposition="sometimes"
    )
    assert states["export"].state == "failed"
    assert states["export"].try_number == 1  # a wrong rendered value is not retried
    assert summary is None
    assert "unknown write disposition 'sometimes'" in "".join(capfd.readouterr())
    with pytest.raises(NotFound):
        bigquery_standin.get_table(f"{dataset}.t")


@pytest.mark.matrix  # also on the older Airflow sets (scripts/matrix.sh)
def test_example_dag_reruns_are_idempotent(dags_folder, dataset, good_folder, bigquery_standin, pydicom_corpus):
    dag = load_dag(dags_folder, "example_dicom_folder_to_bigquery")
    project, dataset_name = dataset.split(".")
    conf = {"source_folder": str(good_folder), "project": project, "dataset": dataset_name, "table": "instances"}
    for _ in range(2):
        dag_run = dag.test(run_conf=conf)
        assert {ti.task_id: ti.state for ti in dag_run.get_task_instances()} == {
            "export_folder_to_bigquery": "success",
            "report": "success",
        }
        rows = table_rows(bigquery_standin, f"{dataset}.instances")
        assert sorted(row["SOPInstanceUID"] for row in rows) == sorted(sop_uids(pydicom_corpus))
    assert xcom(dag_run, "export_folder_to_bigquery", "return_value")["write_disposition"] == "WRITE_TRUNCATE"


# -- a retry after the load committed ------------------------------------------------------------


@pytest.mark.parametrize("disposition", ["WRITE_APPEND", "WRITE_EMPTY", "WRITE_TRUNCATE"])
def test_a_retry_after_the_load_committed_reports_that_load_and_loads_nothing_again(
    dags_folder, tmp_path, dataset, good_folder, pydicom_corpus, bigquery_standin, disposition
):
    dag = load_dag(dags_folder, "dicom_export_dies_after_load")
    table = f"t_{uuid.uuid4().hex[:6]}"
    states, _, dag_run = run(dag, tmp_path, dataset, folder=str(good_folder), table=table,
                             write_disposition=disposition)
    assert states["export"].state == "success" and states["export"].try_number == 2
    uids = [r["SOPInstanceUID"] for r in bigquery_standin.query(f"SELECT SOPInstanceUID FROM `{dataset}.{table}`").result()]
    assert sorted(uids) == sorted(sop_uids(pydicom_corpus)), "the retry loaded the rows again"
    summary = xcom(dag_run, "export")
    first_job = next(tmp_path.glob("record-*.json.died")).read_text()
    assert summary["job_id"] == first_job and summary["instances_exported"] == 2
    assert summary["reattached"] is True
