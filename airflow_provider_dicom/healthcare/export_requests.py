"""Request bodies of `dicomStores.export` (`ExportDicomDataRequest`), validated before any call.

Built here, without Google clients, so an operator constructor, the command line and the hook
reject the same bad values (store name, `bq://` and `gs://` URIs, both force and disposition, an
unknown MIME type) with the same message, at DAG-parse time when the values are literal.
Every body these functions build is checked against the discovery document shipped with
google-api-python-client by tests/unit/test_discovery_contract.py.
"""

from __future__ import annotations

import re
from typing import Any

from airflow_provider_dicom.model.options import SchemaVariant, WriteDisposition, WriteOptions
from airflow_provider_dicom.model.uris import BigQueryTableUri, DicomStoreName, GcsUri, InvalidUriError

# The transfer syntaxes `gcsDestination.mimeType` accepts after "application/dicom; transfer-syntax="
# (from the field's description in the discovery document), plus "*": no transcoding.
DICOM_TRANSFER_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.110",
        "1.2.840.10008.1.2.4.111",
        "1.2.840.10008.1.2.4.112",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.8.1",
        "*",
    }
)
_OTHER_MIME_TYPES = {
    "application/octet-stream": frozenset({"1.2.840.10008.1.2.1", "*"}),
    "image/jpeg": frozenset({"1.2.840.10008.1.2.4.50", None}),
    "image/png": frozenset({None}),
}
# File extensions the API gives exported files, by MIME type.
MIME_EXTENSIONS = {"application/dicom": ".dcm", "image/jpeg": ".jpg", "image/png": ".png", "application/octet-stream": ""}
_PARAM = re.compile(r"^\s*transfer-syntax\s*=\s*(?P<value>\S+?)\s*$", re.IGNORECASE)


def parse_mime_type(value: str) -> tuple[str, str | None]:
    """Split and check a `gcsDestination.mimeType`; returns (media type, transfer syntax or None).

    Raises ValueError naming the value when the API would not accept it.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"invalid mime_type {value!r}: expected e.g. 'application/dicom; transfer-syntax=*'")
    media, *params = (part.strip() for part in value.split(";"))
    media = media.lower()
    syntax: str | None = None
    for param in params:
        match = _PARAM.match(param)
        if not match or syntax is not None:
            raise ValueError(
                f"invalid mime_type {value!r}: the only parameter allowed is one transfer-syntax=UID (or *)"
            )
        syntax = match["value"].strip('"')
    allowed: frozenset[str | None] | None
    if media == "application/dicom":
        allowed = DICOM_TRANSFER_SYNTAXES | {None}
    else:
        allowed = _OTHER_MIME_TYPES.get(media)
    if allowed is None or syntax not in allowed:
        raise ValueError(
            f"unsupported mime_type {value!r}: expected application/dicom with a transfer-syntax the "
            "Cloud Healthcare API supports (or *), application/octet-stream; transfer-syntax=* or "
            "1.2.840.10008.1.2.1, image/jpeg, or image/png"
        )
    return media, syntax


def normalise_mime_type(value: str) -> str:
    media, syntax = parse_mime_type(value)
    return media if syntax is None else f"{media}; transfer-syntax={syntax}"


def check_store_name(store: str | DicomStoreName) -> DicomStoreName:
    return store if isinstance(store, DicomStoreName) else DicomStoreName.parse(store)


def check_filter_gcs_uri(value: str | None) -> str | None:
    """`filterConfig.resourcePathsGcsUri` must be a `gs://bucket/object` (the API reads no local files)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("gs://"):
        raise InvalidUriError(
            f"invalid filter file {value!r} for a Cloud Healthcare export: expected gs://BUCKET/OBJECT "
            "(the API reads the filter from Cloud Storage)"
        )
    return str(GcsUri.parse(value, require_object=True))


def check_uri_prefix(value: str) -> str:
    """`gcsDestination.uriPrefix`: a `gs://bucket[/dir]` the files are written under."""
    uri = GcsUri.parse(value)
    return f"gs://{uri.bucket}/{uri.name}".rstrip("/") if uri.name else f"gs://{uri.bucket}"


def _filter_config(filter_gcs_uri: str | None) -> dict[str, Any]:
    uri = check_filter_gcs_uri(filter_gcs_uri)
    return {"filterConfig": {"resourcePathsGcsUri": uri}} if uri else {}


def bigquery_export_request(
    table_uri: str | BigQueryTableUri,
    *,
    write_disposition: str | WriteDisposition | None = None,
    force: bool | None = None,
    include_source_store: bool | None = None,
    schema: str | SchemaVariant | None = None,
    filter_gcs_uri: str | None = None,
) -> dict[str, Any]:
    """An `ExportDicomDataRequest` with a `bigqueryDestination`.

    `write_disposition` (either spelling) or the legacy `force`, never both; neither sends neither
    (the API's default is WRITE_EMPTY-like: any existing table fails the export). `schema` None
    leaves the API's default (flattened); "flattened"/"json" send `schemaFlattened {}`/`schemaJson {}`.
    """
    table = table_uri if isinstance(table_uri, BigQueryTableUri) else BigQueryTableUri.parse(table_uri)
    destination: dict[str, Any] = {"tableUri": str(table)}
    destination.update(WriteOptions.resolve(write_disposition, force).to_bigquery_destination())
    if include_source_store is not None:
        if not isinstance(include_source_store, bool):
            raise ValueError(f"include_source_store must be True or False, got {include_source_store!r}")
        destination["includeSourceStore"] = include_source_store
    if schema is not None:
        variant = SchemaVariant.parse(schema)
        destination["schemaJson" if variant is SchemaVariant.JSON else "schemaFlattened"] = {}
    return {"bigqueryDestination": destination, **_filter_config(filter_gcs_uri)}


def gcs_export_request(
    uri_prefix: str,
    *,
    mime_type: str | None = None,
    filter_gcs_uri: str | None = None,
) -> dict[str, Any]:
    """An `ExportDicomDataRequest` with a `gcsDestination`; without `mime_type` the instances are
    written as they were stored."""
    destination: dict[str, Any] = {"uriPrefix": check_uri_prefix(uri_prefix)}
    if mime_type is not None:
        destination["mimeType"] = normalise_mime_type(mime_type)
    return {"gcsDestination": destination, **_filter_config(filter_gcs_uri)}
