"""OpenLineage datasets for our exports: where the DICOM came from and where the metadata went.

Names follow OpenLineage's dataset naming conventions where one exists (BigQuery: namespace
`bigquery`, name `project.dataset.table`; Cloud Storage: namespace `gs://bucket`, name the path;
local files: namespace `file`). Cloud Healthcare has no convention: a DICOM store is namespace
`healthcare` and its full resource name, which is unique and what every Google tool prints.

What an export wrote (`WrittenTable`) becomes two facets on its output dataset, as the Google
provider's BigQuery operators send them: `schema` (SchemaDatasetFacet: the columns of the table
as the export left it, nested RECORD columns with their fields) and `outputStatistics`
(OutputStatisticsOutputDatasetFacet: rowCount = rows written, one per instance; size = bytes the
load job wrote, when BigQuery reports them).

apache-airflow-providers-openlineage is optional: without it `operator_lineage` returns None
and Airflow simply records no lineage. Its classes are imported only when lineage is asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from airflow_provider_dicom.dicom.schema import Field

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


def openlineage_available() -> bool:
    """Whether lineage is recorded here (the OpenLineage provider is installed): what an export
    wrote is only worth looking up (a remote call, for a store export) when it is."""
    try:
        from airflow.providers.openlineage.extractors import OperatorLineage  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class WrittenTable:
    """What an export wrote into one output dataset: the table's columns (None: unknown) and the
    rows it wrote, with their size in bytes when known."""

    columns: tuple[Field, ...] | None
    rows: int | None
    size: int | None = None


def operator_lineage(
    inputs: list[tuple[str, str]],
    outputs: list[tuple[str, str]],
    written: Mapping[tuple[str, str], WrittenTable] | None = None,
) -> Any:
    """An `OperatorLineage` of (namespace, name) pairs, or None without the OpenLineage provider.
    An output named in `written` carries the schema and output-statistics facets of what was written."""
    try:
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.event_v2 import Dataset
    except ImportError:
        return None
    written = written or {}
    return OperatorLineage(
        inputs=[Dataset(namespace=namespace, name=name) for namespace, name in inputs],
        outputs=[
            output_dataset(namespace, name, written[(namespace, name)]) if (namespace, name) in written
            else Dataset(namespace=namespace, name=name)
            for namespace, name in outputs
        ],
    )


def output_dataset(namespace: str, name: str, written: WrittenTable) -> Any:
    """An OpenLineage OutputDataset with the `schema` and `outputStatistics` facets `written` allows."""
    from airflow.providers.common.compat.openlineage.facet import (
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
    )

    facets: dict[str, Any] = {}
    if written.columns:
        facets["schema"] = schema_facet(written.columns)
    output_facets: dict[str, Any] = {}
    if written.rows is not None:
        output_facets["outputStatistics"] = OutputStatisticsOutputDatasetFacet(
            rowCount=int(written.rows), size=None if written.size is None else int(written.size)
        )
    return OutputDataset(namespace=namespace, name=name, facets=facets, outputFacets=output_facets)


def schema_facet(columns: Sequence[Field]) -> Any:
    """A SchemaDatasetFacet of BigQuery columns: name and type (STRING, INTEGER, RECORD, ...) as
    Google's operators report them; a RECORD's fields nested where the OpenLineage client knows
    nested fields, left out where it does not."""
    from airflow.providers.common.compat.openlineage.facet import SchemaDatasetFacet, SchemaDatasetFacetFields

    def convert(column: Field, nested: bool) -> Any:
        if nested and column.fields:
            return SchemaDatasetFacetFields(
                name=column.name, type=column.type, fields=[convert(child, nested) for child in column.fields]
            )
        return SchemaDatasetFacetFields(name=column.name, type=column.type)

    try:
        return SchemaDatasetFacet(fields=[convert(column, True) for column in columns])
    except TypeError:  # an OpenLineage client without nested schema fields
        return SchemaDatasetFacet(fields=[convert(column, False) for column in columns])
