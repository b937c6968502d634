"""One shard of a sharded export: convert the shard's part of the listing, stage rows and schema.

A shard never touches the destination table. It writes, below `shards/NNNNN/` in the plan's
staging folder:

    rows.ndjson      the rows, exactly the lines an unsharded export would load
    rows.index.jsonl per row, in the same order: [SOPInstanceUID, schema number, source path]
    schemas.json     the distinct per-instance schemas the rows need (numbered by position)
    result.json      counts and failures; written last, so its presence means the shard finished

The per-row UID and schema number are what let the load step drop an instance that an earlier
shard already exported and still declare exactly the columns of the rows it keeps, as an
unsharded export would. Writing every file under a fixed name makes a retried shard overwrite its
own earlier attempt instead of adding to it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_dicom.export.counts import SourceCounts
from airflow_provider_dicom.export.shard_plan import (
    FILTER_FILE,
    ShardPlan,
    item_to_object,
    iter_listing,
    read_plan,
)
from airflow_provider_dicom.export.staging import Staging, join
from airflow_provider_dicom.model.sources import SourceKind

if TYPE_CHECKING:
    from airflow_provider_dicom.dicom.schema import Field
    from airflow_provider_dicom.filters.files import FilterSet
    from airflow_provider_dicom.sources.parallel import LineOutcome

log = logging.getLogger(__name__)

ROWS_FILE = "rows.ndjson"
INDEX_FILE = "rows.index.jsonl"
SCHEMAS_FILE = "schemas.json"
RESULT_FILE = "result.json"


@dataclass(kw_only=True)
class ShardResult(SourceCounts):
    """What one shard read and staged."""

    plan_id: str
    index: int
    shard_count: int
    instances_exported: int = 0
    rows_bytes: int = 0

    @property
    def done_count(self) -> int:
        return self.instances_exported

    def to_json(self) -> bytes:
        """Every failure is kept (the load reports the complete count); duplicates are capped."""
        data = {
            "plan_id": self.plan_id,
            "index": self.index,
            "shard_count": self.shard_count,
            "instances_exported": self.instances_exported,
            "rows_bytes": self.rows_bytes,
            "failures": [list(item) for item in self.failures],
            "not_dicom_count": self.not_dicom_count,
            "filtered_out_count": self.filtered_out_count,
            "duplicate_count": self.duplicate_count,
            "duplicates": self.duplicates,
            "files_total": self.files_total,
        }
        return json.dumps(data).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ShardResult:
        raw = json.loads(data)
        raw["failures"] = [tuple(item) for item in raw["failures"]]
        return cls(**raw)

    def summary(self) -> dict[str, Any]:
        """The shard task's XCom: small, whatever the shard's size."""
        return {
            "index": self.index,
            "shard_count": self.shard_count,
            "instances_exported": self.instances_exported,
            "rows_bytes": self.rows_bytes,
            **self.counts_dict(),
        }


def export_shard(
    staging: Staging,
    plan_root: str | ShardPlan,
    index: int,
    *,
    storage_client: Any = None,
    dicomweb_client: Any = None,
    workers: int | None = None,
    processes: int = 1,
    progress: Callable[[Any], None] | None = None,
) -> ShardResult:
    """Convert shard `index` of the plan at `plan_root` (or of that plan, already read) and stage
    its rows; returns its counts."""
    plan = plan_root if isinstance(plan_root, ShardPlan) else read_plan(staging, plan_root)
    if not 0 <= index < plan.shard_count:
        raise ValueError(f"invalid shard index {index}: the plan {plan.plan_id} has shards 0 to {plan.shard_count - 1}")
    from airflow_provider_dicom.dicom.schema import TableSchema
    from airflow_provider_dicom.export.bigquery import rows_tempfile, write_rows

    start, end = plan.bounds[index]
    result = ShardResult(plan_id=plan.plan_id, index=index, shard_count=plan.shard_count, files_total=None)
    if plan.source_kind != SourceKind.DICOMWEB.value:
        result.files_total = end - start  # one listed file or object is one instance read
    accept = _plan_filter(staging, plan)
    out_dir = plan.shard_dir(index)
    log.info(
        "Shard %d of %d (plan %s): %d listed items of %s", index + 1, plan.shard_count, plan.plan_id,
        end - start, plan.source,
    )
    # Rows and index go to anonymous files (no name in $TMPDIR: nothing left if the process is
    # killed) until they are staged; the staging location is the user's to keep or clear.
    with tempfile.TemporaryDirectory(prefix="dicom-shard-") as workdir, \
            rows_tempfile() as rows_file, rows_tempfile() as index_binary:
        work = Path(workdir)
        schema_numbers: dict[tuple[Field, ...], int] = {}
        index_file = io.TextIOWrapper(index_binary, encoding="utf-8", newline="\n")

        def record(outcome: LineOutcome) -> None:
            fields = tuple(outcome.fields or ())
            number = schema_numbers.setdefault(fields, len(schema_numbers))
            index_file.write(json.dumps([outcome.sop_uid, number, outcome.path]))
            index_file.write("\n")

        items = iter_listing(staging, plan, index, work)
        outcomes = _shard_outcomes(
            plan, items, accept, storage_client=storage_client, dicomweb_client=dicomweb_client,
            workers=workers, processes=processes,
        )
        try:
            write_rows(outcomes, rows_file, TableSchema(), result, progress, on_row=record)
        finally:
            index_file.flush()
            index_file.detach()
        result.rows_bytes = rows_file.seek(0, os.SEEK_END)
        schemas = [[f.to_api_repr() for f in fields] for fields in schema_numbers]
        staging.upload(join(out_dir, ROWS_FILE), rows_file)
        staging.upload(join(out_dir, INDEX_FILE), index_binary)
        staging.write_bytes(join(out_dir, SCHEMAS_FILE), json.dumps(schemas).encode("utf-8"))
    staging.write_bytes(join(out_dir, RESULT_FILE), result.to_json())
    log.info(
        "Shard %d of %d staged %d instances (%d bytes of rows); %d failed, %d not DICOM, %d filtered out, "
        "%d duplicates", index + 1, plan.shard_count, result.instances_exported, result.rows_bytes,
        result.failure_count, result.not_dicom_count, result.filtered_out_count, result.duplicate_count,
    )
    return result


def _plan_filter(staging: Staging, plan: ShardPlan) -> FilterSet | None:
    if not plan.has_filter:
        return None
    from airflow_provider_dicom.filters.files import FilterSet

    data = staging.read_bytes(join(plan.root, FILTER_FILE))
    if data is None:
        raise FileNotFoundError(f"the plan's filter file {staging.uri_of(join(plan.root, FILTER_FILE))} is missing")
    return FilterSet.parse(data, source="the plan's filter file")


def _shard_outcomes(
    plan: ShardPlan,
    items: Iterator[Any],
    accept: FilterSet | None,
    *,
    storage_client: Any,
    dicomweb_client: Any,
    workers: int | None,
    processes: int,
) -> Iterator[Any]:
    from airflow_provider_dicom.dicom.convert import InstanceConverter
    from airflow_provider_dicom.sources.remote import DEFAULT_WORKERS

    converter = InstanceConverter(schema=plan.schema)
    workers = workers or DEFAULT_WORKERS
    kind = SourceKind(plan.source_kind)
    if kind is SourceKind.FOLDER:
        root = Path(plan.source)
        paths = (root / item for item in items)
        if processes > 1:
            from airflow_provider_dicom.sources.parallel import convert_files

            yield from convert_files(paths, schema=plan.schema, accept=accept, processes=processes)
            return
        from airflow_provider_dicom.sources.folder import convert_file

        for path in paths:
            yield convert_file(path, converter, accept)
        return
    if kind is SourceKind.GCS_PREFIX:
        from airflow_provider_dicom.sources.gcs import GcsDicomSource

        gcs = GcsDicomSource(plan.source, storage_client, workers=workers)
        yield from gcs.outcomes(converter, accept, objects=(item_to_object(item) for item in items))
        return
    if kind is SourceKind.DICOMWEB:
        from airflow_provider_dicom.sources.dicomweb import DicomWebClient, DicomWebSource

        shard_filter = _studies_filter(list(items), accept)
        client = dicomweb_client or DicomWebClient(plan.source, pool_size=workers)
        # The shard's studies choose what is requested; only a user's filter decides what is kept.
        keep = shard_filter if accept is not None else None
        yield from DicomWebSource(client, workers=workers, filter_set=shard_filter).outcomes(converter, keep)
        return
    raise ValueError(f"a sharded export cannot read a {kind.description}")


def _studies_filter(studies: list[str], accept: FilterSet | None) -> FilterSet:
    """The part of the filter (or, without one, the whole studies) this shard's studies cover."""
    from airflow_provider_dicom.filters.files import FilterSet, ResourcePath

    wanted = set(studies)
    if accept is None:
        return FilterSet(ResourcePath(study) for study in studies)
    return FilterSet(path for path in accept if path.study in wanted)
