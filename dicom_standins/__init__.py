"""Helpers for tests and the demo: local stand-ins for Google services and a DICOMweb server
(Orthanc). Not imported by operators."""

from dicom_standins.standins import (
    STANDIN_PROJECT,
    STANDINS_ENV,
    Standin,
    StandinError,
    bigquery_client,
    orthanc_paths,
    orthanc_upload,
    standins_root,
    start_bigquery,
    start_gcs,
    start_orthanc,
    storage_client,
)

__all__ = [
    "STANDINS_ENV",
    "STANDIN_PROJECT",
    "Standin",
    "StandinError",
    "bigquery_client",
    "orthanc_paths",
    "orthanc_upload",
    "standins_root",
    "start_bigquery",
    "start_gcs",
    "start_orthanc",
    "storage_client",
]
