"""Clients built from Airflow connections, shared by the operators that read non-Healthcare sources.

Built the way apache-airflow-providers-google builds them (key file, ADC, anonymous,
impersonation), so a connection that works for Google's operators works for ours; the emulator
environment variables (STORAGE_EMULATOR_HOST) are honoured by the client libraries themselves.
Imported inside `execute()` only: nothing here may load at DAG-parse time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def bigquery_client(
    gcp_conn_id: str, impersonation_chain: str | Sequence[str] | None, location: str | None, project: str | None
) -> Any:
    """A google-cloud-bigquery client from the Google Cloud connection, through the Google
    provider's BigQueryHook; the library itself honours BIGQUERY_EMULATOR_HOST when the connection
    sets no endpoint. Without `project`, the connection's project runs (and pays for) the jobs."""
    from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook

    hook = BigQueryHook(
        gcp_conn_id=gcp_conn_id, impersonation_chain=impersonation_chain, use_legacy_sql=False, location=location
    )
    return hook.get_client(project_id=project or hook.project_id, location=location)


def storage_client(gcp_conn_id: str, impersonation_chain: str | Sequence[str] | None) -> Any:
    """A google-cloud-storage client from the Google Cloud connection."""
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    return GCSHook(gcp_conn_id=gcp_conn_id, impersonation_chain=impersonation_chain).get_conn()


def dicomweb_client(base_url: str, dicomweb_conn_id: str | None, pool_size: int) -> Any:
    """A DICOMweb client for `base_url` with the credentials of the connection (a ``dicomweb`` or
    ``http`` one; anonymous without one), built by `DicomWebHook`, the one place that reads them."""
    from airflow_provider_dicom.hooks.dicomweb import DicomWebHook

    return DicomWebHook(dicomweb_conn_id=dicomweb_conn_id, base_url=base_url, pool_size=pool_size).get_conn()


class ConnectionClients:
    """`export.service.Clients` from Airflow connections: what the export operators hand the
    export service, so a task and `airflow-dicom` run the same export with different credentials."""

    def __init__(
        self,
        gcp_conn_id: str,
        impersonation_chain: str | Sequence[str] | None = None,
        *,
        location: str | None = None,
        dicomweb_conn_id: str | None = None,
    ) -> None:
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain
        self.location = location
        self.dicomweb_conn_id = dicomweb_conn_id

    def bigquery(self, project: str) -> Any:
        return bigquery_client(self.gcp_conn_id, self.impersonation_chain, self.location, project)

    def storage(self, project: str, purpose: str) -> Any:
        return storage_client(self.gcp_conn_id, self.impersonation_chain)

    def dicomweb(self, base_url: str, pool_size: int) -> Any:
        return dicomweb_client(base_url, self.dicomweb_conn_id, pool_size)


def google_credentials(gcp_conn_id: str, impersonation_chain: str | Sequence[str] | None = None) -> Any:
    """The google-auth credentials of a Google Cloud connection, as the Google provider's hooks
    resolve them (key file, ADC, anonymous, impersonation); for `airflow-dicom --gcp-conn-id`."""
    from airflow.providers.google.common.hooks.base_google import GoogleBaseHook

    return GoogleBaseHook(gcp_conn_id=gcp_conn_id, impersonation_chain=impersonation_chain).get_credentials()
