"""Provider metadata read by Airflow's ProvidersManager through the `apache_airflow_provider` entry point."""

from __future__ import annotations

from airflow_provider_dicom import __version__

# The same URL as pyproject.toml's Project-URL "Documentation" (a unit test holds them equal).
# Newer Airflow (3.3 does) replaces the provider's `documentation-url` with that Project-URL of the
# installed metadata, null without one; older versions show what this function returns, so it
# says it too.
DOCUMENTATION_URL = "https://github.com/airflow-provider-dicom/airflow-provider-dicom#readme"

# The DICOMweb connection type's form, declared as data: Airflow >= 3.2 builds the connection form
# from these (no hook import); older Airflow calls DicomWebHook.get_connection_form_widgets() and
# get_ui_field_behaviour(), which derive their answer from the same data. The extra fields are
# stored in the connection's extra under these names (see DicomWebHook for what each does);
# any other key of the extra is sent as an HTTP header.
DICOMWEB_CONN_TYPE = "dicomweb"
DICOMWEB_CONN_FIELDS: dict[str, dict] = {
    "token": {
        "label": "Bearer token (sent as Authorization: Bearer ...)",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "timeout": {
        "label": "Read timeout in seconds (default 300)",
        "schema": {"type": ["integer", "null"], "minimum": 1},
    },
    "verify": {
        "label": "Verify the server's TLS certificate",
        "schema": {"type": ["boolean", "null"], "default": True},
    },
    "ca_bundle": {
        "label": "CA bundle path on the workers (to verify a private CA)",
        "schema": {"type": ["string", "null"]},
    },
}
DICOMWEB_UI_FIELD_BEHAVIOUR: dict[str, object] = {
    "hidden-fields": ["schema", "port"],
    "relabeling": {
        "host": "DICOMweb base URL",
        "login": "Username (basic authentication)",
        "password": "Password (basic authentication)",
        "extra": "HTTP headers (JSON object)",
    },
    "placeholders": {
        "host": "https://pacs.example.org/dicom-web",
        "login": "optional",
        "password": "optional",
        "extra": '{"X-Api-Key": "..."}',
    },
}


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
                "python-modules": [
                    "airflow_provider_dicom.hooks.dicom_store",
                    "airflow_provider_dicom.hooks.dicomweb",
                ],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_dicom.hooks.dicomweb.DicomWebHook",
                "hook-name": "DICOMweb",
                "connection-type": DICOMWEB_CONN_TYPE,
                "ui-field-behaviour": DICOMWEB_UI_FIELD_BEHAVIOUR,
                "conn-fields": DICOMWEB_CONN_FIELDS,
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
