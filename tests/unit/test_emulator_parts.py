"""The emulator's pieces that need no server: multipart bodies, request checks, fault and behaviour
settings, operation JSON and the loopback-only rule."""

from __future__ import annotations

import pytest

from airflow_provider_dicom.healthcare.operations import EXPORT_DICOM_DATA_METHOD, OperationStatus
from airflow_provider_dicom.model.options import WriteDisposition
from dicom_standins.emulator import dicomweb
from dicom_standins.emulator.contract import load_contract
from dicom_standins.emulator.errors import ApiError
from dicom_standins.emulator.exporter import destination_options
from dicom_standins.emulator.faults import ExportBehaviour, Faults, HttpFault
from dicom_standins.emulator.server import check_export_request, check_loopback
from dicom_standins.emulator.state import EmulatorState


def test_multipart_round_trip_keeps_binary_payloads_exact():
    payloads = [b"\r\n--not-a-boundary\r\n\x00\xff" * 50, b"", b"DICM" + bytes(range(256))]
    body, content_type = dicomweb.build_multipart(payloads)
    assert content_type.startswith('multipart/related; type="application/dicom"; boundary=')
    assert dicomweb.dicom_payloads(body, content_type) == payloads


def test_multipart_with_a_quoted_boundary_and_preamble():
    body = b"preamble\r\n--b1\r\nContent-Type: application/dicom\r\n\r\nA\r\n--b1\r\n\r\nB\r\n--b1--\r\n"
    assert dicomweb.dicom_payloads(body, 'multipart/related; type="application/dicom"; boundary="b1"') == [b"A", b"B"]


@pytest.mark.parametrize(
    ("content_type", "body", "words"),
    [
        ("application/json", b"{}", "multipart/related"),
        ("multipart/related", b"--x\r\n\r\nA\r\n--x--", "without a boundary"),
        ("multipart/related; boundary=x", b"--x\r\nContent-Type: image/png\r\n\r\nA\r\n--x--", "'image/png'"),
    ],
)
def test_stow_bodies_that_are_refused(content_type, body, words):
    with pytest.raises(ApiError) as caught:
        dicomweb.dicom_payloads(body, content_type)
    assert caught.value.code == 400 and words in caught.value.message


def test_stow_of_something_that_is_not_dicom_is_a_failure_not_an_error():
    with pytest.raises(dicomweb.StowFailure) as caught:
        dicomweb.parse_instance(b"hello")
    assert caught.value.reason == dicomweb.REASON_CANNOT_UNDERSTAND


def test_qido_filters():
    metadata = {"0020000D": {"vr": "UI", "Value": ["1.2.3"]}, "00080060": {"vr": "CS", "Value": ["CT"]},
                "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}}
    filters, limit, offset = dicomweb.query_filters({"StudyInstanceUID": ["9.9,1.2.3"], "limit": ["5"]})
    assert dicomweb.matches(metadata, filters) and (limit, offset) == (5, 0)
    assert dicomweb.matches(metadata, dicomweb.query_filters({"PatientName": ["doe*"]})[0])
    assert not dicomweb.matches(metadata, dicomweb.query_filters({"00080060": ["MR"]})[0])
    with pytest.raises(ApiError, match="'Colour'"):
        dicomweb.query_filters({"Colour": ["red"]})


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "exactly one"),
        ({"bigqueryDestination": {"tableUri": "bq://p-1234.d.t"}, "gcsDestination": {"uriPrefix": "gs://bkt"}},
         "exactly one"),
        ({"bigqueryDestination": {}}, "table_uri is required"),
        ({"bigqueryDestination": {"tableUri": "bq://p-1234.d.t", "schemaJson": {}, "schemaFlattened": {}}},
         "only one of schema_flattened or schema_json"),
        ({"gcsDestination": {"uriPrefix": "s3://x"}}, "'s3://x'"),
        ({"gcsDestination": {"uriPrefix": "gs://bkt", "mimeType": "image/gif"}}, "'image/gif'"),
        ({"gcsDestination": {"uriPrefix": "gs://bkt"}, "filterConfig": {"resourcePathsGcsUri": "gs://bkt/"}},
         "'gs://bkt/'"),
    ],
)
def test_export_requests_the_api_refuses(body, words):
    with pytest.raises(ApiError) as caught:
        check_export_request(body)
    assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"
    assert words in caught.value.message


