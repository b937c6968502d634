"""The row and schema rules of the Cloud Healthcare DICOM table, one behaviour per test."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from airflow_provider_dicom.dicom.convert import InstanceConverter
from airflow_provider_dicom.dicom.schema import TableSchema
from tests.unit.dicom_factory import convert, field_of, make_dataset, other_elements, roundtrip, to_file_bytes


def test_vr_types_and_modes_follow_the_dictionary():
    ds = make_dataset(
        Modality="CT",  # CS, VM 1
        ImageType=["ORIGINAL", "PRIMARY"],  # CS, VM 2-n
        StudyDate="20240131",
        StudyTime="101500.25",
        AcquisitionDateTime="20240131101500.123456+0100",
        SliceThickness="0.50",  # DS keeps its text
        InstanceNumber="007",  # IS keeps its text
        Rows=512,  # US
        PixelSpacing=["0.5", "0.5"],
        ReferencePixelPhysicalValueX=1.5,  # FD
        RecommendedDisplayFrameRateInFloat=25.0,  # FL
        SoftwareVersions=["1.0", "2.0"],
    )
    ds.add_new(0x00209165, "AT", [0x00100010, 0x00200032])  # DimensionIndexPointer, AT 1
    converted = convert(ds)
    row = converted.row
    expect = {
        "Modality": ("STRING", "NULLABLE", "CT"),
        "ImageType": ("STRING", "REPEATED", ["ORIGINAL", "PRIMARY"]),
        "StudyDate": ("DATE", "NULLABLE", "2024-01-31"),
        "StudyTime": ("TIME", "NULLABLE", "10:15:00.25"),
        "AcquisitionDateTime": ("TIMESTAMP", "NULLABLE", "2024-01-31T10:15:00.123456+01:00"),
        "SliceThickness": ("STRING", "NULLABLE", "0.50"),
        "InstanceNumber": ("STRING", "NULLABLE", "007"),
        "Rows": ("INTEGER", "NULLABLE", 512),
        "PixelSpacing": ("STRING", "REPEATED", ["0.5", "0.5"]),
        "ReferencePixelPhysicalValueX": ("FLOAT", "NULLABLE", 1.5),
        "RecommendedDisplayFrameRateInFloat": ("FLOAT", "NULLABLE", 25.0),
        "SoftwareVersions": ("STRING", "REPEATED", ["1.0", "2.0"]),
    }
    for name, (type_, mode, value) in expect.items():
        field = field_of(converted, name)
        assert (field.type, field.mode) == (type_, mode), name
        assert row[name] == value, name
    # AT VM 1 with two tags is not a single value: it is kept as text, not lost.
    assert "DimensionIndexPointer" not in row
    assert field_of(converted, "DimensionIndexPointer").type == "INTEGER"
    assert other_elements(row)["Tag_00209165"] == [str(0x00100010), str(0x00200032)]


def test_at_values_are_integers():
    ds = make_dataset()
    ds.add_new(0x00209165, "AT", 0x00100010)
    converted = convert(ds)
    assert converted.row["DimensionIndexPointer"] == 0x00100010


def test_person_name_has_all_fifteen_sub_fields_and_the_present_values():
    ds = make_dataset(PatientName="Doe^John^Q^Dr^Jr=ドウ^ジョン=どう^じょん")
    ds.SpecificCharacterSet = "ISO_IR 192"
    converted = convert(ds)
    field = field_of(converted, "PatientName")
    assert (field.type, field.mode) == ("RECORD", "NULLABLE")
    assert [g.name for g in field.fields] == ["Alphabetic", "Ideographic", "Phonetic"]
    for group in field.fields:
        assert [c.name for c in group.fields] == ["FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix"]
    assert converted.row["PatientName"] == {
        "Alphabetic": {"FamilyName": "Doe", "GivenName": "John", "MiddleName": "Q", "NamePrefix": "Dr", "NameSuffix": "Jr"},
        "Ideographic": {"FamilyName": "ドウ", "GivenName": "ジョン"},
        "Phonetic": {"FamilyName": "どう", "GivenName": "じょん"},
    }


def test_multi_valued_person_name_is_a_repeated_record():
    ds = make_dataset(OtherPatientNames=["A^B", "C^D"])
    converted = convert(ds)
    assert field_of(converted, "OtherPatientNames").mode == "REPEATED"
    assert converted.row["OtherPatientNames"] == [
        {"Alphabetic": {"FamilyName": "A", "GivenName": "B"}},
        {"Alphabetic": {"FamilyName": "C", "GivenName": "D"}},
    ]


def test_sequences_nest_with_their_own_other_elements():
    inner = Dataset()
    inner.ReferencedSOPInstanceUID = "1.2.3"
    inner.add_new(0x00290010, "LO", "ACME")
    inner.add_new(0x00291001, "SH", "private")
    outer = Dataset()
    outer.SeriesInstanceUID = "1.2"
    outer.ReferencedInstanceSequence = Sequence([inner])
    ds = make_dataset(ReferencedSeriesSequence=Sequence([outer, Dataset()]))
    converted = convert(ds)
    column = field_of(converted, "ReferencedSeriesSequence")
    assert (column.type, column.mode) == ("RECORD", "REPEATED")
    nested = {f.name: f for f in column.fields}["ReferencedInstanceSequence"]
    assert [f.name for f in nested.fields] == ["ReferencedSOPInstanceUID", "OtherElements"]
    items = converted.row["ReferencedSeriesSequence"]
    assert len(items) == 2
    assert items[0]["ReferencedInstanceSequence"][0]["OtherElements"] == [
        {"Tag": "Tag_00290010", "Data": ["ACME"]},
        {"Tag": "Tag_00291001", "Data": ["private"]},
    ]
    # Private content stays in the item it belongs to, not the top level.
    assert "OtherElements" not in converted.row


def test_private_elements_creators_and_private_sequences():
    item = Dataset()
    item.Rows = 4
    item.add_new(0x00091002, "LO", "in item")
    ds = make_dataset()
    ds.add_new(0x00090010, "LO", "GEMS_IDEN_01")
    ds.add_new(0x00091001, "LO", ["a", "b"])
    ds.add_new(0x00091003, "US", [1, 2])
    ds.add_new(0x00091110, "SQ", Sequence([item]))
    converted = convert(ds)
    others = other_elements(converted.row)
    assert others["Tag_00090010"] == ["GEMS_IDEN_01"]
    assert others["Tag_00091001"] == ["a", "b"]
    assert others["Tag_00091003"] == ["1", "2"]
    column = field_of(converted, "Tag_00091110")
    assert (column.type, column.mode) == ("RECORD", "REPEATED")
    assert {f.name: f.type for f in column.fields} == {"Rows": "INTEGER", "OtherElements": "RECORD"}
    assert converted.row["Tag_00091110"] == [{"Rows": 4, "OtherElements": [{"Tag": "Tag_00091002", "Data": ["in item"]}]}]


def test_repeating_groups_become_id_value_records():
    ds = make_dataset()
    ds.add_new(0x60000010, "US", 256)
    ds.add_new(0x60020010, "US", 128)
    ds.add_new(0x60000050, "SS", [1, 1])  # OverlayOrigin, VM 2
    ds.add_new(0x60003000, "OW", b"\x00\x01" * 8)  # OverlayData: binary
    converted = convert(ds)
    rows_field = field_of(converted, "OverlayRows")
    assert (rows_field.type, rows_field.mode) == ("RECORD", "REPEATED")
    assert [(f.name, f.type, f.mode) for f in rows_field.fields] == [
        ("Id", "STRING", "NULLABLE"),
        ("Value", "INTEGER", "NULLABLE"),
    ]
    assert converted.row["OverlayRows"] == [{"Id": "6000", "Value": 256}, {"Id": "6002", "Value": 128}]
    origin = field_of(converted, "OverlayOrigin")
    assert [(f.name, f.mode) for f in origin.fields] == [("Id", "NULLABLE"), ("Value", "REPEATED")]
    assert converted.row["OverlayOrigin"] == [{"Id": "6000", "Value": [1, 1]}]
    assert {"TagName": "OverlayData", "TagReference": "60003000"} in converted.row["DroppedTags"]


def test_binary_elements_are_dropped_and_listed_including_pixel_data():
    ds = make_dataset(Rows=2, Columns=2, BitsAllocated=16, SamplesPerPixel=1, PixelRepresentation=0)
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = b"\x00\x01" * 4
    ds.add_new(0x00420011, "OB", b"%PDF")  # EncapsulatedDocument
    ds.add_new(0xFFFCFFFC, "OB", b"\x00\x00")  # DataSetTrailingPadding, after the pixel data
    converted = convert(ds)
    dropped = {d["TagName"] for d in converted.row["DroppedTags"]}
    assert {"PixelData", "EncapsulatedDocument", "DataSetTrailingPadding"} <= dropped
    names = {f.name for f in converted.fields}
    assert not names & {"PixelData", "EncapsulatedDocument", "DataSetTrailingPadding"}
    assert field_of(converted, "DroppedTags").fields[0].name == "TagName"


def test_elements_after_pixel_data_are_kept():
    ds = make_dataset(Rows=1, Columns=1, BitsAllocated=8, SamplesPerPixel=1)
    ds.PixelData = b"\x00\x00"
    ds.add_new(0xFFFAFFFA, "SQ", Sequence([_item(MACIDNumber=7)]))  # DigitalSignaturesSequence
    converted = convert(ds)
    assert field_of(converted, "DigitalSignaturesSequence").mode == "REPEATED"
    assert converted.row["DigitalSignaturesSequence"] == [{"MACIDNumber": 7}]


def test_empty_sequences_have_no_values_and_no_column():
    converted = convert(make_dataset(OtherPatientIDsSequence=Sequence([]), ReferencedStudySequence=Sequence([Dataset()])))
    names = {f.name for f in converted.fields}
    assert not names & {"OtherPatientIDsSequence", "ReferencedStudySequence"}


def test_encapsulated_pixel_data_is_skipped_by_item_headers():
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    ds = make_dataset(Rows=8, Columns=8, BitsAllocated=8, SamplesPerPixel=1)
    ds.PixelData = encapsulate([b"\xff\xd8" + b"\x00" * 100 + b"\xff\xd9", b"\xff\xd8" + b"\x01" * 50 + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.add_new(0xFFFCFFFC, "OB", b"\x00\x00")
    converted = convert(ds, JPEGBaseline8Bit)
    dropped = {d["TagName"] for d in converted.row["DroppedTags"]}
    assert {"PixelData", "DataSetTrailingPadding"} <= dropped
    assert converted.row["Rows"] == 8


def test_file_meta_and_trailing_columns():
    ds = make_dataset()
    converter = InstanceConverter()
    moment = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    converted = converter.convert(roundtrip(ds), blob_storage_size=1234, last_updated=moment)
    row = converted.row
    assert row["TransferSyntaxUID"] == "1.2.840.10008.1.2.1"
    assert row["MediaStorageSOPInstanceUID"] == ds.SOPInstanceUID
    assert "FileMetaInformationGroupLength" not in row  # structural, not metadata
    assert row["Type"] == "CREATE"
    assert row["StorageClass"] == "STANDARD"
    assert row["BlobStorageSize"] == 1234
    assert row["LastUpdated"] == "2024-05-06T07:08:09Z"
    names = [f.name for f in converted.fields]
    assert names[-4:] == ["Type", "LastUpdated", "StorageClass", "BlobStorageSize"]
    assert names[0] == "MediaStorageSOPClassUID"  # file meta first, by tag


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("StudyDate", "2024"),  # partial date
        ("StudyDate", "20240230"),  # no such day
        ("StudyDate", "yesterday"),
        ("StudyTime", "2561"),  # out of range
        ("StudyTime", "12:3"),
        ("AcquisitionDateTime", "2024"),  # a year is not an instant
        ("AcquisitionDateTime", "202401"),
        ("AcquisitionDateTime", "20240101250000"),
    ],
)
def test_partial_and_malformed_dates_and_times_are_kept_as_text(keyword, value):
    ds = make_dataset()
    setattr(ds, keyword, value)
    converted = convert(ds)
    assert keyword not in converted.row
    tag = f"Tag_{ds[keyword].tag:08X}"
    assert other_elements(converted.row)[tag] == [value]
    # The column still exists with its proper type, so the table schema is stable.
    assert field_of(converted, keyword).type in ("DATE", "TIME", "TIMESTAMP")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("10", "10:00:00"), ("1015", "10:15:00"), ("101530", "10:15:30"), ("10:15:30.5", "10:15:30.5")],
)
def test_truncated_times_mean_the_start_of_the_period(value, expected):
    converted = convert(make_dataset(StudyTime=value))
    assert converted.row["StudyTime"] == expected


def test_date_time_without_offset_uses_timezone_offset_from_utc():
    converted = convert(make_dataset(AcquisitionDateTime="20240131101500", TimezoneOffsetFromUTC="-0500"))
    assert converted.row["AcquisitionDateTime"] == "2024-01-31T10:15:00-05:00"
    converted = convert(make_dataset(AcquisitionDateTime="20240131"))
    assert converted.row["AcquisitionDateTime"] == "2024-01-31T00:00:00Z"


def test_more_values_than_a_vm_1_column_holds_are_kept_as_text():
    ds = make_dataset()
    ds.add_new(0x00080060, "CS", ["CT", "MR"])  # Modality, VM 1
    converted = convert(ds)
    assert "Modality" not in converted.row
    assert other_elements(converted.row)["Tag_00080060"] == ["CT", "MR"]


def test_non_finite_floats_are_kept_as_text():
    ds = make_dataset(ReferencePixelPhysicalValueX=float("nan"))
    converted = convert(ds)
    assert "ReferencePixelPhysicalValueX" not in converted.row
    assert other_elements(converted.row)["Tag_00186028"] == ["nan"]
    json.dumps(converted.row, allow_nan=False)


def test_value_encoded_with_another_vr_converts_to_the_dictionary_type():
    ds = make_dataset()
    ds.add_new(0x00280010, "IS", "512")  # Rows written as text
    ds.add_new(0x00180050, "FD", 2.5)  # SliceThickness written as a double
    converted = convert(ds)
    assert converted.row["Rows"] == 512
    assert converted.row["SliceThickness"] == "2.5"
    assert field_of(converted, "SliceThickness").type == "STRING"


@pytest.mark.parametrize(
    ("charset", "text"),
    [
        ("ISO_IR 100", "Müller^Jérôme"),
        ("ISO_IR 192", "王^小東"),
        ("GB18030", "王^小东"),
        (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎"),
    ],
)
def test_specific_character_sets_are_decoded(charset, text):
    ds = make_dataset(PatientName=text, StudyDescription=text.split("^")[0])
    ds.SpecificCharacterSet = charset
    converted = convert(ds)
    groups = text.split("=")
    got = converted.row["PatientName"]
    assert got["Alphabetic"]["FamilyName"] == groups[0].split("^")[0]
    if len(groups) > 1:
        assert got["Ideographic"]["FamilyName"] == groups[1].split("^")[0]
    assert converted.row["StudyDescription"] == text.split("^")[0]


def test_sequence_items_inherit_and_override_the_character_set():
    item = Dataset()
    item.SpecificCharacterSet = "ISO_IR 192"
    item.PatientName = "王^小東"
    ds = make_dataset(OtherPatientIDsSequence=Sequence([item]), StudyDescription="Jérôme")
    ds.SpecificCharacterSet = "ISO_IR 100"
    converted = convert(ds)
    assert converted.row["StudyDescription"] == "Jérôme"
    assert converted.row["OtherPatientIDsSequence"][0]["PatientName"]["Alphabetic"]["FamilyName"] == "王"


def test_nesting_deeper_than_the_limit_is_dropped_and_listed():
    leaf = Dataset()
    leaf.CodeValue = "X"
    current = leaf
    for _ in range(4):
        wrapper = Dataset()
        wrapper.ContentSequence = Sequence([current])
        current = wrapper
    ds = make_dataset(ContentSequence=current.ContentSequence)
    converted = InstanceConverter(max_depth=3).convert(roundtrip(ds))
    depth = max(f.depth() for f in converted.fields)
    assert depth <= 3
    assert any(d["TagName"] == "ContentSequence" and d["TagReference"].count("/") == 6 for d in converted.row["DroppedTags"])
    # The default allows BigQuery's 15 levels: nothing dropped here.
    assert not [d for d in convert(ds).row["DroppedTags"] if d["TagName"] == "ContentSequence"]


def test_implicit_and_big_endian_files_give_the_same_row():
    def fresh():
        ds = make_dataset(Modality="MR", Rows=64, PatientName="A^B", ImageType=["DERIVED", "SECONDARY"])
        ds.SOPInstanceUID = ds.StudyInstanceUID = ds.SeriesInstanceUID = "1.2.3"
        return ds

    def comparable(converted):
        row = dict(converted.row)
        row.pop("TransferSyntaxUID")
        return row

    explicit = comparable(convert(fresh()))
    assert comparable(convert(fresh(), ImplicitVRLittleEndian)) == explicit
    assert comparable(convert(fresh(), ExplicitVRBigEndian)) == explicit


def test_schema_is_the_union_and_independent_of_order():
    a = convert(make_dataset(Modality="CT", PatientName="A^B"))
    b = convert(make_dataset(Rows=4, OtherPatientIDsSequence=Sequence([_item(TypeOfPatientID="TEXT")])))
    c = convert(make_dataset(OtherPatientIDsSequence=Sequence([_item(PatientID="X")])))
    first, second = TableSchema(), TableSchema()
    for converted in (a, b, c):
        first.add(converted.fields)
    for converted in (c, b, a):
        second.add(converted.fields)
    assert first.fields == second.fields
    names = [f.name for f in first.fields]
    assert {"Modality", "PatientName", "Rows", "OtherPatientIDsSequence"} <= set(names)
    seq = next(f for f in first.fields if f.name == "OtherPatientIDsSequence")
    assert [f.name for f in seq.fields] == ["PatientID", "TypeOfPatientID"]


def test_json_schema_variant():
    ds = make_dataset(Modality="CT", PatientName="A^B")
    ds.PixelData = b"\x00" * 8
    ds.Rows = ds.Columns = 2
    ds.BitsAllocated = 16
    ds.SamplesPerPixel = 1
    converted = convert(ds, schema="json")
    names = [f.name for f in converted.fields]
    assert names == [
        "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Metadata", "StructuredStorageSize",
        "DroppedTags", "StorageClass", "LastUpdated", "BlobStorageSize", "Type",
    ]
    metadata = converted.row["Metadata"]
    assert metadata["00080060"] == {"vr": "CS", "Value": ["CT"]}
    assert "7FE00010" not in metadata
    assert converted.row["DroppedTags"] == ["00020001", "7FE00010"]  # FileMetaInformationVersion, PixelData
    assert converted.row["SOPInstanceUID"] == ds.SOPInstanceUID
    assert converted.row["StructuredStorageSize"] == len(json.dumps(metadata, separators=(",", ":")).encode())


def test_dataset_without_uids_reports_none():
    ds = Dataset()
    ds.Modality = "CT"
    converted = InstanceConverter().convert(ds)
    assert converted.sop_uid is None and converted.study_uid is None


def test_reader_classifies_not_dicom_and_broken_files():
    from airflow_provider_dicom.dicom.read import InvalidDicomError, NotDicomError, read_instance

    with pytest.raises(NotDicomError):
        read_instance(io.BytesIO(b"just some text, not an image" * 10))
    good = to_file_bytes(make_dataset(Modality="CT", StudyDescription="x" * 200))
    with pytest.raises(InvalidDicomError, match="truncated|invalid|unreadable"):
        read_instance(io.BytesIO(good[: len(good) - 150]))


def _item(**elements) -> Dataset:
    item = Dataset()
    for keyword, value in elements.items():
        setattr(item, keyword, value)
    return item


def test_json_variant_keeps_a_value_pydicom_cannot_convert_as_text():
    ds = make_dataset(Modality="CT")
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    # InstanceNumber that is not an integer, as a writer once put it on disk.
    ds[0x00200013] = RawDataElement(Tag(0x00200013), "IS", 2, b"1A", 0, False, True)
    converted = convert(ds, schema="json")
    assert converted.row["Metadata"]["00200013"] == {"vr": "IS", "Value": ["1A"]}
    assert converted.row["Metadata"]["00080060"] == {"vr": "CS", "Value": ["CT"]}
    # The flattened table keeps IS as its text anyway.
    assert convert(ds).row["InstanceNumber"] == "1A"
