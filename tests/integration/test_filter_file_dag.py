"""BuildFilterFileOperator in real DAG runs (`dag.test()`, sqlite) against the BigQuery and GCS
stand-ins: a parameterised query to a gs:// object, a table to a local file at series level, UIDs
handed over through XCom, invalid UIDs reported, and an empty selection that skips downstream."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from tests.helpers.dag_runs import xcom

pytestmark = pytest.mark.integration

DAGS = '''
"""DAGs for tests/integration/test_filter_file_dag.py."""
import datetime

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_dicom.operators.filter_file import BuildFilterFileOperator

PARAMS = {"table": "", "out": "", "modality": "CT", "level": "instance", "on_empty": "fail"}


def dag(dag_id):
    return DAG(dag_id, schedule=None, start_date=datetime.datetime(2025, 1, 1), params=PARAMS)


with dag("filter_from_query"):
    BuildFilterFileOperator(
        task_id="filter",
        sql="SELECT * FROM `{{ params.table }}` WHERE Modality = @modality AND StudyDate >= @since",
        query_parameters={"modality": "{{ params.modality }}", "since": {"type": "DATE", "value": "2020-01-01"}},
        level="{{ params.level }}",
        on_empty="{{ params.on_empty }}",
        destination="{{ params.out }}",
    )

with dag("filter_from_table"):
    BuildFilterFileOperator(task_id="filter", source_table="bq://{{ params.table }}", level="series",
                            destination="{{ params.out }}")

with dag("filter_from_xcom"):
    @task
    def pick():
        return [
            {"StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1.2.3.4", "SOPInstanceUID": "1.2.3.4.5"},
            ["1.2.3", "1.2.3.4", "1.2.3.4.6"],
            "/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5",
            "/studies/9.9",
        ]

    BuildFilterFileOperator(task_id="filter", uids=pick(), destination="{{ params.out }}")

with dag("filter_from_paths"):
    BuildFilterFileOperator(
        task_id="filter",
        sql=(
            "SELECT CONCAT('/studies/', StudyInstanceUID) AS p FROM `{{ params.table }}` WHERE Modality = 'MR' "
            "UNION ALL SELECT CONCAT('/studies/', StudyInstanceUID, '/series/', SeriesInstanceUID, "
            "'/instances/', SOPInstanceUID) FROM `{{ params.table }}`"
        ),
        path_column="p",
        destination="{{ params.out }}",
    )

with dag("filter_empty_skips"):
    @task
    def downstream():
        return "ran"

    BuildFilterFileOperator(
        task_id="filter", sql="SELECT * FROM `{{ params.table }}` WHERE Modality = @modality",
        query_parameters={"modality": "{{ params.modality }}"}, on_empty="skip", destination="{{ params.out }}",
    ) >> downstream()
'''

ROWS = [
    # study, series, instance, modality, date
    ("1.2.840.1", "1.2.840.1.1", "1.2.840.1.1.1", "CT", "2021-03-01"),
    ("1.2.840.1", "1.2.840.1.1", "1.2.840.1.1.2", "CT", "2021-03-01"),
    ("1.2.840.1", "1.2.840.1.1", "1.2.840.1.1.2", "CT", "2021-03-01"),  # duplicated row
    ("1.2.840.1", "1.2.840.1.2", "1.2.840.1.2.1", "CT", "2021-03-01"),
    ("1.2.840.2", "1.2.840.2.1", "1.2.840.2.1.1", "MR", "2022-01-01"),
    ("1.2.840.3", "1.2.840.3.1", "1.2.840.3.1.01", "CT", "2023-05-05"),  # leading zero: rejected
    ("1.2.840.4", "1.2.840.4.1", "1.2.840.4.1.1", "CT", "2019-12-31"),  # before @since
]


@pytest.fixture(scope="module")
def dags_folder(airflow_db) -> Path:
    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    (folder / "dicom_filter_file_dags.py").write_text(textwrap.dedent(DAGS))
    return folder


@pytest.fixture
def table(bigquery_standin, bq_dataset) -> str:
    from google.cloud import bigquery

    table_id = f"{bq_dataset}.instances"
    schema = [
        bigquery.SchemaField("StudyInstanceUID", "STRING"),
        bigquery.SchemaField("SeriesInstanceUID", "STRING"),
        bigquery.SchemaField("SOPInstanceUID", "STRING"),
        bigquery.SchemaField("Modality", "STRING"),
        bigquery.SchemaField("StudyDate", "DATE"),
    ]
    rows = [dict(zip([f.name for f in schema], row)) for row in ROWS]
    job = bigquery_standin.load_table_from_json(
        rows, table_id, job_config=bigquery.LoadJobConfig(schema=schema, source_format="NEWLINE_DELIMITED_JSON")
    )
    job.result()
    return table_id


def run(folder: Path, dag_id: str, **conf):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(folder), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    dag_run = bag.dags[dag_id].test(run_conf=conf)
    return dag_run, {ti.task_id: ti for ti in dag_run.get_task_instances()}



def test_query_with_parameters_to_gcs(dags_folder, table, gcs_server, gcs_bucket):
    out = f"gs://{gcs_bucket.name}/filters/ct.txt"
    dag_run, tis = run(dags_folder, "filter_from_query", table=table, out=out)
    assert tis["filter"].state == "success"
    text = gcs_bucket.blob("filters/ct.txt").download_as_text()
    assert text == (
        "/studies/1.2.840.1/series/1.2.840.1.1/instances/1.2.840.1.1.1\n"
        "/studies/1.2.840.1/series/1.2.840.1.1/instances/1.2.840.1.1.2\n"
        "/studies/1.2.840.1/series/1.2.840.1.2/instances/1.2.840.1.2.1\n"
    )
    result = xcom(dag_run, "filter")
    assert result["uri"] == out
    assert (result["studies"], result["series"], result["instances"], result["lines"]) == (1, 2, 3, 3)
    assert result["rejected"] == 1
    assert result["rejected_examples"] == ["a 14-character value: SOPInstanceUID component with a leading zero"]
    assert result["route"] == "worker" and result["input_tables"] == [table]
    # The link the UI shows was computed on the worker and stored in XCom.
    link = xcom(dag_run, "filter", "_link_DicomFilterFileLink")
    assert link.endswith(f"/_details/{gcs_bucket.name}/filters/ct.txt")


def test_study_level_from_the_same_query(dags_folder, table, tmp_path):
    out = tmp_path / "studies.txt"
    dag_run, tis = run(dags_folder, "filter_from_query", table=table, out=str(out), level="study")
    # At study level the bad SOP UID no longer matters: 1.2.840.3 is in; 1.2.840.4 is before @since.
    assert out.read_text() == "/studies/1.2.840.1\n/studies/1.2.840.3\n"
    assert xcom(dag_run, "filter")["studies"] == 2 and xcom(dag_run, "filter")["rejected"] == 0


def test_table_to_local_file_at_series_level(dags_folder, table, tmp_path):
    out = tmp_path / "series.txt"
    dag_run, tis = run(dags_folder, "filter_from_table", table=table, out=str(out))
    assert tis["filter"].state == "success"
    assert out.read_text().splitlines() == [
        "/studies/1.2.840.1/series/1.2.840.1.1",
        "/studies/1.2.840.1/series/1.2.840.1.2",
        "/studies/1.2.840.2/series/1.2.840.2.1",
        "/studies/1.2.840.3/series/1.2.840.3.1",
        "/studies/1.2.840.4/series/1.2.840.4.1",
    ]
    assert xcom(dag_run, "filter")["series"] == 5


def test_uids_from_xcom(dags_folder, gcs_server, gcs_bucket):
    out = f"gs://{gcs_bucket.name}/picked.txt"
    dag_run, tis = run(dags_folder, "filter_from_xcom", out=out)
    assert tis["filter"].state == "success"
    assert gcs_bucket.blob("picked.txt").download_as_text() == (
        "/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5\n"
        "/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.6\n"
        "/studies/9.9\n"
    )
    assert xcom(dag_run, "filter")["duplicates"] == 1


def test_empty_selection_skips_downstream(dags_folder, table, tmp_path):
    out = tmp_path / "none.txt"
    dag_run, tis = run(dags_folder, "filter_empty_skips", table=table, out=str(out), modality="PT")
    assert tis["filter"].state == "skipped" and tis["downstream"].state == "skipped"
    assert not out.exists()
    assert xcom(dag_run, "filter")["lines"] == 0


def test_query_returning_paths_of_mixed_levels(dags_folder, table, tmp_path):
    out = tmp_path / "paths.txt"
    dag_run, tis = run(dags_folder, "filter_from_paths", table=table, out=str(out))
    assert tis["filter"].state == "success"
    assert out.read_text().splitlines() == [
        "/studies/1.2.840.1/series/1.2.840.1.1/instances/1.2.840.1.1.1",
        "/studies/1.2.840.1/series/1.2.840.1.1/instances/1.2.840.1.1.2",
        "/studies/1.2.840.1/series/1.2.840.1.2/instances/1.2.840.1.2.1",
        "/studies/1.2.840.2",
        "/studies/1.2.840.4/series/1.2.840.4.1/instances/1.2.840.4.1.1",
    ]
    result = xcom(dag_run, "filter")
    assert (result["covered"], result["rejected"], result["studies"], result["instances"]) == (1, 1, 3, 4)


def test_server_side_route_runs_its_sql_on_the_stand_in(table, bigquery_standin, bq_dataset, gcs_server, gcs_bucket):
    """Above the threshold BigQuery builds the file: the staging tables and counts are checked here;
    the stand-in accepts the extract job but writes no object (a known gap), so the object is not."""
    from airflow_provider_dicom.filters.build import query_parameters
    from airflow_provider_dicom.filters.query import build_from_query, staging_table_id

    out = f"gs://{gcs_bucket.name}/big.txt"
    result = build_from_query(
        bigquery_standin, f"SELECT * FROM `{table}` WHERE Modality = @m", out, level="instance",
        parameters=query_parameters({"m": "CT"}), threshold=0, staging_dataset=bq_dataset,
    )
    assert result.route == "server" and result.written
    assert (result.lines, result.instances, result.studies, result.series, result.rejected) == (4, 4, 2, 3, 1)
    paths = sorted(r["path"] for r in bigquery_standin.query(
        f"SELECT path FROM `{staging_table_id(bq_dataset, out, 'paths')}`").result())
    assert paths == [
        "/studies/1.2.840.1/series/1.2.840.1.1/instances/1.2.840.1.1.1",
        "/studies/1.2.840.1/series/1.2.840.1.1/instances/1.2.840.1.1.2",
        "/studies/1.2.840.1/series/1.2.840.1.2/instances/1.2.840.1.2.1",
        "/studies/1.2.840.4/series/1.2.840.4.1/instances/1.2.840.4.1.1",
    ]
