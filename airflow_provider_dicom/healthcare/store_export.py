"""Exports of Cloud Healthcare API DICOM stores, without Airflow: the request, its start, its outcome.

Both the export operators (through `operators.store_export.DicomStoreExportBase`) and
`airflow-dicom export bq|gcs STORE` go through here, so a store export option (a field of the
request, a rule about the filter file, what the summary holds, when an outcome is a failure) is
added in one place. What only a task does (the operation ledger that makes retries safe,
deferral, XCom, links) stays in the operator; what only the command line does (flags, printing)
in `cli.healthcare`.

`client` below is anything with `HealthcareCalls`' methods: a `HealthcareClient` (command line) or
a `DicomStoreHook` (tasks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow_provider_dicom.healthcare import export_requests
from airflow_provider_dicom.healthcare.operations import OperationFailedError, OperationStatus
from airflow_provider_dicom.utils.errors import DicomProviderError

# google.rpc codes an operation can end with that a new export may not meet again (server
# trouble, quota, an aborted transaction). Every other code (cancelled, invalid argument, not
# found, permission denied, failed precondition such as a non-empty table, ...) would fail the
# same way on every retry.
RETRYABLE_OPERATION_CODES = frozenset({2, 4, 8, 10, 13, 14})


@dataclass(frozen=True)
class StoreExport:
    """One `dicomStores.export` call, validated: the store and the request body the API receives,
    built once (the fingerprint a retry compares is of the very body that is sent)."""

    store: str
    destination: str
    body: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        """Same store and body, same fingerprint: how a retried task knows an earlier try's export."""
        from airflow_provider_dicom.utils.operation_ledger import request_fingerprint

        return request_fingerprint(self.store, self.body)

    def start(self, client: Any) -> dict[str, Any]:
        """Send the request (at most one export starts, see `HealthcareCalls.start_export`);
        returns the Operation as the API sent it."""
        return client.start_export(self.store, self.body, self.destination)  # type: ignore[no-any-return]


def bigquery_store_export(
    store: str,
    table_uri: str,
    *,
    write_disposition: str | None = None,
    force: bool | None = None,
    include_source_store: bool | None = None,
    schema: str | None = None,
    filter_gcs_uri: str | None = None,
) -> StoreExport:
    """A store export to BigQuery; raises ValueError naming the bad value.

    `schema` "json" sends `schemaJson {}`; "flattened" (the operator's default) sends nothing, which
    is the API's flattened default and works on every API revision.
    """
    name = str(export_requests.check_store_name(store))
    from airflow_provider_dicom.model.options import SchemaVariant

    variant = SchemaVariant.parse(schema) if schema is not None else None
    body = export_requests.bigquery_export_request(
        table_uri,
        write_disposition=write_disposition,
        force=force,
        include_source_store=include_source_store,
        schema=variant.value if variant is SchemaVariant.JSON else None,
        filter_gcs_uri=filter_gcs_uri,
    )
    return StoreExport(name, body["bigqueryDestination"]["tableUri"], body)


def gcs_store_export(
    store: str, uri_prefix: str, *, mime_type: str | None = None, filter_gcs_uri: str | None = None
) -> StoreExport:
    """A store export of the instance files to Cloud Storage; raises ValueError naming the bad value."""
    name = str(export_requests.check_store_name(store))
    body = export_requests.gcs_export_request(uri_prefix, mime_type=mime_type, filter_gcs_uri=filter_gcs_uri)
    return StoreExport(name, body["gcsDestination"]["uriPrefix"], body)


def check_filter_for_store(value: object) -> str | None:
    """The API reads filter files from Cloud Storage only: a local path fails here, naming it."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"invalid filter_config {value!r}: expected gs://BUCKET/OBJECT")  # noqa: TRY004
    return export_requests.check_filter_gcs_uri(value)


def rfc3339_now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def summarize(status: OperationStatus, export: StoreExport) -> dict[str, Any]:
    """The export's result (XCom, the command line's JSON): JSON-ready, counts as ints, no instance content."""
    return {
        "name": status.name,
        "state": status.state,
        "done": status.done,
        "success": status.success,
        "failure": status.failure,
        "pending": status.pending,
        "create_time": status.create_time,
        "end_time": status.end_time,
        "logs_url": status.logs_url,
        "error_code": status.error_code,
        "error_message": status.error_message,
        "source": export.store,
        "destination": export.destination,
    }


class StoreExportFailed(DicomProviderError, RuntimeError):
    """A finished export operation that counts as a failure: it failed or was cancelled, or it
    counted more failed instances than tolerated. `summary` is the export's result all the same;
    `reason` the operation's own message; `retryable` whether a new export may fare better."""

    def __init__(self, export: StoreExport, status: OperationStatus, reason: OperationFailedError) -> None:
        self.summary = summarize(status, export)
        self.reason = reason
        self.retryable = bool(status.failed and status.error_code in RETRYABLE_OPERATION_CODES)
        super().__init__(f"Export of {export.store} to {export.destination}: {reason}")


def finish(status: OperationStatus, export: StoreExport, tolerated_failures: int | None) -> dict[str, Any]:
    """Judge a finished operation: its summary, or StoreExportFailed (which carries the summary)."""
    try:
        status.check(tolerated_failures)
    except OperationFailedError as exc:
        raise StoreExportFailed(export, status, exc) from exc
    return summarize(status, export)


def start(client: Any, export: StoreExport) -> OperationStatus:
    """Start the export; the operation as it stands right after."""
    return OperationStatus.from_api(export.start(client))
