"""The Cloud Healthcare side end to end: DicomStoreHook, trigger and emulator, exporting to the BigQuery
and GCS stand-ins.

DICOM files are loaded with STOW-RS; exports are started and watched through the hook (the
provider's real code path, discovery client included); results are read back from the stand-ins.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from airflow_provider_dicom.healthcare.operations import (
    CODE_CANCELLED,
    EXPORT_DICOM_DATA_METHOD,
    HealthcareApiError,
    OperationFailedError,
    OperationStatus,
)
from dicom_standins.emulator.contract import load_contract

pytestmark = pytest.mark.integration

CT, MR = "CT_small.dcm", "MR_small.dcm"


def _uids(path: Path) -> tuple[str, str, str]:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


@pytest.fixture
def loaded_store(healthcare, dicom_store, pydicom_corpus) -> str:
    """The store holding pydicom's CT and MR test files."""
    healthcare.store_instances(dicom_store, [pydicom_corpus / CT, pydicom_corpus / MR])
    return dicom_store


def _dataset_of(store: str) -> str:
    return store.rpartition("/dicomStores/")[0]


def _rows(client, table_id: str) -> list[dict]:
    return [dict(row.items()) for row in client.query(f"SELECT * FROM `{table_id}`").result()]


# -- DICOMweb ------------------------------------------------------------------------------------


def test_stow_then_qido_and_wado_metadata(healthcare, dicom_store, pydicom_corpus, tmp_path):
    not_dicom = tmp_path / "notes.txt"
    not_dicom.write_text("not DICOM")
    answer = healthcare.store_instances(dicom_store, [pydicom_corpus / CT, pydicom_corpus / MR, not_dicom])
    assert len(answer["00081199"]["Value"]) == 2  # ReferencedSOPSequence
    assert [item["00081197"]["Value"] for item in answer["00081198"]["Value"]] == [[0xC000]]  # cannot understand

    ct_study, ct_series, ct_sop = _uids(pydicom_corpus / CT)
    studies = healthcare.search(dicom_store, "studies")
    assert len(studies) == 2
    ct = next(s for s in studies if s["0020000D"]["Value"] == [ct_study])
    assert ct["00080061"]["Value"] == ["CT"] and ct["00201208"]["Value"] == [1]
    assert [i["00080018"]["Value"] for i in healthcare.search(dicom_store, "instances", Modality="MR")] == [
        [_uids(pydicom_corpus / MR)[2]]
    ]
    assert healthcare.search(dicom_store, f"studies/{ct_study}/series") [0]["0020000E"]["Value"] == [ct_series]
    metadata = healthcare.metadata(dicom_store, ct_study, ct_series, ct_sop)
    assert metadata[0]["00080018"] == {"vr": "UI", "Value": [ct_sop]}
    assert "7FE00010" not in metadata[0]  # no bulk data in metadata

    # Storing the same instance again is refused, and the store is unchanged.
    with pytest.raises(Exception, match="409"):
        healthcare.store_instances(dicom_store, [pydicom_corpus / CT])
    assert len(healthcare.search(dicom_store, "instances")) == 2


# -- export to BigQuery --------------------------------------------------------------------------


def test_export_to_bigquery_writes_the_same_table_as_the_folder_export(
    healthcare_hook, loaded_store, bq_dataset, bigquery_standin, pydicom_corpus, tmp_path
):
    operation = healthcare_hook.export_dicom_to_bigquery(loaded_store, f"bq://{bq_dataset}.from_store")
    assert operation["name"].startswith(_dataset_of(loaded_store) + "/operations/")
    assert operation["metadata"]["apiMethodName"] == EXPORT_DICOM_DATA_METHOD
    status = healthcare_hook.wait_for_operation(operation["name"], poll_interval=0.1, timeout=60)
    assert status.succeeded, status.describe()
    assert (status.success, status.failure, status.pending) == (2, 0, 0)
    assert status.ended_at >= status.created_at
    status.check()

    rows = _rows(bigquery_standin, f"{bq_dataset}.from_store")
    assert {r["SOPInstanceUID"] for r in rows} == {_uids(pydicom_corpus / name)[2] for name in (CT, MR)}
    ct = next(r for r in rows if r["Modality"] == "CT")
    assert ct["BlobStorageSize"] == (pydicom_corpus / CT).stat().st_size
    assert ct["Rows"] == 128 and ct["Type"] == "CREATE" and ct["StorageClass"] == "STANDARD"

    # The folder export of the same two files produces the same schema and the same rows
    # (LastUpdated aside: storage time in one, file time in the other).
    from airflow_provider_dicom.export.bigquery import export_to_bigquery

    folder = tmp_path / "dicom"
    folder.mkdir()
    for name in (CT, MR):
        (folder / name).write_bytes((pydicom_corpus / name).read_bytes())
    export_to_bigquery(folder, f"bq://{bq_dataset}.from_folder", client=bigquery_standin)
    store_schema = [f.to_api_repr() for f in bigquery_standin.get_table(f"{bq_dataset}.from_store").schema]
    folder_schema = [f.to_api_repr() for f in bigquery_standin.get_table(f"{bq_dataset}.from_folder").schema]
    assert store_schema == folder_schema

    def comparable(table):
        return sorted(
            (json.dumps({k: v for k, v in r.items() if k != "LastUpdated"}, sort_keys=True, default=str)
             for r in _rows(bigquery_standin, f"{bq_dataset}.{table}"))
        )

    assert comparable("from_store") == comparable("from_folder")


