"""`airflow-dicom` as someone coming from gcloud or from our operators types it (issue 14): both
spellings of the write disposition, gcloud's flag names, `--on-empty` in either spelling, errors
that name the environment variable to set, and a source without DICOM failing.

No server: the export engine and the Healthcare client are replaced where the command hands over
to them, so what is checked is what the command line passes on, prints and exits with.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest

from airflow_provider_dicom.cli import app as cli
from airflow_provider_dicom.cli import main

CT = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"
STORE = "projects/my-project/locations/us/datasets/imaging/dicomStores/ct"
TABLE = "bq://my-project.d.t"


def run(capsys, *argv: str) -> tuple[int, str, list[str]]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line]


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "dicom"
    root.mkdir()
    shutil.copy(CT, root / "ct.dcm")
    return root


@pytest.fixture
def engine(monkeypatch):
    """The BigQuery export engine, recording what it was asked to do and exporting `exported`
    instances (not_dicom files skipped) without any server."""
    from airflow_provider_dicom.export import bigquery

    calls: list[dict] = []
    outcome = {"exported": 1, "not_dicom": 0}

    def export_to_bigquery(source, table, **kwargs):
        calls.append({"source": source, "table": str(table), **kwargs})
        result = bigquery.ExportResult(str(table), "WRITE_EMPTY", instances_exported=outcome["exported"])
        result.not_dicom_count = outcome["not_dicom"]
        result.table_written = outcome["exported"] > 0
        return result

    monkeypatch.setattr(bigquery, "export_to_bigquery", export_to_bigquery)
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", "http://127.0.0.1:9")  # anonymous client, never called
    calls_and_outcome = (calls, outcome)
    return calls_and_outcome


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("WRITE_APPEND", "WRITE_APPEND"),
        ("write_append", "WRITE_APPEND"),
        ("write-append", "WRITE_APPEND"),
        ("Write-Truncate", "WRITE_TRUNCATE"),
        ("WRITE_EMPTY", "WRITE_EMPTY"),
    ],
)
def test_write_disposition_in_either_spelling(capsys, folder, engine, spelling, expected):
    calls, _ = engine
    code, _out, err = run(capsys, "export", "bq", str(folder), f"--bq-table={TABLE}", f"--write-disposition={spelling}")
    assert code == 0, err
    from airflow_provider_dicom.model.options import WriteDisposition

    assert WriteDisposition.parse(calls[0]["write_disposition"]) is WriteDisposition[expected]


def test_a_bad_write_disposition_is_named_as_typed(capsys, folder, engine):
    code, _, err = run(capsys, "export", "bq", str(folder), f"--bq-table={TABLE}", "--write-disposition=WRITE_SOMETIMES")
    assert code == 2 and len(err) == 1
    assert "WRITE_SOMETIMES" in err[0] and "write_sometimes" not in err[0]


def test_write_disposition_in_either_spelling_for_a_store(capsys, monkeypatch):
    client = RecordingClient()
    monkeypatch.setattr("airflow_provider_dicom.cli.healthcare.make_client", lambda args: client)
    code, _out, err = run(capsys, "export", "bq", STORE, f"--bq-table={TABLE}", "--write-disposition=WRITE_TRUNCATE")
    assert code == 0, err
    assert client.calls[0][2]["bigqueryDestination"]["writeDisposition"] == "WRITE_TRUNCATE"


class RecordingClient:
    """The Healthcare client's export calls, answered with a finished operation."""

    def __init__(self):
        self.calls = []

    def _operation(self):
        return {"name": "projects/my-project/locations/us/datasets/imaging/operations/1", "done": True,
                "response": {}, "metadata": {"counter": {"success": "1"}}}

    def start_export(self, store, body, destination):
        self.calls.append(("bq" if "bigqueryDestination" in body else "gcs", store, body))
        return self._operation()

    def wait_for_operation(self, name, **kwargs):
        from airflow_provider_dicom.healthcare.operations import OperationStatus

        return OperationStatus.from_api(self._operation())


