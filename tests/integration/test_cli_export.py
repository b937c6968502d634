"""`airflow-dicom export bq` as a user runs it: the installed console script, pointed at the
BigQuery stand-in by BIGQUERY_EMULATOR_HOST, against gcloud's flags and Google's table rules."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).parent / "airflow-dicom"


@pytest.fixture
def folder(tmp_path, pydicom_corpus) -> Path:
    root = tmp_path / "dicom"
    root.mkdir()
    shutil.copy(pydicom_corpus / "CT_small.dcm", root / "ct.dcm")
    shutil.copy(pydicom_corpus / "MR_small.dcm", root / "mr.dcm")
    (root / "notes.txt").write_text("not DICOM")
    return root


def export(bigquery_server, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **bigquery_server.env}
    return subprocess.run(
        [str(SCRIPT), "export", "bq", *args, "--quiet"], check=False, capture_output=True, text=True, env=env, timeout=300
    )


def count(client, table_id: str) -> int:
    return next(iter(client.query(f"SELECT COUNT(*) AS n FROM `{table_id}`").result()))["n"]


def test_export_then_gcloud_style_write_rules(bigquery_server, bigquery_standin, bq_dataset, folder):
    table = f"bq://{bq_dataset}.instances"
    first = export(bigquery_server, str(folder), f"--bq-table={table}")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert (summary["instances_exported"], summary["failure_count"], summary["not_dicom_count"]) == (2, 0, 1)
    assert count(bigquery_standin, f"{bq_dataset}.instances") == 2

    # No flag: like gcloud without --overwrite-table, an existing table is an error.
    again = export(bigquery_server, str(folder), f"--bq-table={table}")
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1].startswith(f"airflow-dicom: error: table {table} already exists")
    assert "Traceback" not in again.stderr

    appended = export(bigquery_server, str(folder), f"--bq-table={table}", "--write-disposition=write-append")
    assert appended.returncode == 0, appended.stderr
    assert count(bigquery_standin, f"{bq_dataset}.instances") == 4

    replaced = export(bigquery_server, str(folder), f"--bq-table={table}", "--overwrite-table")
    assert replaced.returncode == 0, replaced.stderr
    assert count(bigquery_standin, f"{bq_dataset}.instances") == 2


def test_broken_file_exits_1_after_loading_the_good_ones(
    bigquery_server, bigquery_standin, bq_dataset, folder, pydicom_corpus
):
    broken = folder / "broken.dcm"
    broken.write_bytes((pydicom_corpus / "CT_small.dcm").read_bytes()[:200])
    table = f"bq://{bq_dataset}.t"
    result = export(bigquery_server, str(folder), f"--bq-table={table}")
    assert result.returncode == 1
    assert json.loads(result.stdout)["failures"][0]["path"] == str(broken)
    assert str(broken) in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"airflow-dicom: error: 1 instance failed to export (--max-failed-instances=0); "
        f"the 2 good ones were loaded into {table}"
    )
    assert count(bigquery_standin, f"{bq_dataset}.t") == 2

    tolerated = export(bigquery_server, str(folder), f"--bq-table={table}", "--overwrite-table",
                       "--max-failed-instances=1")
    assert tolerated.returncode == 0, tolerated.stderr


def test_missing_dataset_is_a_one_line_error(bigquery_server, bq_dataset, folder):
    project = bq_dataset.split(".")[0]
    result = export(bigquery_server, str(folder), f"--bq-table=bq://{project}.no_such_dataset.t")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no_such_dataset does not exist" in lines[0]


def test_the_apis_write_disposition_spelling_and_a_folder_without_dicom(
    bigquery_server, bigquery_standin, bq_dataset, folder, tmp_path
):
    """Issue 14: WRITE_APPEND as the API and our operators spell it; a folder with no DICOM
    exits 1 and leaves no table behind."""
    table = f"bq://{bq_dataset}.spelled"
    for spelling in ("WRITE_EMPTY", "WRITE_APPEND", "write_append"):
        done = export(bigquery_server, str(folder), f"--bq-table={table}", f"--write-disposition={spelling}")
        assert done.returncode == 0, done.stderr
    assert count(bigquery_standin, f"{bq_dataset}.spelled") == 6

    empty = tmp_path / "no-dicom"
    empty.mkdir()
    (empty / "notes.txt").write_text("not DICOM")
    nothing = export(bigquery_server, str(empty), f"--bq-table=bq://{bq_dataset}.nothing")
    assert nothing.returncode == 1
    assert nothing.stderr.strip().splitlines()[-1] == (
        f"airflow-dicom: error: no DICOM instance found in local folder {empty} (1 file that is not DICOM); "
        f"bq://{bq_dataset}.nothing was not written"
    )
    assert "nothing" not in [t.table_id for t in bigquery_standin.list_tables(bq_dataset)]


def test_export_gcs_copies_a_folder_into_the_healthcare_layout(gcs_server, gcs_bucket, folder):
    """The copy DicomExportToGcsOperator makes of a folder, from the command line (one service)."""
    env = {**os.environ, **gcs_server.env}
    done = subprocess.run(
        [str(SCRIPT), "export", "gcs", str(folder), f"--gcs-uri-prefix=gs://{gcs_bucket.name}/copy", "--quiet"],
        check=False, capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["instances_copied"], summary["not_dicom_count"]) == (2, 1)
    names = sorted(blob.name for blob in gcs_bucket.list_blobs(prefix="copy/"))
    assert len(names) == 2 and all(n.endswith(".dcm") and n.count("/") == 3 for n in names)
