"""Export from a gs:// prefix on the GCS stand-in: the same table as the folder export of the same
files, and proof, counted on the wire, that only header bytes are downloaded for instances whose
pixel data is megabytes."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from airflow_provider_dicom.dicom.convert import InstanceConverter
from airflow_provider_dicom.export.bigquery import export_to_bigquery
from airflow_provider_dicom.sources.gcs import INITIAL_FIRST_READ, GcsDicomSource

pytestmark = pytest.mark.integration


def table_rows(client, table_id: str) -> list[dict]:
    return [dict(row) for row in client.query(f"SELECT * FROM `{table_id}`").result()]


def canonical(row: dict, drop=("LastUpdated",)) -> str:
    return json.dumps({k: v for k, v in row.items() if k not in drop}, sort_keys=True, default=str)


def upload_folder(bucket, folder: Path, prefix: str) -> int:
    count = 0
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            bucket.blob(f"{prefix}/{path.relative_to(folder).as_posix()}").upload_from_filename(str(path))
            count += 1
    return count


def test_gcs_prefix_table_equals_the_folder_table(gcs_standin, gcs_bucket, pydicom_corpus, bigquery_standin, bq_dataset):
    uploaded = upload_folder(gcs_bucket, pydicom_corpus, "archive/corpus")
    gcs_bucket.blob("archive/corpus-old/extra.dcm").upload_from_string(b"not under the prefix")
    gcs_bucket.blob("archive/corpus/empty-folder/").upload_from_string(b"")  # a folder placeholder
    uri = f"gs://{gcs_bucket.name}/archive/corpus"

    from_gcs = export_to_bigquery(uri, f"bq://{bq_dataset}.gcs", client=bigquery_standin, storage_client=gcs_standin)
    from_disk = export_to_bigquery(pydicom_corpus, f"bq://{bq_dataset}.disk", client=bigquery_standin)

    # Every object under the prefix (and nothing beside it) is accounted for exactly as its file is.
    assert from_gcs.files_seen == from_disk.files_seen == uploaded
    # 148 files convert; 28 repeat another file's SOPInstanceUID and are kept once (first in
    # name order, the same file from both sources).
    assert from_gcs.instances_exported == from_disk.instances_exported == 120
    assert from_gcs.duplicate_count == from_disk.duplicate_count == 28
    assert from_gcs.not_dicom_count == from_disk.not_dicom_count
    base = str(pydicom_corpus) + "/"
    assert sorted((p.removeprefix(uri + "/"), r) for p, r in from_gcs.failures) == sorted(
        (p.removeprefix(base), r) for p, r in from_disk.failures
    )
    # Row for row, BlobStorageSize included (the object's size is the file's); LastUpdated is the
    # object's update time, not the file's mtime.
    gcs_rows = table_rows(bigquery_standin, f"{bq_dataset}.gcs")
    disk_rows = table_rows(bigquery_standin, f"{bq_dataset}.disk")
    assert sorted(map(canonical, gcs_rows)) == sorted(map(canonical, disk_rows))
    blobs = {b.name: b for b in gcs_standin.list_blobs(gcs_bucket, prefix="archive/corpus/")}
    updated = {b.updated.isoformat() for b in blobs.values()}
    assert all(row["LastUpdated"].isoformat() in updated for row in gcs_rows)
    assert [f.to_api_repr() for f in bigquery_standin.get_table(f"{bq_dataset}.gcs").schema] == [
        f.to_api_repr() for f in bigquery_standin.get_table(f"{bq_dataset}.disk").schema
    ]


def test_a_uri_naming_one_object_exports_that_object(gcs_standin, gcs_bucket, pydicom_corpus, bigquery_standin, bq_dataset):
    gcs_bucket.blob("one/CT_small.dcm").upload_from_filename(str(pydicom_corpus / "CT_small.dcm"))
    gcs_bucket.blob("one/CT_small.dcm.old").upload_from_filename(str(pydicom_corpus / "MR_small.dcm"))
    result = export_to_bigquery(
        f"gs://{gcs_bucket.name}/one/CT_small.dcm", f"bq://{bq_dataset}.one", client=bigquery_standin,
        storage_client=gcs_standin,
    )
    assert result.files_seen == result.instances_exported == 1
    assert [r["Modality"] for r in table_rows(bigquery_standin, f"{bq_dataset}.one")] == ["CT"]


def test_missing_bucket_is_an_error_naming_it(gcs_standin, bigquery_standin, bq_dataset):
    with pytest.raises(FileNotFoundError, match="gs://no-such-bucket-here"):
        export_to_bigquery(
            "gs://no-such-bucket-here/x", f"bq://{bq_dataset}.t", client=bigquery_standin, storage_client=gcs_standin
        )


# -- header-only reads, counted on the wire ------------------------------------------------------


class CountingProxy:
    """A TCP relay in front of the GCS stand-in that counts the bytes the server sends back."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.downstream = 0
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._open += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, count: bool) -> None:
        try:
            while data := source.recv(65536):
                if count:
                    with self._lock:
                        self.downstream += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()
        for s in self._open:
            s.close()


