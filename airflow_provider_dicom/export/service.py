"""The export service for sources we read ourselves (a folder, a gs:// prefix, a DICOMweb server).

`DicomExportToBigQueryOperator`, `DicomExportToGcsOperator`, the sharded export's plan and
`airflow-dicom export bq|gcs` all export through here, so an export option is validated, passed to
the engine and judged in one place. The callers differ only in where clients come from: the
operators build them from Airflow connections (`utils.clients.ConnectionClients`), the command
line from the environment (`cli.common.EnvironmentClients`); both are `Clients` below. What only a
task does (templating, XCom, links, the load job's id across retries) and what only the command
line does (flags, printing, exit codes) stay with them. Cloud Healthcare stores are exported by
the API itself: `healthcare.store_export`.

No Airflow and no Google client at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_dicom.model.request import ExportRequest, parse_export_request
from airflow_provider_dicom.model.sources import DicomSource, SourceKind
from airflow_provider_dicom.utils.errors import DicomProviderError
from airflow_provider_dicom.utils.text import counted

if TYPE_CHECKING:
    from airflow_provider_dicom.export.bigquery import ExportResult
    from airflow_provider_dicom.export.counts import SourceCounts
    from airflow_provider_dicom.export.gcs_copy import GcsExportResult
    from airflow_provider_dicom.model.uris import BigQueryTableUri

DEFAULT_WORKERS = 16
# How many failed instances a failure message lists by name (results list up to 1,000).
FAILURES_IN_MESSAGE = 5


class Clients(Protocol):
    """Where an export's clients come from. Each is asked for only when the export needs it, so
    a folder export to a BigQuery emulator needs no Google credentials at all."""

    def bigquery(self, project: str) -> Any:
        """A google.cloud.bigquery.Client whose jobs run in `project`."""

    def storage(self, project: str, purpose: str) -> Any:
        """A google.cloud.storage.Client; `purpose` (e.g. "to read gs://b/p") is for error messages."""

    def dicomweb(self, base_url: str, pool_size: int) -> Any:
        """A `sources.dicomweb.DicomWebClient` for `base_url` with its credentials."""


def needs_storage(source: DicomSource, filter_config: str | None) -> bool:
    return source.kind is SourceKind.GCS_PREFIX or (filter_config or "").startswith("gs://")


def storage_purpose(source: DicomSource, filter_config: str | None) -> str:
    """What the storage client is for, in words, for a message that says what lacks credentials."""
    reads = []
    if source.kind is SourceKind.GCS_PREFIX:
        reads.append(source.value)
    if (filter_config or "").startswith("gs://"):
        reads.append(f"the filter file {filter_config}")
    return "to read " + " and ".join(reads)


def source_clients(
    source: DicomSource, filter_config: str | None, clients: Clients, *, project: str, pool_size: int
) -> tuple[Any, Any]:
    """(storage client, DICOMweb client) the source and filter file need, None where not needed.
    The DICOMweb client first: its credentials are checked without any network call."""
    web = clients.dicomweb(source.value, pool_size) if source.kind is SourceKind.DICOMWEB else None
    storage = (
        clients.storage(project, storage_purpose(source, filter_config)) if needs_storage(source, filter_config) else None
    )
    return storage, web


# -- to BigQuery ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BigQueryExport:
    """One export to BigQuery from a source we read, validated: what every caller passes on."""

    request: ExportRequest
    project: str
    workers: int
    processes: int | str

    @property
    def source(self) -> DicomSource:
        assert self.request.source is not None
        return self.request.source

    @property
    def table(self) -> BigQueryTableUri:
        assert self.request.table is not None
        return self.request.table


def bigquery_export(
    *,
    source: object,
    destination_table_uri: object,
    write_disposition: Any = None,
    force: Any = None,
    schema: object = "flattened",
    filter_config: object = None,
    project: str | None = None,
    workers: int = DEFAULT_WORKERS,
    processes: int | str = 1,
    check_local_files: bool = False,
) -> BigQueryExport:
    """Validate an export of a folder, gs:// prefix or DICOMweb server to BigQuery; ValueError
    (or NotImplementedError for a source we cannot read) naming the bad value.

    `check_local_files` also checks what is on this machine (the folder, a local filter file),
    for callers that run where the export runs (the command line) and want those mistakes
    reported before any client is built."""
    request = parse_export_request(
        source=source,
        destination_table_uri=destination_table_uri,
        write_disposition=write_disposition,
        force=force,
        schema=schema,
        filter_config=filter_config,
        skip_templated=False,
    )
    return bigquery_export_of(
        request,
        project=project,
        workers=workers,
        processes=processes,
        check_local_files=check_local_files,
    )


def bigquery_export_of(
    request: ExportRequest,
    *,
    project: str | None = None,
    workers: int = DEFAULT_WORKERS,
    processes: int | str = 1,
    check_local_files: bool = False,
) -> BigQueryExport:
    """`bigquery_export` for a caller that has parsed the request already (the operator parses
    it to choose between the API's export and ours): the same checks, without parsing twice."""
    assert request.source is not None and request.table is not None
    if request.source.kind is SourceKind.DICOM_STORE:
        raise ValueError(
            f"{request.source.display} is a Cloud Healthcare DICOM store: the API exports it "
            "(airflow_provider_dicom.healthcare.store_export), not this service"
        )
    request.source.require_supported()
    if check_local_files:
        check_local(request.source, request.filter_config)
    return BigQueryExport(request, project or request.table.project, workers, processes)


def check_local(source: DicomSource, filter_config: str | None) -> None:
    """The folder exists and a local filter file is readable and well formed (ValueError)."""
    if source.kind is SourceKind.FOLDER and not Path(source.value).is_dir():
        raise ValueError(f"source folder {source.value!r} does not exist or is not a folder")
    if filter_config and not filter_config.startswith("gs://"):
        from airflow_provider_dicom.filters.files import check_local_filter_file

        try:
            check_local_filter_file(filter_config)
        except OSError as exc:
            raise ValueError(str(exc)) from None


def run_bigquery_export(
    export: BigQueryExport,
    clients: Clients,
    *,
    progress: Callable[[ExportResult], None] | None = None,
    load_job_id: str | None = None,
    on_load_job: Callable[[str], None] | None = None,
) -> ExportResult:
    """Build the clients the export needs and run it (`export.bigquery.export_to_bigquery`).

    Raises what the engine raises: DestinationError when the table's state forbids the export,
    ExportError when the load fails. Bad files do not raise; judge them with `check_failures`.
    """
    from airflow_provider_dicom.export import bigquery as engine

    request = export.request
    storage, web = source_clients(
        export.source, request.filter_config, clients, project=export.project, pool_size=export.workers
    )
    client = clients.bigquery(export.project)
    assert request.schema is not None and request.write is not None
    write = request.write
    return engine.export_to_bigquery(
        export.source.value,
        export.table,
        # As the caller spelled it: the legacy flag and the enum judge an existing table apart.
        write_disposition=write.disposition if write.write_disposition_given else None,
        force=write.force,
        filter_config=request.filter_config,
        schema=request.schema,
        client=client,
        project=export.project,
        progress=progress,
        storage_client=storage,
        dicomweb_client=web,
        workers=export.workers,
        processes=export.processes,
        load_job_id=load_job_id,
        on_load_job=on_load_job,
    )


# -- to Cloud Storage ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GcsCopy:
    """One copy of a folder's, gs:// prefix's or DICOMweb server's files to Cloud Storage, validated."""

    source: DicomSource
    uri_prefix: str
    filter_config: str | None
    mime_type: str | None
    workers: int


def gcs_copy(
    *,
    source: object,
    uri_prefix: object,
    filter_config: object = None,
    mime_type: str | None = None,
    workers: int = DEFAULT_WORKERS,
    check_local_files: bool = False,
) -> GcsCopy:
    """Validate a copy to `uri_prefix` in the Cloud Healthcare layout; ValueError naming the bad
    value (a store's files are exported by the API: `healthcare.store_export.gcs_store_export`)."""
    from airflow_provider_dicom.export.gcs_copy import check_mime_type_for_copy
    from airflow_provider_dicom.healthcare.export_requests import check_uri_prefix
    from airflow_provider_dicom.model.request import check_filter_config

    parsed = DicomSource.parse(source)
    if parsed.kind is SourceKind.DICOM_STORE:
        raise ValueError(f"{parsed.display} is a Cloud Healthcare DICOM store: its export to Cloud Storage is the API's")
    parsed.require_supported()
    check_uri_prefix(uri_prefix)  # type: ignore[arg-type]
    prefix = str(uri_prefix)
    if mime_type is not None:
        from airflow_provider_dicom.healthcare.export_requests import parse_mime_type

        parse_mime_type(mime_type)
        check_mime_type_for_copy(mime_type)
    filters = check_filter_config(filter_config)
    if check_local_files:
        check_local(parsed, filters)
    return GcsCopy(parsed, prefix, filters, mime_type, workers)


def run_gcs_copy(
    copy: GcsCopy,
    clients: Clients,
    *,
    project: str,
    progress: Callable[[GcsExportResult], None] | None = None,
) -> GcsExportResult:
    """Copy the DICOM files to `copy.uri_prefix` ({study}/{series}/{instance}.dcm), as stored
    (`export.gcs_copy`)."""
    from airflow_provider_dicom.export.gcs_copy import export_to_gcs

    web = clients.dicomweb(copy.source.value, copy.workers) if copy.source.kind is SourceKind.DICOMWEB else None
    reads = storage_purpose(copy.source, copy.filter_config)
    purpose = f"to write {copy.uri_prefix}" if reads == "to read " else f"{reads} and to write {copy.uri_prefix}"
    storage = clients.storage(project, purpose)
    return export_to_gcs(
        copy.source.value,
        copy.uri_prefix,
        storage_client=storage,
        filter_config=copy.filter_config,
        mime_type=copy.mime_type,
        dicomweb_client=web,
        workers=copy.workers,
        progress=progress,
    )


# -- judging the outcome -------------------------------------------------------------------------


class TooManyFailedInstances(DicomProviderError, RuntimeError):
    """More instances failed than tolerated; the good ones were exported all the same."""

    def __init__(self, result: SourceCounts, tolerated: int) -> None:
        self.result = result
        self.tolerated = tolerated
        super().__init__(f"{counted(result.failure_count, 'instance')} failed (at most {tolerated} tolerated)")


def check_failures(result: SourceCounts, tolerated: int | None) -> None:
    """Raise TooManyFailedInstances when more than `tolerated` instances failed (None: never)."""
    if tolerated is not None and result.failure_count > tolerated:
        raise TooManyFailedInstances(result, tolerated)


def found_no_dicom(result: SourceCounts) -> bool:
    """True when the source held no DICOM at all: nothing exported, nothing failed, nothing
    filtered out (a mistyped path, an empty bucket prefix, an empty server)."""
    return (
        result.done_count == 0
        and result.failure_count == 0
        and result.filtered_out_count == 0
        and result.duplicate_count == 0
        and not getattr(result, "reattached", False)
    )


def no_dicom_message(source: str, result: SourceCounts, destination: str) -> str:
    skipped = result.not_dicom_count
    seen = f" ({counted(skipped, 'file')} that {'is' if skipped == 1 else 'are'} not DICOM)" if skipped else ""
    return f"no DICOM instance found in {source}{seen}; {destination} was not written"


def failed_instances_message(
    failures: list, exported: int, destination: object, max_failed_instances: object, *, verb: str = "export",
    done: str = "loaded into",
) -> str:
    """Why a task fails although the good instances were exported: the count and the first few."""
    shown = "; ".join(f"{path}: {reason}" for path, reason in failures[:FAILURES_IN_MESSAGE])
    more = f"; and {len(failures) - FAILURES_IN_MESSAGE} more" if len(failures) > FAILURES_IN_MESSAGE else ""
    return (
        f"{counted(len(failures), 'DICOM instance')} failed to {verb} (max_failed_instances="
        f"{max_failed_instances}); the {counted(exported, 'good instance')} {'was' if exported == 1 else 'were'} "
        f"{done} {destination}. Failures: {shown}{more}"
    )
