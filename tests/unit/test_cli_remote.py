"""`airflow-dicom export bq` argument handling for gs:// and DICOMweb sources, before any request."""

from __future__ import annotations

import pytest

from airflow_provider_dicom.cli import main


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "257", "many"])
def test_concurrency_must_be_between_1_and_256(capsys, value):
    code, err = run(capsys, "export", "bq", "gs://bucket/dicom", "--bq-table=bq://my-project.d.t", f"--concurrency={value}")
    assert code == 2 and "--concurrency" in err and value in err


def test_dicomweb_url_with_credentials_is_refused_without_echoing_them(capsys):
    code, err = run(capsys, "export", "bq", "https://me:hunter2@pacs.test/dicom-web", "--bq-table=bq://my-project.d.t")
    assert code == 2 and "credentials" in err and "hunter2" not in err


@pytest.mark.parametrize("headers", ["not json", "[1, 2]", '{"X-Nested": {"a": 1}}'])
def test_bad_dicomweb_headers_are_a_usage_error(capsys, monkeypatch, headers):
    monkeypatch.setenv("DICOMWEB_HEADERS", headers)
    code, err = run(capsys, "export", "bq", "https://pacs.test/dicom-web", "--bq-table=bq://my-project.d.t")
    assert code == 2 and "DICOMWEB_HEADERS" in err