def test_gclouds_filter_config_gcs_uri_flag_is_accepted(capsys, monkeypatch, folder, engine):
    calls, _ = engine
    monkeypatch.setattr("airflow_provider_dicom.export.bigquery.load_filter_config", lambda *a: None)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    code, _, err = run(capsys, "export", "bq", str(folder), f"--bq-table={TABLE}",
                       "--filter-config-gcs-uri=gs://my-bucket/filter.txt")
    assert code == 0, err
    assert calls[0]["filter_config"] == "gs://my-bucket/filter.txt"

    client = RecordingClient()
    monkeypatch.setattr("airflow_provider_dicom.cli.healthcare.make_client", lambda args: client)
    for argv in (["bq", STORE, f"--bq-table={TABLE}"], ["gcs", STORE, "--gcs-uri-prefix=gs://my-bucket/out"]):
        code, _, err = run(capsys, "export", *argv, "--filter-config-gcs-uri=gs://my-bucket/filter.txt")
        assert code == 0, err
        assert client.calls[-1][2]["filterConfig"] == {"resourcePathsGcsUri": "gs://my-bucket/filter.txt"}


def test_gcloud_flag_names_are_in_help(capsys):
    for destination, flags in (
        ("bq", ("--bq-table", "--overwrite-table", "--write-disposition", "--async", "--filter-config-gcs-uri")),
        ("gcs", ("--gcs-uri-prefix", "--mime-type", "--async", "--filter-config-gcs-uri")),
    ):
        with pytest.raises(SystemExit):
            main(["export", destination, "--help"])
        out = capsys.readouterr().out
        for flag in flags:
            assert flag in out, (destination, flag)


@pytest.mark.parametrize("spelling", ["write-empty", "write_empty"])
def test_on_empty_write_empty_in_either_spelling(capsys, tmp_path, spelling):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    out = tmp_path / "filter.txt"
    code, stdout, err = run(capsys, "filter", "--uids", str(empty), "--out", str(out), "--on-empty", spelling)
    assert code == 0, err
    assert out.read_text() == "" and json.loads(stdout)["written"] is True


