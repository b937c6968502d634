"""An export request as users give it (source, table, write options, schema, filter), validated.

The operator and the command line take the same arguments; parsing them here, without importing
Airflow or any Google client, makes both reject the same bad values with the same message, and
keeps `airflow-dicom` fast to start.
"""

from __future__ import annotations

from dataclasses import dataclass

from airflow_provider_dicom.model import uris
from airflow_provider_dicom.model.options import SchemaVariant, WriteOptions
from airflow_provider_dicom.model.sources import DicomSource


@dataclass(frozen=True)
class ExportRequest:
    """The parsed arguments of one export. A field is None when its input was still a Jinja
    template and parsing was asked to skip templates (the operator's constructor does, then parses
    again after rendering, so a literal bad value fails the DAG at parse time and a templated one
    fails the task)."""

    source: DicomSource | None
    table: uris.BigQueryTableUri | None
    write: WriteOptions | None
    schema: SchemaVariant | None
    filter_config: str | None


def check_filter_config(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"invalid filter_config {value!r}: expected a local file path or gs://BUCKET/OBJECT")
    if value.startswith("gs://"):
        uris.GcsUri.parse(value, require_object=True)
    elif "://" in value:
        raise ValueError(f"invalid filter_config {value!r}: expected a local file path or gs://BUCKET/OBJECT")
    return value


def parse_export_request(
    *,
    source: object,
    destination_table_uri: object,
    write_disposition: object = None,
    force: object = None,
    schema: object = "flattened",
    filter_config: object = None,
    skip_templated: bool = False,
) -> ExportRequest:
    """Validate the export arguments, raising ValueError naming the bad value.

    With `skip_templated`, values holding Jinja are left for after rendering. Giving both `force`
    and `write_disposition` is an error even when one of them is a template.
    """

    def pending(value: object) -> bool:
        return skip_templated and uris.is_templated(value)

    parsed_source = None if pending(source) else DicomSource.parse(source)
    table = None if pending(destination_table_uri) else uris.BigQueryTableUri.parse(destination_table_uri)
    if write_disposition is not None and force is not None:
        WriteOptions.resolve(write_disposition, force)  # raises, naming both values
    write = None if pending(write_disposition) else WriteOptions.resolve(write_disposition, force)
    variant = None if pending(schema) else SchemaVariant.parse(schema)
    filters = None if pending(filter_config) else check_filter_config(filter_config)
    return ExportRequest(parsed_source, table, write, variant, filters)
