"""Bad export arguments are refused before any call, with a message naming the value."""

from __future__ import annotations

import pytest

from airflow_provider_dicom.healthcare.endpoint import resolve_api_endpoint
from airflow_provider_dicom.healthcare.export_requests import (
    bigquery_export_request,
    check_store_name,
    gcs_export_request,
    normalise_mime_type,
    parse_mime_type,
)
from airflow_provider_dicom.model.uris import InvalidUriError


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"table_uri": "bq://Bad_Project.d.t"}, "'bq://Bad_Project.d.t'"),
        ({"table_uri": "my-project.d.t"}, "'my-project.d.t'"),
        ({"write_disposition": "WRITE_APPEND", "force": True}, "either write_disposition ('WRITE_APPEND') or force (True)"),
        ({"write_disposition": "append"}, "unknown write disposition 'append'"),
        ({"force": "yes"}, "force must be True or False, got 'yes'"),
        ({"schema": "xml"}, "unknown schema 'xml'"),
        ({"include_source_store": "yes"}, "include_source_store must be True or False, got 'yes'"),
        ({"filter_gcs_uri": "/local/filter.txt"}, "'/local/filter.txt'"),
        ({"filter_gcs_uri": "gs://bucket/"}, "'gs://bucket/'"),
    ],
)
def test_bigquery_arguments_are_checked(kwargs, words):
    kwargs = {"table_uri": "bq://my-project.d.t", **kwargs}
    with pytest.raises(ValueError) as caught:
        bigquery_export_request(**kwargs)
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"uri_prefix": "s3://bucket/x"}, "'s3://bucket/x'"),
        ({"uri_prefix": "gs://B"}, "'gs://B'"),
        ({"mime_type": "application/json"}, "unsupported mime_type 'application/json'"),
        ({"mime_type": "application/dicom; transfer-syntax=1.2.3"}, "'application/dicom; transfer-syntax=1.2.3'"),
        ({"mime_type": "image/png; transfer-syntax=*"}, "'image/png; transfer-syntax=*'"),
        ({"mime_type": "application/dicom; charset=utf-8"}, "the only parameter allowed"),
        ({"mime_type": ""}, "invalid mime_type ''"),
    ],
)
def test_gcs_arguments_are_checked(kwargs, words):
    kwargs = {"uri_prefix": "gs://bucket/out", **kwargs}
    with pytest.raises(ValueError) as caught:
        gcs_export_request(**kwargs)
    assert words in str(caught.value)


def test_store_names_are_checked():
    assert str(check_store_name("projects/p/locations/l/datasets/d/dicomStores/s")).endswith("/dicomStores/s")
    with pytest.raises(InvalidUriError, match="'projects/p/datasets/d/dicomStores/s'"):
        check_store_name("projects/p/datasets/d/dicomStores/s")


def test_mime_types_are_normalised():
    assert parse_mime_type("Application/DICOM ; Transfer-Syntax = *") == ("application/dicom", "*")
    assert normalise_mime_type("application/dicom;transfer-syntax=1.2.840.10008.1.2.1") == (
        "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
    )
    assert normalise_mime_type("image/png") == "image/png"


def test_destination_bodies():
    assert bigquery_export_request("bq://my-project.d.t") == {"bigqueryDestination": {"tableUri": "bq://my-project.d.t"}}
    assert bigquery_export_request("bq://my-project.d.t", force=False)["bigqueryDestination"]["force"] is False
    assert gcs_export_request("gs://bucket/dir/", filter_gcs_uri="gs://bkt/f.txt") == {
        "gcsDestination": {"uriPrefix": "gs://bucket/dir"},
        "filterConfig": {"resourcePathsGcsUri": "gs://bkt/f.txt"},
    }


def test_endpoint_resolution(monkeypatch):
    monkeypatch.delenv("HEALTHCARE_EMULATOR_HOST", raising=False)
    assert resolve_api_endpoint(None) is None
    monkeypatch.setenv("HEALTHCARE_EMULATOR_HOST", "127.0.0.1:8090")
    assert resolve_api_endpoint(None) == "http://127.0.0.1:8090/"
    assert resolve_api_endpoint("https://healthcare.example/") == "https://healthcare.example/"
    with pytest.raises(ValueError, match="'ftp://x'"):
        resolve_api_endpoint("ftp://x")