def test_on_empty_is_documented_with_hyphens(capsys):
    with pytest.raises(SystemExit):
        main(["filter", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "write-empty" in out and "write_empty" not in out


def test_a_source_with_no_dicom_exits_1_saying_so(capsys, tmp_path, engine):
    _calls, outcome = engine
    outcome.update(exported=0, not_dicom=2)
    (tmp_path / "notes.txt").write_text("not DICOM")
    code, out, err = run(capsys, "export", "bq", str(tmp_path), f"--bq-table={TABLE}", "--quiet")
    assert code == 1
    assert json.loads(out)["instances_exported"] == 0
    assert err[-1] == f"airflow-dicom: error: no DICOM instance found in local folder {tmp_path} (2 files that are not DICOM); {TABLE} was not written"


def test_one_skipped_file_is_one_file(capsys, tmp_path, engine):
    _calls, outcome = engine
    outcome.update(exported=0, not_dicom=1)
    code, _, err = run(capsys, "export", "bq", str(tmp_path), f"--bq-table={TABLE}", "--quiet")
    assert code == 1 and "(1 file that is not DICOM)" in err[-1]


def _no_credentials(monkeypatch, tmp_path):
    """Application Default Credentials that cannot be found, quickly: a key file that does not exist."""
    for name in ("STORAGE_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST", "HEALTHCARE_EMULATOR_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-key.json"))


def test_a_gcs_source_without_credentials_says_what_to_set(capsys, monkeypatch, tmp_path):
    _no_credentials(monkeypatch, tmp_path)
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", "http://127.0.0.1:9")
    code, _, err = run(capsys, "export", "bq", "gs://my-bucket/dicom", f"--bq-table={TABLE}")
    assert code == 1 and len(err) == 1
    assert "filter file" not in err[0]
    assert "gs://my-bucket/dicom" in err[0]
    assert "GOOGLE_APPLICATION_CREDENTIALS" in err[0] and "STORAGE_EMULATOR_HOST" in err[0]


def test_bigquery_without_credentials_says_what_to_set(capsys, monkeypatch, tmp_path, folder):
    _no_credentials(monkeypatch, tmp_path)
    code, _, err = run(capsys, "export", "bq", str(folder), f"--bq-table={TABLE}")
    assert code == 1 and len(err) == 1
    assert "GOOGLE_APPLICATION_CREDENTIALS" in err[0] and "BIGQUERY_EMULATOR_HOST" in err[0]


def test_a_gcs_filter_file_without_credentials_says_what_to_set(capsys, monkeypatch, tmp_path, folder):
    _no_credentials(monkeypatch, tmp_path)
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", "http://127.0.0.1:9")
    code, _, err = run(capsys, "export", "bq", str(folder), f"--bq-table={TABLE}", "--filter-config=gs://my-bucket/f.txt")
    assert code == 1 and len(err) == 1
    assert "filter file gs://my-bucket/f.txt" in err[0]
    assert "GOOGLE_APPLICATION_CREDENTIALS" in err[0] and "STORAGE_EMULATOR_HOST" in err[0]


def test_the_healthcare_api_without_credentials_says_what_to_set(capsys, monkeypatch, tmp_path):
    _no_credentials(monkeypatch, tmp_path)
    code, _, err = run(capsys, "operations", "list", "projects/p/locations/us/datasets/d")
    assert code == 1 and len(err) == 1
    assert "GOOGLE_APPLICATION_CREDENTIALS" in err[0] and "HEALTHCARE_EMULATOR_HOST" in err[0]


def test_parser_is_built_without_airflow_or_hooks():
    """The command line parses and dispatches without reaching into Airflow's role modules."""
    import subprocess
    import sys

    code = (
        "import sys; from airflow_provider_dicom.cli import app; app.build_parser(); "
        "bad = [m for m in sys.modules if m.startswith(('airflow_provider_dicom.hooks', "
        "'airflow_provider_dicom.operators', 'airflow.'))]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


assert cli.EXIT_FAILED == 1


def test_a_dicomweb_refusal_says_which_variables_carry_the_credentials(capsys, monkeypatch):
    from airflow_provider_dicom.export import bigquery
    from airflow_provider_dicom.sources.dicomweb import DicomWebAuthError

    def refused(*args, **kwargs):
        raise DicomWebAuthError("GET https://pacs.test/dicom-web/studies: HTTP 401 Unauthorized: refused", 401)

    monkeypatch.setattr(bigquery, "export_to_bigquery", refused)
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", "http://127.0.0.1:9")
    code, _, err = run(capsys, "export", "bq", "https://pacs.test/dicom-web", f"--bq-table={TABLE}", "--quiet")
    assert code == 1 and len(err) == 1
    assert "HTTP 401" in err[0] and "DICOMWEB_USERNAME" in err[0] and "DICOMWEB_HEADERS" in err[0]


def test_export_gcs_copies_a_folder_through_the_operators_service(capsys, monkeypatch, folder):
    """What DicomExportToGcsOperator does for a folder, the command line does too: the same
    service, so a copy option exists in both at once."""
    from airflow_provider_dicom.export import gcs_copy

    calls = []

    def export_to_gcs(source, uri_prefix, **kwargs):
        calls.append((source, uri_prefix, kwargs))
        result = gcs_copy.GcsExportResult(uri_prefix)
        result.instances_copied = 1
        return result

    monkeypatch.setattr(gcs_copy, "export_to_gcs", export_to_gcs)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    code, out, err = run(capsys, "export", "gcs", str(folder), "--gcs-uri-prefix=gs://my-bucket/out", "--quiet",
                         "--concurrency=4")
    assert code == 0, err
    assert calls[0][:2] == (str(folder), "gs://my-bucket/out") and calls[0][2]["workers"] == 4
    assert json.loads(out)["instances_copied"] == 1

    code, _, err = run(capsys, "export", "gcs", str(folder), "--gcs-uri-prefix=gs://my-bucket/out",
                       "--mime-type=image/png")
    assert code == 2 and "image/png" in err[0]
