"""`airflow-dicom export bq gs://...` and `airflow-dicom export bq https://...` as a user runs
them: the installed console script against the GCS stand-in and Orthanc, credentials from the
environment (never the command line)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).parent / "airflow-dicom"


def export(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), "export", "bq", *args, "--quiet"], check=False, capture_output=True, text=True,
        env={**os.environ, **env}, timeout=300,
    )


def count(client, table_id: str) -> int:
    return next(iter(client.query(f"SELECT COUNT(*) AS n FROM `{table_id}`").result()))["n"]


def test_cli_exports_a_gcs_prefix(bigquery_server, bigquery_standin, bq_dataset, gcs_server, gcs_bucket, pydicom_corpus):
    for name in ("CT_small.dcm", "MR_small.dcm", "README.txt"):
        gcs_bucket.blob(f"in/{name}").upload_from_filename(str(pydicom_corpus / name))
    done = export(
        {**bigquery_server.env, **gcs_server.env}, f"gs://{gcs_bucket.name}/in", f"--bq-table=bq://{bq_dataset}.t",
        "--concurrency=4",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["instances_exported"], summary["not_dicom_count"], summary["failure_count"]) == (2, 1, 0)
    assert count(bigquery_standin, f"{bq_dataset}.t") == 2


def test_cli_exports_a_dicomweb_server_with_credentials_from_the_environment(
    bigquery_server, bigquery_standin, bq_dataset, orthanc_standin
):
    url = orthanc_standin.extra["dicomweb_url"]
    credentials = {"DICOMWEB_USERNAME": orthanc_standin.extra["username"],
                   "DICOMWEB_PASSWORD": orthanc_standin.extra["password"]}
    done = export({**bigquery_server.env, **credentials}, url, f"--bq-table=bq://{bq_dataset}.web",
                  "--max-failed-instances=none")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["instances_exported"] > 100 and summary["failure_count"] == 2
    assert count(bigquery_standin, f"{bq_dataset}.web") == summary["instances_exported"]
    assert orthanc_standin.extra["password"] not in done.stdout + done.stderr

    refused = export(bigquery_server.env, url, f"--bq-table=bq://{bq_dataset}.refused")
    assert refused.returncode == 1
    assert "HTTP 401" in refused.stderr and "Traceback" not in refused.stderr

    bad_headers = export({**bigquery_server.env, "DICOMWEB_HEADERS": "[1]"}, url, f"--bq-table=bq://{bq_dataset}.x")
    assert bad_headers.returncode == 2 and "DICOMWEB_HEADERS" in bad_headers.stderr

    with_secret = export(bigquery_server.env, url.replace("http://", "http://u:hunter2@"), f"--bq-table=bq://{bq_dataset}.y")
    assert with_secret.returncode == 2 and "credentials" in with_secret.stderr
    assert "hunter2" not in with_secret.stderr
