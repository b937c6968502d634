"""The sharded export against the stand-ins, step by step (plan, each shard, load), as the mapped
tasks of a DAG run them: the table equals the unsharded export's, row for row and column for
column; a shard that did not finish leaves the destination untouched; WRITE_EMPTY and
WRITE_TRUNCATE keep their meaning; a SOPInstanceUID in two shards is loaded once."""

from __future__ import annotations

import pytest

from airflow_provider_dicom.export.bigquery import DestinationError, export_to_bigquery
from airflow_provider_dicom.export.shard_export import RESULT_FILE, export_shard
from airflow_provider_dicom.export.shard_load import IncompleteShardsError, load_sharded_export
from airflow_provider_dicom.export.shard_plan import plan_sharded_export
from airflow_provider_dicom.export.staging import open_staging
from tests.helpers.table_compare import canonical_rows

pytestmark = pytest.mark.integration


def run_sharded(source, table_uri, client, staging, *, shards=3, skip=(), storage_client=None, **options):
    """Plan, run every shard but those in `skip`, load. Returns (plan, shard results, load result)."""
    plan_options = {k: v for k, v in options.items() if k in ("write_disposition", "force", "filter_config", "schema")}
    plan = plan_sharded_export(
        source, staging, table_uri, shards=shards, label="dag/run", client=client, storage_client=storage_client,
        **plan_options,
    )
    results = [
        export_shard(staging, plan.root, index, storage_client=storage_client)
        for index in range(plan.shard_count) if index not in skip
    ]
    load_options = {k: v for k, v in options.items() if k in ("write_disposition", "force", "load_from", "keep_staging")}
    loaded = load_sharded_export(staging, plan.root, table_uri, client=client, **load_options)
    return plan, results, loaded


def test_sharded_folder_export_equals_the_unsharded_table(pydicom_corpus, bigquery_standin, bq_dataset, tmp_path):
    staging = open_staging(str(tmp_path / "staging"))
    plan, shards, sharded = run_sharded(pydicom_corpus, f"bq://{bq_dataset}.sharded", bigquery_standin, staging, shards=4)
    whole = export_to_bigquery(pydicom_corpus, f"bq://{bq_dataset}.whole", client=bigquery_standin)

    assert plan.shard_count == 4
    assert [s.files_total for s in shards] == [44, 44, 44, 44]  # 176 files, contiguous, balanced
    assert sharded.files_seen == whole.files_seen == 176
    assert sharded.instances_exported == whole.instances_exported == 120
    # 28 files repeat an earlier file's SOPInstanceUID; some pairs straddle shards and are caught at load.
    assert sharded.duplicate_count == whole.duplicate_count == 28
    assert sum(s.duplicate_count for s in shards) < 28
    assert sorted(sharded.duplicates) == sorted(whole.duplicates)
    assert sorted(sharded.failures) == sorted(whole.failures)
    assert sharded.not_dicom_count == whole.not_dicom_count
    assert sharded.column_count == whole.column_count
    assert sharded.table_written and sharded.load_route == "stream"
    schema = bigquery_standin.get_table(f"{bq_dataset}.sharded").schema
    assert [f.to_api_repr() for f in schema] == [
        f.to_api_repr() for f in bigquery_standin.get_table(f"{bq_dataset}.whole").schema
    ]
    assert canonical_rows(bigquery_standin, f"{bq_dataset}.sharded") == canonical_rows(
        bigquery_standin, f"{bq_dataset}.whole"
    )
    # The staged rows and listings are removed after a successful load; the plan and its record stay.
    assert sorted(p.name for p in (tmp_path / "staging" / plan.root).rglob("*")) == ["loaded.json", "plan.json"]


