"""Every route to a row gives the same row: one instance, whichever way it reaches the walker.

The routes: a folder's file (scanned, then the walker), a gs:// object (its header fetched by
ranges, scanned, then the walker), the pydicom Dataset of the same file (what only pydicom can
judge), the emulator's BigQuery export of the stored instance, and a DICOMweb server's DICOM JSON
(walked straight from the JSON, or, for what that adapter leaves to pydicom, through
`Dataset.from_json`). Both tables: flattened, and the single JSON column, whose Metadata is
pydicom's DICOM JSON of the instance's Dataset (`to_json_dict`, the oracle: the pydicom route),
made by walking the scanned header on the folder and gs:// routes (json_table.py). The corpus:
every file of pydicom's test corpus and of the malformed fuzz corpus
(tests/helpers/fuzz_corpus.py), and for DICOMweb the JSON our emulator (as Orthanc) serves for
each of them, numbers as Orthanc prints them, and mangled JSON.
"""

from __future__ import annotations

import copy
import json
import os
import random
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest

from airflow_provider_dicom.dicom.convert import InstanceConverter
from airflow_provider_dicom.dicom.json_model import dataset_from_json, prepare
from airflow_provider_dicom.dicom.outcomes import (
    OK,
    InstanceOutcome,
    convert_dataset,
    convert_instance,
    convert_json_metadata,
)
from airflow_provider_dicom.dicom.read import read_instance
from airflow_provider_dicom.dicom.walker import NeedsPydicom
from airflow_provider_dicom.sources.folder import convert_file, iter_folder
from airflow_provider_dicom.sources.gcs import GcsDicomSource, ObjectInfo, read_header
from dicom_standins.emulator.dicomweb import instance_metadata
from dicom_standins.emulator.exporter import convert_stored
from tests.helpers.fuzz_corpus import generate
from tests.unit.test_fuzz_outcomes import _mangle
from tests.unit.test_gcs_source import ByteServer

PYDICOM_CORPUS = Path(pydicom.__file__).parent / "data" / "test_files"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    fuzz = generate(tmp_path_factory.mktemp("fuzz"))
    return sorted(iter_folder(PYDICOM_CORPUS)) + [Path(p) for p in fuzz.paths]


def comparable(outcome: InstanceOutcome) -> tuple:
    """What a user sees of an outcome: its status, reason, row (as the bytes loaded) and schema."""
    converted = outcome.converted
    if converted is None:
        return (outcome.status, outcome.reason, None, None)
    return (outcome.status, outcome.reason, json.dumps(converted.row), converted.fields)


@pytest.mark.parametrize("schema", ["flattened", "json"])
def test_folder_gcs_pydicom_and_emulator_routes_give_the_same_row(corpus, schema):
    converter = InstanceConverter(schema=schema)
    gcs = GcsDicomSource("gs://bucket", client=object())
    rows = 0
    for path in corpus:
        name = os.fspath(path)
        data = path.read_bytes()
        stat = path.stat()
        updated = datetime.fromtimestamp(stat.st_mtime, tz=UTC)
        folder = comparable(convert_file(path, converter))
        pydicom_route = convert_instance(
            name, lambda name=name: read_instance(name), converter, blob_storage_size=stat.st_size, last_updated=updated
        )
        assert comparable(pydicom_route) == folder, path.name
        # gs://: a 1 KB first range, so most headers are fetched in growing ranges.
        info = ObjectInfo(name, len(data), updated)
        assert comparable(gcs._outcome(read_header(info, ByteServer(data), 1024, uri=name), converter, None)) == (
            folder
        ), path.name
        # The emulator's export of the stored instance: the same row, or a failure where the
        # folder export reports one.
        try:
            stored = convert_stored(data, converter, last_updated=updated)
        except Exception:  # noqa: BLE001 - the emulator fails the instance, whatever was raised
            assert folder[0] != OK, path.name
        else:
            if folder[0] == OK:
                assert (json.dumps(stored.row), stored.fields) == folder[2:], path.name
                rows += 1
    assert rows > 180


