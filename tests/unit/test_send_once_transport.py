"""The send-once transport answers a POST like httplib2 does, on every httplib2 the provider can
meet: 0.32 (newest) passes decompression limits to `_decompressContent`, 0.31 (Cloud Composer's
Airflow 3.1.0 image) has neither the limits nor the third argument. The version matrix runs this
on both."""

from __future__ import annotations

import gzip
import http.client
import io
import json

import httplib2

from airflow_provider_dicom.healthcare.transport import SendOnceHttp, forbid_resend

OPERATION = {"name": "projects/p/locations/l/datasets/d/operations/1"}


class _Socket:
    """Enough of a socket for http.client.HTTPResponse to parse a canned answer."""

    def __init__(self, data: bytes) -> None:
        self._file = io.BytesIO(data)

    def makefile(self, *args, **kwargs):
        return self._file


class _Connection:
    """An httplib2 connection that records what was sent and answers with gzip-encoded JSON."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    def request(self, method, url, body, headers) -> None:
        self.sent.append((method, url))

    def getresponse(self) -> http.client.HTTPResponse:
        payload = gzip.compress(json.dumps(OPERATION).encode())
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        response = http.client.HTTPResponse(_Socket(head + payload))
        response.begin()
        return response


def test_a_post_is_sent_once_and_its_gzip_answer_decoded():
    http = forbid_resend(httplib2.Http())
    assert type(http) is SendOnceHttp
    connection = _Connection()
    response, content = http._conn_request(connection, "/v1/store:export", "POST", b"{}", {})
    assert connection.sent == [("POST", "/v1/store:export")]
    assert response.status == 200
    assert json.loads(content) == OPERATION
