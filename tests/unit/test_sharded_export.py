"""Sharded export without servers: how a listing is cut, what the operators refuse at parse time,
and the load step's requests to BigQuery (a recording client stands in for BigQuery's load from
Cloud Storage, which no local stand-in can play)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_provider_dicom.export.shard_load import (
    IncompleteShardsError,
    _ranges,
    load_sharded_export,
    resolve_route,
)
from airflow_provider_dicom.export.shard_plan import (
    MAX_SHARDS,
    check_shard_count,
    partition,
    plan_shards,
    run_label,
)
from airflow_provider_dicom.export.staging import LocalStaging, check_staging_uri, open_staging
from airflow_provider_dicom.model.sources import DicomSource

# -- partition -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "shards", "expected"),
    [
        ([1] * 10, 3, [(0, 3), (3, 7), (7, 10)]),
        ([1] * 10, 1, [(0, 10)]),
        ([1] * 3, 8, [(0, 1), (1, 2), (2, 3)]),  # never an empty shard
        ([], 4, [(0, 0)]),  # an empty source still has one (empty) shard, so the load runs and says so
        ([100, 1, 1, 1, 1], 2, [(0, 1), (1, 5)]),  # a big study gets a shard of its own
        ([1, 1, 1, 1, 100], 3, [(0, 3), (3, 4), (4, 5)]),
    ],
)
def test_partition_is_contiguous_balanced_and_never_empty(weights, shards, expected):
    bounds = partition(weights, shards)
    assert bounds == expected
    assert bounds[0][0] == 0 and bounds[-1][1] == len(weights)
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))


def test_partition_of_a_million_items_is_even():
    bounds = partition([1] * 1_000_000, 7)
    sizes = [end - start for start, end in bounds]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 1_000_000


@pytest.mark.parametrize("value", [0, -1, MAX_SHARDS + 1, "x", 2.5, True, None])
def test_bad_shard_counts_are_refused_naming_the_value(value):
    with pytest.raises(ValueError, match=r"invalid shards .*expected an integer from 1 to 10000"):
        check_shard_count(value)


def test_shard_count_accepts_a_rendered_param():
    assert check_shard_count("12") == 12


def test_run_label_is_path_safe():
    assert run_label("my dag", "manual__2026-11-25T10:00:00+00:00") == "my_dag/manual__2026-11-25T10_00_00_00_00"


@pytest.mark.parametrize("value", ["", " gs://b/p", "relative/dir", "s3://b/p", "gs://", None, 3])
def test_bad_staging_uris_are_refused(value):
    with pytest.raises(ValueError, match="invalid staging_uri"):
        check_staging_uri(value)


def test_staging_writes_are_whole_or_absent(tmp_path):
    staging = open_staging(str(tmp_path))
    assert staging.read_bytes("a/b.json") is None
    staging.write_bytes("a/b.json", b"{}")
    assert staging.read_bytes("a/b.json") == b"{}"
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.json"]  # no .partial left behind
    out = io.BytesIO()
    assert staging.download("a/b.json", out) and out.getvalue() == b"{}"
    assert not staging.download("a/missing", io.BytesIO())
    assert staging.delete_tree("a") == 1 and not (tmp_path / "a").exists()


def test_ranges_keep_messages_short():
    assert _ranges([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"
    assert _ranges([3]) == "3"


# -- planning a folder -------------------------------------------------------------------------


def make_folder(root: Path, names: list[str]) -> Path:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not dicom")
    return root


def test_plan_lists_in_source_order_and_stages_one_listing_per_shard(tmp_path):
    source = make_folder(tmp_path / "src", ["b/2.dcm", "a/1.dcm", "a/0.dcm", "c.dcm", "b/1.dcm"])
    staging = LocalStaging(tmp_path / "staging")
    plan = plan_shards(DicomSource.parse(str(source)), staging, shards=2, schema="flattened", label="d/r")
    assert plan.items == 5 and plan.shard_count == 2 and plan.bounds == ((0, 3), (3, 5))
    listings = [
        [json.loads(line) for line in (staging.root / plan.listing_name(i)).read_text().splitlines()]
        for i in range(2)
    ]
    # The order an unsharded export reads: a folder's files, then its sub-folders, each sorted.
    assert listings == [["c.dcm", "a/0.dcm", "a/1.dcm"], ["b/1.dcm", "b/2.dcm"]]
    assert json.loads((staging.root / plan.root / "plan.json").read_text())["plan_id"] == plan.plan_id
    assert plan.spec("/s", 1) == {
        "staging_uri": "/s", "plan": plan.root, "plan_id": plan.plan_id, "index": 1, "shard_count": 2, "items": 2,
    }


def test_a_cloud_healthcare_store_is_not_sharded(tmp_path):
    from airflow_provider_dicom.export.shard_plan import plan_sharded_export

    with pytest.raises(ValueError, match="exported by the Cloud Healthcare API itself"):
        plan_sharded_export(
            "projects/p/locations/l/datasets/d/dicomStores/s", LocalStaging(tmp_path), "bq://proj-1.d.t",
            shards=2, label="x", client=object(),
        )


# -- the load step's requests ------------------------------------------------------------------


class MemoryGcsStaging(LocalStaging):
    """Local files posing as gs:// staging, so the `uris` route can be exercised without GCS."""

    def is_gcs(self) -> bool:
        return True

    def uri_of(self, name: str) -> str:
        return f"gs://staging-bucket/{name}"