def test_the_json_tables_walker_gives_pydicoms_json_or_hands_the_instance_on(corpus):
    """The JSON table's Metadata walked from a scanned header is pydicom's `to_json_dict` of the
    instance's Dataset (the oracle) byte for byte; what it cannot mirror it hands on (NeedsPydicom),
    and it walks most of the corpus itself."""
    from airflow_provider_dicom.dicom.parse import to_dataset
    from airflow_provider_dicom.dicom.read import quiet_pydicom
    from airflow_provider_dicom.dicom.scan import Unsupported, scan_part10
    from airflow_provider_dicom.dicom.scanned import hands_on

    converter = InstanceConverter(schema="json")
    scanned = walked = 0
    for path in corpus:
        data = path.read_bytes()
        try:
            lean = scan_part10(data)
        except Unsupported:
            continue
        if hands_on(lean):
            continue
        scanned += 1
        try:
            mine = converter.convert_lean(lean, blob_storage_size=len(data))
        except NeedsPydicom:
            continue
        walked += 1
        with quiet_pydicom():
            oracle = converter.convert(to_dataset(lean, data, path.name), blob_storage_size=len(data))
        assert (json.dumps(mine.row), mine.fields) == (json.dumps(oracle.row), oracle.fields), path.name
    assert scanned > 200 and walked >= 0.8 * scanned, (walked, scanned)


# Values for the JSON table's random elements: padding, separators, group separators, numbers
# pydicom takes or refuses, non-ASCII bytes, an ISO 2022 escape, over-long values.
_ATOMS = [
    b"", b" ", b"\x00", b"A", b"abc", b"1", b"0.5", b"-1e3", b"1.2.840.10008", b"20240101", b"101530.5",
    b"Doe^Jane", b"=", b"^", b"\\", b"  x  ", b"1,5", b"\xe9", b"\xc3\xa9", b"\x1b$B", b"\t", b"012", b"1.", b".5",
    b"+7", b"NaN", b"A" * 70, b"9" * 17, b"1.2.0123", b"ORIGINAL", b"lower", b"2147483648", b"Y", b"045Y",
]
_TAG_OF_VR = {
    "LO": 0x00081030, "SH": 0x00081010, "CS": 0x00080060, "UI": 0x00081155, "DA": 0x00080020, "TM": 0x00080030,
    "DT": 0x0008002A, "AS": 0x00101010, "AE": 0x00020016, "PN": 0x00081050, "DS": 0x00180050, "IS": 0x00200013,
    "LT": 0x00204000, "ST": 0x00080081, "UT": 0x00400441, "UC": 0x00080119, "US": 0x00280010, "FD": 0x00189087,
    "FL": 0x00189089, "SL": 0x00186020, "SS": 0x00280106, "UL": 0x00081161, "AT": 0x00209165, "OB": 0x00189733,
    "SQ": 0x00081140,
}


def _explicit_element(vr: str, tag: int, value: bytes) -> bytes:
    import struct

    if len(value) % 2:
        value += b" "
    if vr in ("OB", "SQ", "UT", "UC"):
        return struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value


def test_random_values_give_pydicoms_json_or_are_handed_on():
    """Values of every VR the JSON table's walker writes, odd ones included, appended to a file:
    the walked row is the oracle's byte for byte whenever the walker does not hand it on."""
    import struct

    from airflow_provider_dicom.dicom.parse import to_dataset
    from airflow_provider_dicom.dicom.read import quiet_pydicom
    from airflow_provider_dicom.dicom.scan import Unsupported, scan_part10
    from tests.unit.dicom_factory import make_dataset, to_file_bytes

    rng = random.Random(13)
    converter = InstanceConverter(schema="json")
    walked = 0
    for _ in range(1200):
        ds = make_dataset(Modality="CT")
        if rng.random() < 0.3:
            ds.SpecificCharacterSet = rng.choice(["ISO_IR 100", "ISO_IR 192", "ISO_IR 6", ""])
        extra = b""
        for _ in range(rng.randint(1, 4)):
            vr = rng.choice(list(_TAG_OF_VR))
            if vr in ("US", "FD", "FL", "SL", "SS", "UL", "AT", "OB"):
                value = bytes(rng.randrange(256) for _ in range(rng.choice([0, 2, 4, 8, 3])))
            elif vr == "SQ":
                inner = _explicit_element("LO", 0x00081030, b"x" + rng.choice(_ATOMS)[:3])
                value = struct.pack("<HHL", 0xFFFE, 0xE000, len(inner)) + inner
            else:
                value = b"\\".join(rng.choice(_ATOMS) for _ in range(rng.randint(1, 3)))
            extra += _explicit_element(vr, _TAG_OF_VR[vr], value)
        data = to_file_bytes(ds) + extra
        try:
            lean = scan_part10(data)
            mine = converter.convert_lean(lean)
        except (Unsupported, NeedsPydicom):
            continue
        walked += 1
        with quiet_pydicom():
            oracle = converter.convert(to_dataset(lean, data, "x"))
        assert json.dumps(mine.row) == json.dumps(oracle.row), extra
    assert walked > 300


