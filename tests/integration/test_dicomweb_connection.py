"""The DICOMweb connection type against a real DICOMweb server (Orthanc, basic auth on): a
``dicomweb`` connection whose host is the server's base URL gives a client that reads it, the UI's
"Test" answers for it, and wrong credentials are told apart."""

from __future__ import annotations

import json

import pytest

from airflow_provider_dicom.hooks.dicomweb import DicomWebHook

pytestmark = pytest.mark.integration


def _connection(monkeypatch, conn_id: str, **fields) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "dicomweb", **fields}))
    return conn_id


def test_a_dicomweb_connection_reads_the_server(orthanc_standin, monkeypatch):
    url = orthanc_standin.extra["dicomweb_url"]
    conn_id = _connection(
        monkeypatch, "orthanc_web", host=url, login=orthanc_standin.extra["username"],
        password=orthanc_standin.extra["password"], extra={"timeout": 30},
    )
    hook = DicomWebHook(dicomweb_conn_id=conn_id)
    assert hook.test_connection() == (True, f"QIDO-RS answered at {url.rstrip('/')}")
    client = hook.get_conn()
    studies = client.search("studies")
    assert studies and all("0020000D" in study for study in studies)

    wrong = _connection(monkeypatch, "orthanc_wrong", host=url, login="nobody", password="wrong")
    ok, message = DicomWebHook(dicomweb_conn_id=wrong).test_connection()
    assert not ok and "HTTP 401" in message and "wrong" not in message