def test_a_shard_that_did_not_finish_leaves_the_table_untouched(pydicom_corpus, bigquery_standin, bq_dataset, tmp_path):
    table = f"bq://{bq_dataset}.t"
    first = export_to_bigquery(pydicom_corpus / "dicomdirtests", table, client=bigquery_standin)
    before = canonical_rows(bigquery_standin, f"{bq_dataset}.t")
    staging = open_staging(str(tmp_path / "staging"))
    with pytest.raises(IncompleteShardsError, match=r"shards 1 have not finished .*table was not touched"):
        run_sharded(pydicom_corpus, table, bigquery_standin, staging, shards=3, skip={1}, write_disposition="WRITE_TRUNCATE")
    assert canonical_rows(bigquery_standin, f"{bq_dataset}.t") == before
    assert bigquery_standin.get_table(f"{bq_dataset}.t").num_rows == first.instances_exported
    # The staged shards stay for a rerun of the failed one.
    assert any((tmp_path / "staging").rglob(RESULT_FILE))


def test_write_empty_into_a_full_table_fails_at_plan_time_before_listing(pydicom_corpus, bigquery_standin, bq_dataset, tmp_path):
    table = f"bq://{bq_dataset}.t"
    export_to_bigquery(pydicom_corpus / "dicomdirtests", table, client=bigquery_standin)
    staging = open_staging(str(tmp_path / "staging"))
    with pytest.raises(DestinationError, match="is not empty"):
        plan_sharded_export(
            pydicom_corpus, staging, table, shards=2, label="l", client=bigquery_standin, write_disposition="WRITE_EMPTY"
        )
    assert not (tmp_path / "staging").exists()  # nothing was listed or staged


def test_write_truncate_replaces_the_table_with_the_whole_export(pydicom_corpus, bigquery_standin, bq_dataset, tmp_path):
    table = f"bq://{bq_dataset}.t"
    export_to_bigquery(pydicom_corpus / "dicomdirtests", table, client=bigquery_standin)
    staging = open_staging(str(tmp_path / "staging"))
    _, _, loaded = run_sharded(
        pydicom_corpus / "dicomdirtests", table, bigquery_standin, staging, shards=2, write_disposition="WRITE_TRUNCATE"
    )
    assert bigquery_standin.get_table(f"{bq_dataset}.t").num_rows == loaded.instances_exported


def test_a_sop_uid_in_two_shards_is_loaded_once_and_its_columns_only_if_kept(bigquery_standin, bq_dataset, tmp_path):
    from tests.integration.test_bigquery_export import write_instance

    source = tmp_path / "dicom"
    write_instance(source / "a", sop="1.2.3.4", InstanceNumber=1)
    write_instance(source / "b", sop="1.2.3.5", InstanceNumber=2)
    # Same SOPInstanceUID as a/, in the second shard, with an element no kept instance has.
    write_instance(source / "c", sop="1.2.3.4", InstanceNumber=3, BodyPartExamined="CHEST")
    write_instance(source / "d", InstanceNumber=4)
    staging = open_staging(str(tmp_path / "staging"))
    _, shards, loaded = run_sharded(source, f"bq://{bq_dataset}.t", bigquery_standin, staging, shards=2)
    assert [s.instances_exported for s in shards] == [2, 2]
    assert loaded.instances_exported == 3
    assert loaded.duplicate_count == 1
    assert loaded.duplicates == [str(source / "c" / "1.2.3.4.dcm")]
    table = bigquery_standin.get_table(f"{bq_dataset}.t")
    assert table.num_rows == 3
    assert "BodyPartExamined" not in {f.name for f in table.schema}
    numbers = [r["InstanceNumber"] for r in bigquery_standin.query(f"SELECT InstanceNumber FROM `{bq_dataset}.t`")]
    assert sorted(numbers) == ["1", "2", "4"]


def test_a_retried_load_does_not_load_twice(pydicom_corpus, bigquery_standin, bq_dataset, tmp_path):
    staging = open_staging(str(tmp_path / "staging"))
    table = f"bq://{bq_dataset}.t"
    plan, _, first = run_sharded(
        pydicom_corpus / "dicomdirtests", table, bigquery_standin, staging, shards=2, write_disposition="WRITE_APPEND",
        keep_staging=True,
    )
    again = load_sharded_export(staging, plan.root, table, client=bigquery_standin, write_disposition="WRITE_APPEND")
    assert again.reattached and again.job_id == first.job_id
    assert bigquery_standin.get_table(f"{bq_dataset}.t").num_rows == first.instances_exported


