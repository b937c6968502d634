"""scripts/seed_standins.py (docker-compose's `seed` job) against the emulator and the stand-ins, with
the settings of docker/standins.env: the store is loaded, the dataset and bucket exist, and a
second run (every `docker compose up`) succeeds without duplicating anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_seed_is_idempotent(healthcare, healthcare_emulator, bigquery_server, bigquery_standin, gcs_server, gcs_standin):
    env = {**os.environ, **bigquery_server.env, **gcs_server.env, "HEALTHCARE_EMULATOR_HOST": healthcare_emulator.url}
    for line in (REPO / "docker" / "standins.env").read_text().splitlines():
        if line.startswith("AIRFLOW_VAR_"):
            key, _, value = line.partition("=")
            env[key] = value
    env["AIRFLOW_VAR_DICOM_PROJECT"] = "local-dicom"  # the stand-ins' project in this test session
    counts = []
    for _ in range(2):
        completed = subprocess.run([sys.executable, str(REPO / "scripts" / "seed_standins.py")], env=env,
                                   capture_output=True, text=True, timeout=300)
        assert completed.returncode == 0, completed.stderr[-2000:]
        store = env["AIRFLOW_VAR_DICOM_STORE"]
        dataset = healthcare_emulator.state.datasets[store.rpartition("/dicomStores/")[0]]
        with healthcare_emulator.state.lock:
            counts.append(len(dataset.stores[store.rpartition("/")[2]].instances))
    assert counts[0] == counts[1] > 20
    assert bigquery_standin.get_dataset(f"local-dicom.{env['AIRFLOW_VAR_DICOM_DATASET']}")
    assert gcs_standin.get_bucket(env["AIRFLOW_VAR_DICOM_BUCKET"])
    gcs_standin.get_bucket(env["AIRFLOW_VAR_DICOM_BUCKET"]).delete()