def test_export_request_semantics_of_force_and_disposition():
    # A specified writeDisposition wins and force is then ignored, as the API documents.
    both = destination_options({"writeDisposition": "WRITE_APPEND", "force": False})
    assert both.disposition is WriteDisposition.WRITE_APPEND and not both.fails_on_existing_table
    unspecified = destination_options({"writeDisposition": "WRITE_DISPOSITION_UNSPECIFIED", "force": True})
    assert unspecified.disposition is WriteDisposition.WRITE_TRUNCATE
    assert destination_options({}).fails_on_existing_table
    assert not destination_options({"writeDisposition": "WRITE_EMPTY"}).fails_on_existing_table


def test_http_faults_are_consumed_in_order_and_match_path_and_method():
    faults = Faults()
    faults.add(HttpFault.from_json({"status": 429, "count": 2, "path": r":export$", "method": "post"}))
    faults.add(HttpFault.from_json({"status": 503, "retryAfter": 0.5}))
    assert faults.take("GET", "/v1/x:export").status == 503  # method does not match the first
    assert faults.take("POST", "/v1/x:export").status == 429
    assert faults.take("POST", "/v1/x:export").status == 429
    assert faults.take("POST", "/v1/x:export") is None
    body = HttpFault(429).body()
    assert body == {"error": {"code": 429, "message": "Injected fault: HTTP 429 (RESOURCE_EXHAUSTED).",
                              "status": "RESOURCE_EXHAUSTED"}}


@pytest.mark.parametrize(
    ("data", "words"),
    [({"status": 200}, "400-599"), ({"status": 429, "count": 0}, "positive"), ({"status": 429, "colour": 1}, "colour")],
)
def test_bad_fault_settings(data, words):
    with pytest.raises(ValueError, match=words):
        HttpFault.from_json(data)


def test_behaviour_settings():
    behaviour = ExportBehaviour.from_json({"instanceDelaySeconds": 0.5, "failInstances": ["1.2"], "failFirst": 1})
    assert behaviour.to_json() == {"instanceDelaySeconds": 0.5, "failInstances": ["1.2"], "failFirst": 1}
    with pytest.raises(ValueError, match="instanceDelaySeconds"):
        ExportBehaviour.from_json({"instanceDelaySeconds": -1})
    with pytest.raises(ValueError, match="unknown behaviour fields: slow"):
        ExportBehaviour.from_json({"slow": True})


def test_operation_json_is_what_the_api_sends():
    state = EmulatorState()
    operation = state.new_operation("projects/p/locations/l/datasets/d", EXPORT_DICOM_DATA_METHOD, "http://127.0.0.1:1")
    operation.counted = True
    operation.pending, operation.success = 3, 2
    body = operation.to_api()
    assert body["metadata"]["counter"] == {"success": "2", "pending": "3"}  # int64 as strings, zeros left out
    assert "done" not in body and "endTime" not in body["metadata"]
    contract = load_contract()
    assert contract.check("Operation", body) == []
    assert contract.check("OperationMetadata", {k: v for k, v in body["metadata"].items() if k != "@type"}) == []
    status = OperationStatus.from_api(body)
    assert status.name.startswith("projects/p/locations/l/datasets/d/operations/") and status.pending == 3
    assert status.logs_url == f"http://127.0.0.1:1/emulator/logs/{status.name}"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_addresses_are_accepted(host):
    check_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "example.com"])
def test_other_addresses_are_refused(host):
    with pytest.raises(ValueError, match="only listens on a loopback address"):
        check_loopback(host)


def test_a_dropped_response_fault_has_no_status_and_is_consumed_like_the_others():
    fault = HttpFault.from_json({"dropResponse": True, "count": 2, "path": r":export$", "method": "POST"})
    assert fault.drop_response and fault.status is None
    assert fault.to_json()["dropResponse"] is True
    faults = Faults()
    faults.add(fault)
    assert faults.take("POST", "/v1/x:export") is fault and faults.take("POST", "/v1/x:export") is fault
    assert faults.take("POST", "/v1/x:export") is None
    for bad in ({"dropResponse": True, "status": 500}, {"dropResponse": "yes"}, {"count": 1}):
        with pytest.raises(ValueError):
            HttpFault.from_json(bad)


def test_stow_of_a_file_pydicom_cannot_read_is_refused_not_a_server_error():
    """A file meta group pydicom chokes on (BytesLengthException) is a StowFailure for that
    instance, like any unreadable file, not an exception that would answer HTTP 500."""
    from tests.unit.test_malformed_instances import bad_meta_group_length

    with pytest.raises(dicomweb.StowFailure) as caught:
        dicomweb.parse_instance(bad_meta_group_length())
    assert caught.value.reason == dicomweb.REASON_CANNOT_UNDERSTAND
