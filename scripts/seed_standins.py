"""Seed the docker-compose stand-ins: a DICOM store holding pydicom's sample files (STOW-RS), the
BigQuery dataset and the bucket the example DAGs use. Idempotent: safe to run on every `up`.

Reads HEALTHCARE_EMULATOR_HOST, BIGQUERY_EMULATOR_HOST, STORAGE_EMULATOR_HOST and the names in
AIRFLOW_VAR_DICOM_STORE / _PROJECT / _DATASET / _BUCKET, the Airflow Variables the DAGs fall back to.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def wait_for(url: str, timeout: float = 180.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)  # noqa: S310 - a local stand-in
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not answer within {timeout:.0f} s")
            time.sleep(2)


def main() -> int:
    import pydicom
    from google.api_core.exceptions import Conflict
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery, storage

    from dicom_standins.emulator import EmulatorClient

    store = os.environ["AIRFLOW_VAR_DICOM_STORE"]
    project = os.environ["AIRFLOW_VAR_DICOM_PROJECT"]
    dataset = os.environ["AIRFLOW_VAR_DICOM_DATASET"]
    bucket = os.environ["AIRFLOW_VAR_DICOM_BUCKET"]
    for variable in ("HEALTHCARE_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST", "STORAGE_EMULATOR_HOST"):
        wait_for(os.environ[variable])

    healthcare = EmulatorClient(os.environ["HEALTHCARE_EMULATOR_HOST"])
    parts = store.split("/")  # projects/P/locations/L/datasets/D/dicomStores/S
    for call in (
        lambda: healthcare.create_dataset(parts[1], parts[3], parts[5]),
        lambda: healthcare.create_dicom_store("/".join(parts[:6]), parts[7]),
    ):
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - already exists on a second run
            print(f"seed: {exc}", flush=True)
    corpus = Path(pydicom.__file__).parent / "data" / "test_files"
    files = sorted(corpus.glob("*.dcm"))
    for start in range(0, len(files), 20):
        try:
            healthcare.store_instances(store, files[start : start + 20])
        except Exception as exc:  # noqa: BLE001 - duplicates on a second run
            print(f"seed: {exc}", flush=True)
    bigquery.Client(project=project, credentials=AnonymousCredentials()).create_dataset(
        f"{project}.{dataset}", exists_ok=True
    )
    try:
        storage.Client(project=project, credentials=AnonymousCredentials()).create_bucket(bucket)
    except Conflict:
        pass
    print(f"seed: store {store} loaded with {len(files)} sample files; dataset {project}.{dataset}; "
          f"bucket gs://{bucket}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
