"""The local export against the BigQuery stand-in: Google's destination rules, schema growth,
filter files, failure reporting, and the two queries of Google's guide on the resulting table.

Every refused export is also checked to have refused *before reading any file* (the progress
callback never ran) and to have left the destination exactly as it was.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from google.cloud import bigquery
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from airflow_provider_dicom.export import guide_queries
from airflow_provider_dicom.export.bigquery import DestinationError, ExportError, export_to_bigquery
from airflow_provider_dicom.filters.files import FilterFileError

pytestmark = pytest.mark.integration

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SF = bigquery.SchemaField


# -- test data -----------------------------------------------------------------------------------


def write_instance(
    folder: Path,
    *,
    study: str | None = None,
    series: str | None = None,
    sop: str | None = None,
    patient_id: str = "PAT-1",
    study_date: str = "20200131",
    study_time: str = "123456",
    **elements,
) -> Dataset:
    """A small CT header written as a DICOM file (Part 10) under `folder`, fresh UIDs by default."""
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop or generate_uid()
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = "Doe^Jane"
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.Modality = "CT"
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    return ds


def code_item(value: str, scheme: str = "DCM", meaning: str | None = None) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    if meaning is not None:
        item.CodeMeaning = meaning
    return item


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three instances: two in one series of study A, one in study B."""
    root = tmp_path / "dicom"
    study_a, series_a = generate_uid(), generate_uid()
    write_instance(root / "a", study=study_a, series=series_a, patient_id="PAT-A", InstanceNumber=1)
    write_instance(root / "a", study=study_a, series=series_a, patient_id="PAT-A", InstanceNumber=2)
    write_instance(root / "b", patient_id="PAT-B", study_date="20210615", InstanceNumber=1)
    return root


class ProgressSpy:
    """Records progress calls: zero calls proves the export never read a file."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, result) -> None:
        self.calls += 1


def rows(client: bigquery.Client, table_id: str, columns: str = "*", order: str = "SOPInstanceUID") -> list[dict]:
    return [dict(row) for row in client.query(f"SELECT {columns} FROM `{table_id}` ORDER BY {order}").result()]


def column_types(client: bigquery.Client, table_id: str) -> dict[str, tuple[str, str]]:
    return {f.name: (f.field_type, f.mode) for f in client.get_table(table_id).schema}


def seed_table(client: bigquery.Client, table_id: str, with_rows: bool = True) -> None:
    """An existing table of someone else's making: one STRING column, optionally one row."""
    client.create_table(bigquery.Table(table_id, schema=[SF("Legacy", "STRING")]))
    if with_rows:
        config = bigquery.LoadJobConfig(source_format="NEWLINE_DELIMITED_JSON", schema=[SF("Legacy", "STRING")])
        client.load_table_from_file(io.BytesIO(b'{"Legacy": "old row"}\n'), table_id, job_config=config).result()


def assert_untouched(client: bigquery.Client, table_id: str, with_rows: bool = True) -> None:
    assert [f.name for f in client.get_table(table_id).schema] == ["Legacy"]
    assert rows(client, table_id, order="Legacy") == ([{"Legacy": "old row"}] if with_rows else [])


# -- table missing -> created --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("write_disposition", "force"),
    [(None, None), (None, False), (None, True), ("WRITE_EMPTY", None), ("write-truncate", None), ("WRITE_APPEND", None)],
)
def test_missing_table_is_created_whatever_the_rule(bigquery_standin, bq_dataset, folder, write_disposition, force):
    table_id = f"{bq_dataset}.instances"
    result = export_to_bigquery(
        folder, f"bq://{table_id}", write_disposition=write_disposition, force=force, client=bigquery_standin
    )
    assert result.table_written and result.instances_exported == 3
    assert result.failures == [] and result.not_dicom_count == 0 and result.filtered_out_count == 0
    table = bigquery_standin.get_table(table_id)
    assert table.num_rows == 3
    assert result.column_count == sum(1 + _nested_count(f) for f in table.schema)


