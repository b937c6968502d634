"""The stand-in lifecycle the fixtures and the demo rely on: up on 127.0.0.1, answering, and gone after stop."""

from __future__ import annotations

import socket

import pytest

from dicom_standins import bigquery_client, start_bigquery, start_gcs, storage_client

pytestmark = pytest.mark.integration


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("start", [start_bigquery, start_gcs], ids=["bigquery", "gcs"])
def test_stand_in_answers_on_loopback_and_stop_ends_it(start):
    with start() as standin:
        assert standin.url.startswith("http://127.0.0.1:")
        assert standin.running() and _listening(standin.port)
        if start is start_bigquery:
            assert standin.env == {"BIGQUERY_EMULATOR_HOST": standin.url}
            client = bigquery_client(standin)
            client.create_dataset("lifecycle")
            assert "lifecycle" in [d.dataset_id for d in client.list_datasets()]
            assert (standin.workdir / "data").is_dir()  # its data stays in our temporary folder
        else:
            assert standin.env == {"STORAGE_EMULATOR_HOST": standin.url}
            bucket = storage_client(standin).create_bucket("lifecycle-bucket")
            bucket.blob("x").upload_from_string(b"1")
            assert bucket.blob("x").download_as_bytes() == b"1"
        process, port, workdir = standin.process, standin.port, standin.workdir
    assert process.poll() is not None
    assert not _listening(port)
    assert not workdir.exists()
    standin.stop()  # a second stop is harmless


def test_keep_alive_gcs_stand_in_serves_many_requests_on_a_connection_and_many_connections_at_once():
    """What the gs:// benchmark relies on: the emulator as shipped closes every connection; the
    keep-alive one answers HTTP/1.1 on the same connection, whole (Content-Length), while a second
    connection is served at the same time (a single-threaded server would wait for the first)."""
    import http.client

    with start_gcs(keep_alive=True) as standin:
        storage_client(standin).create_bucket("keep-alive").blob("a/b.dcm").upload_from_string(b"0123456789" * 100)
        path = "/download/storage/v1/b/keep-alive/o/a%2Fb.dcm?alt=media"
        first = http.client.HTTPConnection("127.0.0.1", standin.port, timeout=10)
        second = http.client.HTTPConnection("127.0.0.1", standin.port, timeout=10)
        for connection in (first, second, first, second, first):
            connection.request("GET", path, headers={"Range": "bytes=10-29"})
            response = connection.getresponse()
            assert (response.status, response.version, response.read()) == (206, 11, b"0123456789" * 2)
            assert not response.will_close
        first.close()
        second.close()
    with start_gcs() as shipped:
        storage_client(shipped).create_bucket("shipped").blob("x").upload_from_string(b"1")
        connection = http.client.HTTPConnection("127.0.0.1", shipped.port, timeout=10)
        connection.request("GET", "/download/storage/v1/b/shipped/o/x?alt=media")
        assert connection.getresponse().will_close  # what the benchmark's default avoids
