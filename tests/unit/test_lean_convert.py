"""The fast route (scan.py + scanned.py) must give exactly the outcome of the general route
(pydicom Datasets through InstanceConverter.convert), file for file, on odd inputs too."""

from __future__ import annotations

import io
import json
import os
import zlib
from datetime import datetime, timezone
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from airflow_provider_dicom.dicom import walker as convert_module
from airflow_provider_dicom.dicom.convert import InstanceConverter
from airflow_provider_dicom.dicom.outcomes import convert_bytes, convert_instance
from airflow_provider_dicom.dicom.read import read_instance
from airflow_provider_dicom.sources.folder import convert_file
from tests.unit.dicom_factory import fast_route, make_dataset, other_elements, to_file_bytes

CORPUS = Path(pydicom.__file__).parent / "data" / "test_files"


def _general_route(path: Path, converter: InstanceConverter, accept=None):
    """What convert_file did before the fast route: stat, read_instance, convert."""
    name = os.fspath(path)
    stat = os.stat(name)
    return convert_instance(
        name, lambda: read_instance(name), converter, accept,
        blob_storage_size=stat.st_size,
        last_updated=datetime.fromtimestamp(stat.st_mtime, tz=timezone.utc),
    )


def _same_outcome(fast, general) -> bool:
    def comparable(outcome):
        converted = outcome.converted
        return (
            outcome.path, outcome.status, outcome.reason,
            None if converted is None else json.dumps(converted.row),
            None if converted is None else converted.fields,
            None if converted is None else (converted.study_uid, converted.series_uid, converted.sop_uid),
        )

    return comparable(fast) == comparable(general)


def test_both_routes_agree_on_the_whole_pydicom_corpus():
    converter = InstanceConverter()
    disagreements, fast_taken = [], 0
    for path in sorted(p for p in CORPUS.rglob("*") if p.is_file()):
        fast = convert_file(path, converter)
        if not _same_outcome(fast, _general_route(path, converter)):
            disagreements.append(path.name)
        if fast_route(converter, path.read_bytes()) is not None:
            fast_taken += 1
    assert not disagreements
    # The fast route must actually carry most of the corpus, not hand it all to pydicom.
    assert fast_taken >= 140, fast_taken


def _odd_dataset() -> Dataset:
    """Private tags and sequences, bad values kept as text, repeating groups, empty values."""
    item = Dataset()
    item.CodeValue = "T-1"
    item.CodeMeaning = "Chest"
    item.add_new(0x00091001, "LO", "private in an item")
    nested = Dataset()
    nested.ReferencedSOPInstanceUID = "1.2.3.4"
    item.ReferencedSOPSequence = Sequence([nested])
    empty_item = Dataset()
    ds = make_dataset(
        PatientName="Doe^Jane^^Dr",
        StudyDate="2024",  # a partial date: kept as text
        StudyTime="2561",  # out of range: kept as text
        AcquisitionDateTime="20240131101500",
        ImageType=["ORIGINAL", "PRIMARY", ""],
        Rows=512,
        PatientSize="",  # empty DS
        AnatomicRegionSequence=Sequence([item, empty_item]),
        ReferencedImageSequence=Sequence([]),  # empty sequence: no column
    )
    ds.TimezoneOffsetFromUTC = "+0130"
    # Values pydicom would refuse to write: an IS that is not a number, a date with letters.
    ds[0x00200013] = RawDataElement(Tag(0x00200013), "IS", 2, b"1A", 0, False, True)
    ds[0x00080021] = RawDataElement(Tag(0x00080021), "DA", 10, b"2024-01-3X", 0, False, True)
    ds.add_new(0x00180050, "FD", float("nan"))  # SliceThickness as a NaN double: kept as text
    ds.add_new(0x00181030, "LO", ["one", "two"])  # VM 1 with two values: kept as text
    ds.add_new(0x60000010, "US", 16)  # OverlayRows: repeating group
    ds.add_new(0x60020010, "US", 32)
    ds.add_new(0x60000022, "LO", "overlay")  # OverlayDescription
    ds.add_new(0x00090010, "LO", "ACME 1.0")  # private creator
    ds.add_new(0x00091001, "DS", ["1.5", "2"])
    ds.add_new(0x00091002, "US", [1, 2, 3])
    ds.add_new(0x00091003, "OB", b"\x00\x01")  # private binary: dropped
    ds.add_new(0x00091004, "SQ", Sequence([nested]))  # private sequence: its own column
    ds.add_new(0x00291010, "UN", b"\x01\x02\x03\x04")  # UN: pydicom decides
    ds.add_new(0x00080005, "CS", "ISO_IR 100")
    ds.StudyDescription = "Jérôme"
    return ds


