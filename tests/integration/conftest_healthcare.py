"""Fixtures for the Cloud Healthcare side: the emulator (in-process, on a free 127.0.0.1 port), a fresh
DICOM store per test, and a DicomStoreHook pointed at the emulator.

tests/conftest.py registers this module as a plugin, so every test can ask for them; like the
other stand-ins they are for tests marked integration only. The emulator exports through the BigQuery and GCS stand-ins that the
`bigquery_server` / `gcs_server` fixtures start: those fixtures set BIGQUERY_EMULATOR_HOST and
STORAGE_EMULATOR_HOST in this process, which is where the in-process emulator reads them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

PROJECT = "local-dicom"  # the stand-ins' project (tests/conftest.py)
LOCATION = "us-central1"

__all__ = ["healthcare_emulator", "healthcare", "dicom_store", "healthcare_hook", "PROJECT", "LOCATION"]


@pytest.fixture(scope="session")
def healthcare_emulator() -> Iterator:
    """The running emulator (`.url`, `.state`, `.faults`), one per test session."""
    from dicom_standins.emulator import HealthcareEmulator

    emulator = HealthcareEmulator(port=0).start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def healthcare(healthcare_emulator) -> Iterator:
    """An EmulatorClient on an emulator emptied for this test (no datasets, faults or request log)."""
    from dicom_standins.emulator import EmulatorClient

    healthcare_emulator.reset()
    client = EmulatorClient(healthcare_emulator.url)
    yield client
    healthcare_emulator.reset()


@pytest.fixture
def dicom_store(healthcare) -> str:
    """A fresh, empty DICOM store: projects/local-dicom/locations/us-central1/datasets/D/dicomStores/S."""
    dataset = healthcare.create_dataset(PROJECT, LOCATION, f"ds_{uuid.uuid4().hex[:8]}")
    return healthcare.create_dicom_store(dataset, "store")


@pytest.fixture
def healthcare_hook(healthcare_emulator, monkeypatch):
    """A DicomStoreHook on the anonymous test connection, pointed at the emulator, with short backoff."""
    from airflow_provider_dicom.hooks.dicom_store import DicomStoreHook

    monkeypatch.setenv("HEALTHCARE_EMULATOR_HOST", healthcare_emulator.url)
    return DicomStoreHook(retry_delay=0.05, max_retry_delay=0.2)
