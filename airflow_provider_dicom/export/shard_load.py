"""The load step of a sharded export: every shard's rows into the table in one atomic load job.

One job is what keeps the destination rules honest when the reading was split across workers: a
load job commits all its rows or none, so WRITE_TRUNCATE replaces the table with the whole export
or not at all, WRITE_EMPTY is judged once for the whole export, and a shard that failed (its
`result.json` is missing) stops the load before the table is touched.

Before loading, instances that an earlier shard already exported (same SOPInstanceUID) are
dropped, the first in listing order winning as in an unsharded export, and the schema is the
union of the kept rows' schemas only. The rows reach BigQuery in one of two ways:

- `uris`: BigQuery reads the shards' NDJSON straight from the `gs://` staging area (one source URI
  per shard; nothing flows through the Airflow worker). The default for `gs://` staging.
- `stream`: the worker concatenates the shards' rows into one upload. Needed for local staging,
  and used against BigQuery emulators, which cannot read from Cloud Storage.

The load job's id is derived from the plan, so a retried load task finds the job its earlier try
started: if that job succeeded the rows are not loaded twice; if it failed, a new job is started.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_dicom.deadlines import (
    bigquery_call,
    endpoint_of,
    remote,
    request_timeout,
    upload_retries,
    wait_for_job,
)
from airflow_provider_dicom.export.bigquery import (
    JOB_ID_PREFIX,
    ExportError,
    ExportResult,
    check_column_count,
    final_schema,
    load_error,
    load_job_config,
    plan_destination,
)
from airflow_provider_dicom.export.counts import XCOM_MAX_LISTED
from airflow_provider_dicom.export.options import WriteDisposition, WriteOptions
from airflow_provider_dicom.export.shard_export import INDEX_FILE, RESULT_FILE, ROWS_FILE, SCHEMAS_FILE, ShardResult
from airflow_provider_dicom.export.shard_plan import ShardPlan, read_plan
from airflow_provider_dicom.export.staging import Staging, join
from airflow_provider_dicom.uris import BigQueryTableUri

if TYPE_CHECKING:
    from airflow_provider_dicom.dicom.schema import Field

log = logging.getLogger(__name__)

LOAD_ROUTES = ("auto", "uris", "stream")
KEPT_ROWS_FILE = "rows.kept.ndjson"
LOADED_FILE = "loaded.json"  # written once the load job succeeded
# A load retried this many times with every job failing is not going to succeed by retrying more.
MAX_LOAD_JOBS = 20


class IncompleteShardsError(ExportError):
    """Some shards have not staged their result: the destination was not touched."""


@dataclass
class ShardedExportResult(ExportResult):
    shard_count: int = 0
    load_route: str | None = None
    # True when a retried load found that its earlier try's job had already loaded the rows.
    reattached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "shard_count": self.shard_count, "load_route": self.load_route,
                "reattached": self.reattached}

    def to_json(self) -> bytes:
        """The complete record (every failure), for loaded.json."""
        data = self.to_dict()
        data["failures"] = [list(item) for item in self.failures]
        return json.dumps(data).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ShardedExportResult:
        raw = json.loads(data)
        result = cls(raw["table_uri"], raw["write_disposition"])
        for name in ("instances_exported", "column_count", "table_written", "job_id", "shard_count", "load_route",
                     "not_dicom_count", "filtered_out_count", "duplicate_count", "duplicates"):
            setattr(result, name, raw[name])
        result.failures = [tuple(item) for item in raw["failures"]]
        return result


def check_load_route(value: object) -> str:
    if value not in LOAD_ROUTES:
        raise ValueError(f"invalid load_from {value!r}: expected one of {', '.join(LOAD_ROUTES)}")
    return value  # type: ignore[return-value]


def resolve_route(load_from: str, staging: Staging) -> str:
    """`auto`: BigQuery reads gs:// staging itself, except against an emulator, which cannot."""
    check_load_route(load_from)
    if load_from == "uris" and not staging.is_gcs():
        raise ValueError(
            f"load_from='uris' needs gs:// staging; {staging.uri} is a local folder BigQuery cannot read"
        )
    if load_from != "auto":
        return load_from
    if staging.is_gcs() and not os.environ.get("BIGQUERY_EMULATOR_HOST"):
        return "uris"
    return "stream"