@pytest.mark.parametrize("name", ["rtdose.dcm", "rtdose_expb.dcm", "badVR.dcm"])
def test_the_json_table_keeps_pydicoms_rule_for_a_sequence_holding_a_value_it_refuses(name):
    """pydicom writes DICOM JSON with strict reading: a value it refuses inside a sequence item (here
    a ReferencedSOPInstanceUID with a leading-zero component, "...0123...") costs the whole
    top-level sequence. The JSON table keeps that rule on every route, because its rows are
    pydicom's; the flattened table keeps ReferencedRTPlanSequence, the UID as it is."""
    path = PYDICOM_CORPUS / name
    json_row = convert_file(path, InstanceConverter(schema="json")).converted.row
    flat_row = convert_file(path, InstanceConverter()).converted.row
    assert "300C0002" not in json_row["Metadata"]
    assert "ReferencedRTPlanSequence" in flat_row


def _orthanc_numbers(dataset: dict) -> dict:
    """DS and IS as JSON numbers, printed to 17 digits, as Orthanc sends them."""
    out = copy.deepcopy(dataset)

    def walk(items: dict) -> None:
        for element in items.values():
            values = element.get("Value")
            if element.get("vr") in ("DS", "IS") and isinstance(values, list):
                try:
                    element["Value"] = [
                        json.loads(f"{float(v):.17g}") if element["vr"] == "DS" else int(v) for v in values
                    ]
                except (TypeError, ValueError, OverflowError):
                    pass  # not a number: sent as the file's text
            elif element.get("vr") == "SQ" and isinstance(values, list):
                for item in values:
                    if isinstance(item, dict):
                        walk(item)

    walk(out)
    return out


def _dicomweb_cases(corpus: list[Path]) -> list[tuple[str, dict]]:
    cases = []
    for path in corpus:
        try:
            metadata = instance_metadata(path.read_bytes())
        except Exception:  # noqa: BLE001, S112 - not an instance a server would store
            continue
        metadata = json.loads(json.dumps(metadata))
        cases += [(path.name, metadata), (f"{path.name} (Orthanc numbers)", _orthanc_numbers(metadata))]
    return cases


def _pydicom_route(name: str, metadata: dict, converter: InstanceConverter) -> InstanceOutcome:
    """DICOMweb before the JSON walker: Dataset.from_json, then the Dataset adapter."""
    try:
        ds = dataset_from_json(metadata)
    except Exception as exc:  # noqa: BLE001
        return InstanceOutcome(name, "failed", reason=f"invalid DICOM JSON ({type(exc).__name__})")
    return convert_dataset(name, ds, converter)


def _same_web_outcome(walked: InstanceOutcome, through_pydicom: InstanceOutcome) -> bool:
    if through_pydicom.status != OK:  # the reasons differ in wording, never in outcome
        return walked.status == through_pydicom.status
    return comparable(walked) == comparable(through_pydicom)