def _nested_count(field: bigquery.SchemaField) -> int:
    return sum(1 + _nested_count(child) for child in field.fields)


def test_created_table_has_the_dicom_types_and_values(bigquery_standin, bq_dataset, tmp_path):
    study, series = generate_uid(), generate_uid()
    ds = write_instance(
        tmp_path / "one",
        study=study,
        series=series,
        study_time="123456.789",
        AcquisitionDateTime="20200131123456.789+0100",
        ImageType=["ORIGINAL", "PRIMARY", "AXIAL"],
        PixelSpacing=["0.50", "0.5"],
        SliceThickness="0.50",
        Rows=512,
        ProcedureCodeSequence=Sequence([code_item("113691", meaning="IHE Profile")]),
    )
    table_id = f"{bq_dataset}.typed"
    export_to_bigquery(tmp_path / "one", f"bq://{table_id}", client=bigquery_standin)

    types = column_types(bigquery_standin, table_id)
    assert types["StudyDate"] == ("DATE", "NULLABLE")
    assert types["StudyTime"] == ("TIME", "NULLABLE")
    assert types["AcquisitionDateTime"] == ("TIMESTAMP", "NULLABLE")
    assert types["ImageType"] == ("STRING", "REPEATED")
    assert types["PixelSpacing"] == ("STRING", "REPEATED")  # DS stays text
    assert types["Rows"] == ("INTEGER", "NULLABLE")
    assert types["PatientName"] == ("RECORD", "NULLABLE")
    assert types["ProcedureCodeSequence"] == ("RECORD", "REPEATED")
    assert types["TransferSyntaxUID"] == ("STRING", "NULLABLE")  # file meta elements are columns
    assert list(types)[-4:] == ["Type", "LastUpdated", "StorageClass", "BlobStorageSize"]

    (row,) = rows(
        bigquery_standin,
        table_id,
        "SOPInstanceUID, StudyDate, StudyTime, AcquisitionDateTime, ImageType, PixelSpacing, SliceThickness, "
        "Rows, PatientName.Alphabetic.FamilyName AS family, PatientName.Alphabetic.GivenName AS given, "
        "ProcedureCodeSequence, Type, StorageClass, BlobStorageSize",
    )
    import datetime as dt

    assert row["SOPInstanceUID"] == ds.SOPInstanceUID
    assert row["StudyDate"] == dt.date(2020, 1, 31)
    assert row["StudyTime"] == dt.time(12, 34, 56, 789000)
    assert row["AcquisitionDateTime"] == dt.datetime(2020, 1, 31, 11, 34, 56, 789000, tzinfo=dt.timezone.utc)
    assert row["ImageType"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert row["PixelSpacing"] == ["0.50", "0.5"] and row["SliceThickness"] == "0.50"
    assert row["Rows"] == 512
    assert (row["family"], row["given"]) == ("Doe", "Jane")
    assert row["ProcedureCodeSequence"][0]["CodeValue"] == "113691"
    assert row["ProcedureCodeSequence"][0]["CodeMeaning"] == "IHE Profile"
    assert (row["Type"], row["StorageClass"]) == ("CREATE", "STANDARD")
    assert row["BlobStorageSize"] == (tmp_path / "one" / f"{ds.SOPInstanceUID}.dcm").stat().st_size


def test_missing_dataset_is_an_error_naming_it_before_any_file_is_read(bigquery_standin, folder):
    spy = ProgressSpy()
    with pytest.raises(DestinationError, match=r"dataset local-dicom\.no_such_dataset does not exist"):
        export_to_bigquery(folder, "bq://local-dicom.no_such_dataset.t", client=bigquery_standin, progress=spy)
    assert spy.calls == 0
    assert "no_such_dataset" not in [d.dataset_id for d in bigquery_standin.list_datasets()]


# -- legacy force --------------------------------------------------------------------------------


@pytest.mark.parametrize("force", [None, False])
@pytest.mark.parametrize("with_rows", [True, False])
def test_existing_table_without_force_is_an_error_even_when_empty(bigquery_standin, bq_dataset, folder, force, with_rows):
    table_id = f"{bq_dataset}.existing"
    seed_table(bigquery_standin, table_id, with_rows)
    spy = ProgressSpy()
    with pytest.raises(DestinationError, match=rf"table bq://{table_id} already exists: set force=True"):
        export_to_bigquery(folder, f"bq://{table_id}", force=force, client=bigquery_standin, progress=spy)
    assert spy.calls == 0
    assert_untouched(bigquery_standin, table_id, with_rows)


def test_existing_table_with_force_is_replaced(bigquery_standin, bq_dataset, folder):
    table_id = f"{bq_dataset}.existing"
    seed_table(bigquery_standin, table_id)
    result = export_to_bigquery(folder, f"bq://{table_id}", force=True, client=bigquery_standin)
    assert result.write_disposition == "WRITE_TRUNCATE"
    types = column_types(bigquery_standin, table_id)
    assert "Legacy" not in types and "SOPInstanceUID" in types
    assert sorted(r["PatientID"] for r in rows(bigquery_standin, table_id, "PatientID")) == ["PAT-A", "PAT-A", "PAT-B"]


# -- WRITE_EMPTY ---------------------------------------------------------------------------------


def test_write_empty_into_an_existing_empty_table_succeeds_and_keeps_its_columns(bigquery_standin, bq_dataset, folder):
    table_id = f"{bq_dataset}.empty"
    seed_table(bigquery_standin, table_id, with_rows=False)
    result = export_to_bigquery(folder, f"bq://{table_id}", write_disposition="write-empty", client=bigquery_standin)
    assert result.instances_exported == 3
    names = [f.name for f in bigquery_standin.get_table(table_id).schema]
    assert names[0] == "Legacy" and "SOPInstanceUID" in names  # existing columns first, new ones added
    assert len(rows(bigquery_standin, table_id, "SOPInstanceUID")) == 3
    job = bigquery_standin.get_job(result.job_id)
    assert job.write_disposition == "WRITE_APPEND"
    assert job.schema_update_options == ["ALLOW_FIELD_ADDITION"]


def test_write_empty_into_a_non_empty_table_is_an_error_before_any_file_is_read(bigquery_standin, bq_dataset, folder):
    table_id = f"{bq_dataset}.full"
    seed_table(bigquery_standin, table_id)
    spy = ProgressSpy()
    with pytest.raises(DestinationError, match=rf"table bq://{table_id} is not empty \(1 rows\)"):
        export_to_bigquery(folder, f"bq://{table_id}", write_disposition="WRITE_EMPTY", client=bigquery_standin, progress=spy)
    assert spy.calls == 0
    assert_untouched(bigquery_standin, table_id)


# -- WRITE_TRUNCATE ------------------------------------------------------------------------------


def test_write_truncate_replaces_rows_and_schema(bigquery_standin, bq_dataset, folder):
    table_id = f"{bq_dataset}.replace"
    seed_table(bigquery_standin, table_id)
    result = export_to_bigquery(folder, f"bq://{table_id}", write_disposition="WRITE_TRUNCATE", client=bigquery_standin)
    assert result.instances_exported == 3
    assert "Legacy" not in column_types(bigquery_standin, table_id)
    assert bigquery_standin.get_table(table_id).num_rows == 3


def test_write_truncate_failing_while_reading_leaves_the_old_table(bigquery_standin, bq_dataset, folder):
    table_id = f"{bq_dataset}.atomic"
    seed_table(bigquery_standin, table_id)

    def crash_after_two_files(result):
        if result.files_seen == 2:
            raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match="worker lost"):
        export_to_bigquery(
            folder, f"bq://{table_id}", write_disposition="WRITE_TRUNCATE", client=bigquery_standin,
            progress=crash_after_two_files,
        )
    assert_untouched(bigquery_standin, table_id)


