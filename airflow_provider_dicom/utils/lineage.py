"""OpenLineage datasets for our exports: where the DICOM came from and where the metadata went.

Names follow OpenLineage's dataset naming conventions where one exists (BigQuery: namespace
`bigquery`, name `project.dataset.table`; Cloud Storage: namespace `gs://bucket`, name the path;
local files: namespace `file`). Cloud Healthcare has no convention: a DICOM store is namespace
`healthcare` and its full resource name, which is unique and what every Google tool prints.

apache-airflow-providers-openlineage is optional: without it `operator_lineage` returns None
and Airflow simply records no lineage. Its classes are imported only when lineage is asked for.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from airflow_provider_dicom.model.sources import DicomSource, SourceKind
from airflow_provider_dicom.model.uris import BigQueryTableUri, GcsUri

HEALTHCARE_NAMESPACE = "healthcare"
BIGQUERY_NAMESPACE = "bigquery"
FILE_NAMESPACE = "file"


def source_dataset_name(source: str) -> tuple[str, str]:
    """(namespace, name) of a DICOM source as users give it (store, folder, gs:// prefix, DICOMweb URL)."""
    parsed = DicomSource.parse(source)
    if parsed.kind is SourceKind.DICOM_STORE:
        return HEALTHCARE_NAMESPACE, parsed.value
    if parsed.kind is SourceKind.GCS_PREFIX:
        return gcs_dataset_name(parsed.value)
    if parsed.kind is SourceKind.DICOMWEB:
        parts = urlsplit(parsed.value)
        return f"{parts.scheme}://{parts.netloc}", parts.path or "/"
    return FILE_NAMESPACE, parsed.value


def bigquery_dataset_name(table_uri: str | BigQueryTableUri) -> tuple[str, str]:
    table = table_uri if isinstance(table_uri, BigQueryTableUri) else BigQueryTableUri.parse(table_uri)
    return BIGQUERY_NAMESPACE, table.table_id


def gcs_dataset_name(uri: str) -> tuple[str, str]:
    parsed = GcsUri.parse(uri)
    return f"gs://{parsed.bucket}", parsed.name.rstrip("/") or "/"


def operator_lineage(inputs: list[tuple[str, str]], outputs: list[tuple[str, str]]) -> Any:
    """An `OperatorLineage` of (namespace, name) pairs, or None without the OpenLineage provider."""
    try:
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.event_v2 import Dataset
    except ImportError:
        return None
    return OperatorLineage(
        inputs=[Dataset(namespace=namespace, name=name) for namespace, name in inputs],
        outputs=[Dataset(namespace=namespace, name=name) for namespace, name in outputs],
    )