def load_sharded_export(
    staging: Staging,
    plan_root: str,
    table_uri: str | BigQueryTableUri,
    *,
    client: Any,
    write_disposition: str | WriteDisposition | None = None,
    force: bool | None = None,
    load_from: str = "auto",
    keep_staging: bool = False,
    on_job: Callable[[str], None] | None = None,
) -> ShardedExportResult:
    """Load every shard of the plan at `plan_root` into `table_uri` with one load job.

    Raises IncompleteShardsError (naming the shards) when any shard has not finished,
    DestinationError when the table's state forbids the export, ExportError when the job fails;
    in each case the table is as it was. `on_job` is told the load job's id as soon as it exists.
    """
    table = table_uri if isinstance(table_uri, BigQueryTableUri) else BigQueryTableUri.parse(table_uri)
    options = WriteOptions.resolve(write_disposition, force)
    route = resolve_route(load_from, staging)
    done = staging.read_bytes(join(plan_root, LOADED_FILE))
    if done is not None:
        # A retry of a load that succeeded (the task died after the job, say): the shards' files
        # may be gone, but the outcome is recorded. Never load twice.
        result = ShardedExportResult.from_json(done)
        result.reattached = True
        log.info("Plan %s was already loaded into %s by job %s: not loading again", plan_root, result.table_uri,
                 result.job_id)
        return result
    plan = read_plan(staging, plan_root)
    shards = _finished_shards(staging, plan, table)
    destination = plan_destination(client, table, options)
    result = ShardedExportResult(str(table), options.disposition.value, shard_count=plan.shard_count)
    _add_counts(result, shards)

    with tempfile.TemporaryDirectory(prefix="dicom-shard-load-") as workdir:
        work = Path(workdir)
        dropped, fields = _deduplicate(staging, plan, shards, result, work)
        log.info(
            "%d shards read %d files: %d instances to load, %d failed, %d not DICOM, %d filtered out, "
            "%d duplicates of an instance already read",
            plan.shard_count, result.files_seen, result.instances_exported, result.failure_count,
            result.not_dicom_count, result.filtered_out_count, result.duplicate_count,
        )
        if result.instances_exported == 0:
            log.warning("No instance to export: %s was not created or changed", table)
        else:
            final_fields, add_columns = final_schema(table, destination, fields)
            result.column_count = check_column_count(table, final_fields)
            config = load_job_config(final_fields, destination.job_disposition, add_columns)
            result.load_route = route
            if route == "uris":
                submit = _uri_submitter(client, table, config, staging, plan, shards, dropped, work)
            else:
                submit = _stream_submitter(client, table, config, staging, plan, shards, dropped, work)
            job_id, result.reattached = _run_load(client, table, plan, submit, on_job)
            result.job_id = job_id
            result.table_written = True
            log.info(
                "Loaded %d instances from %d shards into %s (%d columns, job %s%s)", result.instances_exported,
                plan.shard_count, table, result.column_count, job_id,
                ", which an earlier try had already run" if result.reattached else "",
            )
    staging.write_bytes(join(plan.root, LOADED_FILE), result.to_json())
    if not keep_staging:
        # The listings and rows go; plan.json and loaded.json (a few hundred bytes) stay, so a
        # retry of this task knows the load happened.
        removed = sum(staging.delete_tree(join(plan.root, part)) for part in ("listing", "shards"))
        log.info("Removed %d staged files under %s", removed, staging.uri_of(plan.root))
    return result


