"""Every bad argument of every operator and of the command line gets a ValueError naming the value
and what was expected, before any remote call (the socket layer is closed for these tests).

The list grew from a probe of 224 bad arguments where 55 were accepted and failed late, or with an
unrelated message, and 4 crashed (RecursionError); each of those is here, with its neighbours.
"""

from __future__ import annotations

import reprlib
import socket
from pathlib import Path

import pytest

STORE = "projects/local-dicom/locations/us-central1/datasets/d/dicomStores/s"
TABLE = "bq://local-dicom.dicom.instances"
BUCKET = "good-bucket"


def deep_list(depth: int) -> object:
    value: object = "1.2.3"
    for _ in range(depth):
        value = [value]
    return value


def deep_dict(depth: int) -> object:
    value: object = "CT"
    for _ in range(depth):
        value = {"value": value, "type": "STRING"}
    return value


BAD_TABLE_URIS = [
    "bq://local-dicom.d.t\n", "bq://local-dicom.d.t\r", "bq://local-dicom.d.t\x00", "bq://local-dicom.d.t#x",
    "bq://local-dicom.d.t?x", "bq://local-dicom.d.t/x", "bq://local-dicom.d.t.x", "bq://p.d.t", "bq://Local-dicom.d.t",
    "bq://local-dicom.d", "bq://local-dicom..t", "bq://local-dicom.d-x.t", "local-dicom.d.t", "bigquery://local-dicom.d.t",
    "bq://local-dicom.d.", "bq://local-dicom-.d.t", "bq://1local-dicom.d.t", "bq://local_dicom.d.t", " bq://local-dicom.d.t",
    "bq://local-dicom.d.t" + "x" * 2000, "bq://" + "a" * 31 + ".d.t", "", 123, b"bq://local-dicom.d.t",
]
BAD_STORES = [
    "projects/p/locations/l/datasets/d#x/dicomStores/s", "projects/p/locations/l/datasets/d/dicomStores/s?x",
    "projects/p/locations/l/datasets/d/dicomStores/s#frag", "projects/p/locations/l/datasets/d/dicomStores/s\n",
    "projects/p/locations/l/datasets/d/dicomStores/s ", "projects/p/locations/l/datasets/d x/dicomStores/s",
    "projects/p/locations/l/datasets/../dicomStores/s", "projects/p/locations/l/datasets/./dicomStores/s",
    "projects//locations/l/datasets/d/dicomStores/s", "projects/p/locations/l/datasets/d/dicomStores/",
    "projects/p/locations/l/datasets/d/dicomStores/s/extra", "projects/p/locations/l/datasets/d/fhirStores/s",
    "projects/p/locations/l/datasets/d/dicomStores/" + "s" * 257, "projects/p/locations/l/datasets/d%2F/dicomStores/s",
    "projects/p/locations/l\t/datasets/d/dicomStores/s", "projects/p/locations/l/datasets/d/dicomStores/s:export",
    "projects/p/locations/l/datasets/d/dicomStores/..",
]
BAD_BUCKET_URIS = [
    "gs://bucket..x/a", "gs://goog-bucket/a", "gs://googbucket/a", "gs://my-google-bucket/a", "gs://1.2.3.4/a",
    "gs://./a", "gs://../a", "gs://" + "a" * 2000, "gs://ab/a", "gs://-bucket/a", "gs://bucket-/a", "gs://Bucket/a",
    "gs://bu cket/a", "gs://bucket_/a", "gs:///a", "gs://", "gs://bucket#x/a", "gs://bucket?x/a",
    "gs://" + "a" * 64 + "/o", "gs://" + "a" * 64 + ".b/o", "gs://.bucket/a", "gs://bucket./a", "gs://bücket/a",
]
BAD_OBJECT_URIS = [
    f"gs://{BUCKET}/a\nb", f"gs://{BUCKET}/a\rb", f"gs://{BUCKET}/a\x00b", f"gs://{BUCKET}/.", f"gs://{BUCKET}/..",
    f"gs://{BUCKET}/" + "x" * 1025, f"gs://{BUCKET}/.well-known/acme-challenge/x", f"gs://{BUCKET}/f.txt\n",
]
BAD_DESTINATIONS = BAD_BUCKET_URIS + BAD_OBJECT_URIS + [f"gs://{BUCKET}", f"gs://{BUCKET}/", f"gs://{BUCKET}/dir/", "", None]
BAD_STAGING_DATASETS = [
    "d; DROP TABLE x", "p.d.x", "d-x", "", "local-dicom.", ".d", "`d`", "d\n", "local-dicom.d\n", "P.d", "d x",
    "local-dicom.d; SELECT 1", "d--", 5,
]
BAD_PROJECTS = ["P", "p", "x" * 31, "proj ect", "1project", "project-", "my_project", "project\n"]
BAD_LOCATIONS = [" EU", "us central1", "us/central1", "us-central1\n", "", "-us"]