def test_json_schema_with_source_store(healthcare_hook, loaded_store, bq_dataset, bigquery_standin):
    operation = healthcare_hook.export_dicom_to_bigquery(
        loaded_store, f"bq://{bq_dataset}.json_table", schema="json", include_source_store=True
    )
    assert healthcare_hook.wait_for_operation(operation["name"], poll_interval=0.1, timeout=60).succeeded
    table = bigquery_standin.get_table(f"{bq_dataset}.json_table")
    # The schemaJson table's columns (their order is the engine's business, see TableSchema).
    assert {f.name for f in table.schema} == {
        "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SourceDicomStore", "Metadata",
        "StructuredStorageSize", "DroppedTags", "StorageClass", "LastUpdated", "BlobStorageSize", "Type",
    }
    rows = _rows(bigquery_standin, f"{bq_dataset}.json_table")
    assert {r["SourceDicomStore"] for r in rows} == {loaded_store}


def test_destination_table_rules(healthcare_hook, loaded_store, bq_dataset, bigquery_standin):
    def export(table: str = "rules", **kwargs) -> OperationStatus:
        operation = healthcare_hook.export_dicom_to_bigquery(loaded_store, f"bq://{bq_dataset}.{table}", **kwargs)
        return healthcare_hook.wait_for_operation(operation["name"], poll_interval=0.1, timeout=60)

    def count() -> int:
        return bigquery_standin.get_table(f"{bq_dataset}.rules").num_rows

    assert export().succeeded and count() == 2  # missing table: created

    # WRITE_EMPTY on a non-empty table: the operation fails and says why.
    refused = export(write_disposition="WRITE_EMPTY")
    assert refused.failed and refused.error_code == 9
    assert "not empty" in refused.error_message and "rules" in refused.error_message
    with pytest.raises(OperationFailedError, match="not empty"):
        refused.check()
    # Legacy force=False (or nothing): any existing table is an error.
    assert "already exists" in export(force=False).error_message
    assert "already exists" in export().error_message
    assert count() == 2

    assert export(write_disposition="write-append").succeeded and count() == 4
    assert export(force=True).succeeded and count() == 2
    assert export(write_disposition="WRITE_TRUNCATE").succeeded and count() == 2

    # WRITE_EMPTY on an existing *empty* table succeeds (legacy force=False would not).
    from google.cloud import bigquery

    bigquery_standin.create_table(bigquery.Table(f"{bq_dataset}.empty", schema=[
        bigquery.SchemaField("SOPInstanceUID", "STRING")]))
    assert "already exists" in export("empty", force=False).error_message
    assert export("empty", write_disposition="WRITE_EMPTY").succeeded
    assert bigquery_standin.get_table(f"{bq_dataset}.empty").num_rows == 2


def test_missing_bigquery_dataset_fails_the_operation(healthcare_hook, loaded_store, bigquery_server):
    operation = healthcare_hook.export_dicom_to_bigquery(loaded_store, "bq://local-dicom.no_such_dataset.t")
    status = healthcare_hook.wait_for_operation(operation["name"], poll_interval=0.1, timeout=60)
    assert status.failed and "no_such_dataset does not exist" in status.error_message