def large_instance(study: str, series: str, number: int) -> tuple[bytes, int]:
    """A 1024 x 1024 x 16-bit CT (2 MiB of pixel data) and where its pixel data's value starts."""
    import io

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.Modality, ds.PatientID, ds.InstanceNumber = "CT", "BIG-1", str(number)
    ds.Rows = ds.Columns = 1024
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = bytes(1024 * 1024 * 2)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    header_end = data.rfind(b"\xe0\x7f\x10\x00OW\x00\x00") + 12
    assert len(data) - header_end == 2 * 1024 * 1024
    return data, header_end


def test_only_header_bytes_are_fetched_for_large_pixel_data(gcs_server, gcs_standin, gcs_bucket, bigquery_standin, bq_dataset):
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    study, series = generate_uid(), generate_uid()
    headers = {}
    for number in range(12):
        data, header_end = large_instance(study, series, number)
        name = f"big/{number:02d}.dcm"
        gcs_bucket.blob(name).upload_from_string(data)
        headers[f"gs://{gcs_bucket.name}/{name}"] = header_end
    total = sum(b.size for b in gcs_standin.list_blobs(gcs_bucket, prefix="big/"))

    proxy = CountingProxy(gcs_server.url)
    try:
        client = storage.Client(project="local-dicom", credentials=AnonymousCredentials(),
                                client_options=ClientOptions(api_endpoint=proxy.url))
        records = []
        source = GcsDicomSource(f"gs://{gcs_bucket.name}/big", client, workers=4, on_fetch=records.append)
        outcomes = list(source.outcomes(InstanceConverter()))
        wire_read = proxy.downstream

        result = export_to_bigquery(
            f"gs://{gcs_bucket.name}/big/", f"bq://{bq_dataset}.big", client=bigquery_standin, storage_client=client
        )
        wire_export = proxy.downstream - wire_read
    finally:
        proxy.close()

    print(f"header bytes {sorted(set(headers.values()))}; fetched {[r.bytes_fetched for r in records]}; "
          f"ratios {[round(r.bytes_fetched / r.header_end, 3) for r in records]}; wire {wire_read} / {wire_export} "
          f"of {total} bytes")
    assert [o.status for o in outcomes] == ["ok"] * 12
    assert result.instances_exported == 12 and result.failures == []
    # Per instance: one ranged read. The first object's range is the initial 8 KiB guess; after it
    # the range is learned, and the bytes read stay within 1.2 x the header.
    assert all(r.requests == 1 and r.header_end == headers[r.name] for r in records)
    assert records[0].bytes_fetched == INITIAL_FIRST_READ
    ratios = [r.bytes_fetched / r.header_end for r in records[1:]]
    assert max(ratios) <= 1.2, ratios
    # On the wire (HTTP headers and the listing included), nowhere near one pixel array (2 MiB):
    # the 24 MiB of objects cost well under 1% of their size, per read and per export.
    assert source.stats.bytes_fetched == sum(r.bytes_fetched for r in records)
    assert wire_read < INITIAL_FIRST_READ + 11 * 3000 + 20_000, wire_read
    assert wire_export < INITIAL_FIRST_READ + 11 * 3000 + 20_000, wire_export
    assert wire_export < total / 100
    rows = table_rows(bigquery_standin, f"{bq_dataset}.big")
    assert sorted(int(r["InstanceNumber"]) for r in rows) == list(range(12))
    for row in rows:
        header_end = headers[f"gs://{gcs_bucket.name}/big/{int(row['InstanceNumber']):02d}.dcm"]
        assert row["BlobStorageSize"] == header_end + 2 * 1024 * 1024
    assert all({"TagName": "PixelData", "TagReference": "7FE00010"} in r["DroppedTags"] for r in rows)