def _walks_as_pydicom(name: str, metadata: dict, converter: InstanceConverter) -> bool:
    """Asserts both JSON routes give the oracle's outcome (Dataset.from_json, then the Dataset
    adapter), and the straight walk its row byte for byte; False if the walk handed it on."""
    oracle = _pydicom_route(name, metadata, converter)
    assert _same_web_outcome(convert_json_metadata(name, metadata, converter), oracle), (name, metadata)
    try:
        mine = converter.convert_prepared(prepare(metadata, None))
    except NeedsPydicom:
        return False
    if oracle.status == OK:  # else the outcomes agree (above): e.g. both lack a SOPInstanceUID
        assert (json.dumps(mine.row), mine.fields) == comparable(oracle)[2:], (name, metadata)
    return True


@pytest.mark.parametrize("schema", ["flattened", "json"])
def test_dicomweb_json_walked_straight_gives_the_row_of_pydicoms_dataset(corpus, schema):
    """Either table: the row walked straight from a server's JSON (json_model.py; the JSON table's
    Metadata by json_table.py) is, byte for byte, the row of the Dataset pydicom builds of that JSON
    (the oracle), and the walk takes almost every instance itself."""
    converter = InstanceConverter(schema=schema)
    walked_straight = 0
    cases = _dicomweb_cases(corpus)
    for name, metadata in cases:
        walked_straight += _walks_as_pydicom(name, metadata, converter)
    # The JSON walker carries what servers send; pydicom is for the odd instance.
    assert len(cases) > 300 and walked_straight >= 0.95 * len(cases), (walked_straight, len(cases))


@pytest.mark.parametrize("schema", ["flattened", "json"])
def test_mangled_dicomweb_json_gives_the_outcome_pydicoms_dataset_gives(schema):
    """What a server might send wrong (types, VRs, keys): the JSON walker takes what it can settle
    as pydicom would and hands the rest on, so the outcome never depends on the route."""
    from tests.unit.dicom_factory import make_dataset

    rng = random.Random(13)
    converter = InstanceConverter(schema=schema)
    base = make_dataset(
        Modality="CT", PatientName="Doe^Jane", SliceThickness="2.5", ImageType=["ORIGINAL", "PRIMARY"],
        Rows=4, FrameOfReferenceUID="1.2.3", TimezoneOffsetFromUTC="+0100", AcquisitionDateTime="20240101101500",
    ).to_json_dict()
    cases = []
    for _ in range(400):
        metadata = copy.deepcopy(base)
        for _ in range(rng.randint(1, 3)):
            key = rng.choice([*metadata, "00091010", "00100010", "00180050", "00081030", "00080201", "00201041"])
            metadata[key] = _mangle(metadata.get(key), rng)
        cases.append(metadata)
    for index, metadata in enumerate(cases):
        name = f"case {index}"
        assert _same_web_outcome(
            convert_json_metadata(name, metadata, converter), _pydicom_route(name, metadata, converter)
        ), metadata


# Values for random DICOM JSON elements: padding, separators, name groups, numbers pydicom takes
# or fails on (as text and as JSON numbers), non-ASCII text, control characters.
_JSON_ATOMS = [
    "", " ", "a", "a\\b", "\\", "x\\", " 1.2 ", "1.2\t", "\t", "1.2.840.10008", "Doe^J", "Doe^J=Yama=yama",
    "=", "==", "A=B=C=D", "x=", "=y", "1A", "1.5", "-2", "+7", ".5", "1.", "1,5", "0.30000000000000004",
    "nan", "1e400", "12345678901234567", "\x00", "é", "山田", "1 2", "1\\\\2", 3, 2.5, 1e-05, 16.0, -0.0, None,
]
_JSON_VRS = [
    "AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT", "PN", "DS", "IS",
    "US", "SS", "UL", "SL", "FL", "FD", "AT", "OB", "OW", "UN", "SQ",
]
_JSON_TAGS = {"PN": 0x00081050, "SQ": 0x00081140, "UN": 0x00091011, "AT": 0x00209165, "OB": 0x00189733}


