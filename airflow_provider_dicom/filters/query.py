"""Filter files from a BigQuery query: through the worker, or server-side as Google's guide does.

Two routes, chosen by the size of the ordered result (the query job's `total_rows`):
- **worker** (up to `threshold` rows): rows are paged through the worker into `FilterWriter`, which
  validates every UID, reports rejects by value, removes duplicates and covered lines, and streams
  the file out. Memory is bounded by studies + series (see `filter_build`).
- **server-side** (above it): BigQuery itself keeps the valid, distinct paths in a staging table
  (`staging_dataset`), counts what it kept and rejected, and an extract job writes the table to the
  gs:// destination as header-less CSV, which for these values (digits, dots, slashes: nothing CSV
  quotes) is exactly a `\\n`-separated filter file. Nothing passes through the worker; rejects are
  counted but not quoted. An extract to a single object is limited to 1 GB (about 7 million
  instance lines); beyond it BigQuery demands a wildcard URI, which a filter file cannot be.
  The route needs a gs:// destination and a staging dataset; without them the worker route is
  used whatever the size (it is only slower).

The user's SQL is nested, never formatted with values: values travel as query parameters.

Tested gap: the local BigQuery stand-in (local-bigquery 0.4.0) accepts extract jobs and reports
them done but writes no object, so the server-side route is unit-tested against a mocked client
(the jobs, their configuration and order) and only the worker route runs end to end locally.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from airflow_provider_dicom.filters.build import (
    UID_COLUMNS,
    BuildResult,
    EmptyFilterError,
    build_from_rows,
    check_on_empty,
    empty_message,
    server_side_sql,
    wrap_query,
)
from airflow_provider_dicom.utils.deadlines import bigquery_call, endpoint_of, remote, wait_for_job

DEFAULT_THRESHOLD = 1_000_000
PAGE_SIZE = 50_000


def staging_table_id(staging_dataset: str, destination: str, suffix: str) -> str:
    """A table name derived from the destination, so a retried or re-run task reuses (truncates)
    its own staging tables instead of leaving one per try."""
    digest = hashlib.sha256(destination.encode()).hexdigest()[:16]
    return f"{staging_dataset}.dicom_filter_{digest}_{suffix}"


def build_from_query(
    client: Any,
    sql: str,
    destination: str,
    *,
    level: str | None,
    parameters: Sequence[Any] = (),
    on_empty: str = "fail",
    path_column: str | None = None,
    uid_columns: Sequence[str] = UID_COLUMNS,
    storage_client: Any = None,
    threshold: int = DEFAULT_THRESHOLD,
    staging_dataset: str | None = None,
    location: str | None = None,
    log: Any = None,
    jobs: list[Any] | None = None,
) -> BuildResult:
    """Run `sql` and write its selection to `destination`; see the module docstring for the routes.
    Every BigQuery job started is appended to `jobs` as it starts, so a killed task can cancel it."""
    jobs = jobs if jobs is not None else []
    from google.cloud import bigquery

    policy = check_on_empty(on_empty)
    if level is None and path_column is None:
        level = "instance"
    ordered = wrap_query(sql, level or "instance", uid_columns=uid_columns, path_column=path_column)
    server_side_possible = destination.startswith("gs://") and staging_dataset and path_column is None
    config = bigquery.QueryJobConfig(query_parameters=list(parameters), use_legacy_sql=False)
    if server_side_possible:
        config.destination = staging_table_id(staging_dataset, destination, "rows")  # type: ignore[arg-type]
        config.write_disposition = bigquery.WriteDisposition.WRITE_TRUNCATE
    endpoint = endpoint_of(client)
    doing = "running the filter query"
    with remote(doing, endpoint):
        job = client.query(ordered, job_config=config, location=location, **bigquery_call(client, doing))
    jobs.append(job)
    rows = wait_for_job(job, doing, page_size=PAGE_SIZE)
    inputs = [_table_id(table) for table in (getattr(job, "referenced_tables", None) or [])]
    total = rows.total_rows or 0
    if log:
        log.info("Filter query job %s returned %d rows", getattr(job, "job_id", "?"), total)
    if total > threshold and server_side_possible:
        if log:
            log.info("%d rows > threshold %d: building %s server-side (query + extract job)", total, threshold, destination)
        result = _server_side(
            client, config.destination, destination, level=level or "instance", policy=policy, location=location,
            log=log, jobs=jobs,
        )
        result.input_tables = inputs
        return result
    if total > threshold and log:
        log.info(
            "%d rows > threshold %d but the server-side route needs a gs:// destination, a staging_dataset "
            "and UID columns; streaming through the worker",
            total,
            threshold,
        )
    with remote("reading the filter query's rows", endpoint):  # pages are fetched as they are written
        result = build_from_rows(
            rows, destination, level=level, on_empty=policy, path_column=path_column, storage_client=storage_client
        )
    result.input_tables = inputs
    return result


def _table_id(table: Any) -> str:
    if isinstance(table, str):
        return table
    return f"{table.project}.{table.dataset_id}.{table.table_id}"


def _server_side(
    client: Any,
    rows_table: Any,
    destination: str,
    *,
    level: str,
    policy: str,
    location: str | None,
    log: Any,
    jobs: list[Any],
) -> BuildResult:
    from google.cloud import bigquery

    rows_id = _table_id(rows_table)
    dataset = rows_id.rsplit(".", 1)[0]
    paths_sql, counts_sql = server_side_sql(rows_id, level)
    endpoint = endpoint_of(client)
    doing = f"counting the filter paths in {rows_id}"
    with remote(doing, endpoint):
        counts_job = client.query(counts_sql, location=location, **bigquery_call(client, doing))
    jobs.append(counts_job)
    counts_rows = wait_for_job(counts_job, doing)
    with remote(doing, endpoint):
        counts = next(iter(counts_rows))
    result = BuildResult(uri=destination, level=level, route="server")
    result.rejected = int(counts["rejected"] or 0)
    result.studies = int(counts["studies"] or 0)
    result.series = int(counts["series"] or 0) if level != "study" else 0
    accepted = int(counts["accepted"] or 0)
    if result.rejected:
        result.rejected_examples.append(
            f"{result.rejected} rows with an invalid or missing UID (counted by BigQuery, not quoted)"
        )
    paths_table = staging_table_id(dataset, destination, "paths")
    config = bigquery.QueryJobConfig(
        destination=paths_table, write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE, use_legacy_sql=False
    )
    doing = f"writing the filter paths to {paths_table}"
    with remote(doing, endpoint):
        paths_job = client.query(paths_sql, job_config=config, location=location, **bigquery_call(client, doing))
    jobs.append(paths_job)
    written = wait_for_job(paths_job, doing)
    result.lines = int(written.total_rows or 0) if written.total_rows is not None else accepted
    if level == "instance":
        result.instances = result.lines
    elif level == "series":
        result.series = result.lines
    else:
        result.studies = result.lines
    if result.lines == 0:
        if policy == "fail":
            raise EmptyFilterError(empty_message(result))
        if policy == "skip":
            return result
    doing = f"extracting {paths_table} to {destination}"
    with remote(doing, endpoint):
        extract = client.extract_table(
            paths_table,
            destination,
            job_config=bigquery.ExtractJobConfig(destination_format="CSV", print_header=False),
            location=location,
            **bigquery_call(client, doing),
        )
    jobs.append(extract)
    wait_for_job(extract, doing)
    if log:
        log.info("Extract job %s wrote %d lines to %s", getattr(extract, "job_id", "?"), result.lines, destination)
    result.written = True
    return result
