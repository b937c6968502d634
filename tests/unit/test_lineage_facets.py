"""OpenLineage facets of what an export wrote, as Google's BigQuery operators send them: the output
table's `schema` (the columns it has after the export) and `outputStatistics` (rows written, and
bytes when BigQuery reports them), for a folder export (our load job) and a store export (Google's
operation). BigQuery and the Healthcare API are scripted fakes; the DICOM files are real."""

from __future__ import annotations

from typing import Any

import pytest
from google.api_core.exceptions import NotFound
from google.cloud.bigquery import SchemaField

from airflow_provider_dicom.operators.export import DicomExportToBigQueryOperator
from tests.unit.dicom_factory import make_dataset, to_file_bytes
from tests.unit.test_store_export import STORE, TABLE, FakeHook, context, operation, with_hook

pytest.importorskip("airflow.providers.openlineage.extractors")

TABLE_NAME = "my-project.dicom.instances"


class FakeJob:
    def __init__(self, job_id: str, *, schema=None, rows: int | None = None, output_bytes: int | None = 4096):
        self.job_id, self.state, self.error_result = job_id, "DONE", None
        self.schema, self.output_rows, self.output_bytes = schema, rows, output_bytes
        self.loaded: bytes = b""

    def done(self, **kwargs: Any) -> bool:
        return True

    def result(self, **kwargs: Any) -> FakeJob:
        return self


class FakeBigQuery:
    """The calls an export makes: no earlier load job, the dataset exists, the table does not (or
    has `existing` columns), the load succeeds. `get_table` afterwards answers with `after`."""

    def __init__(self, *, earlier: FakeJob | None = None, after: list | None = None) -> None:
        self.earlier, self.after = earlier, after
        self.jobs: list[FakeJob] = []
        self.calls: list[str] = []

    def get_job(self, job_id: str, **kwargs: Any) -> FakeJob:
        self.calls.append("get_job")
        if self.earlier is None:
            raise NotFound("no such job")
        return self.earlier

    def get_dataset(self, dataset_id: str, **kwargs: Any) -> object:
        return object()

    def get_table(self, table_id: str, **kwargs: Any) -> Any:
        self.calls.append("get_table")
        if self.after is None:
            raise NotFound("no such table")
        return type("Table", (), {"schema": self.after, "table_type": "TABLE"})()

    def load_table_from_file(self, rows, table_id, *, job_config, job_id=None, **kwargs: Any) -> FakeJob:
        rows.seek(0)
        job = FakeJob(job_id or "random", schema=job_config.schema)
        job.loaded = rows.read()
        self.jobs.append(job)
        return job


class TI:
    dag_id, task_id, run_id, map_index, try_number, max_tries = "lineage", "export", "manual__1", -1, 1, 0

    def xcom_push(self, key: str, value: Any) -> None:
        pass


def folder_of_instances(tmp_path, count: int):
    for n in range(count):
        ds = make_dataset(Modality="CT", PatientID=f"P{n}", ImageType=["ORIGINAL", "PRIMARY"])
        (tmp_path / f"{n}.dcm").write_bytes(to_file_bytes(ds))
    (tmp_path / "notes.txt").write_text("not DICOM")
    return tmp_path


def facets_of(lineage) -> tuple[list[str], dict[str, str], Any]:
    (output,) = lineage.outputs
    assert (output.namespace, output.name) == ("bigquery", TABLE_NAME)
    schema = output.facets.get("schema")
    names = [f.name for f in schema.fields] if schema else []
    types = {f.name: f.type for f in schema.fields} if schema else {}
    return names, types, output.outputFacets.get("outputStatistics")


def test_a_folder_export_reports_the_columns_and_rows_it_loaded(tmp_path):
    folder = folder_of_instances(tmp_path, 3)
    op = DicomExportToBigQueryOperator(task_id="export", source=str(folder), destination_table_uri=TABLE)
    client = FakeBigQuery()
    op._bigquery_client = lambda project: client
    summary = op.execute({"ti": TI(), "task": type("Task", (), {"retries": 0})()})
    assert summary["instances_exported"] == 3

    names, types, statistics = facets_of(op.get_openlineage_facets_on_complete(None))
    (job,) = client.jobs
    assert names == [field.name for field in job.schema]  # the columns the load job declared
    assert {"SOPInstanceUID", "PatientID", "Modality", "ImageType"} <= set(names)
    assert types["Modality"] == "STRING"
    assert (statistics.rowCount, statistics.size) == (3, 4096)  # rows = instances; size from the job
    assert len(job.loaded.splitlines()) == statistics.rowCount


def test_nested_columns_keep_their_fields(tmp_path):
    from airflow_provider_dicom.dicom.schema import Field
    from airflow_provider_dicom.utils.lineage import WrittenTable, operator_lineage

    columns = (Field("PatientID", "STRING"), Field("ReferencedSeriesSequence", "RECORD", "REPEATED", (
        Field("SeriesInstanceUID", "STRING"),
    )))
    lineage = operator_lineage([("file", "/x")], [("bigquery", TABLE_NAME)],
                               {("bigquery", TABLE_NAME): WrittenTable(columns, 1)})
    (output,) = lineage.outputs
    sequence = output.facets["schema"].fields[1]
    assert (sequence.type, [f.name for f in sequence.fields]) == ("RECORD", ["SeriesInstanceUID"])
    assert output.outputFacets["outputStatistics"].size is None  # unknown, not zero


