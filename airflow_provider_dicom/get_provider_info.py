"""Provider metadata read by Airflow's ProvidersManager through the `apache_airflow_provider` entry point."""

from __future__ import annotations

from airflow_provider_dicom import __version__

# The same URL as pyproject.toml's Project-URL "Documentation" (a unit test holds them equal).
# Newer Airflow (3.3 does) replaces the provider's `documentation-url` with that Project-URL of the
# installed metadata, null without one; older versions show what this function returns, so it
# says it too.
DOCUMENTATION_URL = "https://github.com/airflow-provider-dicom/airflow-provider-dicom#readme"


def get_provider_info() -> dict:
    return {
        "package-name": "airflow-provider-dicom",
        "name": "DICOM",
        "description": "Export DICOM metadata to BigQuery from Cloud Healthcare API stores, folders, "
        "GCS prefixes and DICOMweb servers, producing the Cloud Healthcare export's table.",
        "versions": [__version__],
        "documentation-url": DOCUMENTATION_URL,
        "integrations": [
            {
                "integration-name": "DICOM",
                "external-doc-url": "https://cloud.google.com/healthcare-api/docs/how-tos/dicom-export-bigquery",
                "tags": ["gcp"],
            }
        ],
        "extra-links": [
            "airflow_provider_dicom.links.bigquery.DicomBigQueryTableLink",
            "airflow_provider_dicom.links.healthcare.DicomStoreLink",
            "airflow_provider_dicom.links.healthcare.DicomOperationLogsLink",
            "airflow_provider_dicom.links.healthcare.DicomGcsDestinationLink",
            "airflow_provider_dicom.links.storage.DicomFilterFileLink",
        ],
        "hooks": [
            {
                "integration-name": "DICOM",
                "python-modules": ["airflow_provider_dicom.hooks.dicom_store"],
            }
        ],
        "sensors": [
            {
                "integration-name": "DICOM",
                "python-modules": ["airflow_provider_dicom.sensors.operation"],
            }
        ],
        "triggers": [
            {
                "integration-name": "DICOM",
                "python-modules": ["airflow_provider_dicom.triggers.operation"],
            }
        ],
        "operators": [
            {
                "integration-name": "DICOM",
                "python-modules": [
                    "airflow_provider_dicom.operators.export",
                    "airflow_provider_dicom.operators.export_gcs",
                    "airflow_provider_dicom.operators.filter_file",
                    "airflow_provider_dicom.operators.sharded_export",
                ],
            }
        ],
    }