class RecordingJob:
    def __init__(self, job_id: str, state: str = "DONE", error: dict | None = None) -> None:
        self.job_id = job_id
        self.state = state
        self.error_result = error
        self.errors = None
        self.waited = False

    def done(self, **deadline):
        return True  # finishes as soon as it is waited for

    def result(self, **deadline):
        self.waited = True
        self.state = "DONE"
        return self


class RecordingClient:
    """What the load step asks of BigQuery: table state, jobs looked up and submitted."""

    def __init__(self, jobs: dict[str, RecordingJob] | None = None) -> None:
        self.jobs = dict(jobs or {})
        self.submitted: list[tuple[str, object, object]] = []

    def get_dataset(self, dataset_id, **deadline):
        return SimpleNamespace(dataset_id=dataset_id)

    def get_table(self, table_id, **deadline):
        from google.api_core.exceptions import NotFound

        raise NotFound(f"table {table_id}")

    def get_job(self, job_id, **deadline):
        from google.api_core.exceptions import NotFound

        if job_id not in self.jobs:
            raise NotFound(f"job {job_id}")
        return self.jobs[job_id]

    def load_table_from_uri(self, uris, destination, job_config=None, job_id=None, **deadline):
        self.submitted.append((job_id, list(uris), job_config))
        self.jobs[job_id] = RecordingJob(job_id, "RUNNING")
        return self.jobs[job_id]

    def load_table_from_file(self, data, destination, job_config=None, job_id=None, rewind=False, **deadline):
        if rewind:  # as google-cloud-bigquery does
            data.seek(0)
        self.submitted.append((job_id, data.read(), job_config))
        self.jobs[job_id] = RecordingJob(job_id, "RUNNING")
        return self.jobs[job_id]


def staged_plan(tmp_path: Path, staging, shard_rows: list[list[tuple[str, dict]]]):
    """A plan whose shards staged the given (SOP UID, row) lists, as export_shard writes them."""
    from airflow_provider_dicom.dicom.schema import Field
    from airflow_provider_dicom.export.shard_export import ShardResult
    from airflow_provider_dicom.export.shard_plan import ShardPlan
    from airflow_provider_dicom.export.staging import join

    plan = ShardPlan(
        plan_id="p1", root="d/r/p1", source=str(tmp_path), source_kind="folder", schema="flattened",
        shard_count=len(shard_rows), items=sum(map(len, shard_rows)),
        bounds=tuple((0, len(rows)) for rows in shard_rows), has_filter=False, created="now",
    )
    staging.write_bytes(join(plan.root, "plan.json"), plan.to_json())
    for index, rows in enumerate(shard_rows):
        directory = plan.shard_dir(index)
        schemas = [[Field(name, "STRING").to_api_repr() for name in sorted(row)] for _, row in rows]
        staging.write_bytes(join(directory, "rows.ndjson"), b"".join(json.dumps(r).encode() + b"\n" for _, r in rows))
        staging.write_bytes(
            join(directory, "rows.index.jsonl"),
            b"".join(json.dumps([uid, n, f"f{index}-{n}"]).encode() + b"\n" for n, (uid, _) in enumerate(rows)),
        )
        staging.write_bytes(join(directory, "schemas.json"), json.dumps(schemas).encode())
        result = ShardResult(plan_id="p1", index=index, shard_count=len(shard_rows), instances_exported=len(rows))
        staging.write_bytes(join(directory, "result.json"), result.to_json())
    return plan