class CorruptUploadClient:
    """A real client whose load uploads only the first half of the rows file: BigQuery must reject
    the whole job (a row cut in the middle is not JSON), as it would a broken upload."""

    def __init__(self, inner: bigquery.Client) -> None:
        self._inner = inner
        self.loads = 0

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def load_table_from_file(self, file_obj, destination, **kwargs):
        self.loads += 1
        if kwargs.get("rewind"):  # as the real client does
            file_obj.seek(0)
        data = file_obj.read()
        assert data.count(b"\n") == 3  # one row a line
        kwargs["rewind"] = False
        return self._inner.load_table_from_file(io.BytesIO(data[: len(data) // 2]), destination, **kwargs)


def test_write_truncate_failing_in_the_load_job_leaves_the_old_table(bigquery_standin, bq_dataset, folder):
    table_id = f"{bq_dataset}.atomic"
    seed_table(bigquery_standin, table_id)
    client = CorruptUploadClient(bigquery_standin)
    with pytest.raises(ExportError, match=rf"BigQuery load job \S+ into bq://{table_id} failed"):
        export_to_bigquery(folder, f"bq://{table_id}", write_disposition="WRITE_TRUNCATE", client=client)
    assert client.loads == 1
    assert_untouched(bigquery_standin, table_id)


# -- WRITE_APPEND --------------------------------------------------------------------------------


def test_write_append_adds_rows_and_the_columns_new_instances_bring(bigquery_standin, bq_dataset, tmp_path):
    table_id = f"{bq_dataset}.grow"
    first, second = tmp_path / "first", tmp_path / "second"
    old = write_instance(first, ProcedureCodeSequence=Sequence([code_item("A1")]))
    new = write_instance(
        second,
        BodyPartExamined="CHEST",  # a new top-level column
        ProcedureCodeSequence=Sequence([code_item("B2", meaning="new nested field")]),  # CodeMeaning is new
    )
    export_to_bigquery(first, f"bq://{table_id}", write_disposition="WRITE_APPEND", client=bigquery_standin)
    before = [f.name for f in bigquery_standin.get_table(table_id).schema]
    assert "BodyPartExamined" not in before

    result = export_to_bigquery(second, f"bq://{table_id}", write_disposition="WRITE_APPEND", client=bigquery_standin)
    assert result.instances_exported == 1

    after = [f.name for f in bigquery_standin.get_table(table_id).schema]
    assert after[: len(before)] == before  # existing columns keep their place
    assert "BodyPartExamined" in after[len(before):]
    got = rows(bigquery_standin, table_id, "SOPInstanceUID, BodyPartExamined, ProcedureCodeSequence")
    by_sop = {r["SOPInstanceUID"]: r for r in got}
    assert set(by_sop) == {old.SOPInstanceUID, new.SOPInstanceUID}
    assert by_sop[old.SOPInstanceUID]["BodyPartExamined"] is None
    assert by_sop[new.SOPInstanceUID]["BodyPartExamined"] == "CHEST"
    assert by_sop[new.SOPInstanceUID]["ProcedureCodeSequence"][0]["CodeValue"] == "B2"

    # The stand-in drops fields added inside an existing RECORD (real BigQuery adds them), so the
    # nested growth is checked on what the load job asked BigQuery to do.
    job = bigquery_standin.get_job(result.job_id)
    assert job.write_disposition == "WRITE_APPEND"
    assert job.schema_update_options == ["ALLOW_FIELD_ADDITION"]
    job_fields = {f.name: f for f in job.schema}
    assert [f.name for f in job.schema][: len(before)] == before
    sequence_fields = [f.name for f in job_fields["ProcedureCodeSequence"].fields]
    assert {"CodeValue", "CodingSchemeDesignator", "CodeMeaning"} <= set(sequence_fields)
    assert job_fields["BodyPartExamined"].field_type == "STRING"


def test_write_append_without_new_columns_asks_for_no_schema_update(bigquery_standin, bq_dataset, tmp_path):
    table_id = f"{bq_dataset}.same"
    write_instance(tmp_path / "a")
    write_instance(tmp_path / "b")
    export_to_bigquery(tmp_path / "a", f"bq://{table_id}", write_disposition="WRITE_APPEND", client=bigquery_standin)
    result = export_to_bigquery(tmp_path / "b", f"bq://{table_id}", write_disposition="WRITE_APPEND", client=bigquery_standin)
    assert not bigquery_standin.get_job(result.job_id).schema_update_options
    assert bigquery_standin.get_table(table_id).num_rows == 2


def test_write_append_with_a_conflicting_column_type_is_an_error_naming_it(bigquery_standin, bq_dataset, folder):
    table_id = f"{bq_dataset}.conflict"
    bigquery_standin.create_table(bigquery.Table(table_id, schema=[SF("PatientID", "INTEGER")]))
    with pytest.raises(DestinationError, match=r"column 'PatientID' is INTEGER in one schema and STRING"):
        export_to_bigquery(folder, f"bq://{table_id}", write_disposition="WRITE_APPEND", client=bigquery_standin)
    assert [f.name for f in bigquery_standin.get_table(table_id).schema] == ["PatientID"]
    assert bigquery_standin.get_table(table_id).num_rows == 0


def test_force_and_disposition_together_is_refused_before_any_call(folder):
    with pytest.raises(ValueError, match="not both"):
        export_to_bigquery(folder, "bq://local-dicom.d.t", write_disposition="WRITE_APPEND", force=True, client=object())


# -- filter files --------------------------------------------------------------------------------


@pytest.fixture
def filter_folder(tmp_path: Path) -> dict:
    """Study S1 (series A: 2 instances, series B: 1), study S2 (1), study S3 (1)."""
    root = tmp_path / "dicom"
    s1, s2, s3 = generate_uid(), generate_uid(), generate_uid()
    series_a, series_b = generate_uid(), generate_uid()
    made = {
        "a1": write_instance(root, study=s1, series=series_a),
        "a2": write_instance(root, study=s1, series=series_a),
        "b1": write_instance(root, study=s1, series=series_b),
        "s2": write_instance(root, study=s2),
        "s3": write_instance(root, study=s3),
    }
    return {"root": root, "made": made, "s1": s1, "series_b": series_b}


def _filter_text(data: dict) -> str:
    made = data["made"]
    s2 = made["s2"]
    return (
        f"/studies/{data['s1']}/series/{data['series_b']}\r\n"  # the whole series B of S1
        "\r\n"
        f"/studies/{s2.StudyInstanceUID}/series/{s2.SeriesInstanceUID}/instances/{s2.SOPInstanceUID}\r\n"
    )


def test_local_filter_file_restricts_the_export(bigquery_standin, bq_dataset, filter_folder, tmp_path):
    filter_path = tmp_path / "filter.txt"
    filter_path.write_text(_filter_text(filter_folder), newline="")
    table_id = f"{bq_dataset}.subset"
    result = export_to_bigquery(filter_folder["root"], f"bq://{table_id}", filter_config=str(filter_path), client=bigquery_standin)
    made = filter_folder["made"]
    expected = sorted([made["b1"].SOPInstanceUID, made["s2"].SOPInstanceUID])
    assert [r["SOPInstanceUID"] for r in rows(bigquery_standin, table_id, "SOPInstanceUID")] == expected
    assert (result.instances_exported, result.filtered_out_count) == (2, 3)


def test_gcs_filter_file_restricts_the_export(bigquery_standin, bq_dataset, filter_folder, gcs_bucket, gcs_standin):
    gcs_bucket.blob("filters/subset.txt").upload_from_string(f"/studies/{filter_folder['s1']}\n")
    table_id = f"{bq_dataset}.subset"
    result = export_to_bigquery(
        filter_folder["root"], f"bq://{table_id}", filter_config=f"gs://{gcs_bucket.name}/filters/subset.txt",
        client=bigquery_standin, storage_client=gcs_standin,
    )
    made = filter_folder["made"]
    expected = sorted(made[k].SOPInstanceUID for k in ("a1", "a2", "b1"))
    assert [r["SOPInstanceUID"] for r in rows(bigquery_standin, table_id, "SOPInstanceUID")] == expected
    assert (result.instances_exported, result.filtered_out_count) == (3, 2)


def test_gcs_filter_file_is_read_through_storage_emulator_host_without_a_client(
    bigquery_standin, bq_dataset, filter_folder, gcs_bucket
):
    gcs_bucket.blob("f.txt").upload_from_string(f"/studies/{filter_folder['s1']}/series/{filter_folder['series_b']}")
    result = export_to_bigquery(
        filter_folder["root"], f"bq://{bq_dataset}.t", filter_config=f"gs://{gcs_bucket.name}/f.txt", client=bigquery_standin
    )
    assert (result.instances_exported, result.filtered_out_count) == (1, 4)


def test_missing_gcs_filter_file_is_an_error_naming_it(bigquery_standin, bq_dataset, folder, gcs_bucket, gcs_standin):
    uri = f"gs://{gcs_bucket.name}/missing.txt"
    with pytest.raises(FileNotFoundError, match=f"filter file {uri} does not exist"):
        export_to_bigquery(folder, f"bq://{bq_dataset}.t", filter_config=uri, client=bigquery_standin, storage_client=gcs_standin)
    assert list(bigquery_standin.list_tables(bq_dataset)) == []


def test_bad_filter_line_is_an_error_before_anything_is_read_or_written(bigquery_standin, bq_dataset, folder, tmp_path):
    filter_path = tmp_path / "filter.txt"
    filter_path.write_text("/studies/1.2.3\n/series/4.5.6\n")
    spy = ProgressSpy()
    with pytest.raises(FilterFileError, match=r"line 2: '/series/4\.5\.6'"):
        export_to_bigquery(folder, f"bq://{bq_dataset}.t", filter_config=filter_path, client=bigquery_standin, progress=spy)
    assert spy.calls == 0
    assert list(bigquery_standin.list_tables(bq_dataset)) == []


def test_a_filter_matching_nothing_creates_no_table(bigquery_standin, bq_dataset, folder, tmp_path):
    filter_path = tmp_path / "filter.txt"
    filter_path.write_text("/studies/9.9.9\n")
    result = export_to_bigquery(folder, f"bq://{bq_dataset}.t", filter_config=filter_path, client=bigquery_standin)
    assert (result.instances_exported, result.filtered_out_count, result.table_written) == (0, 3, False)
    assert list(bigquery_standin.list_tables(bq_dataset)) == []


# -- failures and files that are not DICOM -------------------------------------------------------


def test_failures_and_non_dicom_files_are_counted_and_good_instances_exported(bigquery_standin, bq_dataset, tmp_path):
    root = tmp_path / "mixed"
    good = [write_instance(root), write_instance(root / "sub")]
    (root / "README.txt").write_text("not an image")
    (root / "notes.json").write_text("{}")
    truncated = root / "truncated.dcm"
    whole = (root / f"{good[0].SOPInstanceUID}.dcm").read_bytes()
    truncated.write_bytes(whole[: len(whole) - 20])  # DICOM preamble and header cut mid-element

    result = export_to_bigquery(root, f"bq://{bq_dataset}.mixed", client=bigquery_standin)

    assert result.instances_exported == 2
    assert result.not_dicom_count == 2
    assert [path for path, _ in result.failures] == [str(truncated)]
    assert result.failures[0][1]  # a reason is given
    summary = json.loads(json.dumps(result.to_dict()))
    assert summary["failure_count"] == 1 and summary["failures"][0]["path"] == str(truncated)
    assert summary["instances_exported"] == 2 and summary["not_dicom_count"] == 2
    exported = {r["SOPInstanceUID"] for r in rows(bigquery_standin, f"{bq_dataset}.mixed", "SOPInstanceUID")}
    assert exported == {ds.SOPInstanceUID for ds in good}


def test_a_folder_without_dicom_changes_nothing(bigquery_standin, bq_dataset, tmp_path):
    root = tmp_path / "nothing"
    root.mkdir()
    (root / "a.txt").write_text("hello")
    table_id = f"{bq_dataset}.keep"
    seed_table(bigquery_standin, table_id)
    result = export_to_bigquery(root, f"bq://{table_id}", write_disposition="WRITE_TRUNCATE", client=bigquery_standin)
    assert (result.instances_exported, result.not_dicom_count, result.table_written) == (0, 1, False)
    assert_untouched(bigquery_standin, table_id)
    result = export_to_bigquery(root, f"bq://{bq_dataset}.never", client=bigquery_standin)
    assert [t.table_id for t in bigquery_standin.list_tables(bq_dataset)] == ["keep"]


def test_missing_source_folder_is_an_error_naming_it(bigquery_standin, bq_dataset, tmp_path):
    with pytest.raises(NotADirectoryError, match="nowhere"):
        export_to_bigquery(tmp_path / "nowhere", f"bq://{bq_dataset}.t", client=bigquery_standin)


def test_the_whole_pydicom_corpus_loads(bigquery_standin, bq_dataset, pydicom_corpus):
    result = export_to_bigquery(pydicom_corpus, f"bq://{bq_dataset}.corpus", client=bigquery_standin)
    table = bigquery_standin.get_table(f"{bq_dataset}.corpus")
    # 176 files: 148 convert, and 28 of those repeat the SOPInstanceUID of another file (the same
    # instance in other transfer syntaxes), so 120 distinct instances, one row each.
    assert result.instances_exported == 120
    assert result.duplicate_count == 28 and len(result.duplicates) == 28
    assert table.num_rows == result.instances_exported
    (distinct,) = rows(bigquery_standin, f"{bq_dataset}.corpus", "COUNT(DISTINCT SOPInstanceUID) AS n", "n")
    assert distinct["n"] == 120
    assert result.files_seen == len([p for p in pydicom_corpus.rglob("*") if p.is_file()])
    for path, reason in result.failures:
        assert path.startswith(str(pydicom_corpus)) and reason


def test_worker_processes_write_the_same_table(bigquery_standin, bq_dataset, pydicom_corpus):
    one = export_to_bigquery(pydicom_corpus, f"bq://{bq_dataset}.one", client=bigquery_standin)
    two = export_to_bigquery(pydicom_corpus, f"bq://{bq_dataset}.two", client=bigquery_standin, processes=2)
    assert two.to_dict() | {"table_uri": None, "job_id": None} == one.to_dict() | {"table_uri": None, "job_id": None}
    schema_one = bigquery_standin.get_table(f"{bq_dataset}.one").schema
    assert bigquery_standin.get_table(f"{bq_dataset}.two").schema == schema_one
    rows_one = rows(bigquery_standin, f"{bq_dataset}.one")
    assert rows(bigquery_standin, f"{bq_dataset}.two") == rows_one and len(rows_one) == 120


def test_json_schema_variant(bigquery_standin, bq_dataset, folder):
    table_id = f"{bq_dataset}.json"
    result = export_to_bigquery(folder, f"bq://{table_id}", schema="json", client=bigquery_standin)
    assert result.instances_exported == 3
    types = column_types(bigquery_standin, table_id)
    assert types["Metadata"] == ("JSON", "NULLABLE")
    assert types["SOPInstanceUID"] == ("STRING", "NULLABLE")
    assert "PatientID" not in types
    got = rows(bigquery_standin, table_id, "StudyInstanceUID, SOPInstanceUID, Metadata")
    assert len(got) == 3 and all(r["Metadata"] for r in got)


# -- the two queries of Google's guide -----------------------------------------------------------


def test_the_guides_patient_search_returns_dicomweb_paths(bigquery_standin, bq_dataset, tmp_path):
    root = tmp_path / "guide"
    study, series = generate_uid(), generate_uid()
    mine = [write_instance(root, study=study, series=series, patient_id=guide_queries.GUIDE_PATIENT_ID) for _ in range(2)]
    write_instance(root, patient_id="19046")
    write_instance(root, patient_id="190450")
    table = f"bq://{bq_dataset}.guide"
    export_to_bigquery(root, table, client=bigquery_standin)

    sql = guide_queries.patient_search_sql(table)
    assert "WHERE PatientID = '19045';" in sql
    got = sorted(row["DICOMwebPath"] for row in bigquery_standin.query(sql).result())
    assert got == sorted(
        f"/dicomWeb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        for ds in mine
    )
    # another patient, with a quote in its id that must not break the statement
    odd = write_instance(tmp_path / "odd", patient_id="O'Brien")
    export_to_bigquery(tmp_path / "odd", table, write_disposition="WRITE_APPEND", client=bigquery_standin)
    got = [row["DICOMwebPath"] for row in bigquery_standin.query(guide_queries.patient_search_sql(table, "O'Brien")).result()]
    assert got == [f"/dicomWeb/studies/{odd.StudyInstanceUID}/series/{odd.SeriesInstanceUID}/instances/{odd.SOPInstanceUID}"]


def test_the_guides_latest_studies_query(bigquery_standin, bq_dataset, tmp_path):
    root = tmp_path / "guide"
    studies = {}
    # 12 studies, one per month of 2021, study k with k+1 instances; the query keeps the latest 10.
    for month in range(1, 13):
        study = generate_uid()
        for _ in range(month % 3 + 1):
            write_instance(root, study=study, patient_id=f"P{month:02d}", study_date=f"2021{month:02d}15", study_time="083000")
        studies[study] = (month, month % 3 + 1)
    write_instance(root, patient_id="NODATE", study_date="")  # no StudyDate: NULL, sorts last
    table = f"bq://{bq_dataset}.latest"
    export_to_bigquery(root, table, client=bigquery_standin)

    got = [dict(row) for row in bigquery_standin.query(guide_queries.latest_studies_sql(table)).result()]
    assert list(got[0]) == ["StudyDateTime", "PatientID", "StudyInstanceUID", "InstanceCount"]
    expected = sorted(studies.items(), key=lambda item: -item[1][0])[:10]
    assert [(r["StudyInstanceUID"], r["InstanceCount"]) for r in got] == [(uid, n) for uid, (_, n) in expected]
    assert [r["StudyDateTime"] for r in got] == [f"2021-{month:02d}-15 08:30:00" for _, (month, _) in expected]
    assert [r["PatientID"] for r in got] == [f"P{month:02d}" for _, (month, _) in expected]


# -- what lineage reports ------------------------------------------------------------------------


@pytest.mark.parametrize("load_job_id", [None, "dicom_export_lineage_check"])
def test_the_result_keeps_the_schema_the_table_was_written_with_for_lineage(
    bigquery_standin, bq_dataset, folder, load_job_id
):
    """OpenLineage's schema facet comes from `result.fields`: the table's columns after the load,
    existing ones first when appending; outputStatistics' size from the job, when reported."""
    table_id = f"{bq_dataset}.lineage_{'chain' if load_job_id else 'random'}"
    seed_table(bigquery_standin, table_id)
    if load_job_id:
        load_job_id = f"{load_job_id}_{bq_dataset.rsplit('.', 1)[-1]}"
    result = export_to_bigquery(
        folder, f"bq://{table_id}", write_disposition="WRITE_APPEND", client=bigquery_standin,
        load_job_id=load_job_id,
    )
    assert result.table_written and result.instances_exported == 3
    names = [f.name for f in result.fields]
    assert names[0] == "Legacy" and {"SOPInstanceUID", "PatientID", "Modality"} <= set(names)
    assert names == [f.name for f in bigquery_standin.get_table(table_id).schema]
    assert result.output_bytes is None or result.output_bytes > 0
