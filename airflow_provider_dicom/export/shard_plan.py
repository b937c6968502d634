"""Planning a sharded export: list the source once, cut the listing into shards, stage it.

A sharded export runs as plan -> N shard tasks (Airflow dynamic task mapping over the plan's
result) -> one load. The plan lists the source exactly once, so every shard works from the same
snapshot: a file added while the shards run is in no shard rather than in two, and a retried
shard reads the same items it read the first time.

Shards are contiguous runs of the listing, in the source's own order (sorted paths, object names,
the server's study order), balanced by a weight: one per file or object, the study's instance
count for DICOMweb. Contiguous keeps "the first of two files with one SOPInstanceUID wins" meaning
what it means in an unsharded export, because shard order is listing order.

Memory stays flat whatever the source size: the listing streams to a local file while only one
integer weight per item is kept, then is split into one listing file per shard.

Staging layout, below `{staging_uri}/{run label}/{plan_id}/`:
    plan.json                       what is exported, how, and into how many shards
    filter.txt                      the filter file as read at plan time (if any)
    listing/00000.jsonl ...         each shard's items, one JSON value a line
    shards/00000/...                what each shard writes (see shard_export.py)
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import uuid
from array import array
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow_provider_dicom.export.staging import Staging, join
from airflow_provider_dicom.model.sources import DicomSource, SourceKind

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
FILTER_FILE = "filter.txt"
# BigQuery takes at most 10,000 source URIs in one load job; one shard is one URI.
MAX_SHARDS = 10_000


@dataclass(frozen=True)
class ShardPlan:
    """What the plan step decided, as stored in plan.json and read back by shards and the load."""

    plan_id: str
    root: str  # the plan's folder, relative to the staging root
    source: str
    source_kind: str
    schema: str
    shard_count: int
    items: int
    # [start, end) offsets of each shard in the listing
    bounds: tuple[tuple[int, int], ...]
    has_filter: bool
    created: str

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ShardPlan:
        raw = json.loads(data)
        raw["bounds"] = tuple(tuple(b) for b in raw["bounds"])
        return cls(**raw)

    def spec(self, staging_uri: str, index: int) -> dict[str, Any]:
        """The small dict a shard task is mapped over (pushed to XCom, shown in the UI's map index)."""
        start, end = self.bounds[index]
        return {
            "staging_uri": staging_uri,
            "plan": self.root,
            "plan_id": self.plan_id,
            "index": index,
            "shard_count": self.shard_count,
            "items": end - start,
        }

    def listing_name(self, index: int) -> str:
        return join(self.root, "listing", f"{index:05d}.jsonl")

    def shard_dir(self, index: int) -> str:
        return join(self.root, "shards", f"{index:05d}")


def check_shard_count(value: object) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SHARDS:
        raise ValueError(
            f"invalid shards {value!r}: expected an integer from 1 to {MAX_SHARDS} (one BigQuery load "
            "job reads at most 10,000 files)"
        )
    return value


def run_label(dag_id: str, run_id: str) -> str:
    """A path-safe folder name for a DAG run (run ids hold ':' and '+', which some tools mind)."""
    def clean(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_") or "_"

    return f"{clean(dag_id)}/{clean(run_id)}"


def partition(weights: array | list[int], shards: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) ranges over the items, at most `shards` of them, none empty (but a
    single empty range for no items), each near an equal share of the total weight."""
    count = len(weights)
    if count == 0:
        return [(0, 0)]
    shards = min(shards, count)
    total = sum(weights)
    bounds: list[tuple[int, int]] = []
    start = 0
    running = 0
    for index in range(shards - 1):
        target = total * (index + 1) / shards
        end = start + 1  # every shard gets at least one item
        running += weights[start]
        # Room must stay for one item per shard still to come.
        last_allowed = count - (shards - index - 1)
        while end < last_allowed and running + weights[end] / 2 <= target:
            running += weights[end]
            end += 1
        bounds.append((start, end))
        start = end
    bounds.append((start, count))
    return bounds


def plan_shards(
    source: DicomSource,
    staging: Staging,
    *,
    shards: int,
    schema: str,
    label: str,
    filter_text: str | None = None,
    storage_client: Any = None,
    dicomweb_client: Any = None,
) -> ShardPlan:
    """List `source`, split it into at most `shards` shards and stage the listings and plan.

    `filter_text` is the filter file's text (already validated); for DICOMweb it also chooses what
    is listed (the filter's studies, in the filter's order, with no QIDO-RS enumeration).
    """
    shards = check_shard_count(shards)
    plan_id = uuid.uuid4().hex
    root = join(label, plan_id)
    weights = array("q")
    with tempfile.TemporaryDirectory(prefix="dicom-shard-plan-") as workdir:
        listing_path = Path(workdir, "listing.jsonl")
        with open(listing_path, "w", encoding="utf-8", newline="\n") as out:
            for item, weight in _list_source(source, filter_text, storage_client, dicomweb_client):
                out.write(json.dumps(item, separators=(",", ":")))  # ASCII: any file name survives
                out.write("\n")
                weights.append(max(1, weight))
        bounds = partition(weights, shards)
        plan = ShardPlan(
            plan_id=plan_id,
            root=root,
            source=source.value,
            source_kind=source.kind.value,
            schema=schema,
            shard_count=len(bounds),
            items=len(weights),
            bounds=tuple(bounds),
            has_filter=filter_text is not None,
            created=datetime.now(UTC).isoformat(),
        )
        if filter_text is not None:
            staging.write_bytes(join(root, FILTER_FILE), filter_text.encode("utf-8"))
        _stage_listings(plan, listing_path, Path(workdir), staging)
    # Written last: a plan.json is the proof that the listings it names are all there.
    staging.write_bytes(join(root, PLAN_FILE), plan.to_json())
    log.info(
        "Planned %d shards over %d items of %s (sizes %s); staged at %s",
        plan.shard_count, plan.items, source.display, _sizes(bounds), staging.uri_of(root),
    )
    return plan


def read_plan(staging: Staging, root: str) -> ShardPlan:
    data = staging.read_bytes(join(root, PLAN_FILE))
    if data is None:
        raise FileNotFoundError(
            f"no shard plan at {staging.uri_of(join(root, PLAN_FILE))}: the plan task did not finish, "
            "or the staging area was cleaned up"
        )
    return ShardPlan.from_json(data)


def iter_listing(staging: Staging, plan: ShardPlan, index: int, workdir: Path) -> Iterator[Any]:
    """The items of shard `index`, streamed from a local copy of its listing file."""
    local = workdir / f"listing-{index:05d}.jsonl"
    with open(local, "w+b") as out:
        if not staging.download(plan.listing_name(index), out):
            raise FileNotFoundError(f"shard listing {staging.uri_of(plan.listing_name(index))} is missing")
    with open(local, encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def _stage_listings(plan: ShardPlan, listing_path: Path, workdir: Path, staging: Staging) -> None:
    with open(listing_path, encoding="utf-8") as lines:
        for index, (start, end) in enumerate(plan.bounds):
            part = workdir / f"part-{index:05d}.jsonl"
            with open(part, "w", encoding="utf-8", newline="\n") as out:
                for _ in range(end - start):
                    out.write(next(lines))
            staging.upload(plan.listing_name(index), part)
            part.unlink()


def _list_source(
    source: DicomSource, filter_text: str | None, storage_client: Any, dicomweb_client: Any
) -> Iterator[tuple[Any, int]]:
    """(item, weight) pairs in the order an unsharded export reads the source."""
    if source.kind is SourceKind.FOLDER:
        from airflow_provider_dicom.sources.folder import iter_folder

        root = Path(source.value)
        for path in iter_folder(root):
            yield path.relative_to(root).as_posix(), 1
        return
    if source.kind is SourceKind.GCS_PREFIX:
        from airflow_provider_dicom.sources.gcs import GcsDicomSource

        for info in GcsDicomSource(source.value, storage_client).list_objects():
            yield object_to_item(info), 1
        return
    if source.kind is SourceKind.DICOMWEB:
        yield from _list_studies(source, filter_text, dicomweb_client)
        return
    raise ValueError(
        f"a sharded export reads folders, gs:// prefixes and DICOMweb servers; {source.display} is "
        "exported by the Cloud Healthcare API itself (use DicomExportToBigQueryOperator)"
    )


def _list_studies(source: DicomSource, filter_text: str | None, client: Any) -> Iterator[tuple[Any, int]]:
    """Studies are DICOMweb's unit: a shard reads whole studies (all their series)."""
    if filter_text is not None:
        from airflow_provider_dicom.filters.files import FilterSet

        for uid in dict.fromkeys(path.study for path in FilterSet.parse(filter_text)):
            yield uid, 1
        return
    from airflow_provider_dicom.sources.dicomweb import DicomWebSource

    web = DicomWebSource(client or source.value)
    for study in web.listed_studies():
        yield study.uid, study.instances or 1


def object_to_item(info: Any) -> dict[str, Any]:
    return {
        "name": info.name,
        "size": info.size,
        "updated": info.updated.isoformat() if info.updated else None,
        "generation": info.generation,
        "content_encoding": info.content_encoding,
    }


def item_to_object(item: dict[str, Any]) -> Any:
    from airflow_provider_dicom.sources.gcs import ObjectInfo

    updated = datetime.fromisoformat(item["updated"]) if item.get("updated") else None
    return ObjectInfo(item["name"], int(item["size"]), updated, item.get("generation"), item.get("content_encoding"))


def _sizes(bounds: list[tuple[int, int]]) -> str:
    sizes = [end - start for start, end in bounds]
    if len(sizes) <= 8:
        return ", ".join(str(s) for s in sizes)
    return f"{min(sizes)} to {max(sizes)} items"


def plan_sharded_export(
    source: str | Any,
    staging: Staging,
    table_uri: Any,
    *,
    shards: int,
    label: str,
    client: Any,
    write_disposition: Any = None,
    force: bool | None = None,
    filter_config: Any = None,
    schema: Any = "flattened",
    storage_client: Any = None,
    dicomweb_client: Any = None,
) -> ShardPlan:
    """Check everything that can be checked, then plan: the arguments, the destination table's
    state (a WRITE_EMPTY export into a full table fails here, before any listing) and the filter
    file. The load step checks the table again, since it may change while the shards run."""
    from airflow_provider_dicom.export.bigquery import checked_source, load_filter_config, plan_destination
    from airflow_provider_dicom.model.options import SchemaVariant, WriteOptions
    from airflow_provider_dicom.model.uris import BigQueryTableUri

    shards = check_shard_count(shards)
    table = table_uri if isinstance(table_uri, BigQueryTableUri) else BigQueryTableUri.parse(table_uri)
    options = WriteOptions.resolve(write_disposition, force)
    variant = SchemaVariant.parse(schema)
    parsed = DicomSource.parse(source)
    if parsed.kind is SourceKind.DICOM_STORE:
        raise ValueError(
            f"a sharded export reads folders, gs:// prefixes and DICOMweb servers; {parsed.display} is "
            "exported by the Cloud Healthcare API itself (use DicomExportToBigQueryOperator)"
        )
    parsed = checked_source(parsed.value)
    accept = load_filter_config(filter_config, storage_client)
    plan_destination(client, table, options)
    return plan_shards(
        parsed, staging, shards=shards, schema=variant.value, label=label,
        filter_text=accept.format() if accept is not None else None,
        storage_client=storage_client, dicomweb_client=dicomweb_client,
    )