def test_uris_route_loads_each_shard_file_in_one_job_and_restages_a_shard_with_duplicates(tmp_path):
    staging = MemoryGcsStaging(tmp_path)
    plan = staged_plan(tmp_path, staging, [
        [("1", {"SOPInstanceUID": "1"}), ("2", {"SOPInstanceUID": "2"})],
        [("2", {"SOPInstanceUID": "2", "Extra": "x"}), ("3", {"SOPInstanceUID": "3"})],
        [("4", {"SOPInstanceUID": "4"})],
    ])
    client = RecordingClient()
    result = load_sharded_export(staging, plan.root, "bq://proj-1.d.t", client=client, load_from="uris", keep_staging=True)

    assert result.instances_exported == 4 and result.duplicate_count == 1 and result.duplicates == ["f1-0"]
    [(job_id, uris, config)] = client.submitted
    assert job_id == "dicom_export_p1_0"
    assert uris == [
        "gs://staging-bucket/d/r/p1/shards/00000/rows.ndjson",
        "gs://staging-bucket/d/r/p1/shards/00001/rows.kept.ndjson",
        "gs://staging-bucket/d/r/p1/shards/00002/rows.ndjson",
    ]
    kept = (tmp_path / "d/r/p1/shards/00001/rows.kept.ndjson").read_text().splitlines()
    assert [json.loads(line)["SOPInstanceUID"] for line in kept] == ["3"]
    # The dropped duplicate's column is not declared; one job, WRITE_EMPTY into a missing table.
    assert [f.name for f in config.schema] == ["SOPInstanceUID"]
    assert config.write_disposition == "WRITE_EMPTY" and config.source_format == "NEWLINE_DELIMITED_JSON"


def test_stream_route_uploads_the_kept_rows_once(tmp_path):
    staging = LocalStaging(tmp_path)
    plan = staged_plan(tmp_path, staging, [[("1", {"SOPInstanceUID": "1"})], [("1", {"SOPInstanceUID": "1"})]])
    client = RecordingClient()
    result = load_sharded_export(staging, plan.root, "bq://proj-1.d.t", client=client, write_disposition="WRITE_TRUNCATE")
    [(_, body, config)] = client.submitted
    assert body == b'{"SOPInstanceUID": "1"}\n'
    assert config.write_disposition == "WRITE_TRUNCATE"
    assert result.load_route == "stream"
    # Rows and listings go after the load; the plan and the record of the load stay.
    assert sorted(p.name for p in (tmp_path / plan.root).rglob("*")) == ["loaded.json", "plan.json"]


def test_a_load_retried_after_it_succeeded_returns_the_recorded_result_without_bigquery(tmp_path):
    staging = LocalStaging(tmp_path)
    plan = staged_plan(tmp_path, staging, [[("1", {"a": "1"})], [("2", {"a": "2"})]])
    first = load_sharded_export(staging, plan.root, "bq://proj-1.d.t", client=RecordingClient())

    class NoCalls:
        def __getattr__(self, name):
            raise AssertionError(f"BigQuery was called ({name}) for a plan already loaded")

    again = load_sharded_export(staging, plan.root, "bq://proj-1.d.t", client=NoCalls())
    assert again.reattached and again.job_id == first.job_id == "dicom_export_p1_0"
    assert again.to_dict() == {**first.to_dict(), "reattached": True}


def test_a_missing_shard_result_stops_the_load_before_any_bigquery_call(tmp_path):
    staging = LocalStaging(tmp_path)
    plan = staged_plan(tmp_path, staging, [[("1", {"a": "1"})], [("2", {"a": "2"})], [("3", {"a": "3"})]])
    (tmp_path / plan.shard_dir(1) / "result.json").unlink()
    (tmp_path / plan.shard_dir(2) / "result.json").unlink()

    class NoCalls:
        def __getattr__(self, name):
            raise AssertionError(f"BigQuery was called ({name}) although a shard is missing")

    with pytest.raises(IncompleteShardsError, match=r"shards 1-2 have not finished \(no result.json\)"):
        load_sharded_export(staging, plan.root, "bq://proj-1.d.t", client=NoCalls())
    assert (tmp_path / plan.root).exists()  # kept for the rerun


