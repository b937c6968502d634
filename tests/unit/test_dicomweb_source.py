"""The DICOMweb source without a server: DICOM JSON made to convert like the file it came from,
filter files turned into targeted requests, QIDO paging, and every failure reported in its place.
Requests go through the real requests/urllib3 stack to an in-process transport adapter that
answers like a DICOMweb server; the integration tests run the same code against Orthanc."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from airflow_provider_dicom.dicom.convert import InstanceConverter
from airflow_provider_dicom.filters.files import FilterSet, ResourcePath
from airflow_provider_dicom.sources.dicomweb import (
    INSTANCE_REQUESTS_PER_SERIES,
    DicomWebAuthError,
    DicomWebClient,
    DicomWebError,
    DicomWebSource,
    SeriesRef,
    _plan_filter,
    dataset_from_json,
)
from tests.unit.dicom_factory import make_dataset, roundtrip

BASE = "http://pacs.test/dicom-web"


# -- DICOM JSON -> the row a file gives ----------------------------------------------------------


def as_server_sends(ds: Dataset) -> dict:
    """The DICOM JSON a server sends for `ds`: DS/IS as JSON numbers printed to 17 digits (as
    Orthanc does), binary values as BulkDataURI references."""

    def bulk(element) -> str:
        return f"{BASE}/bulk/{element.tag:08X}"

    data = ds.to_json_dict(bulk_data_threshold=1, bulk_data_element_handler=bulk)

    def numbers(dataset: dict) -> None:
        for element in dataset.values():
            if element["vr"] in ("DS", "IS") and "Value" in element:
                element["Value"] = [json.loads(f"{float(v):.17g}") if element["vr"] == "DS" else int(v)
                                    for v in element["Value"]]
            for item in element.get("Value", []) if element["vr"] == "SQ" else []:
                numbers(item)

    numbers(data)
    return json.loads(json.dumps(data))


def file_row(ds: Dataset) -> dict:
    row = InstanceConverter().convert(roundtrip(ds)).row
    drop = {"MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID",
            "ImplementationClassUID", "ImplementationVersionName"}
    row = {k: v for k, v in row.items() if k not in drop}
    row["DroppedTags"] = [d for d in row.get("DroppedTags", []) if not d["TagReference"].startswith("0002")]
    if not row["DroppedTags"]:
        del row["DroppedTags"]
    return row


def web_row(metadata: dict) -> dict:
    return InstanceConverter().convert(dataset_from_json(metadata)).row


def test_a_servers_json_converts_to_the_files_row():
    ds = make_dataset(
        Modality="CT", PatientID="P1", SliceThickness="2.5", PixelSpacing=["0.488281", "0.488281"],
        WindowCenter="40", InstanceNumber="7", StudyDate="20200131", StudyTime="101112",
        ImageType=["ORIGINAL", "PRIMARY", "AXIAL"], Rows=2, Columns=2, PatientName="Doe^Jane",
        BitsAllocated=16, BitsStored=16, HighBit=15, PixelRepresentation=0, SamplesPerPixel=1,
    )
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "T-1", "SRT", "Chest"
    item.ReferencedFrameNumber = "3"  # an IS inside a sequence
    ds.AnatomicRegionSequence = Sequence([item])
    ds.add_new(0x00091010, "LO", "PRIVATE TEXT")
    ds.add_new(0x00091011, "DS", "1.5")
    ds.PixelData = bytes(8)
    metadata = as_server_sends(ds)
    assert metadata["00180050"]["Value"] == [2.5] and metadata["7FE00010"]["BulkDataURI"]
    assert web_row(metadata) == file_row(ds)


def test_ds_numbers_become_their_shortest_text():
    metadata = {
        "00180050": {"vr": "DS", "Value": [3.7000000000000002]},
        "00281050": {"vr": "DS", "Value": [798.0, -0.0, 1e-05, "0.50"]},
        "00200013": {"vr": "IS", "Value": [12]},
        "00080018": {"vr": "UI", "Value": ["1.2.3"]},
    }
    row = web_row(metadata)
    assert row["SliceThickness"] == "3.7"
    assert row["WindowCenter"] == ["798", "0", "1e-05", "0.50"]  # a string a server sends is kept as is
    assert row["InstanceNumber"] == "12"


def test_bulk_data_is_listed_as_dropped_never_fetched_and_never_lost():
    metadata = {
        "00080018": {"vr": "UI", "Value": ["1.2.3"]},
        "00420011": {"vr": "OB", "BulkDataURI": f"{BASE}/bulk/00420011"},
        # A text element a server moved to bulk data: not readable without fetching it, so it is
        # listed as dropped rather than exported as an empty column.
        "00181030": {"vr": "LO", "BulkDataURI": f"{BASE}/bulk/00181030"},
        "7FE00010": {"vr": "OW", "BulkDataURI": f"{BASE}/bulk/7fe00010"},
    }
    counted = []
    row = InstanceConverter().convert(dataset_from_json(metadata, counted.append)).row
    assert [d["TagReference"] for d in row["DroppedTags"]] == ["00181030", "00420011", "7FE00010"]
    assert "ProtocolName" not in row
    assert counted == ["00181030", "00420011", "7FE00010"]


def test_json_variant_lists_bulk_data_as_dropped_like_a_files():
    ds = make_dataset(Modality="OT", Rows=2, Columns=2, BitsAllocated=8, BitsStored=8, HighBit=7,
                      PixelRepresentation=0, SamplesPerPixel=1)
    ds.PixelData = bytes(4)
    ds.add_new(0x00291010, "OB", b"\x01\x02\x03")
    web = InstanceConverter(schema="json").convert(dataset_from_json(as_server_sends(ds))).row
    disk = InstanceConverter(schema="json").convert(roundtrip(ds)).row
    assert web["DroppedTags"] == [t for t in disk["DroppedTags"] if not t.startswith("0002")]
    assert "7FE00010" in web["DroppedTags"] and "7FE00010" not in web["Metadata"]
    assert {k: v for k, v in disk["Metadata"].items() if not k.startswith("0002")} == web["Metadata"]


def test_server_mangling_is_undone():
    metadata = {
        "00080005": {"vr": "CS", "Value": ["ISO 2022 IR 13", "ISO 2022 IR 87"]},
        "00080018": {"vr": "UI", "Value": ["1.2.3"]},
        # JIS X 0201 decodes the value separator as a yen sign; CS cannot hold one.
        "00080008": {"vr": "CS", "Value": ["ORIGINAL\u00a5PRIMARY"]},
        "00090010": {"vr": "LO", "Value": ["HMC "]},  # padding the file's reader strips
        # UT is single-valued: a server that split it on backslashes gets it joined back.
        "00080081": {"vr": "ST", "Value": ["C:", "dir", "file "]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Yamada^Tarou "}]},
    }
    row = web_row(metadata)
    assert row["ImageType"] == ["ORIGINAL", "PRIMARY"]
    assert {"Tag": "Tag_00090010", "Data": ["HMC"]} in row["OtherElements"]
    assert row["InstitutionAddress"] == "C:\\dir\\file"
    assert row["PatientName"]["Alphabetic"]["GivenName"] == "Tarou"


def test_yen_is_kept_in_text_and_without_ir13():
    metadata = {
        "00080018": {"vr": "UI", "Value": ["1.2.3"]},
        "00080008": {"vr": "CS", "Value": ["A\u00a5B"]},
        "00081030": {"vr": "LO", "Value": ["Price \u00a5100"]},
    }
    row = web_row(metadata)
    assert row["ImageType"] == ["A\u00a5B"] and row["StudyDescription"] == "Price \u00a5100"


# -- filters -> targeted requests ----------------------------------------------------------------


def test_filter_lines_become_the_fewest_requests():
    many = [ResourcePath("3", "3.1", f"3.1.{i}") for i in range(INSTANCE_REQUESTS_PER_SERIES + 1)]
    filter_set = FilterSet([
        ResourcePath("1"),
        ResourcePath("1", "1.1"),  # covered by its study
        ResourcePath("1", "1.1", "1.1.1"),  # covered too
        ResourcePath("2", "2.1"),
        ResourcePath("2", "2.1", "2.1.5"),  # covered by its series
        ResourcePath("2", "2.2", "2.2.1"),
        ResourcePath("2", "2.2", "2.2.2"),
        *many,
    ])
    studies, refs = _plan_filter(filter_set)
    assert studies == ["1"]
    assert refs == [
        SeriesRef("2", "2.1"),
        SeriesRef("2", "2.2", ("2.2.1", "2.2.2")),
        SeriesRef("3", "3.1"),  # many instances of one series: its metadata once, filtered here
    ]


# -- the HTTP side, through an in-process DICOMweb "server" ----------------------------------------


class FakeServer(requests.adapters.BaseAdapter):
    """Answers GETs from a routing function: path, query -> (status, body)."""

    def __init__(self, route) -> None:
        super().__init__()
        self.route = route
        self.requests: list[str] = []

    def send(self, request, **kwargs):
        parts = urlsplit(request.url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path = parts.path.removeprefix("/dicom-web")
        self.requests.append(path + (f"?{parts.query}" if parts.query else ""))
        self.last_headers = dict(request.headers)
        status, body = self.route(path, query)
        response = requests.Response()
        response.status_code = status
        response.reason = {200: "OK", 204: "No Content", 401: "Unauthorized", 404: "Not Found"}.get(status, "Error")
        response._content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response.headers["Content-Type"] = "application/dicom+json"
        response.url = request.url
        response.request = request
        return response

    def close(self):
        pass


def client_for(route, **kwargs) -> tuple[DicomWebClient, FakeServer]:
    server = FakeServer(route)
    session = requests.Session()
    session.mount("http://", server)
    return DicomWebClient(BASE, session=session, **kwargs), server


def uid(tag: str, value: str) -> dict:
    return {tag: {"vr": "UI", "Value": [value]}}


def test_paging_goes_on_past_a_short_page_until_an_empty_one():
    studies = [uid("0020000D", f"1.{i}") for i in range(7)]

    def route(path, query):
        offset, limit = int(query["offset"]), int(query["limit"])
        return 200, studies[offset : offset + min(limit, 3)]  # a server capping pages at 3

    client, server = client_for(route, page_size=5)
    assert [s["0020000D"]["Value"][0] for s in client.iter_search("studies")] == [f"1.{i}" for i in range(7)]
    assert server.requests == [f"/studies?limit=5&offset={o}" for o in (0, 3, 6, 7)]


def test_paging_stops_at_a_count_the_server_gave():
    client, server = client_for(lambda path, query: (200, [uid("0020000E", "2.1"), uid("0020000E", "2.2")]))
    assert len(client.search("studies", "1", "series", expected=2)) == 2
    assert len(server.requests) == 1


def test_credentials_and_headers_reach_the_server_and_a_refusal_is_an_auth_error():
    client, server = client_for(lambda path, query: (401, {"Message": "no"}), auth=("user", "pw"),
                                headers={"X-Tenant": "radiology"})
    with pytest.raises(DicomWebAuthError, match="HTTP 401.*credentials"):
        client.get_json(client.url("studies"))
    assert server.last_headers["Authorization"].startswith("Basic ")
    assert server.last_headers["X-Tenant"] == "radiology"


def test_no_content_is_an_empty_result_and_html_is_an_error():
    client, _ = client_for(lambda path, query: (204, b""))
    assert client.get_json(client.url("studies")) == []
    client, _ = client_for(lambda path, query: (200, b"<html>login</html>"))
    with pytest.raises(DicomWebError, match="not DICOM JSON"):
        client.get_json(client.url("studies"))


def test_urls_with_credentials_are_refused_without_echoing_them():
    with pytest.raises(ValueError, match="credentials") as excinfo:
        DicomWebClient("https://user:secret@pacs.test/dicom-web")
    assert "secret" not in str(excinfo.value)


def test_every_instance_and_every_unreadable_series_is_an_outcome_in_order():
    def instance(study, series, sop, modality="CT"):
        return {**uid("0020000D", study), **uid("0020000E", series), **uid("00080018", sop),
                "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
                "00080060": {"vr": "CS", "Value": [modality]}}

    metadata = {
        ("1", "1.1"): [instance("1", "1.1", "1.1.1"), instance("1", "1.1", "1.1.2", "MR")],
        ("2", "2.1"): [instance("2", "2.1", "2.1.1")],
    }

    def route(path, query):
        parts = path.strip("/").split("/")
        if parts == ["studies"]:
            return 200, [] if int(query["offset"]) else [uid("0020000D", s) for s in ("1", "2", "3", "1")]
        if parts[-1] == "series" and len(parts) == 3:
            series = {"1": ["1.1"], "2": ["2.1", "2.2"], "3": []}[parts[1]]
            return 200, [] if int(query["offset"]) else [uid("0020000E", s) for s in series]
        if parts[-1] == "metadata" and len(parts) == 5:
            if (parts[1], parts[3]) == ("2", "2.2"):
                return 500, {"Message": "boom"}
            return 200, metadata[(parts[1], parts[3])]
        raise AssertionError(path)

    client, server = client_for(route)
    source = DicomWebSource(client, workers=3)
    outcomes = list(source.outcomes(InstanceConverter()))
    assert [(o.path.removeprefix(BASE), o.status) for o in outcomes] == [
        ("/studies/1/series/1.1/instances/1.1.1", "ok"),
        ("/studies/1/series/1.1/instances/1.1.2", "ok"),
        ("/studies/2/series/2.1/instances/2.1.1", "ok"),
        ("/studies/2/series/2.2", "failed"),
    ]
    assert outcomes[1].converted.row["Modality"] == "MR"
    assert "HTTP 500" in outcomes[3].reason
    # Study "1", listed twice by the server, was read once.
    assert sum(r.startswith("/studies/1/series/1.1/metadata") for r in server.requests) == 1


def test_a_series_wado_cannot_find_is_resolved_instance_by_instance():
    """Orthanc's quirk: QIDO-RS lists a series whose UIDs exist twice; WADO-RS answers 404."""

    def route(path, query):
        parts = path.strip("/").split("/")
        if parts[-1] == "metadata":
            return 404, {"Message": "Accessing an inexistent item"}
        if parts[-1] == "instances":
            return 200, [] if int(query["offset"]) else [uid("00080018", "9.1"), uid("00080018", "9.1")]
        raise AssertionError(path)

    client, _ = client_for(route)
    results = DicomWebSource(client).fetch(SeriesRef("9", "9.0"))
    assert len(results) == 2  # one failure per instance the server holds
    assert all("2 instances on the server share these" in r.reason for r in results)