def test_filtered_export_writes_only_listed_resources(
    healthcare_hook, loaded_store, bq_dataset, bigquery_standin, gcs_bucket, pydicom_corpus
):
    study, series, sop = _uids(pydicom_corpus / MR)
    gcs_bucket.blob("filters/mr.txt").upload_from_string(f"/studies/{study}/series/{series}/instances/{sop}\r\n")
    operation = healthcare_hook.export_dicom_to_bigquery(
        loaded_store, f"bq://{bq_dataset}.subset", filter_gcs_uri=f"gs://{gcs_bucket.name}/filters/mr.txt"
    )
    status = healthcare_hook.wait_for_operation(operation["name"], poll_interval=0.1, timeout=60)
    assert status.succeeded and status.success == 1
    assert [r["SOPInstanceUID"] for r in _rows(bigquery_standin, f"{bq_dataset}.subset")] == [sop]

    missing = healthcare_hook.export_dicom_to_bigquery(
        loaded_store, f"bq://{bq_dataset}.none", filter_gcs_uri=f"gs://{gcs_bucket.name}/filters/missing.txt"
    )
    status = healthcare_hook.wait_for_operation(missing["name"], poll_interval=0.1, timeout=60)
    assert status.failed and "missing.txt" in status.error_message


def test_failed_instances_are_counted_and_logged(healthcare, healthcare_hook, loaded_store, bq_dataset,
                                                 bigquery_standin, pydicom_corpus):
    study, series, sop = _uids(pydicom_corpus / MR)
    healthcare.set_behaviour(fail_instances=[sop])
    operation = healthcare_hook.export_dicom_to_bigquery(loaded_store, f"bq://{bq_dataset}.partial")
    status = healthcare_hook.wait_for_operation(operation["name"], poll_interval=0.1, timeout=60)
    assert status.succeeded and (status.success, status.failure) == (1, 1)
    assert [r["Modality"] for r in _rows(bigquery_standin, f"{bq_dataset}.partial")] == ["CT"]
    with pytest.raises(OperationFailedError) as caught:
        status.check(max_failed_instances=0)
    assert "1 instance failed" in str(caught.value) and status.logs_url in str(caught.value)
    status.check(max_failed_instances=1)
    # The logs link works and names the instance, not its content.
    with urllib.request.urlopen(status.logs_url) as response:
        entries = json.loads(response.read())["entries"]
    assert entries == [{"severity": "ERROR", "resource": f"/studies/{study}/series/{series}/instances/{sop}",
                        "message": "injected failure (emulator fault injection)"}]


# -- export to Cloud Storage ---------------------------------------------------------------------


def test_export_to_gcs_writes_each_instance_under_its_uids(
    healthcare_hook, loaded_store, gcs_bucket, gcs_standin, pydicom_corpus
):
    operation = healthcare_hook.export_dicom_to_gcs(loaded_store, f"gs://{gcs_bucket.name}/export/run1/")
    status = healthcare_hook.wait_for_operation(operation["name"], poll_interval=0.1, timeout=60)
    assert status.succeeded and status.success == 2
    blobs = {b.name: b for b in gcs_standin.list_blobs(gcs_bucket.name, prefix="export/")}
    expected = {}
    for name in (CT, MR):
        study, series, sop = _uids(pydicom_corpus / name)
        expected[f"export/run1/{study}/{series}/{sop}.dcm"] = (pydicom_corpus / name).read_bytes()
    assert set(blobs) == set(expected)
    for name, data in expected.items():
        assert blobs[name].download_as_bytes() == data


def test_export_to_gcs_transcodes_uncompressed_and_filters(
    healthcare_hook, loaded_store, gcs_bucket, gcs_standin, pydicom_corpus
):
    import io

    import pydicom

    study, series, sop = _uids(pydicom_corpus / CT)
    gcs_bucket.blob("f.txt").upload_from_string(f"/studies/{study}\n")
    operation = healthcare_hook.export_dicom_to_gcs(
        loaded_store, f"gs://{gcs_bucket.name}/implicit",
        mime_type="application/dicom; transfer-syntax=1.2.840.10008.1.2", filter_gcs_uri=f"gs://{gcs_bucket.name}/f.txt",
    )
    status = healthcare_hook.wait_for_operation(operation["name"], poll_interval=0.1, timeout=60)
    assert status.succeeded and status.success == 1
    blob = gcs_bucket.blob(f"implicit/{study}/{series}/{sop}.dcm")
    ds = pydicom.dcmread(io.BytesIO(blob.download_as_bytes()))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2" and str(ds.SOPInstanceUID) == sop


