"""Helpers for tests and the demo: local stand-ins for Google services. Not imported by operators."""

from airflow_provider_dicom.testing.standins import (
    STANDIN_PROJECT,
    STANDINS_ENV,
    Standin,
    StandinError,
    bigquery_client,
    start_bigquery,
    start_gcs,
    standins_root,
    storage_client,
)

__all__ = [
    "STANDIN_PROJECT",
    "STANDINS_ENV",
    "Standin",
    "StandinError",
    "bigquery_client",
    "start_bigquery",
    "start_gcs",
    "standins_root",
    "storage_client",
]