# (operator, good arguments, argument, bad value)
CASES: list[tuple[str, dict, str, object]] = []


def add(operator: str, good: dict, name: str, values: list) -> None:
    CASES.extend((operator, good, name, value) for value in values)


BQ_GOOD = {"source": f"gs://{BUCKET}/dicom/", "destination_table_uri": TABLE}
GCS_GOOD = {"source": STORE, "uri_prefix": f"gs://{BUCKET}/out"}
FILTER_GOOD = {"destination": f"gs://{BUCKET}/filters/f.txt", "uids": ["1.2.3"]}
PLAN_GOOD = {"source": f"gs://{BUCKET}/dicom/", "destination_table_uri": TABLE, "staging_uri": f"gs://{BUCKET}/staging"}

add("bq", BQ_GOOD, "destination_table_uri", BAD_TABLE_URIS)
add("bq", BQ_GOOD, "source", BAD_STORES + BAD_BUCKET_URIS + [
    "", " ", "ftp://host/x", "https://user:pw@host/dicomweb", "https://pacs host/dicom-web",
    "https://pacs/dicom-web\nX-Injected: 1", "https://pacs/dicom-web?x=1", "https://pacs/dicom-web#f", "http://:80/x",
    "https://pacs:port/x",
])
add("bq", BQ_GOOD, "filter_config", BAD_BUCKET_URIS[:8] + BAD_OBJECT_URIS[:4])
add("bq", BQ_GOOD, "write_disposition", ["WRITE_SOMETIMES", "", 1, "write empty"])
add("bq", BQ_GOOD, "force", ["yes", 1])
add("bq", BQ_GOOD, "schema", ["flat", "", 3])
add("bq", BQ_GOOD, "project_id", BAD_PROJECTS)
add("bq", BQ_GOOD, "location", BAD_LOCATIONS)
add("bq", BQ_GOOD, "max_concurrent_requests", [0, 257, True, "16", -1])
add("bq", BQ_GOOD, "max_failed_instances", [-1, "many", 1.5])
add("bq", BQ_GOOD, "impersonation_chain", [[], [""], 3])
add("bq", BQ_GOOD, "gcp_conn_id", ["", " conn"])
add("gcs", GCS_GOOD, "uri_prefix", BAD_BUCKET_URIS + BAD_OBJECT_URIS[:3])
add("gcs", GCS_GOOD, "source", BAD_STORES[:8])
add("gcs", GCS_GOOD, "mime_type", ["text/plain", "application/dicom; transfer-syntax=1.2.3", ""])
add("gcs", GCS_GOOD, "filter_config", BAD_BUCKET_URIS[:6])
add("filter", FILTER_GOOD, "destination", BAD_DESTINATIONS)
add("filter", FILTER_GOOD, "staging_dataset", BAD_STAGING_DATASETS)
add("filter", FILTER_GOOD, "project_id", BAD_PROJECTS)
add("filter", {**FILTER_GOOD, "uids": None, "source_table": TABLE}, "source_table", BAD_TABLE_URIS[:10])
add("filter", FILTER_GOOD, "level", ["studies", "study/series", 3])  # "" is a DAG param left empty: the default
add("filter", FILTER_GOOD, "on_empty", ["ignore", ""])
add("filter", FILTER_GOOD, "server_side_threshold", [-1, "10", True])
add("filter", FILTER_GOOD, "uid_columns", [("a", "b"), ("StudyInstanceUID", "SeriesInstanceUID", "x`; DROP")])
add("filter", {**FILTER_GOOD, "uids": None, "sql": "SELECT 1"}, "path_column", ["path`", "1path", "pa th", "p\n", ""])
add("plan", PLAN_GOOD, "staging_uri", BAD_BUCKET_URIS[:8])
add("plan", PLAN_GOOD, "destination_table_uri", BAD_TABLE_URIS[:8])
add("plan", PLAN_GOOD, "project_id", BAD_PROJECTS[:4])

