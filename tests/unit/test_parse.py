"""The lean parser must give exactly the rows pydicom's reader gives, file for file."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest

from airflow_provider_dicom.dicom.convert import InstanceConverter
from airflow_provider_dicom.dicom.parse import Unsupported, parse_part10
from airflow_provider_dicom.dicom.read import InvalidDicomError, NotDicomError, _read

CORPUS = Path(pydicom.__file__).parent / "data" / "test_files"


def _rows_both_ways(path: Path):
    data = path.read_bytes()
    try:
        fast = parse_part10(data, str(path))
    except Unsupported:
        return None
    try:
        slow = _read(io.BytesIO(data))
    except (InvalidDicomError, NotDicomError):
        return "pydicom-rejects"
    converter = InstanceConverter()
    return converter.convert(fast).row, converter.convert(slow).row


def test_lean_parser_matches_pydicom_on_the_whole_corpus():
    compared = []
    disagreements = []
    for path in sorted(p for p in CORPUS.rglob("*") if p.is_file()):
        result = _rows_both_ways(path)
        if result is None:
            continue
        if result == "pydicom-rejects":
            disagreements.append((path.name, "lean parser accepted a file pydicom's path rejects"))
            continue
        fast_row, slow_row = result
        compared.append(path.name)
        if fast_row != slow_row:
            keys = sorted(k for k in set(fast_row) | set(slow_row) if fast_row.get(k) != slow_row.get(k))
            disagreements.append((path.name, keys))
    assert not disagreements
    # Most of the corpus is well-formed: the fast path must actually be taken for it.
    assert len(compared) >= 100, compared


@pytest.mark.parametrize(
    "mutilate",
    [
        lambda data: data[: _pixel_start(data) - 12 - 3],  # cut inside the last value before the pixels
        lambda data: data[:140],  # cut inside the file meta
        lambda data: data[:132] + b"\x02\x00\x10\x00UIxx",  # header cut short
    ],
)
def test_lean_parser_refuses_what_it_cannot_vouch_for(mutilate):
    from airflow_provider_dicom.dicom.parse import Truncated

    data = (CORPUS / "CT_small.dcm").read_bytes()
    with pytest.raises(Unsupported):
        parse_part10(mutilate(data))
    with pytest.raises(Truncated):
        parse_part10(mutilate(data))


def test_pixel_data_is_recorded_but_not_copied():
    data = (CORPUS / "CT_small.dcm").read_bytes()
    ds = parse_part10(data)
    pixel = ds._dict[0x7FE00010]
    assert pixel.value is None and pixel.length == 128 * 128 * 2


def test_a_cut_inside_the_pixel_data_still_gives_the_whole_header():
    data = (CORPUS / "CT_small.dcm").read_bytes()
    whole = InstanceConverter().convert(parse_part10(data)).row
    cut = InstanceConverter().convert(parse_part10(data[: _pixel_start(data) + 1000])).row
    # Everything but what followed the pixels (CT_small ends with trailing padding).
    assert cut["DroppedTags"] == [d for d in whole["DroppedTags"] if d["TagName"] != "DataSetTrailingPadding"]
    assert {k: v for k, v in cut.items() if k != "DroppedTags"} == {k: v for k, v in whole.items() if k != "DroppedTags"}


def test_prefix_reads_ask_for_more_until_the_header_is_whole():
    from airflow_provider_dicom.dicom.parse import NeedMoreData

    data = (CORPUS / "CT_small.dcm").read_bytes()
    whole = InstanceConverter().convert(parse_part10(data)).row
    size = 500
    asked = []
    while True:
        try:
            ds = parse_part10(data[:size], object_size=len(data))
            break
        except NeedMoreData as more:
            assert more.needed > size
            asked.append(more.needed)
            size = max(more.needed, size * 2)
    assert asked, "a 500-byte prefix cannot hold CT_small's header"
    assert size < len(data) - 128 * 128 * 2 + 2048  # never fetched the pixels
    row = InstanceConverter().convert(ds).row
    assert {k: v for k, v in row.items() if k != "DroppedTags"} == {k: v for k, v in whole.items() if k != "DroppedTags"}


def test_prefix_ending_on_an_element_boundary_is_not_taken_for_the_whole_header():
    from airflow_provider_dicom.dicom.parse import NeedMoreData

    data = (CORPUS / "CT_small.dcm").read_bytes()
    whole = parse_part10(data)
    boundary = list(whole._dict.values())[10].value_tell + list(whole._dict.values())[10].length
    with pytest.raises(NeedMoreData):
        parse_part10(data[:boundary], object_size=len(data))


def _pixel_start(data: bytes) -> int:
    return parse_part10(data)._dict[0x7FE00010].value_tell


def test_sequence_items_are_real_datasets_with_pydicoms_own_state():
    from pydicom.dataset import Dataset

    data = (CORPUS / "rtplan.dcm").read_bytes()
    fast = parse_part10(data)
    sequences = [e for e in fast._dict.values() if getattr(e, "VR", None) == "SQ"]
    assert sequences
    item = sequences[0].value[0]
    reference = Dataset({})
    reference.set_original_encoding(*fast.original_encoding[:2], None)
    assert type(item) is Dataset
    assert set(item.__dict__) == set(reference.__dict__)
    # Per-item mutable state is not shared between items.
    other = sequences[0].value[-1] if len(sequences[0].value) > 1 else sequences[1].value[0]
    assert item._private_blocks is not other._private_blocks
    # pydicom's own API works on them.
    assert list(item.keys()) and item[next(iter(item.keys()))] is not None


@pytest.mark.parametrize("schema", ["flattened", "json"])
def test_pydicom_and_lean_reads_agree_on_empty_elements(schema):
    path = CORPUS / "MR_small.dcm"  # has empty DS elements (PatientSize)
    from airflow_provider_dicom.dicom.read import read_instance

    converter = InstanceConverter(schema=schema)
    with open(path, "rb") as handle:
        through_pydicom = converter.convert(read_instance(handle)).row
    assert converter.convert(read_instance(path)).row == through_pydicom