@pytest.mark.parametrize(
    ("earlier_job", "reattached", "submitted"),
    [
        (RecordingJob("dicom_export_p1_0"), True, []),  # succeeded: not loaded again
        (RecordingJob("dicom_export_p1_0", error={"reason": "invalid"}), False, ["dicom_export_p1_1"]),
        (RecordingJob("dicom_export_p1_0", "RUNNING"), True, []),  # still running: waited on
    ],
)
def test_a_load_retried_before_its_record_was_written_finds_its_job(tmp_path, earlier_job, reattached, submitted):
    """The earlier try died after starting the job but before writing loaded.json."""
    staging = LocalStaging(tmp_path)
    plan = staged_plan(tmp_path, staging, [[("1", {"a": "1"})]])
    client = RecordingClient({"dicom_export_p1_0": earlier_job})
    result = load_sharded_export(staging, plan.root, "bq://proj-1.d.t", client=client)
    assert result.reattached is reattached
    assert [job_id for job_id, _, _ in client.submitted] == submitted
    assert client.jobs[result.job_id].state == "DONE"


def test_load_route_auto_follows_the_staging_and_the_emulator(tmp_path, monkeypatch):
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    assert resolve_route("auto", MemoryGcsStaging(tmp_path)) == "uris"
    assert resolve_route("auto", LocalStaging(tmp_path)) == "stream"
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", "http://127.0.0.1:9050")
    assert resolve_route("auto", MemoryGcsStaging(tmp_path)) == "stream"
    with pytest.raises(ValueError, match="load_from='uris' needs gs:// staging"):
        resolve_route("uris", LocalStaging(tmp_path))
    with pytest.raises(ValueError, match="invalid load_from 'fast'"):
        resolve_route("fast", LocalStaging(tmp_path))


# -- operators at parse time -------------------------------------------------------------------


def test_operators_refuse_bad_literal_arguments_at_parse_time():
    from airflow_provider_dicom.operators.sharded_export import DicomShardLoadOperator, DicomShardPlanOperator

    common = {"task_id": "plan", "destination_table_uri": "bq://proj-1.d.t", "staging_uri": "gs://bucket-1/s"}
    with pytest.raises(ValueError, match="exported by the Cloud Healthcare API itself"):
        DicomShardPlanOperator(source="projects/p/locations/l/datasets/d/dicomStores/s", **common)
    with pytest.raises(ValueError, match="invalid staging_uri 'relative'"):
        DicomShardPlanOperator(source="/data", **{**common, "staging_uri": "relative"})
    with pytest.raises(ValueError, match="invalid shards 0"):
        DicomShardPlanOperator(source="/data", shards=0, **common)
    with pytest.raises(ValueError, match="invalid location ' EU'"):
        DicomShardPlanOperator(source="/data", location=" EU", **common)
    with pytest.raises(ValueError, match="invalid impersonation_chain"):
        DicomShardLoadOperator(task_id="load", shards=[], destination_table_uri="bq://proj-1.d.t", impersonation_chain=[])
    # Templated values wait for rendering.
    DicomShardPlanOperator(source="{{ params.s }}", shards="{{ params.n }}", **{**common, "staging_uri": "{{ x }}"})
    with pytest.raises(ValueError, match="invalid load_from"):
        DicomShardLoadOperator(task_id="load", shards=[], destination_table_uri="bq://proj-1.d.t", load_from="gcs")


def test_load_operator_wants_the_whole_plan_output():
    from airflow_provider_dicom.operators.sharded_export import check_shard_specs

    spec = {"staging_uri": "/s", "plan": "d/r/p", "plan_id": "p", "index": 0, "shard_count": 2}
    with pytest.raises(ValueError, match="got one shard"):
        check_shard_specs(spec)
    with pytest.raises(ValueError, match="got 1 of the plan's 2"):
        check_shard_specs([spec])
    other = {**spec, "plan": "d/r/q", "index": 1}
    with pytest.raises(ValueError, match="2 different plans"):
        check_shard_specs([spec, other])
    assert check_shard_specs([spec, {**spec, "index": 1}])[1]["index"] == 1


def test_task_group_wires_plan_mapped_shards_and_load():
    import datetime

    from airflow.providers.common.compat.sdk import DAG

    from airflow_provider_dicom.operators.sharded_group import dicom_sharded_export

    with DAG("g", schedule=None, start_date=datetime.datetime(2025, 1, 1)) as dag:
        dicom_sharded_export(
            "export", source="/data", destination_table_uri="bq://proj-1.d.t", staging_uri="gs://bucket-1/s",
            shards=4, max_active_shards=2, write_disposition="WRITE_TRUNCATE",
        )
    plan, shard, load = (dag.get_task(f"export.{name}") for name in ("plan", "shard", "load"))
    assert shard.upstream_task_ids == {"export.plan"}
    assert load.upstream_task_ids == {"export.plan", "export.shard"}
    assert shard.partial_kwargs["max_active_tis_per_dagrun"] == 2
    assert plan.write_disposition == load.write_disposition == "WRITE_TRUNCATE"
