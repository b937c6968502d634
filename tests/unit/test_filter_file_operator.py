"""BuildFilterFileOperator without servers: arguments, handed-over UIDs to a local file, the empty
policy as Airflow sees it (skip / fail), rejects, the extra link and lineage."""

from __future__ import annotations

from unittest import mock

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException

from airflow_provider_dicom.links.storage import DicomFilterFileLink
from airflow_provider_dicom.operators.filter_file import BuildFilterFileOperator

S1, S2 = "1.2.840.1", "1.2.840.2"


def op(**kwargs):
    kwargs.setdefault("task_id", "filter")
    return BuildFilterFileOperator(**kwargs)


def run(operator):
    ti = mock.Mock()
    return operator.execute({"ti": ti}), ti


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"destination": "gs://b/f"}, "exactly one of sql, source_table or uids; got none"),
        ({"destination": "gs://b/f", "sql": "SELECT 1", "uids": []}, "got \\['sql', 'uids'\\]"),
        ({"destination": "gs://b", "sql": "SELECT 1"}, "gs://b"),
        ({"destination": "out/", "sql": "SELECT 1"}, "a file, not a folder"),
        ({"destination": "f", "sql": "SELECT 1", "level": "patient"}, "invalid level 'patient'"),
        ({"destination": "f", "sql": "SELECT 1", "on_empty": "ignore"}, "invalid on_empty 'ignore'"),
        ({"destination": "f", "source_table": "p.d.t"}, "bq://"),
        ({"destination": "f", "sql": "SELECT 1", "max_rejected": -1}, "invalid max_rejected -1"),
    ],
)
def test_literal_bad_arguments_fail_at_parse_time(kwargs, message):
    with pytest.raises(ValueError, match=message):
        op(**kwargs)


def test_templated_arguments_wait_for_rendering():
    operator = op(destination="{{ params.out }}", sql="x.sql", level="{{ params.level }}",
                  on_empty="{{ params.on_empty }}")
    assert "sql" in operator.template_fields and ".sql" in operator.template_ext
    assert {"destination", "uids", "query_parameters", "level", "on_empty"} <= set(operator.template_fields)


def test_handed_over_uids_are_written_and_counted(tmp_path):
    target = tmp_path / "cohort.txt"
    operator = op(destination=str(target), uids=[(S1, "1.1", "1.1.1"), (S1, "1.1", "1.1.2"), S2, "1.02"])
    result, _ = run(operator)
    assert target.read_text() == f"/studies/{S1}/series/1.1/instances/1.1.1\n/studies/{S1}/series/1.1/instances/1.1.2\n/studies/{S2}\n"
    assert result["studies"] == 2 and result["series"] == 1 and result["instances"] == 2
    assert result["rejected"] == 1 and "leading zero" in result["rejected_examples"][0]
    assert result["uri"] == str(target) and result["route"] == "worker"


def test_empty_selection_skips_fails_or_writes(tmp_path):
    target = tmp_path / "f.txt"
    with pytest.raises(AirflowSkipException, match="selects nothing"):
        run(op(destination=str(target), uids=[], on_empty="skip"))
    assert not target.exists()
    with pytest.raises(AirflowFailException, match="selects nothing.*1 rejected"):
        run(op(destination=str(target), uids=["x"], on_empty="fail"))
    result, _ = run(op(destination=str(target), uids=[], on_empty="write_empty"))
    assert target.read_text() == "" and result["lines"] == 0


def test_max_rejected_fails_the_task_with_the_rejects_named(tmp_path):
    operator = op(destination=str(tmp_path / "f"), uids=[S1, "1.2.x"], max_rejected="0")
    with pytest.raises(AirflowFailException, match=r"1 values rejected.*a 5-character value: StudyInstanceUID not digits and dots"):
        run(operator)


def test_link_and_lineage():
    link = DicomFilterFileLink()
    gcs = op(destination="gs://bucket/filters/run 1.txt", source_table="bq://my-project.d.t")
    assert link.get_link(gcs, ti_key=None) == (
        "https://console.cloud.google.com/storage/browser/_details/bucket/filters/run%201.txt"
    )
    assert link.get_link(op(destination="/tmp/f", uids=[]), ti_key=None) == ""
    inputs, outputs = gcs.lineage_datasets()
    assert inputs == [("bigquery", "my-project.d.t")] and outputs == [("gs://bucket", "filters/run 1.txt")]
    local = op(destination="/tmp/f.txt", sql="SELECT 1")
    local._inputs = ["p.d.export", "p._results.anon"]
    assert local.lineage_datasets() == ([("bigquery", "p.d.export")], [("file", "/tmp/f.txt")])


def test_openlineage_facets_with_and_without_the_provider(monkeypatch):
    import sys

    pytest.importorskip("airflow.providers.openlineage.extractors")
    operator = op(destination="gs://bucket/f.txt", source_table="bq://my-project.d.t")
    lineage = operator.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("bigquery", "my-project.d.t")]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("gs://bucket", "f.txt")]
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage.extractors", None)
    assert operator.get_openlineage_facets_on_complete(None) is None


def test_on_kill_cancels_the_running_bigquery_jobs():
    operator = op(destination="gs://bucket/f.txt", sql="SELECT 1")
    running, finished = mock.Mock(), mock.Mock()
    running.done.return_value, finished.done.return_value = False, True
    operator._jobs = [finished, running]
    operator.on_kill()
    running.cancel.assert_called_once()
    from airflow_provider_dicom.utils import deadlines

    assert running.cancel.call_args.kwargs["timeout"] == deadlines.request_timeout()  # never waits forever
    finished.cancel.assert_not_called()
    op(destination="gs://bucket/f.txt", uids=[]).on_kill()  # nothing started: nothing to cancel


def test_the_query_jobs_are_recorded_as_they_start(tmp_path):
    from airflow_provider_dicom.filters.query import build_from_query

    client = mock.Mock()
    job = mock.Mock(referenced_tables=[])
    rows = mock.MagicMock()
    rows.total_rows = 0
    rows.__iter__.return_value = iter([])
    job.result.return_value = rows
    client.query.return_value = job
    jobs: list = []
    build_from_query(client, "SELECT 1", str(tmp_path / "f"), level="study", on_empty="write_empty", jobs=jobs)
    assert jobs == [job]


def test_an_empty_cohort_writes_no_file_before_skipping(monkeypatch):
    """Issue 12 item 8: an empty selection with on_empty="skip" must not leave a 0-line filter file
    (nor start an upload) in gs://, on the query route the cohort DAG uses."""
    storage = mock.MagicMock()
    client = mock.Mock()
    job = mock.Mock(referenced_tables=[])
    rows = mock.MagicMock()
    rows.total_rows = 0
    rows.__iter__.return_value = iter([])
    job.result.return_value = rows
    client.query.return_value = job
    operator = op(destination="gs://bucket/cohorts/run/filter.txt", sql="SELECT 1", on_empty="skip")
    monkeypatch.setattr(operator, "_bigquery_client", lambda: client)
    monkeypatch.setattr(operator, "_storage_client", lambda: storage)
    with pytest.raises(AirflowSkipException, match="selects nothing"):
        run(operator)
    storage.bucket.assert_not_called()  # no blob was even looked up, let alone opened for writing