def test_export_to_a_missing_bucket_fails(healthcare_hook, loaded_store, gcs_server):
    operation = healthcare_hook.export_dicom_to_gcs(loaded_store, "gs://no-such-bucket-here/x")
    status = healthcare_hook.wait_for_operation(operation["name"], poll_interval=0.1, timeout=60)
    assert status.failed and "no-such-bucket-here does not exist" in status.error_message


# -- faults, progress, cancellation --------------------------------------------------------------


def test_429_and_503_bursts_are_ridden_out(healthcare, healthcare_hook, loaded_store, bq_dataset):
    healthcare.inject_fault(429, 3, path=r":export$", method="POST")
    healthcare.inject_fault(503, 3, path=r"/operations/", method="GET")
    healthcare.clear_requests()
    operation = healthcare_hook.export_dicom_to_bigquery(loaded_store, f"bq://{bq_dataset}.bursts")
    status = healthcare_hook.wait_for_operation(operation["name"], poll_interval=0.1, timeout=60)
    assert status.succeeded
    assert all(f["hits"] == f["count"] == 3 for f in healthcare.faults())
    log = healthcare.requests()
    exports = [r["status"] for r in log if r["path"].endswith(":export")]
    assert exports == [429, 429, 429, 200]  # one export started, after three refusals
    polls = [r["status"] for r in log if "/operations/" in r["path"]]
    assert polls[:3] == [503, 503, 503] and polls[-1] == 200
    exports_started = [o for o in healthcare.operations(_dataset_of(loaded_store))
                       if o["metadata"]["apiMethodName"] == EXPORT_DICOM_DATA_METHOD]
    assert len(exports_started) == 1


def test_a_burst_longer_than_the_retries_surfaces_the_error(healthcare, healthcare_hook, loaded_store):
    healthcare.inject_fault(429, 50, path=r":export$", message="Quota exceeded for quota metric 'Export requests'")
    with pytest.raises(HealthcareApiError) as caught:
        healthcare_hook.export_dicom_to_gcs(loaded_store, "gs://bucket-x/out")
    assert caught.value.status_code == 429 and caught.value.status == "RESOURCE_EXHAUSTED"
    assert "Quota exceeded" in str(caught.value)
    assert [o for o in healthcare.operations(_dataset_of(loaded_store))
            if o["metadata"]["apiMethodName"] == EXPORT_DICOM_DATA_METHOD] == []


def test_progress_then_cancel_ends_with_error_code_1(
    healthcare, healthcare_hook, dicom_store, bq_dataset, bigquery_standin, pydicom_corpus
):
    files = [p for p in sorted(pydicom_corpus.glob("*.dcm"))][:40]
    healthcare.store_instances(dicom_store, files)
    stored = len(healthcare.search(dicom_store, "instances"))
    assert stored >= 10
    healthcare.set_behaviour(instance_delay=0.2)
    operation = healthcare_hook.export_dicom_to_bigquery(dicom_store, f"bq://{bq_dataset}.cancelled")
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = healthcare_hook.get_operation_status(operation["name"])
        seen.append(status)
        if status.success >= 2:
            break
        time.sleep(0.1)
    assert not status.done and status.pending > 0 and status.end_time is None
    assert status.success + status.failure + status.pending == stored
    healthcare_hook.cancel_operation(operation["name"])
    final = healthcare_hook.wait_for_operation(operation["name"], poll_interval=0.1, timeout=30)
    assert final.cancelled and final.error_code == CODE_CANCELLED and final.cancel_requested
    assert final.success < stored
    with pytest.raises(OperationFailedError, match="was cancelled"):
        final.check()
    # Nothing was written: the single load job never ran.
    from google.api_core.exceptions import NotFound

    with pytest.raises(NotFound):
        bigquery_standin.get_table(f"{bq_dataset}.cancelled")
    # Cancelling a finished operation changes nothing.
    healthcare_hook.cancel_operation(operation["name"])
    assert healthcare_hook.get_operation_status(operation["name"]) == final


