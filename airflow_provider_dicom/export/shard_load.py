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

The load job's id is derived from the plan (`export.load_job`), so a retried load task finds the
job its earlier try started, before judging the destination rules: if that job succeeded the rows
are not loaded twice (and a WRITE_EMPTY table that job filled is not held against it); if it is
running it is waited on; if it failed, a new job is started.

The stream route concatenates the kept rows into an anonymous temporary file (no name in $TMPDIR,
freed by the kernel however the process ends); the staging area itself is the user's named
location and keeps the shards' rows until the load succeeded (unless `keep_staging`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_dicom.export.bigquery import (
    JOB_ID_PREFIX,
    ExportError,
    ExportResult,
    check_column_count,
    final_schema,
    job_output_bytes,
    load_job_config,
    plan_destination,
    rows_tempfile,
)
from airflow_provider_dicom.export.counts import XCOM_MAX_LISTED
from airflow_provider_dicom.export.load_job import LoadJobChain, find_earlier_load, run_load
from airflow_provider_dicom.export.shard_export import (
    INDEX_FILE,
    RESULT_FILE,
    ROWS_FILE,
    SCHEMAS_FILE,
    ShardResult,
)
from airflow_provider_dicom.export.shard_plan import ShardPlan, read_plan
from airflow_provider_dicom.export.staging import Staging, join
from airflow_provider_dicom.model.options import WriteDisposition, WriteOptions
from airflow_provider_dicom.model.uris import BigQueryTableUri
from airflow_provider_dicom.utils.deadlines import (
    bigquery_call,
    endpoint_of,
    remote,
    request_timeout,
    upload_retries,
)

if TYPE_CHECKING:
    from airflow_provider_dicom.dicom.schema import Field

log = logging.getLogger(__name__)

LOAD_ROUTES = ("auto", "uris", "stream")
KEPT_ROWS_FILE = "rows.kept.ndjson"
LOADED_FILE = "loaded.json"  # written once the load job succeeded


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
    return value


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
    result = ShardedExportResult(str(table), options.disposition.value, shard_count=plan.shard_count)
    _add_counts(result, shards)
    chain = LoadJobChain(f"{JOB_ID_PREFIX}{plan.plan_id}")
    earlier = find_earlier_load(client, chain, table, on_job)
    if earlier.succeeded:
        # The task died after its job committed and before loaded.json was written: report what
        # that try loaded (the same counts, from the shards' staged index).
        _deduplicate(staging, plan, shards, result)
        result.job_id, result.reattached, result.table_written = earlier.job.job_id, True, True
        return _record_loaded(staging, plan, result, keep_staging)
    destination = plan_destination(client, table, options)

    with ExitStack() as work:  # holds the stream route's anonymous rows file until the load is done
        dropped, fields = _deduplicate(staging, plan, shards, result)
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
            result.fields = final_fields
            config = load_job_config(final_fields, destination.job_disposition, add_columns)
            result.load_route = route
            if route == "uris":
                submit = _uri_submitter(client, table, config, staging, plan, shards, dropped)
            else:
                submit = _stream_submitter(client, table, config, staging, plan, shards, dropped, work)
            job_id, result.reattached = run_load(
                client, table, chain, submit, start_at=earlier.next_attempt, on_job=on_job,
                on_done=lambda job: setattr(result, "output_bytes", job_output_bytes(job)),
            )
            result.job_id = job_id
            result.table_written = True
            log.info(
                "Loaded %d instances from %d shards into %s (%d columns, job %s%s)", result.instances_exported,
                plan.shard_count, table, result.column_count, job_id,
                ", which an earlier try had already run" if result.reattached else "",
            )
    return _record_loaded(staging, plan, result, keep_staging)


def _record_loaded(
    staging: Staging, plan: ShardPlan, result: ShardedExportResult, keep_staging: bool
) -> ShardedExportResult:
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
    staging: Staging, plan: ShardPlan, shards: list[ShardResult], result: ShardedExportResult
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
        with rows_tempfile() as local:
            if not staging.download(join(directory, INDEX_FILE), local):
                raise IncompleteShardsError(f"shard {shard.index} has a result but no {INDEX_FILE}")
            local.seek(0)
            for row, raw_line in enumerate(local):
                line = raw_line.decode("utf-8")
                uid, number, path = json.loads(line)
                if uid in seen:
                    dropped.setdefault(shard.index, set()).add(row)
                    result.add_duplicate(path, uid)
                    continue
                seen.add(uid)
                used.add(number)
                result.instances_exported += 1
        for number in sorted(used):
            table_schema.add(schemas[number])
    return dropped, table_schema.fields


def _kept_rows(staging: Staging, plan: ShardPlan, index: int, drop: set[int], out: Any) -> None:
    """Append shard `index`'s rows, except the dropped ones, to the binary file `out`."""
    name = join(plan.shard_dir(index), ROWS_FILE)
    if not drop:
        if not staging.download(name, out):
            raise IncompleteShardsError(f"shard {index} has a result but no {ROWS_FILE}")
        return
    with rows_tempfile() as copy:
        if not staging.download(name, copy):
            raise IncompleteShardsError(f"shard {index} has a result but no {ROWS_FILE}")
        copy.seek(0)
        for row, line in enumerate(copy):
            if row not in drop:
                out.write(line)


def _stream_submitter(
    client: Any, table: BigQueryTableUri, config: Any, staging: Staging, plan: ShardPlan,
    shards: list[ShardResult], dropped: dict[int, set[int]], work: ExitStack,
) -> Callable[[str], Any]:
    combined = work.enter_context(rows_tempfile())
    for shard in shards:
        if shard.instances_exported:
            _kept_rows(staging, plan, shard.index, dropped.get(shard.index, set()), combined)

    def submit(job_id: str) -> Any:
        with remote(f"loading rows into {table}", endpoint_of(client)):
            return client.load_table_from_file(
                combined, table.table_id, job_config=config, job_id=job_id, rewind=True,
                timeout=request_timeout(), num_retries=upload_retries(),
            )

    return submit


def _uri_submitter(
    client: Any, table: BigQueryTableUri, config: Any, staging: Staging, plan: ShardPlan,
    shards: list[ShardResult], dropped: dict[int, set[int]],
) -> Callable[[str], Any]:
    uris: list[str] = []
    for shard in shards:
        drop = dropped.get(shard.index, set())
        if shard.instances_exported - len(drop) <= 0:
            continue
        directory = plan.shard_dir(shard.index)
        if drop:
            # BigQuery cannot skip lines of a file: stage this shard's kept rows as their own file.
            with rows_tempfile() as kept:
                _kept_rows(staging, plan, shard.index, drop, kept)
                staging.upload(join(directory, KEPT_ROWS_FILE), kept)
            uris.append(staging.uri_of(join(directory, KEPT_ROWS_FILE)))
        else:
            uris.append(staging.uri_of(join(directory, ROWS_FILE)))

    def submit(job_id: str) -> Any:
        return client.load_table_from_uri(
            uris, table.table_id, job_config=config, job_id=job_id, **bigquery_call(client, f"loading into {table}")
        )

    return submit


def _ranges(numbers: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5" (a thousand missing shards must not make a thousand-number message)."""
    parts: list[str] = []
    start = previous = numbers[0]
    for number in [*numbers[1:], None]:
        if number is not None and number == previous + 1:
            previous = number
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if number is not None:
            start = previous = number
    return ", ".join(parts)