NESTED: list[tuple[str, dict, str, object]] = [
    ("filter", FILTER_GOOD, "uids", deep_list(100_000)),
    ("filter", FILTER_GOOD, "uids", deep_list(9)),
    ("filter", FILTER_GOOD, "uids", "[" * 100_000 + "]" * 100_000),
    ("filter", FILTER_GOOD, "uids", "[" * 50 + '"1.2"' + "]" * 50),
    ("filter", FILTER_GOOD, "query_parameters", {"a": deep_dict(100_000)}),
    ("filter", FILTER_GOOD, "query_parameters", {"a": {"type": "ARRAY<STRING>", "value": deep_list(20)}}),
    ("filter", FILTER_GOOD, "query_parameters", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    ("filter", FILTER_GOOD, "query_parameters", "[" * 50_000),  # ("{{" would be a template, checked when rendered)
]


def _operator(kind: str):
    from airflow_provider_dicom.operators.export import DicomExportToBigQueryOperator
    from airflow_provider_dicom.operators.export_gcs import DicomExportToGcsOperator
    from airflow_provider_dicom.operators.filter_file import BuildFilterFileOperator
    from airflow_provider_dicom.operators.sharded_export import DicomShardPlanOperator

    return {
        "bq": DicomExportToBigQueryOperator, "gcs": DicomExportToGcsOperator,
        "filter": BuildFilterFileOperator, "plan": DicomShardPlanOperator,
    }[kind]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection attempt fails the test: validation happens before any remote call."""
    attempts: list[object] = []

    def refuse(self, address, *args):
        attempts.append(address)
        raise AssertionError(f"a connection to {address!r} was attempted while validating arguments")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield attempts
    assert not attempts


def shown(value: object) -> str:
    """What the message must contain: the value's repr (its head, for very long values)."""
    text = repr(value)
    return text[:60] if len(text) > 60 else text


def test_there_are_at_least_150_bad_arguments():
    assert len(CASES) + len(NESTED) + len(CLI_CASES) >= 150


@pytest.mark.parametrize(("kind", "good", "name", "value"), CASES, ids=lambda v: reprlib.repr(v)[:40])
def test_a_bad_operator_argument_is_refused_naming_it(kind, good, name, value):
    with pytest.raises(ValueError) as caught:
        _operator(kind)(task_id="t", **{**good, name: value})
    message = str(caught.value)
    if isinstance(value, str) and value.startswith("https://user:pw@"):
        assert "credentials" in message and "pw" not in message  # never echo a password
    else:
        assert shown(value) in message, message


@pytest.mark.parametrize(("kind", "good", "name", "value"), NESTED, ids=lambda v: reprlib.repr(v)[:40])
def test_deeply_nested_uids_and_parameters_are_refused_without_recursion_error(kind, good, name, value):
    with pytest.raises(ValueError) as caught:
        _operator(kind)(task_id="t", **{**good, name: value})
    assert name in str(caught.value)
    assert "nested" in str(caught.value) or "not JSON" in str(caught.value)


GOOD: list[tuple[str, dict]] = [
    ("bq", BQ_GOOD),
    ("bq", {**BQ_GOOD, "destination_table_uri": "bq://example.com:my-project.d_1.t 1-x"}),
    ("bq", {**BQ_GOOD, "source": STORE, "filter_config": f"gs://{BUCKET}/f.txt", "location": "US"}),
    ("bq", {**BQ_GOOD, "source": "projects/p/locations/l/datasets/d.1-x/dicomStores/s_2", "project_id": "my-proj-1"}),
    ("bq", {**BQ_GOOD, "source": "gs://a.b.c/x", "write_disposition": "write-append"}),
    ("bq", {**BQ_GOOD, "source": "gs://" + ".".join(["a" * 63] * 3) + "/x"}),
    ("bq", {**BQ_GOOD, "source": "gs://bucket_with_underscores-1/ünïcode dir/"}),
    ("bq", {**BQ_GOOD, "source": "https://pacs.example.org/dicom-web"}),
    ("bq", {**BQ_GOOD, "destination_table_uri": "bq://{{ params.table }}"}),
    ("gcs", GCS_GOOD),
    ("gcs", {**GCS_GOOD, "uri_prefix": "gs://abc", "mime_type": "application/dicom; transfer-syntax=*"}),
    ("filter", FILTER_GOOD),
    ("filter", {**FILTER_GOOD, "staging_dataset": "local-dicom.staging_1", "project_id": "local-dicom"}),
    ("filter", {**FILTER_GOOD, "staging_dataset": "staging"}),
    ("filter", {**FILTER_GOOD, "uids": [("1.2", "1.2.3"), {"study": "1.2"}], "query_parameters": {"m": ["CT", "MR"]}}),
    ("filter", {**FILTER_GOOD, "uids": '[["1.2", "1.2.3"]]'}),
    ("filter", {**FILTER_GOOD, "uids": "1.2.3\n1.2.4"}),
    ("filter", {**FILTER_GOOD, "uids": "{{ ti.xcom_pull('q') }}", "staging_dataset": "{{ params.ds }}"}),
    ("filter", {**FILTER_GOOD, "query_parameters": '{"since": {"type": "DATE", "value": "2024-01-01"}}'}),
    ("filter", {**FILTER_GOOD, "destination": "/tmp/filters/f.txt"}),
    ("plan", PLAN_GOOD),
]


@pytest.mark.parametrize(("kind", "good"), GOOD, ids=lambda v: reprlib.repr(v)[:60])
def test_good_arguments_are_accepted(kind, good):
    _operator(kind)(task_id="t", **good)


# ---- the command line ---------------------------------------------------------------------------

CLI_CASES: list[tuple[list[str], str]] = (
    [(["export", "bq", "{folder}", "--bq-table", uri], uri) for uri in BAD_TABLE_URIS[:12] if isinstance(uri, str)]
    + [(["export", "bq", store, "--bq-table", TABLE], store) for store in BAD_STORES[:10]]
    + [(["export", "bq", uri, "--bq-table", TABLE], uri) for uri in BAD_BUCKET_URIS[:10]]
    + [(["export", "bq", "{folder}", "--bq-table", TABLE, "--filter-config", uri], uri) for uri in BAD_OBJECT_URIS[:4]]
    + [(["filter", "--uids", "{uids}", "--out", uri], uri) for uri in BAD_DESTINATIONS[:12] if uri]
    + [(["export", "bq", "{folder}", "--bq-table", TABLE, "--project", p], p) for p in BAD_PROJECTS[:4]]
    + [(["export", "gcs", STORE, "--gcs-uri-prefix", uri], uri) for uri in BAD_BUCKET_URIS[:8] + BAD_OBJECT_URIS[:2]]
    + [(["export", "gcs", store, "--gcs-uri-prefix", f"gs://{BUCKET}/out"], store) for store in BAD_STORES[:6]]
    + [(["filter", "--sql", "SELECT 1", "--out", "f.txt", "--project", p], p) for p in BAD_PROJECTS[4:]]
    + [(["filter", "--sql", "SELECT 1", "--out", "f.txt", "--location", loc], loc) for loc in BAD_LOCATIONS[:4]]
)


@pytest.mark.parametrize(("argv", "bad"), CLI_CASES, ids=lambda v: reprlib.repr(v)[:60])
def test_a_bad_command_line_argument_exits_2_naming_it(argv, bad, tmp_path: Path, capsys):
    from airflow_provider_dicom.cli import app as cli

    folder = tmp_path / "dicom"
    folder.mkdir()
    uids = tmp_path / "uids.txt"
    uids.write_text("1.2.3\n")
    argv = [a.replace("{folder}", str(folder)).replace("{uids}", str(uids)) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert shown(bad) in err or bad[:60] in err, err