@pytest.mark.parametrize("syntax", ["explicit LE", "explicit BE", "implicit LE", "deflated"])
@pytest.mark.parametrize("undefined_lengths", [False, True])
@pytest.mark.parametrize("with_un", [False, True])
def test_odd_inputs_give_the_same_outcome_by_both_routes(tmp_path, syntax, undefined_lengths, with_un):
    ds = _odd_dataset()
    if not with_un:
        del ds[0x00291010]
    if undefined_lengths:
        for element in ds.iterall():
            if element.VR == "SQ":
                element.is_undefined_length = True
    transfer_syntax = {
        "explicit LE": pydicom.uid.ExplicitVRLittleEndian,
        "explicit BE": ExplicitVRBigEndian,
        "implicit LE": ImplicitVRLittleEndian,
        "deflated": DeflatedExplicitVRLittleEndian,
    }[syntax]
    data = to_file_bytes(ds, transfer_syntax)
    path = tmp_path / "odd.dcm"
    path.write_bytes(data)
    converter = InstanceConverter()
    fast = convert_file(path, converter)
    assert fast.status == "ok", fast.reason
    assert _same_outcome(fast, _general_route(path, converter))
    # Where the fast route carries the file itself, and where it hands it on.
    carried = fast_route(converter, data) is not None
    implicit_private = syntax == "implicit LE"  # private VRs need pydicom's private dictionary
    assert carried == (syntax in ("explicit LE", "explicit BE") and not with_un and not implicit_private)
    row = fast.converted.row
    assert other_elements(row)["Tag_00080020"] == ["2024"]
    assert other_elements(row)["Tag_00080021"] == ["2024-01-3X"]
    assert row["InstanceNumber"] == "1A"
    assert other_elements(row)["Tag_00181030"] == ["one", "two"]
    assert [r["Id"] for r in row["OverlayRows"]] == ["6000", "6002"]
    if syntax != "implicit LE":  # implicit VR: pydicom reads unknown private elements as UN (dropped)
        assert other_elements(row)["Tag_00091002"] == ["1", "2", "3"]
        assert row["Tag_00091004"] == [{"ReferencedSOPInstanceUID": "1.2.3.4"}]


def test_a_bigger_nesting_limit_is_the_same_by_both_routes(tmp_path):
    leaf = Dataset()
    leaf.CodeValue = "X"
    current = leaf
    for _ in range(5):
        wrapper = Dataset()
        wrapper.ContentSequence = Sequence([current])
        current = wrapper
    data = to_file_bytes(make_dataset(ContentSequence=current.ContentSequence))
    path = tmp_path / "deep.dcm"
    path.write_bytes(data)
    for depth in (1, 3, 15):
        converter = InstanceConverter(max_depth=depth)
        assert fast_route(converter, data) is not None
        assert _same_outcome(convert_file(path, converter), _general_route(path, converter))


@pytest.mark.parametrize(
    "charset",
    ["ISO_IR 100", "ISO_IR 192", "ISO_IR 144", ["", "ISO 2022 IR 87"], "ISO IR 100", "NOT A CHARSET", ""],
)
def test_character_sets_are_the_same_by_both_routes(tmp_path, charset):
    item = Dataset()
    item.SpecificCharacterSet = "ISO_IR 192"
    item.PatientName = "王^小東"
    ds = make_dataset(PatientName="Müller^Jérôme", OtherPatientIDsSequence=Sequence([item]), StudyDescription="Jérôme")
    ds.SpecificCharacterSet = charset
    ds.ReferringPhysicianName = "Yamada^Tarou=山田^太郎" if charset == ["", "ISO 2022 IR 87"] else "Smith^J"
    try:
        data = to_file_bytes(ds)
    except (LookupError, UnicodeError):
        pytest.skip("pydicom cannot write this text in this character set")
    path = tmp_path / "charset.dcm"
    path.write_bytes(data)
    converter = InstanceConverter()
    fast = convert_file(path, converter)
    assert fast.status == "ok", fast.reason
    assert _same_outcome(fast, _general_route(path, converter))


