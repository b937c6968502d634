"""A WADO-RS retrieve streamed into the GCS stand-in (issue 11 item 15): instance bytes that
contain the boundary text arrive whole, LF-only responses are read, large instances stream in
bounded memory, and a response cut short, malformed or holding two parts leaves no object."""

from __future__ import annotations

import contextlib
import gc
import uuid

import pytest

from airflow_provider_dicom.export import gcs_copy
from airflow_provider_dicom.export.gcs_copy import stream_instance

pytestmark = pytest.mark.integration


class _Response:
    def __init__(self, body: bytes, content_type: str, *, status: int = 200, chunk: int = 7, fail_after: int | None = None):
        self.status_code = status
        self.headers = {"Content-Type": content_type}
        self._body, self._chunk, self._fail_after = body, chunk, fail_after
        self.closed = False
        self.consumed = False
        self.largest_read = 0

    def iter_content(self, size: int):
        step = min(size, self._chunk)
        for start in range(0, len(self._body), step):
            if self._fail_after is not None and start >= self._fail_after:
                raise ConnectionError("connection reset by peer")
            self.largest_read = max(self.largest_read, step)
            yield self._body[start : start + step]
        self.consumed = True

    def close(self) -> None:
        self.closed = True


class _Client:
    timeout = 5

    def __init__(self, response: _Response) -> None:
        self.response = response
        self.session = self
        self.calls: list[dict] = []

    def get(self, url, **kwargs):
        self.calls.append({"url": url, **kwargs})
        return self.response


@pytest.fixture
def bucket(gcs_standin):
    """A fresh bucket whose teardown tolerates a cancelled upload (see test_filter_writes)."""
    created = gcs_standin.create_bucket(f"test-{uuid.uuid4().hex[:12]}")
    yield created
    for blob in gcs_standin.list_blobs(created):
        blob.delete()
    with contextlib.suppress(Exception):
        created.delete()


def _body(payloads: list[bytes], boundary: str = "B1", nl: bytes = b"\r\n", preamble: bytes = b"") -> bytes:
    out = preamble
    for payload in payloads:
        out += b"--" + boundary.encode() + nl + b"Content-Type: application/dicom" + nl + nl + payload + nl
    return out + b"--" + boundary.encode() + b"--" + nl + b"epilogue"


def _stream(bucket, response: _Response, name: str = "s/se/i.dcm") -> int:
    return stream_instance(_Client(response), "http://pacs/studies/s/series/se/instances/i", bucket.blob(name))


@pytest.mark.parametrize("size", [1000, 5 * 1024 * 1024 + 3])  # one request; resumable chunks
def test_boundary_text_inside_the_instance_arrives_whole(gcs_standin, bucket, size):
    # boundary text everywhere, but never a whole delimiter line (no sender produces one in data)
    payload = (b"abc--B1xyz\r\n--B1x\n--B1\r\n" * (size // 24 + 1))[: size - 1] + b"."
    response = _Response(_body([payload], preamble=b"preamble\r\n"), 'multipart/related; type="application/dicom"; boundary="B1"', chunk=65536)
    assert _stream(bucket, response) == size
    blob = bucket.get_blob("s/se/i.dcm")
    assert blob.download_as_bytes() == payload and blob.content_type == "application/dicom"
    assert response.closed and response.consumed  # the epilogue was read: the connection can be reused


def test_lf_only_response(gcs_standin, bucket):
    response = _Response(_body([b"DICM\x00\x01"], nl=b"\n"), "multipart/related; boundary=B1")
    assert _stream(bucket, response) == 6
    assert bucket.blob("s/se/i.dcm").download_as_bytes() == b"DICM\x00\x01"


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (_Response(_body([b"x" * 3_000_000])[:2_500_000], "multipart/related; boundary=B1", chunk=65536), "ended inside a part"),
        (_Response(_body([b"x" * 3_000_000]), "multipart/related; boundary=B1", chunk=65536, fail_after=2_600_000), "connection reset"),
        (_Response(_body([b"one" * 1_000_000, b"two"]), "multipart/related; boundary=B1", chunk=65536), "more than one part"),
        (_Response(_body([b"one"]), "multipart/related", chunk=65536), "without a boundary"),
        (_Response(b"--B1--\r\n", "multipart/related; boundary=B1"), "no part"),
        (_Response(b"", "multipart/related; boundary=B1", status=404), "HTTP 404"),
    ],
)
def test_a_bad_response_leaves_no_object(gcs_standin, bucket, response, message):
    bucket.blob("s/se/i.dcm").upload_from_string(b"previous copy")
    with pytest.raises((OSError, ConnectionError), match=message):
        _stream(bucket, response)
    gc.collect()
    assert bucket.blob("s/se/i.dcm").download_as_bytes() == b"previous copy"
    assert [blob.name for blob in gcs_standin.list_blobs(bucket)] == ["s/se/i.dcm"]
    assert response.closed


def test_memory_per_instance_is_bounded(gcs_standin, bucket, monkeypatch):
    """A 12 MiB instance is never held whole: the uploader's buffer stays under the small-instance
    threshold plus one upload chunk."""
    peak = {"bytes": 0}
    real_write = gcs_copy._InstanceUpload.write

    def watched(self, data):
        real_write(self, data)
        writer = self._writer._writer if self._writer is not None else None
        held = len(self._buffer) + (len(writer._buffer) if writer is not None else 0)
        peak["bytes"] = max(peak["bytes"], held)

    monkeypatch.setattr(gcs_copy._InstanceUpload, "write", watched)
    payload = bytes(range(256)) * (12 * 4096)
    response = _Response(_body([payload]), "multipart/related; boundary=B1", chunk=65536)
    assert _stream(bucket, response) == len(payload)
    assert bucket.blob("s/se/i.dcm").download_as_bytes() == payload
    assert peak["bytes"] <= gcs_copy.SMALL_INSTANCE + gcs_copy.UPLOAD_CHUNK + 65536
