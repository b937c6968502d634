"""Every request body we send to the Cloud Healthcare API is valid against its discovery document.

The document shipped with google-api-python-client is the API's contract. The walker
(`dicom_standins.emulator.contract`) is first shown to catch each kind of mistake, then
applied to every body the request builders produce for every option combination, and to the
bodies the hook really puts on the wire (captured from its HTTP layer).
"""

from __future__ import annotations

import itertools
import json

import pytest

from airflow_provider_dicom.healthcare.export_requests import (
    DICOM_TRANSFER_SYNTAXES,
    bigquery_export_request,
    gcs_export_request,
)
from dicom_standins.emulator.contract import DiscoveryContract, load_contract
from tests.unit.healthcare_fakes import recording_hook  # noqa: F401 - fixture

EXPORT = "healthcare.projects.locations.datasets.dicomStores.export"
CANCEL = "healthcare.projects.locations.datasets.operations.cancel"


@pytest.fixture(scope="module")
def contract() -> DiscoveryContract:
    return load_contract("healthcare", "v1")


# -- the walker itself ---------------------------------------------------------------------------


def test_document_describes_the_export_method(contract):
    method = contract.method(EXPORT)
    assert method["httpMethod"] == "POST"
    assert method["path"] == "v1/{+name}:export"
    assert contract.request_schema(EXPORT) == "ExportDicomDataRequest"
    destination = contract.schemas["GoogleCloudHealthcareV1DicomBigQueryDestination"]["properties"]
    # The fields our builders use must exist in the shipped revision.
    assert {"tableUri", "force", "writeDisposition", "includeSourceStore", "schemaFlattened", "schemaJson"} <= set(
        destination
    )


def test_a_valid_body_has_no_violation(contract):
    body = {
        "bigqueryDestination": {"tableUri": "bq://p.d.t", "writeDisposition": "WRITE_APPEND", "schemaJson": {}},
        "filterConfig": {"resourcePathsGcsUri": "gs://b/f.txt"},
    }
    assert contract.check_request(EXPORT, body) == []


@pytest.mark.parametrize(
    ("body", "path", "words"),
    [
        ({"bigqueryDestination": {"tableUrl": "bq://p.d.t"}}, "bigquery_destination", 'Unknown name "tableUrl"'),
        ({"bigQueryDestination": {}}, "", 'Unknown name "bigQueryDestination"'),
        ({"bigqueryDestination": {"writeDisposition": "write-append"}}, "bigquery_destination.write_disposition",
         "invalid value 'write-append'"),
        ({"bigqueryDestination": {"force": "true"}}, "bigquery_destination.force", "expected true or false"),
        ({"bigqueryDestination": {"tableUri": 5}}, "bigquery_destination.table_uri", "expected a string"),
        ({"bigqueryDestination": {"schemaJson": {"x": 1}}}, "bigquery_destination.schema_json", 'Unknown name "x"'),
        ({"bigqueryDestination": {"schemaFlattened": True}}, "bigquery_destination.schema_flattened",
         "expected an object"),
        ({"gcsDestination": ["gs://b"]}, "gcs_destination", "expected an object"),
        ({"filterConfig": {"resourcePathsGcsUri": None}}, "filter_config.resource_paths_gcs_uri", "expected a string"),
    ],
)
def test_the_walker_catches_each_kind_of_mistake(contract, body, path, words):
    violations = contract.check_request(EXPORT, body)
    assert len(violations) == 1, violations
    assert violations[0].path == path
    assert words in violations[0].message


def test_the_walker_checks_integers_and_timestamps(contract):
    assert contract.check("ProgressCounter", {"success": "12", "failure": 3}) == []
    bad = contract.check("ProgressCounter", {"success": "twelve"})
    assert [v.path for v in bad] == ["success"]
    assert contract.check("OperationMetadata", {"createTime": "2024-05-01T10:00:00.123456789Z"}) == []
    assert [v.path for v in contract.check("OperationMetadata", {"createTime": "yesterday"})] == ["create_time"]
    assert contract.check("Status", {"code": 1, "message": "cancelled"}) == []
    assert [v.path for v in contract.check("Status", {"code": True})] == ["code"]


def test_cancel_takes_an_empty_body(contract):
    assert contract.check_request(CANCEL, {}) == []
    assert contract.check_request(CANCEL, {"force": True})[0].message.startswith('Unknown name "force"')


# -- every body the builders make ----------------------------------------------------------------