def test_broken_and_non_dicom_files_fail_the_same_way(tmp_path):
    converter = InstanceConverter()
    whole = (CORPUS / "CT_small.dcm").read_bytes()
    pixel_start = whole.index(b"\xe0\x7f\x10\x00")
    cases = {
        "cut_in_value.dcm": whole[: pixel_start - 15],
        "cut_in_meta.dcm": whole[:140],
        "short.dcm": whole[:100],
        "empty.dcm": b"",
        "text.txt": b"hello world\n" * 20,
        "bare_dataset.dcm": whole[whole.index(b"\x08\x00\x05\x00") :],
        "deflate_garbage.dcm": whole[:132] + b"\x02\x00\x10\x00UI\x16\x001.2.840.10008.1.2.1.99" + zlib.compress(b"x"),
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        fast = convert_file(path, converter)
        general = _general_route(path, converter)
        assert _same_outcome(fast, general), (name, fast.reason, general.reason)
        assert fast.status in ("failed", "not_dicom"), name
    directory = tmp_path / "a_directory"
    directory.mkdir()
    assert convert_file(directory, converter).reason == "cannot read: Is a directory"
    assert convert_file(tmp_path / "missing.dcm", converter).reason == "cannot read: No such file or directory"


def test_filters_and_dicomdir_give_the_same_outcome(tmp_path):
    converter = InstanceConverter()
    ct = tmp_path / "ct.dcm"
    ct.write_bytes((CORPUS / "CT_small.dcm").read_bytes())
    sop = pydicom.dcmread(ct).SOPInstanceUID
    for accept in (lambda study, series, instance: instance == sop, lambda study, series, instance: False):
        assert _same_outcome(convert_file(ct, converter, accept), _general_route(ct, converter, accept))
    assert convert_file(ct, converter, lambda *uids: False).status == "filtered"
    dicomdir = next(p for p in CORPUS.rglob("DICOMDIR") if p.is_file())
    fast = convert_file(dicomdir, converter)
    assert fast.status == "not_dicom" and _same_outcome(fast, _general_route(dicomdir, converter))


def test_json_table_and_in_memory_bytes_take_the_same_routes(tmp_path):
    data = (CORPUS / "rtplan.dcm").read_bytes()
    path = tmp_path / "rtplan.dcm"
    path.write_bytes(data)
    for schema in ("flattened", "json"):
        converter = InstanceConverter(schema=schema)
        assert _same_outcome(convert_file(path, converter), _general_route(path, converter))
        for blob in (data, data[:1000], b"not dicom"):
            in_memory = convert_bytes("mem", blob, converter, blob_storage_size=len(blob))
            general = convert_instance(
                "mem", lambda blob=blob: read_instance(io.BytesIO(blob)), converter, blob_storage_size=len(blob)
            )
            assert _same_outcome(in_memory, general)


def test_schema_caches_stay_bounded(monkeypatch):
    """Caches of per-instance shapes must not grow with the corpus (memory stays flat)."""
    monkeypatch.setattr(convert_module, "_CACHE_LIMIT", 8)
    converter = InstanceConverter()
    for index in range(40):
        item = Dataset()
        setattr(item, ["CodeValue", "CodeMeaning", "CodingSchemeDesignator", "CodingSchemeVersion"][index % 4], "X")
        ds = make_dataset(**{f"{'Study' if index % 2 else 'Series'}Description": "d"})
        ds.add_new(0x00110010 + (index << 1 & 0xFE00), "LO", "ACME")
        ds.AnatomicRegionSequence = Sequence([item, Dataset(), item])
        converter.convert_lean(_scan(to_file_bytes(ds)))
    for cache in (convert_module._order_cache, convert_module._record_cache, convert_module._merge_cache):
        assert len(cache) <= 8


def _scan(data: bytes):
    from airflow_provider_dicom.dicom.scan import scan_part10

    return scan_part10(data)


def _scanned_corpus():
    """(path, LeanInstance) of every corpus file the scanner takes."""
    from airflow_provider_dicom.dicom.scan import Unsupported, scan_part10

    for path in sorted(p for p in CORPUS.rglob("*") if p.is_file()):
        try:
            yield path, scan_part10(path.read_bytes())
        except Unsupported:
            continue


def test_the_early_hand_on_only_flags_instances_the_fast_converter_declines():
    """hands_on spares the fast converter work it would throw away; it must not send pydicom
    an instance the fast route carries (that would cost speed, silently)."""
    from airflow_provider_dicom.dicom.convert import NeedsPydicom
    from airflow_provider_dicom.dicom.scanned import hands_on

    converter = InstanceConverter()
    flagged = []
    for path, lean in _scanned_corpus():
        if hands_on(lean):
            flagged.append(path.name)
            with pytest.raises(NeedsPydicom):
                converter.convert_lean(lean)
    # Implicit VR private elements, explicit UN. (Not MR_small_implicit.dcm any more: the fast
    # route has pydicom settle its top-level "US or SS" elements; see the tests below.)
    assert {"priv_SQ.dcm", "rtdose_rle.dcm"} <= set(flagged)
    assert "MR_small_implicit.dcm" not in flagged


# Raw values of "US or SS" elements (implicit VR keeps no VR: OB writes the bytes as they are).
_US_OR_SS_VALUES = {
    0x00280106: b"\xff\xff",  # SmallestImagePixelValue: 65535 or -1
    0x00280107: b"\x01\x00\x00\x80",  # LargestImagePixelValue, two values (VM 1 in the dictionary)
    0x00281101: b"\x00\x01\x00\x80\x10\x00",  # RedPaletteColorLookupTableDescriptor, three values
    0x00280120: b"\x01\x02\x03",  # PixelPaddingValue of an odd length: no whole number of values
    0x00280108: b"",  # SmallestPixelValueInSeries, empty
}


@pytest.mark.parametrize("pixel_representation", [b"\x00\x00", b"\x01\x00", b"", None])
@pytest.mark.parametrize("pixel_data", [True, False])
@pytest.mark.parametrize("nested", [False, True])
def test_us_or_ss_in_implicit_vr_gives_the_same_outcome_by_both_routes(
    tmp_path, pixel_representation, pixel_data, nested
):
    """The fast route has pydicom settle the top-level "US or SS" elements of an implicit VR
    dataset (scanned._ambiguous_settled) from a Dataset of what the correction reads; the
    outcome must be the Dataset route's whatever Pixel Representation and Pixel Data say, and
    the instance must take the fast route unless pydicom's answer could depend on more."""
    ds = make_dataset(Modality="MR", Rows=2, Columns=2, BitsAllocated=16)
    if pixel_representation is not None:
        ds.add_new(0x00280103, "OB", pixel_representation)
    for tag, value in _US_OR_SS_VALUES.items():
        ds.add_new(tag, "OB", value)
    if nested:  # RealWorldValueMappingSequence: its item's "US or SS" values are pydicom's to settle
        item = Dataset()
        item.add_new(0x00409216, "OB", b"\x05\x00")
        ds.add_new(0x00409096, "SQ", Sequence([item]))
    if pixel_data:
        ds.add_new(0x7FE00010, "OB", b"\x00" * 8)
    path = tmp_path / "us_or_ss.dcm"
    path.write_bytes(to_file_bytes(ds, ImplicitVRLittleEndian))

    converter = InstanceConverter()
    fast = convert_file(path, converter)
    assert _same_outcome(fast, _general_route(path, converter))
    taken = fast_route(converter, path.read_bytes()) is not None
    # Not taken: nested elements, an empty Pixel Representation, and Pixel Data without any
    # (pydicom's correction then fails, and the Dataset route keeps the raw text).
    unsettled = nested or pixel_representation == b"" or (pixel_representation is None and pixel_data)
    assert taken == (not unsettled)


def test_us_or_ss_settled_on_the_corpus_by_both_routes_alike():
    """Implicit VR files of pydicom's corpus with top-level "US or SS" elements: now carried by
    the fast route, with the Dataset route's rows."""
    from airflow_provider_dicom.dicom.scanned import _us_or_ss_tags

    converter = InstanceConverter()
    carried = []
    for path, lean in _scanned_corpus():
        if not lean.implicit or not any(tag in lean.body for tag in _us_or_ss_tags()):
            continue
        assert _same_outcome(convert_file(path, converter), _general_route(path, converter)), path.name
        if fast_route(converter, path.read_bytes()) is not None:
            carried.append(path.name)
    assert "MR_small_implicit.dcm" in carried, carried


def test_a_converter_of_another_kind_is_given_the_dataset(tmp_path):
    """Callers may pass their own converter (the GCS copy reads only UIDs) or a subclass: the
    fast route is for the stock converter only; the others get a pydicom Dataset as before."""
    from airflow_provider_dicom.dicom.outcomes import walks_scans

    seen = []

    class UidsOnly:
        def convert(self, ds, **_):
            from airflow_provider_dicom.dicom.convert import ConvertedInstance

            seen.append(type(ds).__name__)
            return ConvertedInstance({}, (), None, None, str(ds.SOPInstanceUID))

    class Tweaked(InstanceConverter):
        def convert(self, ds, **kwargs):
            converted = super().convert(ds, **kwargs)
            converted.row["Tweaked"] = True
            return converted

    data = (CORPUS / "CT_small.dcm").read_bytes()
    path = tmp_path / "ct.dcm"
    path.write_bytes(data)
    assert walks_scans(InstanceConverter()) and walks_scans(InstanceConverter(schema="json"))
    assert not walks_scans(UidsOnly()) and not walks_scans(Tweaked())
    for outcome in (convert_file(path, UidsOnly()), convert_bytes("mem", data, UidsOnly())):
        assert outcome.status == "ok" and outcome.converted.sop_uid
    assert seen == ["FileDataset", "FileDataset"]
    assert convert_file(path, Tweaked()).converted.row["Tweaked"] is True
    assert convert_bytes("mem", data, Tweaked()).converted.row["Tweaked"] is True