def _random_json_element(rng: random.Random, vr: str, depth: int = 0) -> dict:
    if vr == "SQ":
        items = []
        for _ in range(rng.randint(0, 2)):
            inner = rng.choice(_JSON_VRS[:-1] if depth else _JSON_VRS)
            tags = [0x00081030, 0x00180050, 0x00080000, 0x00091012, _JSON_TAGS.get(inner, 0x00081030)]
            tag = rng.choice(tags)
            items.append({f"{tag:08X}": _random_json_element(rng, inner, depth + 1)})
        return {"vr": "SQ", "Value": items}
    if vr in ("OB", "OW", "UN"):
        return rng.choice([{"vr": vr}, {"vr": vr, "InlineBinary": ""}, {"vr": vr, "InlineBinary": "AAEC"},
                           {"vr": vr, "InlineBinary": ["AAA="]}, {"vr": vr, "InlineBinary": []},
                           {"vr": vr, "BulkDataURI": "http://pacs.test/b"}])
    if rng.random() < 0.1:
        return {"vr": vr}
    count = rng.choice([1, 1, 1, 2, 3])
    if vr in ("US", "SS", "UL", "SL"):
        values: list = [rng.choice([0, 1, 7, 65535, 2.0]) for _ in range(count)]
    elif vr in ("FL", "FD"):
        values = [rng.choice([0, 1.5, -2, 1e-05, 3]) for _ in range(count)]
    elif vr == "AT":
        values = [rng.choice(["00100010", "7FE00010", "00080000"]) for _ in range(count)]
    elif vr == "PN":
        groups = ["Alphabetic", "Ideographic", "Phonetic"]
        values = [
            None if rng.random() < 0.1
            else {group: rng.choice(_JSON_ATOMS[:20]) for group in rng.sample(groups, rng.randint(0, 3))}
            for _ in range(count)
        ]
    else:
        values = [rng.choice(_JSON_ATOMS) for _ in range(count)]
        if vr not in ("DS", "IS"):
            values = [v if v is None else str(v) for v in values]
    return {"vr": vr, "Value": values}


def test_random_dicom_json_gives_pydicoms_json_table_or_is_handed_on():
    """DICOM JSON elements of every VR, odd values included, at the top level and in items: the
    JSON table walked straight from the JSON (json_table.json_model_metadata) is the oracle's
    (Dataset.from_json, then to_json_dict) byte for byte whenever it does not hand the instance on."""
    from tests.unit.dicom_factory import make_dataset

    rng = random.Random(13)
    converter = InstanceConverter(schema="json")
    base = make_dataset(Modality="CT", PatientName="Doe^Jane", SliceThickness="2.5").to_json_dict()
    walked = 0
    for index in range(1500):
        metadata = copy.deepcopy(base)
        for _ in range(rng.randint(1, 4)):
            vr = rng.choice(_JSON_VRS)
            tag = rng.choice([_JSON_TAGS.get(vr, 0x00081030), 0x00180050, 0x00200013, 0x00091010, 0x00080000])
            metadata[f"{tag:08X}"] = _random_json_element(rng, vr)
        walked += _walks_as_pydicom(f"case {index}", metadata, converter)
    assert walked > 750, walked