def _finished_shards(staging: Staging, plan: ShardPlan, table: BigQueryTableUri) -> list[ShardResult]:
    shards: list[ShardResult] = []
    missing: list[int] = []
    stale: list[int] = []
    for index in range(plan.shard_count):
        data = staging.read_bytes(join(plan.shard_dir(index), RESULT_FILE))
        if data is None:
            missing.append(index)
            continue
        shard = ShardResult.from_json(data)
        if shard.plan_id != plan.plan_id or shard.index != index:
            stale.append(index)
            continue
        shards.append(shard)
    if missing or stale:
        problems = []
        if missing:
            problems.append(f"shards {_ranges(missing)} have not finished (no {RESULT_FILE})")
        if stale:
            problems.append(f"shards {_ranges(stale)} belong to another plan")
        raise IncompleteShardsError(
            f"cannot load plan {plan.plan_id} ({plan.shard_count} shards) into {table}: "
            f"{'; '.join(problems)}. The table was not touched; rerun the failed shards, then the load."
        )
    return shards


def _add_counts(result: ShardedExportResult, shards: list[ShardResult]) -> None:
    for shard in shards:
        result.failures.extend(shard.failures)
        result.not_dicom_count += shard.not_dicom_count
        result.filtered_out_count += shard.filtered_out_count
        result.duplicate_count += shard.duplicate_count
        room = XCOM_MAX_LISTED - len(result.duplicates)
        result.duplicates.extend(shard.duplicates[: max(room, 0)])


def _deduplicate(
    staging: Staging, plan: ShardPlan, shards: list[ShardResult], result: ShardedExportResult, work: Path
) -> tuple[dict[int, set[int]], tuple[Field, ...]]:
    """Drop rows whose SOPInstanceUID an earlier shard exported; the union schema of the rest.

    Returns the dropped row numbers per shard and the schema fields. Holds one set of all UIDs
    (about 120 bytes an instance), as an unsharded export does."""
    from airflow_provider_dicom.dicom.schema import Field, TableSchema

    table_schema = TableSchema()
    seen: set[str] = set()
    dropped: dict[int, set[int]] = {}
    for shard in shards:
        directory = plan.shard_dir(shard.index)
        raw = staging.read_bytes(join(directory, SCHEMAS_FILE))
        if raw is None:
            raise IncompleteShardsError(f"shard {shard.index} has a result but no {SCHEMAS_FILE}")
        schemas = [tuple(Field.from_api_repr(item) for item in fields) for fields in json.loads(raw)]
        used: set[int] = set()
        local = work / f"index-{shard.index:05d}.jsonl"
        with open(local, "w+b") as out:
            if not staging.download(join(directory, INDEX_FILE), out):
                raise IncompleteShardsError(f"shard {shard.index} has a result but no {INDEX_FILE}")
        with open(local, encoding="utf-8") as lines:
            for row, line in enumerate(lines):
                uid, number, path = json.loads(line)
                if uid in seen:
                    dropped.setdefault(shard.index, set()).add(row)
                    result.add_duplicate(path, uid)
                    continue
                seen.add(uid)
                used.add(number)
                result.instances_exported += 1
        local.unlink()
        for number in sorted(used):
            table_schema.add(schemas[number])
    return dropped, table_schema.fields


def _kept_rows(staging: Staging, plan: ShardPlan, index: int, drop: set[int], out: Any, work: Path) -> None:
    """Append shard `index`'s rows, except the dropped ones, to the binary file `out`."""
    name = join(plan.shard_dir(index), ROWS_FILE)
    if not drop:
        if not staging.download(name, out):
            raise IncompleteShardsError(f"shard {index} has a result but no {ROWS_FILE}")
        return
    local = work / f"rows-{index:05d}.ndjson"
    with open(local, "w+b") as copy:
        if not staging.download(name, copy):
            raise IncompleteShardsError(f"shard {index} has a result but no {ROWS_FILE}")
        copy.seek(0)
        for row, line in enumerate(copy):
            if row not in drop:
                out.write(line)
    local.unlink()


