"""Export DICOM from a source we read ourselves into a BigQuery table, with Google's destination rules.

The Cloud Healthcare export decides what happens to an existing table from `force` /
`writeDisposition`; we apply the same rules, and apply them *before* reading a single file, so a
run that is going to be refused costs one metadata call instead of an hour of reading.

Rows are streamed to an anonymous temporary file (memory stays flat whatever the source size)
while the table schema grows as the union of what the instances need; then one BigQuery load job
with that explicit schema writes the table. The file has no name (O_TMPFILE, or unlinked as soon
as it is created), so the rows, patient data included, vanish with the process however it ends,
kill -9 included: nothing is left in $TMPDIR. One job is what makes every rule atomic: a load job
either commits all its rows or none, so a WRITE_TRUNCATE that fails (while reading, or inside
BigQuery) leaves the old table exactly as it was, and nothing half-written is ever visible.
Given a `load_job_id`, the job's id is deterministic (`export.load_job`): a retry that finds the
job its earlier try committed reports it and loads nothing again.

Never log PHI here: only paths, UIDs, counts and column names.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from airflow_provider_dicom.export.counts import SourceCounts
from airflow_provider_dicom.export.errors import DestinationError, ExportError, load_error
from airflow_provider_dicom.model.options import SchemaVariant, WriteDisposition, WriteOptions
from airflow_provider_dicom.model.sources import DicomSource, SourceKind, UnsupportedSourceError
from airflow_provider_dicom.model.uris import BigQueryTableUri
from airflow_provider_dicom.utils.deadlines import (
    bigquery_call,
    endpoint_of,
    remote,
    request_timeout,
    upload_retries,
    wait_for_job,
)

if TYPE_CHECKING:
    from airflow_provider_dicom.dicom.outcomes import InstanceOutcome
    from airflow_provider_dicom.dicom.schema import Field
    from airflow_provider_dicom.filters.files import FilterSet
    from airflow_provider_dicom.sources.parallel import LineOutcome

log = logging.getLogger(__name__)

MAX_COLUMNS = 10_000  # BigQuery's limit, nested columns included
JOB_ID_PREFIX = "dicom_export_"


@dataclass
class ExportResult(SourceCounts):
    """What an export did, in the terms of the Healthcare API's counters plus what only we can see."""

    table_uri: str
    write_disposition: str
    instances_exported: int = 0
    column_count: int = 0
    table_written: bool = False
    job_id: str | None = None
    # True when an earlier try's load job had already loaded this export: nothing was read or
    # loaded again; instances_exported is that job's row count, the other counts are in its log.
    reattached: bool = False
    # For lineage (OpenLineage's schema and output-statistics facets), not the XCom summary: the
    # schema the load job wrote the table with (the table's whole schema after the export, columns
    # it already had included) and the bytes the job wrote, when BigQuery reports them.
    fields: tuple[Field, ...] = ()
    output_bytes: int | None = None

    @property
    def done_count(self) -> int:
        return self.instances_exported

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary for XCom; lists are capped so a broken folder cannot flood it."""
        return {
            "table_uri": self.table_uri,
            "write_disposition": self.write_disposition,
            "instances_exported": self.instances_exported,
            **self.counts_dict(),
            "column_count": self.column_count,
            "table_written": self.table_written,
            "job_id": self.job_id,
            "reattached": self.reattached,
        }


@dataclass(frozen=True)
class DestinationPlan:
    """How the load job must write, decided from the table's state before any file is read."""

    job_disposition: WriteDisposition
    existing_fields: tuple[Field, ...] | None  # set when new columns are merged into an existing table