@pytest.mark.parametrize(
    "element",
    [
        {"vr": "PN", "Value": [{}]},
        {"vr": "PN", "Value": [{"Ideographic": "山田"}]},
        {"vr": "PN", "Value": [{"Phonetic": "やまだ"}, {"Alphabetic": "Doe^J"}]},
        {"vr": "PN", "Value": [None, {"Alphabetic": "Doe^J", "Ideographic": "", "Phonetic": "x"}]},
        {"vr": "PN", "Value": [{"Alphabetic": "A=B"}]},
        {"vr": "PN", "Value": ["Doe^Jane"]},
        {"vr": "LO", "Value": [""]},
        {"vr": "LO", "Value": ["", "x", None]},
        {"vr": "LO", "Value": [None]},
        {"vr": "LO", "Value": "not a list"},
        {"vr": "LO", "InlineBinary": "AAA="},
        {"vr": "US", "Value": [1.7, 2]},
        {"vr": "US", "Value": ["3"]},
        {"vr": "US", "Value": [None]},
        {"vr": "US", "Value": [1, None]},
        {"vr": "FD", "Value": [1e308, 2]},
        {"vr": "AT", "Value": ["00100010", "7fe00010"]},
        {"vr": "AT", "Value": ["nonsense"]},
        {"vr": "UN", "InlineBinary": "AAEC"},
        {"vr": "UN", "InlineBinary": "not base64!"},
        {"vr": "OB", "InlineBinary": ["AAEC"]},
        {"vr": "OB", "BulkDataURI": "http://pacs.test/bulk/1"},
        {"vr": "OW"},
        {"vr": "SQ", "Value": [None, {}, {"00080100": {"vr": "SH", "Value": ["X"]}}]},
        {"vr": "SQ"},
        {"vr": "SQ", "Value": ["x"]},
        {"vr": "DS", "Value": [0.1, "1,5", None, 1e-05]},
        {"vr": "IS", "Value": [None]},
        {"vr": "DA", "Value": ["20240131", "2024"]},
        {"vr": "XX", "Value": ["x"]},
        {"vr": "LO", "Value": ["x"], "InlineBinary": "AAA="},
        {"vr": "LO", "Value": ["a\\b"]},
        {"vr": "UR", "Value": ["a\\b"]},
        {"vr": "UT", "Value": ["a\\b"]},
        {"vr": "UI", "Value": ["\t"]},
        {"vr": "UI", "Value": [" 1.2\\3.4\t"]},
        {"vr": "PN", "Value": [{"Alphabetic": "A=B=C=D"}]},
        {"vr": "PN", "Value": [{"Alphabetic": "x\\y"}]},
        {"vr": "PN", "Value": [{"Alphabetic": "x"}, {"Alphabetic": "="}]},
        {"vr": "DS", "Value": ["1A", 2]},
        {"vr": "IS", "Value": ["1\\2", "x"]},
        {"vr": "SQ", "Value": [{"00180050": {"vr": "DS", "Value": ["1A"]}}]},
        {"vr": "SQ", "Value": [
            {"00080000": {"vr": "UL", "Value": [4]}, "00091011": {"vr": "OB", "InlineBinary": "AQ=="}},
        ]},
        {"vr": "OB", "InlineBinary": []},
        {"vr": "UN"},
    ],
)
@pytest.mark.parametrize("key", ["00081030", "00091010", "00100010", "00081140", "0008103e", "60000022"])
@pytest.mark.parametrize("schema", ["flattened", "json"])
def test_odd_dicom_json_elements_give_the_outcome_pydicoms_dataset_gives(element, key, schema):
    converter = InstanceConverter(schema=schema)
    metadata = {
        "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
        "00080018": {"vr": "UI", "Value": ["1.2.3"]},
        key: element,
        "00090010": {"vr": "LO", "Value": ["ACME"]},
    }
    assert _same_web_outcome(
        convert_json_metadata("odd", metadata, converter), _pydicom_route("odd", metadata, converter)
    )


# Columns and DroppedTags a DICOMweb server cannot give: the File Meta Information (group 0002) is
# not part of the DICOM JSON model, bulk data is left out, and there is no stored size or time.
def _without_what_dicomweb_cannot_carry(row: dict) -> dict:
    from pydicom.datadict import keyword_dict

    return {
        name: value for name, value in row.items()
        if name not in ("DroppedTags", "BlobStorageSize", "LastUpdated") and keyword_dict.get(name, 0) >> 16 != 2
        and value != ""  # an element of blanks is an empty value in the JSON model
    }


