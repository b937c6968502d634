"""`airflow-dicom filter --sql` as a user runs it: the installed console script with query parameters,
against the BigQuery stand-in, writing to the GCS stand-in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(sys.executable).parent / "airflow-dicom"


def test_sql_with_params_to_gcs(bigquery_server, bigquery_standin, bq_dataset, gcs_server, gcs_bucket):
    bigquery_standin.query(
        f"CREATE TABLE `{bq_dataset}.t` AS "
        "SELECT '1.2.3' AS StudyInstanceUID, '1.2.3.1' AS SeriesInstanceUID, '1.2.3.1.1' AS SOPInstanceUID, 'CT' AS Modality "
        "UNION ALL SELECT '1.2.3', '1.2.3.1', '1.2.3.1.2', 'CT' "
        "UNION ALL SELECT '1.2.4', '1.2.4.1', '1.2.4.1.1', 'MR'"
    ).result()
    env = {**os.environ, **bigquery_server.env, **gcs_server.env, "GOOGLE_CLOUD_PROJECT": bq_dataset.split(".")[0]}
    completed = subprocess.run(
        [str(SCRIPT), "filter", "--sql", f"SELECT * FROM `{bq_dataset}.t` WHERE Modality = @m",
         "--param", "m=STRING:CT", "--level", "series", "--out", f"gs://{gcs_bucket.name}/f.txt"],
        check=False, capture_output=True, text=True, env=env, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert gcs_bucket.blob("f.txt").download_as_text() == "/studies/1.2.3/series/1.2.3.1\n"
    assert json.loads(completed.stdout)["series"] == 1