def test_sharded_gcs_export_with_gcs_staging_equals_the_folder_table(
    gcs_standin, gcs_bucket, pydicom_corpus, bigquery_standin, bq_dataset
):
    from tests.integration.test_gcs_export import upload_folder

    upload_folder(gcs_bucket, pydicom_corpus, "archive/corpus")
    staging = open_staging(f"gs://{gcs_bucket.name}/staging", gcs_standin)
    plan, shards, sharded = run_sharded(
        f"gs://{gcs_bucket.name}/archive/corpus", f"bq://{bq_dataset}.gcs", bigquery_standin, staging, shards=3,
        storage_client=gcs_standin,
    )
    whole = export_to_bigquery(pydicom_corpus, f"bq://{bq_dataset}.disk", client=bigquery_standin)
    assert sharded.load_route == "stream"  # the emulator cannot read gs:// itself
    assert sharded.instances_exported == whole.instances_exported
    assert sharded.duplicate_count == whole.duplicate_count
    assert canonical_rows(bigquery_standin, f"{bq_dataset}.gcs", drop=("LastUpdated",)) == canonical_rows(
        bigquery_standin, f"{bq_dataset}.disk", drop=("LastUpdated",)
    )
    left = sorted(b.name for b in gcs_standin.list_blobs(gcs_bucket, prefix=f"staging/{plan.root}"))
    assert left == [f"staging/{plan.root}/loaded.json", f"staging/{plan.root}/plan.json"]


def test_sharded_filtered_export_keeps_only_the_filter(pydicom_corpus, bigquery_standin, bq_dataset, tmp_path):
    whole = export_to_bigquery(pydicom_corpus, f"bq://{bq_dataset}.whole", client=bigquery_standin)
    uids = bigquery_standin.query(
        f"SELECT StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID FROM `{bq_dataset}.whole` "
        "ORDER BY SOPInstanceUID LIMIT 7"
    ).result()
    filter_file = tmp_path / "filter.txt"
    filter_file.write_text("".join(f"/studies/{r[0]}/series/{r[1]}/instances/{r[2]}\n" for r in uids))
    staging = open_staging(str(tmp_path / "staging"))
    _, _, loaded = run_sharded(
        pydicom_corpus, f"bq://{bq_dataset}.sub", bigquery_standin, staging, shards=3, filter_config=str(filter_file)
    )
    assert loaded.instances_exported == 7
    assert loaded.filtered_out_count > 0
    assert whole.instances_exported == 120


def test_empty_source_leaves_the_destination_alone(bigquery_standin, bq_dataset, tmp_path):
    (tmp_path / "empty").mkdir()
    staging = open_staging(str(tmp_path / "staging"))
    plan, shards, loaded = run_sharded(tmp_path / "empty", f"bq://{bq_dataset}.t", bigquery_standin, staging, shards=4)
    assert plan.shard_count == 1 and shards[0].files_seen == 0
    assert not loaded.table_written
    from google.api_core.exceptions import NotFound

    with pytest.raises(NotFound):
        bigquery_standin.get_table(f"{bq_dataset}.t")



def test_a_retried_write_empty_load_recognises_the_table_its_own_job_wrote(
    pydicom_corpus, bigquery_standin, bq_dataset, tmp_path
):
    """The load task died after its job committed but before loaded.json was written: the table is
    no longer empty, and the retry must see that its own job filled it, not fail WRITE_EMPTY."""
    staging = open_staging(str(tmp_path / "staging"))
    table = f"bq://{bq_dataset}.t"
    plan, _, first = run_sharded(
        pydicom_corpus / "dicomdirtests", table, bigquery_standin, staging, shards=2, write_disposition="WRITE_EMPTY",
        keep_staging=True,
    )
    (tmp_path / "staging" / plan.root / "loaded.json").unlink()  # the record the dead try never wrote
    again = load_sharded_export(staging, plan.root, table, client=bigquery_standin, write_disposition="WRITE_EMPTY")
    assert again.reattached and again.job_id == first.job_id and again.table_written
    assert again.instances_exported == first.instances_exported
    assert again.failure_count == first.failure_count  # the shards' counts, as the first try reported
    assert bigquery_standin.get_table(f"{bq_dataset}.t").num_rows == first.instances_exported