def _same_values(a: object, b: object) -> bool:
    """Equal, except that a DS the file holds as "0.50" comes back from JSON numbers as "0.5"."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_values(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_values(x, y) for x, y in zip(a, b))
    if isinstance(a, str) and isinstance(b, str) and a != b:
        try:
            return float(a) == float(b)
        except ValueError:
            return False
    return a == b


# pydicom's DICOM JSON (the emulator's, the JSON table's) leaves out ReferencedRTPlanSequence of
# these implicit VR RT Dose files: the JSON model has nothing to walk.
_NOT_IN_THE_JSON_MODEL = {
    name: "ReferencedRTPlanSequence"
    for name in ("badVR.dcm", "rtdose.dcm", "rtdose_1frame.dcm", "rtdose_expb.dcm", "rtdose_expb_1frame.dcm",
                 "rtdose_rle.dcm", "rtdose_rle_1frame.dcm")
}


def test_dicomweb_gives_the_files_row_but_for_what_dicom_json_cannot_carry():
    converter = InstanceConverter()
    compared = 0
    for path in sorted(iter_folder(PYDICOM_CORPUS)):
        folder = convert_file(path, converter)
        if folder.status != OK:
            continue
        metadata = json.loads(json.dumps(instance_metadata(path.read_bytes())))
        web = convert_json_metadata(f"web/{path.name}", metadata, converter)
        assert web.status == OK, (path.name, web.reason)
        expected = _without_what_dicomweb_cannot_carry(folder.converted.row)
        if path.name in _NOT_IN_THE_JSON_MODEL:
            del expected[_NOT_IN_THE_JSON_MODEL[path.name]]
        assert _same_values(_without_what_dicomweb_cannot_carry(web.converted.row), expected), path.name
        compared += 1
    assert compared > 140


# A multi-valued string whose first values keep their padding in the file ("DERIVED \PRIMARY"):
# pydicom's DICOM JSON of the file keeps "DERIVED ", a server's JSON is stripped (json_model.prepare
# strips what servers pad), so the JSON tables differ in that one element.
_PADDED_IN_THE_FILE = {name: "00080008" for name in ("693_J2KI.dcm", "SC_rgb_gdcm_KY.dcm", "SC_rgb_jpeg_lossy_gdcm.dcm")}


def _kept_as_text(entry: dict) -> bool:
    """A file's element pydicom's strict reading refused, kept as its text by convert.py (as UN, or
    as a PN of plain strings). A fuzzed file has such values; the server's JSON holds whatever the
    server made of it (here: the value as a valid element, or nothing), which pydicom does not judge
    again (its JSON reader does not validate): the two tables differ in that element."""
    values = entry.get("Value")
    return isinstance(values, list) and (
        entry["vr"] == "UN" or (entry["vr"] == "PN" and any(isinstance(v, str) for v in values))
    )


def test_dicomweb_json_table_gives_the_files_metadata_but_the_file_meta(corpus):
    """The JSON table of a server's JSON of a file (the emulator's, as Orthanc) is the folder
    route's JSON table of the file, but for the File Meta Information; walked straight from the
    JSON (json_table.json_model_metadata) wherever the walk does not hand the instance on."""
    converter = InstanceConverter(schema="json")
    compared = walked = 0
    for path in corpus:
        folder = convert_file(path, converter)
        if folder.status != OK:
            continue
        try:
            metadata = json.loads(json.dumps(instance_metadata(path.read_bytes())))
        except Exception:  # noqa: BLE001, S112 - not an instance a server would store
            continue
        web = convert_json_metadata(f"web/{path.name}", metadata, converter)
        if web.status != OK and not path.is_relative_to(PYDICOM_CORPUS):
            continue  # a malformed file pydicom's JSON reader refuses (Dataset.from_json: no walk)
        assert web.status == OK, (path.name, web.reason)
        expected = {key: value for key, value in folder.converted.row["Metadata"].items() if not key.startswith("0002")}
        got = dict(web.converted.row["Metadata"])
        if path.name in _PADDED_IN_THE_FILE:
            key = _PADDED_IN_THE_FILE[path.name]
            assert [v.strip() for v in expected.pop(key)["Value"]] == got.pop(key)["Value"], path.name
        if not path.is_relative_to(PYDICOM_CORPUS):
            for key in [key for key, entry in expected.items() if _kept_as_text(entry)]:
                del expected[key]
                got.pop(key, None)
        assert got == expected, path.name
        compared += 1
        try:
            converter.convert_prepared(prepare(metadata, None))
        except NeedsPydicom:
            continue
        walked += 1
    assert compared > 140 and walked >= 0.95 * compared, (walked, compared)