def export_to_bigquery(
    source: str | os.PathLike,
    table_uri: str | BigQueryTableUri,
    *,
    write_disposition: str | WriteDisposition | None = None,
    force: bool | None = None,
    filter_config: str | os.PathLike | FilterSet | None = None,
    schema: str | SchemaVariant = "flattened",
    client: Any = None,
    project: str | None = None,
    progress: Callable[[ExportResult], None] | None = None,
    storage_client: Any = None,
    dicomweb_client: Any = None,
    workers: int | None = None,
    processes: int | str | None = None,
    load_job_id: str | None = None,
    on_load_job: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export the DICOM instances of `source` to `table_uri` (`bq://P.D.T`).

    `source` is a local folder (read recursively), a `gs://bucket/prefix` (objects under it, read
    header-only with `storage_client`, default: one for the table's project that honours
    STORAGE_EMULATOR_HOST) or a DICOMweb base URL (read with `dicomweb_client`, a
    `DicomWebClient` carrying the credentials; default: an anonymous one). `workers` bounds the
    concurrent requests to a remote source (default 16). `processes` (an int, or "auto" for one per
    core) converts a folder's files on that many worker processes; the default is this process.

    `write_disposition` / `force` follow the Healthcare API (never both). `filter_config` is a
    filter file (local path or `gs://` object, read with `storage_client`) or a FilterSet.
    `client` is a google.cloud.bigquery.Client; without one a client for `project` (default: the
    table's project) is built, anonymous when BIGQUERY_EMULATOR_HOST points at a stand-in.
    `progress` is called with the running result after each file. `load_job_id` names this export
    (the same on every retry of it): its load jobs are `{load_job_id}_N`, and a load one of them
    already committed is reported instead of reading and loading again (see `export.load_job`);
    without it the job id is random. `on_load_job` is told a load job's id as soon as it exists
    (to cancel it when the caller is killed). Raises DestinationError when
    the table's state forbids the export, ExportError when the load fails; bad files do not raise,
    they are counted in the result.
    """
    table = table_uri if isinstance(table_uri, BigQueryTableUri) else BigQueryTableUri.parse(table_uri)
    options = WriteOptions.resolve(write_disposition, force)
    variant = SchemaVariant.parse(schema)
    from airflow_provider_dicom.sources.parallel import resolve_processes

    processes = resolve_processes(processes)
    parsed = checked_source(source)
    if parsed.kind is SourceKind.GCS_PREFIX and storage_client is None:
        from airflow_provider_dicom.sources.gcs import default_storage_client

        storage_client = default_storage_client(project or table.project)
    accept = load_filter_config(filter_config, storage_client)
    if client is None:
        client = make_bigquery_client(project or table.project)

    chain = earlier = None
    if load_job_id is not None:
        from airflow_provider_dicom.export.load_job import LoadJobChain, find_earlier_load

        chain = LoadJobChain(load_job_id)
        # Before the destination rules: a table this export's own earlier job wrote is no reason
        # to refuse it (WRITE_EMPTY), and is not to be written again (WRITE_APPEND).
        earlier = find_earlier_load(client, chain, table, on_load_job)
        if earlier.succeeded:
            return reattached_result(table, options, earlier.job)
    plan = plan_destination(client, table, options)
    result = ExportResult(str(table), options.disposition.value)
    log.info(
        "Exporting DICOM from %s to %s (%s%s)", parsed.display, table, options.disposition.value,
        f", filter with {len(accept)} paths" if accept is not None else "",
    )

    from airflow_provider_dicom.dicom.schema import TableSchema

    table_schema = TableSchema()
    if parsed.kind is SourceKind.FOLDER and progress is not None:
        from airflow_provider_dicom.sources.folder import iter_folder

        result.files_total = sum(1 for _ in iter_folder(parsed.value))
    with rows_tempfile() as rows_file:
        from airflow_provider_dicom.dicom.convert import InstanceConverter

        converter = InstanceConverter(schema=variant)
        outcomes = source_outcomes(
            parsed, converter, accept, storage_client=storage_client, dicomweb_client=dicomweb_client,
            workers=workers, processes=processes,
        )
        write_rows(outcomes, rows_file, table_schema, result, progress)
        log.info(
            "Read %d files: %d instances to export, %d failed, %d not DICOM, %d filtered out, "
            "%d duplicates of an instance already read",
            result.files_seen, result.instances_exported, result.failure_count,
            result.not_dicom_count, result.filtered_out_count, result.duplicate_count,
        )
        if result.instances_exported == 0:
            # A table made from nothing would have a schema of nothing; leaving the destination
            # untouched keeps the next real export free to create or extend it.
            log.warning("No instance to export: %s was not created or changed", table)
            return result
        final_fields, add_columns = final_schema(table, plan, table_schema.fields)
        result.column_count = check_column_count(table, final_fields)
        result.fields = final_fields
        if chain is None:
            job = _load(client, table, rows_file, final_fields, plan.job_disposition, add_columns)
            result.job_id, result.output_bytes = job.job_id, job_output_bytes(job)
        else:
            from airflow_provider_dicom.export.load_job import run_load

            assert earlier is not None  # looked up above whenever there is a chain
            config = load_job_config(final_fields, plan.job_disposition, add_columns)

            def submit(job_id: str) -> Any:
                with remote(f"loading rows into {table}", endpoint_of(client)):
                    return client.load_table_from_file(
                        rows_file, table.table_id, job_config=config, job_id=job_id, rewind=True,
                        timeout=request_timeout(), num_retries=upload_retries(),
                    )

            result.job_id, result.reattached = run_load(
                client, table, chain, submit, start_at=earlier.next_attempt, on_job=on_load_job,
                on_done=lambda job: setattr(result, "output_bytes", job_output_bytes(job)),
            )
    result.table_written = True
    log.info("Exported %d instances to %s (%d columns, job %s)", result.instances_exported, table,
             result.column_count, result.job_id)
    return result


def reattached_result(table: BigQueryTableUri, options: WriteOptions, job: Any) -> ExportResult:
    """The result of an export an earlier try's load job `job` already committed."""
    result = ExportResult(str(table), options.disposition.value, table_written=True, job_id=job.job_id,
                          reattached=True)
    result.instances_exported = int(getattr(job, "output_rows", None) or 0)
    result.output_bytes = job_output_bytes(job)
    schema = getattr(job, "schema", None)
    if schema:
        from airflow_provider_dicom.dicom.schema import from_bigquery_fields

        result.fields = from_bigquery_fields(schema)
    return result


def job_output_bytes(job: Any) -> int | None:
    """The bytes a finished load job wrote (its statistics' outputBytes), None when not reported."""
    value = getattr(job, "output_bytes", None)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def rows_tempfile() -> IO[bytes]:
    """An anonymous file for rows: O_TMPFILE where the kernel offers it, else created and unlinked
    at once (what `tempfile.TemporaryFile` does on POSIX). No name in $TMPDIR ever points at the
    rows, so however the process ends (kill -9 included) the kernel frees them and nothing with
    patient data is left behind."""
    return tempfile.TemporaryFile(mode="w+b", prefix="dicom-export-")


def make_bigquery_client(project: str):
    """A BigQuery client for `project`; anonymous against a stand-in named by BIGQUERY_EMULATOR_HOST."""
    from google.cloud import bigquery

    if os.environ.get("BIGQUERY_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return bigquery.Client(project=project, credentials=AnonymousCredentials())
    return bigquery.Client(project=project)


def checked_source(source: str | os.PathLike) -> DicomSource:
    """The classified source, refused before any remote call when it cannot be exported."""
    parsed = DicomSource.parse(source)
    parsed.require_supported()
    if parsed.kind is SourceKind.FOLDER and not Path(parsed.value).is_dir():
        raise NotADirectoryError(f"DICOM source folder {parsed.value!r} does not exist or is not a directory")
    return parsed


def source_outcomes(
    parsed: DicomSource,
    converter: Any,
    accept: FilterSet | None,
    *,
    storage_client: Any = None,
    dicomweb_client: Any = None,
    workers: int | None = None,
    processes: int = 1,
) -> Iterator[InstanceOutcome | LineOutcome]:
    """One outcome per instance of the source, whatever kind it is, in the source's stable order."""
    if parsed.kind is SourceKind.FOLDER:
        from airflow_provider_dicom.sources.folder import convert_folder, iter_folder

        if processes > 1:
            from airflow_provider_dicom.sources.parallel import convert_files

            yield from convert_files(
                iter_folder(Path(parsed.value)), schema=converter.schema.value, accept=accept, processes=processes
            )
            return
        yield from convert_folder(Path(parsed.value), converter, accept=accept)
        return
    from airflow_provider_dicom.sources.remote import DEFAULT_WORKERS

    workers = workers or DEFAULT_WORKERS
    if parsed.kind is SourceKind.GCS_PREFIX:
        from airflow_provider_dicom.sources.gcs import GcsDicomSource

        gcs = GcsDicomSource(parsed.value, storage_client, workers=workers)
        yield from gcs.outcomes(converter, accept)
        stats = gcs.stats
        log.info(
            "Read %d objects under %s header-only: %d bytes in %d requests (%.2f%% of their %d bytes)",
            stats.objects, gcs.uri, stats.bytes_fetched, stats.requests,
            100.0 * stats.bytes_fetched / stats.object_bytes if stats.object_bytes else 0.0, stats.object_bytes,
        )
        return
    if parsed.kind is SourceKind.DICOMWEB:
        from airflow_provider_dicom.sources.dicomweb import DicomWebClient, DicomWebSource

        web_client = dicomweb_client or DicomWebClient(parsed.value, pool_size=workers)
        web = DicomWebSource(web_client, workers=workers, filter_set=accept)
        yield from web.outcomes(converter, accept)
        log.info("Made %d DICOMweb requests to %s", web_client.requests_made, web_client.base_url)
        if web.bulk_data_elements:
            log.info(
                "%d elements came as BulkDataURI references and are listed in DroppedTags "
                "(bulk data is never downloaded)", web.bulk_data_elements,
            )
        return
    raise UnsupportedSourceError(f"exporting from a {parsed.kind.description} is not supported here")


def load_filter_config(filter_config: Any, storage_client: Any) -> FilterSet | None:
    if filter_config is None:
        return None
    from airflow_provider_dicom.filters.files import FilterSet, load_filter

    if isinstance(filter_config, FilterSet):
        return filter_config
    return load_filter(filter_config, storage_client=storage_client)


def plan_destination(client: Any, table: BigQueryTableUri, options: WriteOptions) -> DestinationPlan:
    """Apply the Healthcare API's destination rules to the table as it is now."""
    from google.api_core.exceptions import NotFound

    from airflow_provider_dicom.dicom.schema import from_bigquery_fields

    endpoint = endpoint_of(client)
    doing = f"getting dataset {table.dataset_id}"
    try:
        with remote(doing, endpoint):
            client.get_dataset(table.dataset_id, **bigquery_call(client, doing))
    except NotFound:
        raise DestinationError(
            f"BigQuery dataset {table.dataset_id} does not exist: create it before exporting to {table} "
            "(the Cloud Healthcare API requires an existing dataset too)"
        ) from None
    doing = f"getting table {table}"
    try:
        with remote(doing, endpoint):
            existing = client.get_table(table.table_id, **bigquery_call(client, doing))
    except NotFound:
        # Missing tables are created whatever the disposition; WRITE_EMPTY in the job keeps a
        # table someone else creates meanwhile from being overwritten.
        job = WriteDisposition.WRITE_TRUNCATE if options.disposition is WriteDisposition.WRITE_TRUNCATE else (
            WriteDisposition.WRITE_APPEND if options.disposition is WriteDisposition.WRITE_APPEND
            else WriteDisposition.WRITE_EMPTY
        )
        return DestinationPlan(job, None)

    if existing.table_type not in (None, "TABLE"):
        raise DestinationError(f"{table} is a {existing.table_type}, not a table: export to a table")
    if options.fails_on_existing_table:
        raise DestinationError(
            f"table {table} already exists: set force=True (--overwrite-table) or write_disposition "
            "WRITE_TRUNCATE to replace it, or WRITE_APPEND to add to it"
        )
    disposition = options.disposition
    if disposition is WriteDisposition.WRITE_TRUNCATE:
        return DestinationPlan(WriteDisposition.WRITE_TRUNCATE, None)
    if disposition is WriteDisposition.WRITE_EMPTY:
        rows = existing.num_rows or 0
        if not rows and existing.streaming_buffer is not None:
            # Rows still in the streaming buffer are not in num_rows, but the table is not empty.
            rows = existing.streaming_buffer.estimated_rows or 1
        if rows:
            raise DestinationError(
                f"table {table} is not empty ({rows} rows) and write_disposition is WRITE_EMPTY: use "
                "WRITE_TRUNCATE to replace it or WRITE_APPEND to add to it"
            )
    # WRITE_APPEND, or WRITE_EMPTY into an existing empty table: keep the table and its columns,
    # add what the new instances need. A load job can only widen a schema when appending.
    return DestinationPlan(WriteDisposition.WRITE_APPEND, from_bigquery_fields(existing.schema))


def write_rows(
    outcomes: Iterable[InstanceOutcome | LineOutcome],
    rows: IO[bytes],
    table_schema: Any,
    result: Any,
    progress: Callable[[Any], None] | None,
    on_row: Callable[[LineOutcome], None] | None = None,
) -> None:
    """Write each new instance's NDJSON line, grow the schema, count the rest into `result`.

    `rows` is an open binary file (written from its current position, left open). `result` is any SourceCounts with an `instances_exported` counter. `on_row` sees every
    written row, in file order (a sharded export records each row's UID and schema with it)."""
    from airflow_provider_dicom.sources.parallel import LineOutcome, to_line

    # Exact, not hashed: a hash collision would drop a real instance. About 120 bytes per
    # instance, so ~120 MB for a million.
    exported_uids: set[str | None] = set()
    out = io.TextIOWrapper(rows, encoding="utf-8", newline="\n")
    try:
        for outcome in outcomes:
            if not isinstance(outcome, LineOutcome):
                outcome = to_line(outcome)
            status = outcome.status
            if status == "ok":
                if outcome.sop_uid in exported_uids:
                    result.add_duplicate(outcome.path, outcome.sop_uid)
                    continue
                exported_uids.add(outcome.sop_uid)
                assert outcome.line is not None  # an "ok" outcome always carries its row
                out.write(outcome.line)
                out.write("\n")
                table_schema.add(outcome.fields)
                result.instances_exported += 1
                if on_row is not None:
                    on_row(outcome)
            else:
                result.count_not_done(status, outcome.path, outcome.reason)
            if progress is not None:
                progress(result)
    finally:
        out.flush()
        out.detach()  # the caller's file stays open


def final_schema(
    table: BigQueryTableUri, plan: DestinationPlan, new_fields: tuple[Field, ...]
) -> tuple[tuple[Field, ...], bool]:
    """The schema the load job declares, and whether it adds columns to an existing table."""
    if plan.existing_fields is None:
        return new_fields, False
    from airflow_provider_dicom.dicom.schema import SchemaConflictError, merge_fields

    try:
        merged = merge_fields(plan.existing_fields, new_fields, keep_order=True)
    except SchemaConflictError as exc:
        raise DestinationError(f"cannot add these instances to {table}: {exc}") from None
    added = merged != tuple(plan.existing_fields)
    if added:
        log.info("Adding columns to %s: %s", table, ", ".join(_added_names(plan.existing_fields, merged)))
    return merged, added


def check_column_count(table: BigQueryTableUri, fields: tuple[Field, ...]) -> int:
    """The table's column count (nested ones included), refused above BigQuery's limit before a
    load job is sent."""
    columns = sum(f.column_count() for f in fields)
    if columns > MAX_COLUMNS:
        raise ExportError(
            f"the export to {table} needs {columns} columns (nested ones included); "
            f"BigQuery allows at most {MAX_COLUMNS}"
        )
    return columns


def _added_names(existing: tuple[Field, ...], merged: tuple[Field, ...], prefix: str = "") -> list[str]:
    before = {f.name: f for f in existing}
    names: list[str] = []
    for f in merged:
        old = before.get(f.name)
        if old is None:
            names.append(prefix + f.name)
        elif old != f:
            names.extend(_added_names(old.fields, f.fields, f"{prefix}{f.name}."))
    return names


def load_job_config(fields: tuple[Field, ...], disposition: WriteDisposition, add_columns: bool) -> Any:
    """The one load job every export runs: NDJSON, explicit schema, no bad record tolerated."""
    from google.cloud import bigquery

    from airflow_provider_dicom.dicom.schema import to_bigquery_fields

    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
        schema=to_bigquery_fields(fields),
        write_disposition=disposition.value,
        create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        ignore_unknown_values=False,
        max_bad_records=0,
    )
    if add_columns:
        config.schema_update_options = [bigquery.SchemaUpdateOption.ALLOW_FIELD_ADDITION]
    return config


def _load(
    client: Any,
    table: BigQueryTableUri,
    rows: IO[bytes],
    fields: tuple[Field, ...],
    disposition: WriteDisposition,
    add_columns: bool,
) -> Any:
    """One load job with a random id (`JOB_ID_PREFIX` + uuid), from an open rows file; returns the
    finished job."""
    from google.api_core.exceptions import GoogleAPICallError

    config = load_job_config(fields, disposition, add_columns)
    job = None
    try:
        doing = f"loading rows into {table}"
        upload = {"timeout": request_timeout(), "num_retries": upload_retries()}
        with remote(doing, endpoint_of(client)):
            job = client.load_table_from_file(
                rows, table.table_id, job_config=config, job_id_prefix=JOB_ID_PREFIX, rewind=True, **upload
            )
        wait_for_job(job, doing)
    except GoogleAPICallError as exc:
        raise load_error(exc, job, table) from None
    return job
