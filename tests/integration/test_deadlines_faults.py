"""Frozen and wrong services end in a clear error within a bounded time, never a silent hang.

A stand-in is frozen with SIGSTOP (the process group: the server and anything it spawned) while a
call is on its way, exactly as a hung server or a dead network path behaves: connections are
accepted by the kernel, no answer ever comes. It is always resumed (SIGCONT) in `finally`, so the
session's stand-ins keep serving the other tests. Deadlines are shortened through the environment
(`airflow_provider_dicom.utils.deadlines`), as an operator would.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from airflow_provider_dicom.utils import deadlines
from airflow_provider_dicom.utils.deadlines import RemoteCallError

pytestmark = pytest.mark.integration

REQUEST_TIMEOUT = 1.5
RETRY_DEADLINE = 3.0
BOUND = 30.0  # far above timeout + deadline, far below the minutes a hang lasted before


@pytest.fixture(autouse=True)
def short_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(deadlines.REQUEST_TIMEOUT_ENV, str(REQUEST_TIMEOUT))
    monkeypatch.setenv(deadlines.RETRY_DEADLINE_ENV, str(RETRY_DEADLINE))


@contextmanager
def frozen(standin) -> Iterator[None]:
    os.killpg(standin.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(standin.process.pid, signal.SIGCONT)
        settle()


def settle() -> None:
    """Requests that timed out on our side still wait in the frozen server's queue; let it answer
    them before the fixtures clean up (an upload may complete late: the same content we sent)."""
    time.sleep(2.0)


def freezer(standin):
    """A callable that freezes `standin` the first time it is called (undone by `thaw`)."""
    state = {"frozen": False}

    def freeze(*_args) -> None:
        if not state["frozen"]:
            state["frozen"] = True
            os.killpg(standin.process.pid, signal.SIGSTOP)

    def thaw() -> None:
        if state["frozen"]:
            os.killpg(standin.process.pid, signal.SIGCONT)
            settle()

    return freeze, thaw


@pytest.fixture
def dicom_folder(tmp_path: Path, pydicom_corpus: Path) -> Path:
    folder = tmp_path / "dicom"
    folder.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm"):
        shutil.copy(pydicom_corpus / name, folder / name)
    return folder


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


def assert_bounded(started: float) -> None:
    elapsed = time.monotonic() - started
    assert elapsed < BOUND, f"took {elapsed:.1f} s"


@pytest.mark.parametrize("when", ["before the destination check", "during the load"])
def test_frozen_bigquery_ends_an_export_with_the_endpoint_and_the_step(
    when, dicom_folder, bigquery_server, bigquery_standin, bq_dataset, caplog
):
    from airflow_provider_dicom.export.bigquery import export_to_bigquery

    uri = f"bq://{bq_dataset}.frozen"
    freeze, thaw = freezer(bigquery_server)
    started = time.monotonic()
    try:
        with pytest.raises(RemoteCallError) as caught:
            if when == "before the destination check":
                freeze()
                export_to_bigquery(dicom_folder, uri, client=bigquery_standin)
            else:
                export_to_bigquery(dicom_folder, uri, client=bigquery_standin, progress=freeze)
    finally:
        thaw()
    assert_bounded(started)
    message = str(caught.value)
    assert bigquery_server.url in message
    step = "getting dataset" if when == "before the destination check" else "loading"
    assert step in message and bq_dataset in message
    if when == "before the destination check":
        retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
        assert retries and bigquery_server.url in retries[0] and "attempt 1" in retries[0]


def test_wrong_bigquery_endpoint_fails_quickly_naming_it(dicom_folder, monkeypatch):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    from airflow_provider_dicom.export.bigquery import export_to_bigquery

    endpoint = f"http://127.0.0.1:{closed_port()}"
    client = bigquery.Client(
        project="local-dicom", credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint}
    )
    started = time.monotonic()
    with pytest.raises(RemoteCallError, match="getting dataset local-dicom.d") as caught:
        export_to_bigquery(dicom_folder, "bq://local-dicom.d.t", client=client)
    assert_bounded(started)
    assert endpoint in str(caught.value)


def test_frozen_gcs_ends_a_filter_file_write(gcs_server, gcs_standin):
    from airflow_provider_dicom.filters.build import build_from_rows

    # Its own bucket, left behind: the stand-in refuses to delete a bucket an unfinished
    # resumable upload points at (it is in memory and gone with the session).
    bucket = gcs_standin.create_bucket(f"frozen-{uuid.uuid4().hex[:12]}")
    uri = f"gs://{bucket.name}/filters/frozen.txt"
    rows = [{"study": "1.2.3", "series": "1.2.3.4", "instance": f"1.2.3.4.{i}"} for i in range(1, 50)]
    started = time.monotonic()
    with frozen(gcs_server), pytest.raises(RemoteCallError) as caught:
        build_from_rows(rows, uri, level="instance", storage_client=gcs_standin)
    assert_bounded(started)
    assert uri in str(caught.value) and gcs_server.url in str(caught.value)


def test_frozen_gcs_ends_a_filter_file_read(gcs_server, gcs_standin, gcs_bucket):
    from airflow_provider_dicom.filters.files import load_filter

    gcs_bucket.blob("f.txt").upload_from_string("/studies/1.2.3\n")
    uri = f"gs://{gcs_bucket.name}/f.txt"
    started = time.monotonic()
    with frozen(gcs_server), pytest.raises(RemoteCallError) as caught:
        load_filter(uri, storage_client=gcs_standin)
    assert_bounded(started)
    assert f"reading filter file {uri}" in str(caught.value) and gcs_server.url in str(caught.value)


@pytest.mark.parametrize("when", ["listing", "reading"])
def test_frozen_gcs_ends_a_gcs_source_export(
    when, dicom_folder, gcs_server, gcs_standin, gcs_bucket, bigquery_standin, bq_dataset
):
    from airflow_provider_dicom.dicom.convert import InstanceConverter
    from airflow_provider_dicom.sources.gcs import GcsDicomSource

    for path in sorted(dicom_folder.iterdir()):
        gcs_bucket.blob(f"src/{path.name}").upload_from_filename(str(path))
    source = GcsDicomSource(f"gs://{gcs_bucket.name}/src/", gcs_standin, workers=2)
    objects = list(source.list_objects()) if when == "reading" else None
    started = time.monotonic()
    with frozen(gcs_server), pytest.raises(RemoteCallError) as caught:
        list(source.outcomes(InstanceConverter(), None, objects))
    assert_bounded(started)
    message = str(caught.value)
    assert gcs_server.url in message
    assert (f"listing gs://{gcs_bucket.name}/src/" if when == "listing" else f"gs://{gcs_bucket.name}/src/") in message