DISPOSITIONS = [None, "WRITE_EMPTY", "WRITE_TRUNCATE", "WRITE_APPEND", "write-empty", "write-truncate", "write-append"]
FORCES = [None, True, False]
SOURCES = [None, True, False]
SCHEMAS = [None, "flattened", "json", "schemaJson", "FLATTENED"]
FILTERS = [None, "gs://filters/subset.txt"]
TABLES = ["bq://my-project.dicom.instances", "bq://example.com:my-project.ds.table with space"]


def _bigquery_combinations():
    for table, disposition, force, source, schema, filt in itertools.product(
        TABLES, DISPOSITIONS, FORCES, SOURCES, SCHEMAS, FILTERS
    ):
        if disposition is not None and force is not None:
            continue  # rejected before any body is built (tested below)
        yield table, disposition, force, source, schema, filt


def test_every_bigquery_body_is_valid_and_says_what_was_asked(contract):
    count = 0
    for table, disposition, force, source, schema, filt in _bigquery_combinations():
        body = bigquery_export_request(
            table, write_disposition=disposition, force=force, include_source_store=source,
            schema=schema, filter_gcs_uri=filt,
        )
        assert contract.check_request(EXPORT, body) == [], body
        destination = body["bigqueryDestination"]
        assert destination["tableUri"] == table
        assert not ("force" in destination and "writeDisposition" in destination)
        if disposition is not None:
            assert destination["writeDisposition"] == disposition.upper().replace("-", "_")
        if force is not None:
            assert destination["force"] is force
        if disposition is None and force is None:
            assert "force" not in destination and "writeDisposition" not in destination
        assert destination.get("includeSourceStore") == source
        schemas = {k for k in destination if k.startswith("schema")}
        expected = set() if schema is None else {"schemaJson" if "json" in schema.lower() else "schemaFlattened"}
        assert schemas == expected
        assert body.get("filterConfig") == ({"resourcePathsGcsUri": filt} if filt else None)
        count += 1
    assert count == 2 * (7 + 2) * 3 * 5 * 2


MIME_TYPES = (
    [None, "application/dicom", "application/octet-stream; transfer-syntax=*",
     "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1", "image/jpeg",
     "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50", "image/png", "Application/DICOM;transfer-syntax=*"]
    + [f"application/dicom; transfer-syntax={uid}" for uid in sorted(DICOM_TRANSFER_SYNTAXES)]
)


@pytest.mark.parametrize("mime_type", MIME_TYPES)
@pytest.mark.parametrize("prefix", ["gs://bucket", "gs://bucket/exports/run 1/", "gs://bucket/a/b"])
@pytest.mark.parametrize("filt", FILTERS)
def test_every_gcs_body_is_valid(contract, mime_type, prefix, filt):
    body = gcs_export_request(prefix, mime_type=mime_type, filter_gcs_uri=filt)
    assert contract.check_request(EXPORT, body) == [], body
    destination = body["gcsDestination"]
    assert not destination["uriPrefix"].endswith("/")
    assert ("mimeType" in destination) is (mime_type is not None)


# -- what the hook puts on the wire --------------------------------------------------------------


def test_the_hook_sends_exactly_the_built_bodies(contract, recording_hook):
    hook, http = recording_hook
    store = "projects/p/locations/us/datasets/d/dicomStores/s"
    operation = {"name": "projects/p/locations/us/datasets/d/operations/1"}
    calls = list(_bigquery_combinations())[::7]  # a spread of combinations, each one HTTP call
    http.responses.extend((200, operation) for _ in range(len(calls) + 2))
    for table, disposition, force, source, schema, filt in calls:
        hook.export_dicom_to_bigquery(store, table, write_disposition=disposition, force=force,
                                      include_source_store=source, schema=schema, filter_gcs_uri=filt)
    hook.export_dicom_to_gcs(store, "gs://bucket/out", mime_type="application/dicom; transfer-syntax=*")
    hook.cancel_operation(operation["name"])
    assert len(http.requests) == len(calls) + 2
    for sent in http.requests[:-1]:
        assert sent["method"] == "POST"
        assert sent["uri"].startswith(f"http://emulator.invalid/v1/{store}:export")
        assert contract.check_request(EXPORT, json.loads(sent["body"])) == []
    cancel = http.requests[-1]
    assert cancel["uri"].startswith(f"http://emulator.invalid/v1/{operation['name']}:cancel")
    assert contract.check_request(CANCEL, json.loads(cancel["body"])) == []