def test_operations_list_and_get_match_the_discovery_document(healthcare_hook, loaded_store, gcs_bucket):
    contract = load_contract()
    names = []
    for run in range(2):
        operation = healthcare_hook.export_dicom_to_gcs(loaded_store, f"gs://{gcs_bucket.name}/run{run}")
        healthcare_hook.wait_for_operation(operation["name"], poll_interval=0.1, timeout=60)
        names.append(operation["name"])
    listed = healthcare_hook.list_operations(_dataset_of(loaded_store), page_size=1)
    export_ops = [o for o in listed if o["metadata"]["apiMethodName"] == EXPORT_DICOM_DATA_METHOD]
    assert sorted(o["name"] for o in export_ops) == sorted(names)
    for operation in listed + [healthcare_hook.get_operation(n) for n in names]:
        assert contract.check("Operation", operation) == []
        metadata = {k: v for k, v in operation["metadata"].items() if k != "@type"}
        assert contract.check("OperationMetadata", metadata) == []
    found = healthcare_hook.find_export_operations(loaded_store)
    assert [s.name for s in found] == names  # oldest first


def test_unknown_fields_and_bad_values_are_400_with_googles_error_shape(healthcare_emulator, loaded_store):
    def post(body) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"{healthcare_emulator.url}/v1/{loaded_store}:export", data=json.dumps(body).encode(),
            method="POST", headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    status, body = post({"bigqueryDestination": {"tableUrl": "bq://local-dicom.d.t"}})
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT" and body["error"]["code"] == 400
    assert 'Unknown name "tableUrl"' in body["error"]["message"]
    status, body = post({"bigqueryDestination": {"tableUri": "bq://local-dicom.d.t", "writeDisposition": "APPEND"}})
    assert status == 400 and "'APPEND'" in body["error"]["message"]
    status, body = post({"bigqueryDestination": {"tableUri": "bq://local-dicom.d.t"},
                         "gcsDestination": {"uriPrefix": "gs://bkt/x"}})
    assert status == 400 and "exactly one" in body["error"]["message"]
    status, body = post({"gcsDestination": {"uriPrefix": "gs://bkt/x", "mimeType": "text/plain"}})
    assert status == 400 and "'text/plain'" in body["error"]["message"]
    status, body = post({"bigqueryDestination": {"tableUri": "bq://not valid"}})
    assert status == 400 and "'bq://not valid'" in body["error"]["message"]
    missing_store = loaded_store.rpartition("/")[0] + "/nope"
    request = urllib.request.Request(f"{healthcare_emulator.url}/v1/{missing_store}:export",
                                     data=b'{"gcsDestination": {"uriPrefix": "gs://bkt/x"}}', method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request)
    error = json.loads(caught.value.read())["error"]
    assert caught.value.code == 404 and error["status"] == "NOT_FOUND" and missing_store in error["message"]


# -- trigger on the emulator ---------------------------------------------------------------------


def test_trigger_yields_one_event_for_a_real_operation(healthcare, healthcare_hook, loaded_store, gcs_bucket):
    from airflow_provider_dicom.triggers.operation import DicomOperationTrigger

    healthcare.set_behaviour(instance_delay=0.1)
    operation = healthcare_hook.export_dicom_to_gcs(loaded_store, f"gs://{gcs_bucket.name}/t")
    healthcare.inject_fault(503, 2, path="/operations/", method="GET")
    trigger = DicomOperationTrigger(operation["name"], poll_interval=0.05)
    assert trigger.api_endpoint == healthcare_hook.api_endpoint  # pinned from HEALTHCARE_EMULATOR_HOST

    async def collect():
        return [event async for event in trigger.run()]

    events = asyncio.run(collect())
    assert len(events) == 1 and events[0].payload["status"] == "success"
    assert OperationStatus.from_api(events[0].payload["operation"]).success == 2


# -- the command -----------------------------------------------------------------------------


def test_python_dash_m_serves_on_loopback_only():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "dicom_standins.emulator", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("Cloud Healthcare API emulator listening on http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1].strip()
        with urllib.request.urlopen(f"{url}/emulator/health", timeout=10) as response:
            assert json.loads(response.read()) == {"status": "ok"}
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
    refused = subprocess.run(
        [sys.executable, "-m", "dicom_standins.emulator", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True, text=True, timeout=60,
    )
    assert refused.returncode == 2 and "only listens on a loopback address" in refused.stderr
