"""gs:// ranged reads sent with urllib3 (sources.gcs_ranges) do what the library's ranged reads do:
the same media URL and bytes, retries on 5xx, errors naming the object and the HTTP status, a
frozen server ending in RemoteCallError within the deadlines; and they are used only when the
storage client's requests session would add nothing they lack (proxies, certificates)."""

from __future__ import annotations

import http.server
import json
import threading
import time
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from airflow_provider_dicom.sources.gcs_ranges import RangeReader, range_reader_for
from airflow_provider_dicom.sources.remote import RemoteReadError
from airflow_provider_dicom.utils import deadlines
from airflow_provider_dicom.utils.deadlines import RemoteCallError

DATA = bytes(range(256)) * 40


class MediaServer:
    """A local stand-in for the JSON API's media download: ranges of one object, with scripted
    failures; records each request's path, query and Range header."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict, str | None]] = []
        self.fail_with: list[int] = []  # statuses answered before serving, one per request
        self.freeze = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                parts = urlsplit(self.path)
                server.requests.append((unquote(parts.path), parse_qs(parts.query), self.headers.get("Range")))
                if server.freeze.is_set():
                    time.sleep(5)
                    return
                if server.fail_with:
                    status = server.fail_with.pop(0)
                    body = json.dumps({"error": {"code": status, "message": f"injected {status}"}}).encode()
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                first, last = self.headers["Range"].removeprefix("bytes=").split("-")
                body = DATA[int(first) : int(last) + 1]
                self.send_response(206)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.freeze.clear()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    running = MediaServer()
    yield running
    running.close()


def reader(server: MediaServer) -> RangeReader:
    from google.auth.credentials import AnonymousCredentials

    return RangeReader(AnonymousCredentials(), server.url, 4)


def test_ranges_of_the_named_generation_are_read(server) -> None:
    fetch = reader(server).fetch("bkt", "dir/a b+c.dcm", 17)
    assert fetch(0, 132) == DATA[:132]
    assert fetch(1000, 1003) == DATA[1000:1003]
    assert fetch(5, 5) == b""  # nothing asked, nothing requested
    path, query, ranges = server.requests[0]
    assert path == "/download/storage/v1/b/bkt/o/dir/a b+c.dcm"
    assert query == {"alt": ["media"], "generation": ["17"]}
    assert [r for _, _, r in server.requests] == ["bytes=0-131", "bytes=1000-1002"]


def test_server_errors_are_retried_and_refusals_name_the_object(server, monkeypatch) -> None:
    monkeypatch.setenv(deadlines.RETRY_DEADLINE_ENV, "20")
    fetch = reader(server).fetch("bkt", "x.dcm", None)
    server.fail_with = [503]
    assert fetch(0, 10) == DATA[:10]  # the 503 was retried
    assert len(server.requests) == 2 and "generation" not in server.requests[0][1]
    server.fail_with = [404]
    with pytest.raises(RemoteReadError, match=r"cannot read gs://bkt/x.dcm bytes 0-9 \(HTTP 404\): injected 404"):
        fetch(0, 10)


def test_a_frozen_server_ends_in_remote_call_error(server, monkeypatch) -> None:
    monkeypatch.setenv(deadlines.REQUEST_TIMEOUT_ENV, "0.5")
    monkeypatch.setenv(deadlines.RETRY_DEADLINE_ENV, "1")
    server.freeze.set()
    started = time.monotonic()
    with pytest.raises(RemoteCallError, match=r"reading gs://bkt/x.dcm bytes 0-9: no answer from http://127"):
        reader(server).fetch("bkt", "x.dcm", None)(0, 10)
    assert time.monotonic() - started < 15


def storage_client(endpoint: str = "http://127.0.0.1:9"):
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="p", credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=endpoint)
    )


def test_used_only_where_the_library_would_add_nothing(monkeypatch, tmp_path) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    assert range_reader_for(object(), 4) is None  # a test double: the library path
    plain = range_reader_for(storage_client(), 4)
    assert isinstance(plain, RangeReader) and plain.endpoint == "http://127.0.0.1:9"

    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    assert range_reader_for(storage_client(), 4) is None  # requests would go through the proxy
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert range_reader_for(storage_client(), 4) is not None  # ... but not for this endpoint
    monkeypatch.delenv("HTTP_PROXY")

    client = storage_client()
    client._http.proxies = {"http": "http://proxy.invalid:3128"}
    assert range_reader_for(client, 4) is None
    client = storage_client()
    client._http.verify = False
    assert range_reader_for(client, 4) is None

    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    with_bundle = range_reader_for(storage_client(), 4)
    assert with_bundle is not None
    assert with_bundle.http.http.connection_pool_kw["ca_certs"] == str(bundle)