def _stream_submitter(
    client: Any, table: BigQueryTableUri, config: Any, staging: Staging, plan: ShardPlan,
    shards: list[ShardResult], dropped: dict[int, set[int]], work: Path,
) -> Callable[[str], Any]:
    combined = work / "rows.ndjson"
    with open(combined, "wb") as out:
        for shard in shards:
            if shard.instances_exported:
                _kept_rows(staging, plan, shard.index, dropped.get(shard.index, set()), out, work)

    def submit(job_id: str) -> Any:
        with open(combined, "rb") as data:
            return client.load_table_from_file(
                data, table.table_id, job_config=config, job_id=job_id, rewind=True,
                timeout=request_timeout(), num_retries=upload_retries(),
            )

    return submit


def _uri_submitter(
    client: Any, table: BigQueryTableUri, config: Any, staging: Staging, plan: ShardPlan,
    shards: list[ShardResult], dropped: dict[int, set[int]], work: Path,
) -> Callable[[str], Any]:
    uris: list[str] = []
    for shard in shards:
        drop = dropped.get(shard.index, set())
        if shard.instances_exported - len(drop) <= 0:
            continue
        directory = plan.shard_dir(shard.index)
        if drop:
            # BigQuery cannot skip lines of a file: stage this shard's kept rows as their own file.
            local = work / f"kept-{shard.index:05d}.ndjson"
            with open(local, "wb") as out:
                _kept_rows(staging, plan, shard.index, drop, out, work)
            staging.upload(join(directory, KEPT_ROWS_FILE), local)
            local.unlink()
            uris.append(staging.uri_of(join(directory, KEPT_ROWS_FILE)))
        else:
            uris.append(staging.uri_of(join(directory, ROWS_FILE)))

    def submit(job_id: str) -> Any:
        return client.load_table_from_uri(
            uris, table.table_id, job_config=config, job_id=job_id, **bigquery_call(client, f"loading into {table}")
        )

    return submit


def _run_load(
    client: Any,
    table: BigQueryTableUri,
    plan: ShardPlan,
    submit: Callable[[str], Any],
    on_job: Callable[[str], None] | None,
) -> tuple[str, bool]:
    """Run the load job, or find the one an earlier try of this load ran. Returns (job id, reattached)."""
    from google.api_core.exceptions import Conflict, GoogleAPICallError, NotFound

    for attempt in range(MAX_LOAD_JOBS):
        job_id = f"{JOB_ID_PREFIX}{plan.plan_id}_{attempt}"
        doing = f"loading into {table} (job {job_id})"
        try:
            with remote(doing, endpoint_of(client)):
                job = client.get_job(job_id, **bigquery_call(client, f"getting job {job_id}"))
        except NotFound:
            job = None
        reattached = job is not None
        if job is not None and job.state == "DONE" and job.error_result is not None:
            log.info("Load job %s of an earlier try failed (%s); starting another", job_id,
                     job.error_result.get("reason", "unknown reason"))
            continue
        if job is not None and job.state == "DONE":
            log.info("Load job %s of an earlier try already loaded this plan's rows: not loading again", job_id)
            return job_id, True
        try:
            if job is None:
                try:
                    with remote(doing, endpoint_of(client)):
                        job = submit(job_id)
                except Conflict:
                    with remote(doing, endpoint_of(client)):  # another try started it a moment ago
                        job = client.get_job(job_id, **bigquery_call(client, f"getting job {job_id}"))
                    reattached = True
            if on_job is not None:
                on_job(job_id)
            wait_for_job(job, doing)
        except GoogleAPICallError as exc:
            raise load_error(exc, job, table) from None
        return job_id, reattached
    raise ExportError(
        f"{MAX_LOAD_JOBS} load jobs for plan {plan.plan_id} into {table} have failed; look at the first "
        f"({JOB_ID_PREFIX}{plan.plan_id}_0) in BigQuery for the reason"
    )


def _ranges(numbers: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5" (a thousand missing shards must not make a thousand-number message)."""
    parts: list[str] = []
    start = previous = numbers[0]
    for number in numbers[1:] + [None]:  # type: ignore[list-item]
        if number is not None and number == previous + 1:
            previous = number
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if number is not None:
            start = previous = number
    return ", ".join(parts)
