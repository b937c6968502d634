"""export_to_bigquery refuses bad arguments before building a client or reading a file."""

from __future__ import annotations

import pytest

from airflow_provider_dicom.export.bigquery import ExportResult, export_to_bigquery
from airflow_provider_dicom.filters.files import FilterFileError
from airflow_provider_dicom.model.sources import UnsupportedSourceError
from airflow_provider_dicom.model.uris import InvalidUriError
from airflow_provider_dicom.utils.redact import redact_quoted as _redact


class NoClient:
    """Any use of the client fails the test: argument errors must come first."""

    def __getattr__(self, name):
        raise AssertionError(f"the client was used ({name}) before the arguments were checked")


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "dicom").mkdir()
    return tmp_path / "dicom"


def test_bad_table_uri(folder):
    with pytest.raises(InvalidUriError, match="'bq://ds.t'"):
        export_to_bigquery(folder, "bq://ds.t", client=NoClient())


def test_unknown_disposition(folder):
    with pytest.raises(ValueError, match="unknown write disposition 'WRITE_SOMETIMES'"):
        export_to_bigquery(folder, "bq://my-project.ds.t", write_disposition="WRITE_SOMETIMES", client=NoClient())


def test_force_and_disposition(folder):
    with pytest.raises(ValueError, match="not both"):
        export_to_bigquery(folder, "bq://my-project.ds.t", write_disposition="WRITE_EMPTY", force=False, client=NoClient())


def test_unknown_schema(folder):
    with pytest.raises(ValueError, match="unknown schema 'wide'"):
        export_to_bigquery(folder, "bq://my-project.ds.t", schema="wide", client=NoClient())


def test_sources_the_local_engine_does_not_read_are_named(folder):
    # A Cloud Healthcare store is exported by the Healthcare API (the operator's store path), not here.
    store = "projects/p/locations/l/datasets/d/dicomStores/s"
    with pytest.raises(UnsupportedSourceError, match=store):
        export_to_bigquery(store, "bq://my-project.ds.t", client=NoClient())


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ("https://user:secret@pacs.example.org/dicom-web", "credentials"),
        ("https:///dicom-web", "needs a host"),
        ("https://pacs.example.org/dicom-web?x=1", "no query"),
    ],
)
def test_bad_dicomweb_urls_are_refused_before_anything_runs(source, named):
    with pytest.raises(ValueError, match=named) as excinfo:
        export_to_bigquery(source, "bq://my-project.ds.t", client=NoClient())
    assert "secret" not in str(excinfo.value)


def test_missing_folder(tmp_path):
    with pytest.raises(NotADirectoryError, match="absent"):
        export_to_bigquery(tmp_path / "absent", "bq://my-project.ds.t", client=NoClient())


def test_bad_filter_file(folder, tmp_path):
    bad = tmp_path / "filter.txt"
    bad.write_text("/studies/1.2/series\n")
    with pytest.raises(FilterFileError, match="line 1"):
        export_to_bigquery(folder, "bq://my-project.ds.t", filter_config=bad, client=NoClient())


def test_result_summary_is_json_ready_and_capped():
    result = ExportResult("bq://my-project.ds.t", "WRITE_EMPTY", instances_exported=5)
    result.failures = [(f"/data/{i}.dcm", "truncated") for i in range(1_500)]
    summary = result.to_dict()
    assert summary["failure_count"] == 1_500
    assert len(summary["failures"]) == 1_000 and summary["failures_truncated"]
    assert summary["failures"][0] == {"path": "/data/0.dcm", "reason": "truncated"}
    assert result.files_seen == 1_505


def test_values_quoted_in_bigquery_errors_are_redacted():
    message = 'JSON transform error, in line 1: invalid date field format: "19450101x", expected format'
    assert "19450101x" not in _redact(message)
    assert _redact("Already Exists: Table p:d.t") == "Already Exists: Table p:d.t"