def test_a_retry_that_finds_its_earlier_load_reports_that_load(tmp_path):
    folder = folder_of_instances(tmp_path, 2)
    op = DicomExportToBigQueryOperator(task_id="export", source=str(folder), destination_table_uri=TABLE)
    schema = [SchemaField("SOPInstanceUID", "STRING"), SchemaField("PatientID", "STRING")]
    client = FakeBigQuery(earlier=FakeJob("earlier", schema=schema, rows=2, output_bytes=777))
    op._bigquery_client = lambda project: client
    assert op.execute({"ti": TI(), "task": type("Task", (), {"retries": 0})()})["reattached"] is True
    names, _, statistics = facets_of(op.get_openlineage_facets_on_complete(None))
    assert names == ["SOPInstanceUID", "PatientID"]
    assert (statistics.rowCount, statistics.size) == (2, 777)
    assert client.jobs == []  # nothing loaded again


def test_a_folder_without_dicom_wrote_no_row_and_no_columns(tmp_path):
    (tmp_path / "notes.txt").write_text("not DICOM")
    op = DicomExportToBigQueryOperator(task_id="export", source=str(tmp_path), destination_table_uri=TABLE)
    op._bigquery_client = lambda project: FakeBigQuery()
    op.execute({"ti": TI(), "task": type("Task", (), {"retries": 0})()})
    names, _, statistics = facets_of(op.get_openlineage_facets_on_complete(None))
    assert names == [] and statistics.rowCount == 0


def test_a_store_export_reports_the_instances_exported_and_the_table_google_wrote():
    hook = FakeHook(final=operation(done=True, success=5))
    op = with_hook(DicomExportToBigQueryOperator(
        task_id="export", source=STORE, destination_table_uri=TABLE, deferrable=False
    ), hook)
    client = FakeBigQuery(after=[
        SchemaField("SOPInstanceUID", "STRING"), SchemaField("NumberOfFrames", "INTEGER"),
        SchemaField("ReferencedImageSequence", "RECORD", mode="REPEATED", fields=[
            SchemaField("ReferencedSOPInstanceUID", "STRING"),
        ]),
    ])
    op._bigquery_client = lambda project: client
    op.execute(context(hook=hook))
    names, types, statistics = facets_of(op.get_openlineage_facets_on_complete(None))
    assert names == ["SOPInstanceUID", "NumberOfFrames", "ReferencedImageSequence"]
    assert types == {"SOPInstanceUID": "STRING", "NumberOfFrames": "INTEGER", "ReferencedImageSequence": "RECORD"}
    assert (statistics.rowCount, statistics.size) == (5, None)  # one row per exported instance
    assert client.calls == ["get_table"]


def test_a_store_export_whose_table_cannot_be_read_still_reports_its_rows():
    hook = FakeHook(final=operation(done=True, success=2))
    op = with_hook(DicomExportToBigQueryOperator(
        task_id="export", source=STORE, destination_table_uri=TABLE, deferrable=False
    ), hook)
    op._bigquery_client = lambda project: FakeBigQuery()  # get_table: NotFound
    op.execute(context(hook=hook))
    names, _, statistics = facets_of(op.get_openlineage_facets_on_complete(None))
    assert names == [] and statistics.rowCount == 2


def test_no_facets_and_no_bigquery_call_before_the_export_ran():
    op = DicomExportToBigQueryOperator(task_id="export", source=STORE, destination_table_uri=TABLE)
    op._bigquery_client = lambda project: pytest.fail("no BigQuery call for lineage of a task that did not export")
    (output,) = op.get_openlineage_facets_on_complete(None).outputs
    assert not output.facets and not getattr(output, "outputFacets", None)


def test_a_sharded_load_keeps_the_columns_it_declared_for_lineage(tmp_path):
    from airflow_provider_dicom.export.shard_load import load_sharded_export
    from airflow_provider_dicom.export.staging import LocalStaging
    from tests.unit.test_sharded_export import RecordingClient, staged_plan

    staging = LocalStaging(tmp_path)
    plan = staged_plan(tmp_path, staging, [
        [("1", {"SOPInstanceUID": "1", "Modality": "CT"})], [("2", {"SOPInstanceUID": "2"})],
    ])
    client = RecordingClient()
    result = load_sharded_export(staging, plan.root, "bq://proj-1.d.t", client=client)
    [(_, _, config)] = client.submitted
    assert [f.name for f in result.fields] == [f.name for f in config.schema] == ["SOPInstanceUID", "Modality"]
    assert result.instances_exported == 2 and result.output_bytes is None  # the fake job reports no bytes