def test_an_http_connection_becomes_credentials_headers_and_options():
    from airflow_provider_dicom.sources.dicomweb import client_from_connection

    client = client_from_connection(
        BASE, login="user", password="pw",
        extra={"Authorization-Scope": "read", "verify": "false", "timeout": "60"}, conn_id="pacs",
    )
    assert client.session.auth == ("user", "pw")
    assert client.session.headers["Authorization-Scope"] == "read"
    assert client.session.verify is False and client.timeout[1] == 60.0
    anonymous = client_from_connection(BASE, extra={"Authorization": "Bearer abc"})
    assert anonymous.session.auth is None and anonymous.session.headers["Authorization"] == "Bearer abc"
    with pytest.raises(ValueError, match="connection 'pacs': extra 'nested' must be a header value"):
        client_from_connection(BASE, extra={"nested": {"a": 1}}, conn_id="pacs")


@pytest.mark.parametrize("text", ["abc", "1,5", "2.5\\x", " 7 ", "NaN"])
def test_an_invalid_ds_or_is_converts_as_the_files_does(text):
    """Issue 11 item 3: a DS/IS value that is not a number (a modality's "1,5") made pydicom's
    JSON reader raise and the instance was dropped; the file gives the text (in its column, or in
    OtherElements when it does not fit), and so must the server's JSON of it."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    ds = make_dataset(Modality="CT")
    raw = text.encode()
    for tag, vr in ((0x00180050, "DS"), (0x00200013, "IS")):
        ds._dict[Tag(tag)] = RawDataElement(Tag(tag), vr, len(raw), raw, 0, False, True)
    expected = file_row(ds)
    # A server sends the text it could not read as a number as a string, whole or split at "\".
    for values in ([text], text.split("\\")):
        metadata = {
            "00080016": {"vr": "UI", "Value": [ds.SOPClassUID]},
            "00080018": {"vr": "UI", "Value": [ds.SOPInstanceUID]},
            "00080060": {"vr": "CS", "Value": ["CT"]},
            "00180050": {"vr": "DS", "Value": values},
            "0020000D": {"vr": "UI", "Value": [ds.StudyInstanceUID]},
            "0020000E": {"vr": "UI", "Value": [ds.SeriesInstanceUID]},
            "00200013": {"vr": "IS", "Value": values},
        }
        assert web_row(metadata) == expected


@pytest.mark.parametrize("series_uid", ["..", ".", ""])
def test_a_dot_segment_uid_from_the_server_never_climbs_the_url(series_uid):
    """A QIDO answer naming a series `..` must not turn `/studies/S/series/../metadata` into a
    request for the whole study (URL normalisation resolves dot segments, and requests decodes
    `%2E` back to a dot): such a segment is refused before any request."""
    client, server = client_for(lambda path, query: (200, []))
    with pytest.raises(DicomWebError, match="is not a UID"):
        client.series_metadata("1.2", series_uid)
    assert server.requests == []
    client.series_metadata("1.2", "1.2.3")  # a UID with dots is one segment like any other
    assert server.requests == ["/studies/1.2/series/1.2.3/metadata"]


def test_a_series_named_dots_is_that_series_failure_and_its_neighbours_export():
    def route(path, query):
        if path == "/studies":
            return 200, [] if int(query["offset"]) else [uid("0020000D", "1.2")]
        if path == "/studies/1.2/series":
            return 200, [] if int(query["offset"]) else [uid("0020000E", ".."), uid("0020000E", "1.2.3")]
        if path == "/studies/1.2/series/1.2.3/metadata":
            return 200, [{**uid("0020000D", "1.2"), **uid("0020000E", "1.2.3"), **uid("00080018", "1.2.3.4"),
                          **uid("00080016", "1.2.840.10008.5.1.4.1.1.7")}]
        return 404, {}

    client, server = client_for(route)
    outcomes = list(DicomWebSource(client).outcomes(InstanceConverter()))
    assert sorted(o.status for o in outcomes) == ["failed", "ok"]
    failed = next(o for o in outcomes if o.status == "failed")
    assert failed.path == f"{BASE}/studies/1.2/series/.." and "is not a UID" in failed.reason
    assert not any(p.startswith("/studies/1.2/metadata") for p in server.requests)
