"""DICOM files from a folder, a gs:// prefix and a DICOMweb server copied to Cloud Storage in the
Cloud Healthcare layout, against the GCS stand-in and Orthanc."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest

from airflow_provider_dicom.export.gcs_copy import export_to_gcs

pytestmark = pytest.mark.integration

FILES = ("CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "rtplan.dcm", "README.txt")


def _folder(tmp_path: Path, corpus: Path) -> Path:
    folder = tmp_path / "archive"
    for name in FILES:
        (folder / "nested").mkdir(parents=True, exist_ok=True)
        (folder / "nested" / name).write_bytes((corpus / name).read_bytes())
    return folder


def _expected(corpus: Path) -> dict[str, bytes]:
    """Object name under the prefix -> the bytes of the first file carrying that SOPInstanceUID."""
    out: dict[str, bytes] = {}
    for name in FILES:
        if not name.endswith(".dcm"):
            continue
        data = (corpus / name).read_bytes()
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        out.setdefault(f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm", data)
    return out


def _copied(client, bucket, prefix: str) -> dict[str, bytes]:
    return {
        blob.name.removeprefix(prefix + "/"): blob.download_as_bytes()
        for blob in client.list_blobs(bucket, prefix=prefix + "/")
    }


def test_folder_files_land_in_the_healthcare_layout(tmp_path, pydicom_corpus, gcs_standin, gcs_bucket):
    result = export_to_gcs(_folder(tmp_path, pydicom_corpus), f"gs://{gcs_bucket.name}/out", storage_client=gcs_standin)
    expected = _expected(pydicom_corpus)
    assert _copied(gcs_standin, gcs_bucket, "out") == expected
    # MR_small_RLE is MR_small in another transfer syntax: one instance, so one object (the first file's).
    assert (result.instances_copied, result.duplicate_count, result.not_dicom_count) == (3, 1, 1)
    assert result.bytes_copied == sum(map(len, expected.values()))
    assert gcs_bucket.get_blob(f"out/{next(iter(expected))}").content_type == "application/dicom"


def test_gs_prefix_is_copied_server_side_with_a_filter(tmp_path, pydicom_corpus, gcs_standin, gcs_bucket):
    from airflow_provider_dicom.filters.files import FilterSet

    for name in FILES:
        gcs_bucket.blob(f"src/{name}").upload_from_filename(str(pydicom_corpus / name))
    ct = pydicom.dcmread(pydicom_corpus / "CT_small.dcm", stop_before_pixels=True)
    only_ct = FilterSet.parse(f"/studies/{ct.StudyInstanceUID}\n")
    result = export_to_gcs(
        f"gs://{gcs_bucket.name}/src", f"gs://{gcs_bucket.name}/subset", storage_client=gcs_standin,
        filter_config=only_ct,
    )
    copied = _copied(gcs_standin, gcs_bucket, "subset")
    assert list(copied) == [f"{ct.StudyInstanceUID}/{ct.SeriesInstanceUID}/{ct.SOPInstanceUID}.dcm"]
    assert copied[next(iter(copied))] == (pydicom_corpus / "CT_small.dcm").read_bytes()
    assert result.filtered_out_count == 3 and result.instances_copied == 1


def test_dicomweb_instances_are_retrieved_and_copied(orthanc_standin, pydicom_corpus, gcs_standin, gcs_bucket):
    from airflow_provider_dicom.filters.files import FilterSet
    from airflow_provider_dicom.sources.dicomweb import DicomWebClient

    extra = orthanc_standin.extra
    client = DicomWebClient(extra["dicomweb_url"], auth=(extra["username"], extra["password"]))
    ct = pydicom.dcmread(pydicom_corpus / "CT_small.dcm", stop_before_pixels=True)
    result = export_to_gcs(
        extra["dicomweb_url"], f"gs://{gcs_bucket.name}/web", storage_client=gcs_standin,
        dicomweb_client=client, filter_config=FilterSet.parse(f"/studies/{ct.StudyInstanceUID}\n"),
    )
    assert result.instances_copied == 1, result.to_dict()
    (name, data), = _copied(gcs_standin, gcs_bucket, "web").items()
    assert name == f"{ct.StudyInstanceUID}/{ct.SeriesInstanceUID}/{ct.SOPInstanceUID}.dcm"
    copy = pydicom.dcmread(io.BytesIO(data))
    original = pydicom.dcmread(pydicom_corpus / "CT_small.dcm")
    assert copy.SOPInstanceUID == original.SOPInstanceUID
    assert copy.PixelData == original.PixelData  # the whole instance, pixels included


def test_transcoding_and_store_sources_are_refused_before_any_call(tmp_path, gcs_standin):
    with pytest.raises(ValueError, match="image/jpeg"):
        export_to_gcs(tmp_path, "gs://some-bucket/x", storage_client=gcs_standin, mime_type="image/jpeg")
    with pytest.raises(ValueError, match="dicomStores.export"):
        export_to_gcs("projects/p/locations/l/datasets/d/dicomStores/s", "gs://some-bucket/x", storage_client=gcs_standin)


COPY_DAG = '''
import datetime
import json
from pathlib import Path

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_dicom.operators.export_gcs import DicomExportToGcsOperator

with DAG("dicom_copy_to_gcs", schedule=None, start_date=datetime.datetime(2025, 1, 1),
         params={"folder": "", "bucket": "", "record": ""}) as dag:
    copy = DicomExportToGcsOperator(
        task_id="copy", source="{{ params.folder }}", uri_prefix="gs://{{ params.bucket }}/from-dag",
        mime_type="application/dicom; transfer-syntax=*",
    )

    @task
    def record(summary, path):
        Path(path).write_text(json.dumps(summary))

    record(copy.output, "{{ params.record }}")
'''


def test_operator_copies_a_folder_in_a_dag_run(tmp_path, pydicom_corpus, gcs_standin, gcs_bucket, airflow_db):
    import json
    import os

    from airflow.dag_processing.dagbag import DagBag

    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    (folder / "dicom_copy_test_dag.py").write_text(COPY_DAG)
    bag = DagBag(dag_folder=str(folder), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    record = tmp_path / "record.json"
    dag_run = bag.dags["dicom_copy_to_gcs"].test(run_conf={
        "folder": str(_folder(tmp_path, pydicom_corpus)), "bucket": gcs_bucket.name, "record": str(record),
    })
    assert {ti.task_id: ti.state for ti in dag_run.get_task_instances()} == {"copy": "success", "record": "success"}
    summary = json.loads(record.read_text())
    assert (summary["instances_copied"], summary["duplicate_count"], summary["not_dicom_count"]) == (3, 1, 1)
    assert _copied(gcs_standin, gcs_bucket, "from-dag") == _expected(pydicom_corpus)


def test_operator_refuses_transcoding_for_a_folder_at_construction():
    from airflow_provider_dicom.operators.export_gcs import DicomExportToGcsOperator

    with pytest.raises(ValueError, match="transcoding"):
        DicomExportToGcsOperator(
            task_id="t", source="/data/dicom", uri_prefix="gs://some-bucket/x", mime_type="image/png"
        )


def test_a_bucket_the_identity_may_write_but_not_get_is_still_written(tmp_path, pydicom_corpus, gcs_standin, gcs_bucket, monkeypatch):
    """The object roles (Storage Object Admin/User/Creator) lack storage.buckets.get, so checking
    the bucket answers 403 for an identity allowed to write every object: that is no reason to
    refuse. (Injected: the stand-in has no IAM.)"""
    from google.api_core.exceptions import Forbidden
    from google.cloud.storage import Bucket

    def forbidden(self, *args, **kwargs):
        raise Forbidden(f"GET https://storage.googleapis.com/storage/v1/b/{self.name}: no storage.buckets.get")

    monkeypatch.setattr(Bucket, "exists", forbidden)
    result = export_to_gcs(_folder(tmp_path, pydicom_corpus), f"gs://{gcs_bucket.name}/out", storage_client=gcs_standin)
    assert result.instances_copied == 3
    assert _copied(gcs_standin, gcs_bucket, "out") == _expected(pydicom_corpus)


def test_a_missing_bucket_is_still_refused_before_any_copy(tmp_path, pydicom_corpus, gcs_standin):
    with pytest.raises(ValueError, match="'no-such-bucket-dicom' of 'gs://no-such-bucket-dicom/out' does not exist"):
        export_to_gcs(_folder(tmp_path, pydicom_corpus), "gs://no-such-bucket-dicom/out", storage_client=gcs_standin)
