"""A filter file write that fails midway leaves the previous good file exactly as it was, on the
GCS stand-in and on disk, and leaves no temporary object or file behind (issue 11 item 2)."""

from __future__ import annotations

import contextlib
import gc
import uuid
from collections.abc import Iterator

import pytest

from airflow_provider_dicom.filters.build import build_from_rows

pytestmark = pytest.mark.integration

GOOD = "/studies/9.9/series/9.9.1/instances/9.9.1.1\n"


class Boom(RuntimeError):
    pass


@pytest.fixture
def bucket(gcs_standin):
    """A fresh bucket. Unlike `bucket` its teardown tolerates a cancelled upload: the stand-in
    does not implement DELETE on a resumable session URL (Cloud Storage does), so it keeps the
    session and refuses to delete the bucket. Tests here assert what readers see instead."""
    created = gcs_standin.create_bucket(f"test-{uuid.uuid4().hex[:12]}")
    yield created
    for blob in gcs_standin.list_blobs(created):
        blob.delete()
    with contextlib.suppress(Exception):
        created.delete()


def _failing_rows(count: int) -> Iterator[dict[str, str]]:
    """`count` good instance rows of one series, then the row iterator fails (a dropped query page)."""
    for index in range(count):
        yield {"study": "1.2", "series": "1.2.3", "instance": f"1.2.3.{index + 1}"}
    raise Boom("the query result stream broke")


@pytest.mark.parametrize("lines", [10, 100_000])
def test_failed_gcs_write_keeps_the_old_object(gcs_standin, bucket, lines):
    bucket.blob("filter.txt").upload_from_string(GOOD)
    with pytest.raises(Boom):
        build_from_rows(
            _failing_rows(lines), f"gs://{bucket.name}/filter.txt", level="instance",
            storage_client=gcs_standin, chunk_size=256 * 1024,
        )
    gc.collect()  # an io finaliser used to commit the aborted upload here
    assert bucket.blob("filter.txt").download_as_text() == GOOD
    assert [blob.name for blob in gcs_standin.list_blobs(bucket)] == ["filter.txt"]


def test_failed_gcs_write_of_a_new_object_creates_nothing(gcs_standin, bucket):
    with pytest.raises(Boom):
        build_from_rows(
            _failing_rows(50_000), f"gs://{bucket.name}/new.txt", level="instance",
            storage_client=gcs_standin, chunk_size=256 * 1024,
        )
    gc.collect()
    assert list(gcs_standin.list_blobs(bucket)) == []


def test_successful_gcs_write_replaces_the_object_whole(gcs_standin, bucket):
    bucket.blob("filter.txt").upload_from_string(GOOD)
    rows = ({"study": "1.2", "series": "1.2.3", "instance": f"1.2.3.{i + 1}"} for i in range(50_000))
    result = build_from_rows(
        rows, f"gs://{bucket.name}/filter.txt", level="instance", storage_client=gcs_standin,
        chunk_size=256 * 1024,
    )
    text = bucket.blob("filter.txt").download_as_text()
    assert result.lines == 50_000 and text.count("\n") == 50_000
    assert text.endswith("/studies/1.2/series/1.2.3/instances/1.2.3.50000\n")
    assert [blob.name for blob in gcs_standin.list_blobs(bucket)] == ["filter.txt"]


def test_failed_local_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "filters" / "filter.txt"
    target.parent.mkdir()
    target.write_text(GOOD)
    with pytest.raises(Boom):
        build_from_rows(_failing_rows(100_000), str(target), level="instance")
    assert target.read_text() == GOOD
    assert sorted(p.name for p in target.parent.iterdir()) == ["filter.txt"]


@pytest.mark.parametrize("fail_at_chunk", [2, 4])
def test_connection_lost_midway_keeps_the_old_object(gcs_standin, bucket, monkeypatch, fail_at_chunk):
    """The connection drops while chunks are sent (2: midway; 4: the final, finalising request of
    a 3-chunk file): the upload is never finalised, so the old object stays."""
    from google.cloud.storage._media.requests import ResumableUpload

    sent = {"chunks": 0}
    real = ResumableUpload.transmit_next_chunk

    def flaky(self, transport, *args, **kwargs):
        sent["chunks"] += 1
        if sent["chunks"] == fail_at_chunk:
            raise ConnectionError("connection reset by peer")
        return real(self, transport, *args, **kwargs)

    monkeypatch.setattr(ResumableUpload, "transmit_next_chunk", flaky)
    bucket.blob("filter.txt").upload_from_string(GOOD)
    # ~45 bytes a line: 3 x 256 KiB chunks and a remainder
    rows = ({"study": "1.2", "series": "1.2.3", "instance": f"1.2.3.{i + 1}"} for i in range(18_000))
    # The deadline policy reports a connection that keeps failing as a RemoteCallError naming the
    # endpoint (chained from the ConnectionError).
    from airflow_provider_dicom.utils.deadlines import RemoteCallError

    with pytest.raises((ConnectionError, RemoteCallError)):
        build_from_rows(
            rows, f"gs://{bucket.name}/filter.txt", level="instance", storage_client=gcs_standin,
            chunk_size=256 * 1024,
        )
    monkeypatch.undo()
    gc.collect()
    assert bucket.blob("filter.txt").download_as_text() == GOOD
    assert [blob.name for blob in gcs_standin.list_blobs(bucket)] == ["filter.txt"]


def test_a_gs_filter_over_the_bound_is_refused_before_downloading(gcs_standin, bucket, monkeypatch):
    """Issue 11 item 10 for gs://: the object's size is read from its metadata first."""
    from google.cloud.storage import Blob

    from airflow_provider_dicom.filters import files as filters

    bucket.blob("big.txt").upload_from_string("/studies/1.2.3\n" * 3)  # 45 bytes
    monkeypatch.setattr(filters, "MAX_FILTER_BYTES", 40)
    downloads = []
    real = Blob.download_as_bytes
    monkeypatch.setattr(Blob, "download_as_bytes", lambda self, *a, **k: downloads.append(self.name) or real(self, *a, **k))
    with pytest.raises(filters.FilterFileError, match=rf"gs://{bucket.name}/big.txt is 45 bytes, more than the 40 bytes"):
        filters.load_filter(f"gs://{bucket.name}/big.txt", storage_client=gcs_standin)
    assert downloads == []
    monkeypatch.setattr(filters, "MAX_FILTER_BYTES", 45)
    assert len(filters.load_filter(f"gs://{bucket.name}/big.txt", storage_client=gcs_standin)) == 1
    with pytest.raises(FileNotFoundError, match="does not exist"):
        filters.load_filter(f"gs://{bucket.name}/none.txt", storage_client=gcs_standin)
