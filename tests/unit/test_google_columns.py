"""Our column rule agrees with Google's own table on every column of it (issue 11 item 14).

tests/data/idc_dicom_all_schema.json is the schema of Imaging Data Commons' `dicom_all`, a table
Google's `dicomStores.export` wrote. For every DICOM keyword in it, at the top level and inside
sequences, the type and mode our rule (tags.tag_info: pydicom's dictionary, corrected by
google_columns.GOOGLE_COLUMNS) gives must be the reference's: queries written for Google's tables
run on ours, and our rows append into a table Google created. The slower end-to-end check (an
instance converted through both routes) is test_conformance_idc.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom import datadict

from airflow_provider_dicom.dicom.google_columns import GOOGLE_COLUMNS
from airflow_provider_dicom.dicom.schema import NULLABLE, REPEATED
from airflow_provider_dicom.dicom.tags import tag_info

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "idc_dicom_all_schema.json"


def reference_keyword_columns() -> list[tuple[str, str, str, str]]:
    """(path, keyword, type, mode) of every column of the reference named by a DICOM keyword."""
    out = []

    def walk(fields: list[dict], prefix: str) -> None:
        for field in fields:
            path = f"{prefix}{field['name']}"
            if field["name"] in datadict.keyword_dict:
                out.append((path, field["name"], field["type"], field.get("mode", NULLABLE)))
            walk(field.get("fields", []), f"{path}.")

    walk(json.loads(REFERENCE.read_text())["schema"]["fields"], "")
    return out


def our_rule(keyword: str) -> tuple[str, str]:
    info = tag_info(datadict.keyword_dict[keyword])
    assert info is not None, keyword
    sequence = info.dictionary_vr == "SQ"
    return info.column_type, REPEATED if info.repeated or sequence or info.repeating_group else NULLABLE


def test_the_reference_is_in_the_repository_and_is_googles_table():
    columns = reference_keyword_columns()
    assert len(columns) > 1800
    assert ("SegmentSequence.SegmentAlgorithmName", "SegmentAlgorithmName", "STRING", NULLABLE) in columns


def test_our_rule_gives_every_reference_column_its_type_and_mode():
    disagreements = [
        (path, (type_, mode), our_rule(keyword))
        for path, keyword, type_, mode in reference_keyword_columns()
        if our_rule(keyword) != (type_, mode)
    ]
    assert disagreements == []


def test_every_override_is_needed_and_is_googles():
    """The table holds only real disagreements: each entry differs from pydicom's dictionary and
    matches the reference wherever the reference has that keyword."""
    seen = {keyword: (type_, mode) for _, keyword, type_, mode in reference_keyword_columns()}
    for keyword, (type_, mode) in GOOGLE_COLUMNS.items():
        vm = datadict.dictionary_VM(datadict.keyword_dict[keyword])
        dictionary_type = tag_info(datadict.keyword_dict[keyword]).column_type
        assert (mode == REPEATED) != (vm != "1") or type_ != dictionary_type
        if keyword in seen:
            assert seen[keyword] == (type_, mode), keyword


@pytest.mark.parametrize("route", ["general", "fast"])
def test_several_values_in_a_column_google_keeps_nullable_are_kept_whole_in_other_elements(route):
    """SegmentAlgorithmName is NULLABLE in Google's table; a file holding two values (allowed by
    the current dictionary) keeps both, as text, in the item's OtherElements: none is lost."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from airflow_provider_dicom.dicom.convert import InstanceConverter
    from tests.unit.dicom_factory import convert, fast_route, make_dataset, to_file_bytes

    segment = Dataset()
    segment.SegmentNumber = 1
    segment.SegmentLabel = "liver"
    segment.SegmentAlgorithmName = ["algo A", "algo B"]
    ds = make_dataset(SegmentSequence=Sequence([segment]))
    if route == "fast":
        converted = fast_route(InstanceConverter(), to_file_bytes(ds))
        assert converted is not None
    else:
        converted = convert(ds)
    item = converted.row["SegmentSequence"][0]
    assert "SegmentAlgorithmName" not in item
    assert {"Tag": "Tag_00620009", "Data": ["algo A", "algo B"]} in item["OtherElements"]
    one = Dataset()
    one.SegmentNumber = 2
    one.SegmentAlgorithmName = "algo C"
    assert convert(make_dataset(SegmentSequence=Sequence([one]))).row["SegmentSequence"][0][
        "SegmentAlgorithmName"
    ] == "algo C"
