"""`airflow-dicom export bq|gcs STORE` and `operations ...`: bad input ends with exit 2 and one line
naming the value, before any connection is made; the client is built for the emulator or ADC."""

from __future__ import annotations

import json

import pytest

from airflow_provider_dicom.cli import app as cli
from airflow_provider_dicom.cli import healthcare as cli_healthcare

STORE = "projects/my-project/locations/us/datasets/imaging/dicomStores/ct"
DATASET = "projects/my-project/locations/us/datasets/imaging"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Validation must fail before any client exists."""

    def refuse(args):
        raise AssertionError("a client was built before the arguments were validated")

    monkeypatch.setattr(cli_healthcare, "make_client", refuse)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (
            [
                "export",
                "bq",
                "projects/my-project/locations/us/datasets/imaging",
                "--bq-table=bq://my-project.d.t",
            ],
            "projects/my-project/locations/us/datasets/imaging",
        ),
        (["export", "bq", STORE, "--bq-table=bq://my-project.d"], "bq://my-project.d"),
        (
            [
                "export",
                "bq",
                STORE,
                "--bq-table=bq://my-project.d.t",
                "--overwrite-table",
                "--write-disposition=write-append",
            ],
            "write-append",
        ),
        (
            ["export", "bq", STORE, "--bq-table=bq://my-project.d.t", "--filter-config=/tmp/filter.txt"],
            "/tmp/filter.txt",
        ),
        (["export", "bq", STORE, "--bq-table=bq://my-project.d.t", "--project=other-project"], "--project"),
        (["export", "bq", STORE, "--bq-table=bq://my-project.d.t", "--poll-interval=0"], "--poll-interval"),
        (["export", "gcs", STORE, "--gcs-uri-prefix=s3://bucket/out"], "s3://bucket/out"),
        (
            ["export", "gcs", STORE, "--gcs-uri-prefix=gs://my-bucket/out", "--mime-type=image/gif"],
            "image/gif",
        ),
        (
            ["export", "gcs", "projects/p/dicomStores/s", "--gcs-uri-prefix=gs://my-bucket/out"],
            "projects/p/dicomStores/s",
        ),
        (["export", "gcs", STORE], "--gcs-uri-prefix"),
        (["operations", "describe", "42"], "'42'"),
        (["operations", "describe", "42", "--dataset=projects/p"], "projects/p"),
        (["operations", "cancel", f"{DATASET}/jobs/42"], f"{DATASET}/jobs/42"),
        (["operations", "list", "projects/p/locations/us"], "projects/p/locations/us"),
        (["operations", "list", DATASET, "--limit=0"], "--limit"),
        (["operations", "list", DATASET, "--api-endpoint=ftp://somewhere"], "ftp://somewhere"),
        (["operations", "frobnicate"], "frobnicate"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_value(argv, named, capsys, monkeypatch):
    if "--api-endpoint=ftp://somewhere" in argv:
        monkeypatch.undo()  # this one is checked while building the hook
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("airflow-dicom: error: ")
    assert named in err[0]


class FakeHook:
    def __init__(self, operations):
        self.operations = operations
        self.calls = []

    def list_operations(self, dataset):
        self.calls.append(("list", dataset))
        return self.operations

    def get_operation(self, name):
        self.calls.append(("get", name))
        return next(op for op in self.operations if op["name"] == name)

    def cancel_operation(self, name):
        self.calls.append(("cancel", name))


def _op(op_id, created, done=False, method="ExportDicomData"):
    op = {
        "name": f"{DATASET}/operations/{op_id}",
        "metadata": {
            "apiMethodName": f"google.cloud.healthcare.v1.dicom.DicomService.{method}",
            "createTime": created,
            "counter": {"success": "3", "pending": "1"},
        },
    }
    if done:
        op["done"] = True
    return op


def test_operations_list_table_and_json(monkeypatch, capsys):
    hook = FakeHook([_op("1", "2025-01-01T10:00:00Z", done=True), _op("2", "2025-01-02T10:00:00Z")])
    monkeypatch.setattr(cli_healthcare, "make_client", lambda args: hook)
    assert cli.main(["operations", "list", DATASET]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "METHOD", "STATE", "CREATED", "SUCCESS", "FAILURE", "PENDING"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["2", "ExportDicomData", "RUNNING"],
        ["1", "ExportDicomData", "SUCCEEDED"],
    ]
    assert cli.main(["operations", "list", DATASET, "--running", "--format=json"]) == 0
    assert [op["name"] for op in json.loads(capsys.readouterr().out)] == [f"{DATASET}/operations/2"]
    assert cli.main(["operations", "list", DATASET, "--limit=1", "--format=json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1


def test_operations_describe_and_cancel_take_a_bare_id_with_dataset(monkeypatch, capsys):
    hook = FakeHook([_op("7", "2025-01-01T10:00:00Z")])
    monkeypatch.setattr(cli_healthcare, "make_client", lambda args: hook)
    assert cli.main(["operations", "describe", "7", f"--dataset={DATASET}"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == f"{DATASET}/operations/7"
    assert cli.main(["operations", "cancel", f"{DATASET}/operations/7"]) == 0
    assert hook.calls[-1] == ("cancel", f"{DATASET}/operations/7")


def test_the_client_uses_the_emulator_anonymously(monkeypatch):
    # Was: the CLI built a DicomStoreHook on a process-local anonymous Airflow connection. The
    # command line no longer imports hooks (issue 13): the same facts, on the Airflow-free client.
    monkeypatch.undo()
    monkeypatch.setenv("HEALTHCARE_EMULATOR_HOST", "127.0.0.1:18999")
    args = cli.build_parser().parse_args(["operations", "list", DATASET])
    client = cli_healthcare.make_client(args)
    assert client.api_endpoint == "http://127.0.0.1:18999/"
    assert client.anonymous is True
    args = cli.build_parser().parse_args(
        ["operations", "list", DATASET, "--api-endpoint=http://127.0.0.1:1/"]
    )
    assert cli_healthcare.make_client(args).api_endpoint == "http://127.0.0.1:1/"


def test_a_missing_airflow_connection_is_one_line(monkeypatch, capsys):
    monkeypatch.undo()
    assert cli.main(["operations", "list", DATASET, "--gcp-conn-id=no_such_connection"]) == cli.EXIT_FAILED
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no_such_connection" in err[0]


def test_store_source_flags_are_listed_in_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["export", "bq", "--help"])
    out = capsys.readouterr().out
    for flag in ("--include-source-store", "--async", "--api-endpoint", "--gcp-conn-id"):
        assert flag in out
