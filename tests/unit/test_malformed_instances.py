"""One malformed file is that file's failure, never the export's end (issue 11 item 1).

Every route that decides an instance's outcome is driven here with files that used to raise out
of it: a File Meta Information group whose (0002,0000) has a bogus VR/length (pydicom raised
BytesLengthException), and sequences nested 500-1,000 deep (RecursionError)."""

from __future__ import annotations

import io
import struct

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from airflow_provider_dicom.dicom.convert import MAX_NESTING, InstanceConverter
from airflow_provider_dicom.dicom.outcomes import convert_bytes, convert_instance, convert_part10
from airflow_provider_dicom.dicom.read import read_instance
from airflow_provider_dicom.sources.folder import FAILED, OK, convert_file
from tests.helpers.fuzz_corpus import built, element_offsets, nested_sequences
from tests.unit.dicom_factory import make_dataset, to_file_bytes

SCHEMAS = ("flattened", "json")


def _uid_factory():
    counter = iter(range(1, 10_000))
    return lambda: f"2.25.{next(counter)}"


def bad_meta_group_length() -> bytes:
    """(0002,0000) UL of length 4 rewritten as US of length 3: pydicom's BytesLengthException."""
    data = bytearray(to_file_bytes(make_dataset(PatientName="Doe^Jane")))
    pos, tag, _ = element_offsets(bytes(data))[0]
    assert tag == 0x00020000
    data[pos + 4 : pos + 8] = b"US" + struct.pack("<H", 3)
    return bytes(data)


def deep_file(depth: int, implicit: bool, undefined: bool) -> tuple[bytes, str]:
    ds, sop = built(_uid_factory(), ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue() + nested_sequences(depth, implicit=implicit, undefined=undefined), sop


def _no_quoted_bytes(reason: str) -> None:
    assert "\\x" not in reason and "b'" not in reason, reason


@pytest.mark.parametrize("schema", SCHEMAS)
def test_bad_meta_group_length_is_that_files_failure_with_its_path(tmp_path, schema):
    path = tmp_path / "bad-meta.dcm"
    path.write_bytes(bad_meta_group_length())
    outcome = convert_file(path, InstanceConverter(schema=schema))
    assert outcome.status == FAILED
    assert outcome.path == str(path)
    assert "(0002,0000)" in outcome.reason or "BytesLength" in outcome.reason
    _no_quoted_bytes(outcome.reason)


@pytest.mark.parametrize("schema", SCHEMAS)
def test_every_outcome_entry_point_turns_any_exception_into_a_failure(schema):
    data = bad_meta_group_length()
    converter = InstanceConverter(schema=schema)
    for outcome in (
        convert_bytes("mem://bad", data, converter),
        convert_part10("mem://bad", data, converter),
        convert_instance("mem://bad", lambda: read_instance(io.BytesIO(data)), converter),
    ):
        assert outcome.status == FAILED and outcome.path == "mem://bad", outcome

    def explodes():
        raise RecursionError("maximum recursion depth exceeded")

    outcome = convert_instance("mem://deep", explodes, converter)
    assert outcome.status == FAILED and "RecursionError" in outcome.reason


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
@pytest.mark.parametrize("undefined", [False, True], ids=["defined", "undefined"])
@pytest.mark.parametrize("depth", [500, 1000])
def test_sequences_nested_1000_deep_export_with_deeper_content_dropped(tmp_path, implicit, undefined, depth):
    data, sop = deep_file(depth, implicit, undefined)
    path = tmp_path / "deep.dcm"
    path.write_bytes(data)
    outcome = convert_file(path, InstanceConverter())
    assert outcome.status == OK, outcome.reason
    row = outcome.converted.row
    assert row["SOPInstanceUID"] == sop
    # 15 levels of ContentSequence (15 RECORD levels) are kept, the 16th sequence is dropped
    level, kept = row, 0
    while "ContentSequence" in level:
        level = level["ContentSequence"][0]
        kept += 1
    assert kept == MAX_NESTING
    dropped = [entry["TagReference"] for entry in row["DroppedTags"] if entry["TagName"] == "ContentSequence"]
    assert dropped == ["0040A730/0/" * MAX_NESTING + "0040A730"]


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_deep_nesting_in_the_json_table_lists_what_was_cut(tmp_path, implicit):
    data, sop = deep_file(1000, implicit, True)
    path = tmp_path / "deep.dcm"
    path.write_bytes(data)
    outcome = convert_file(path, InstanceConverter(schema="json"))
    assert outcome.status == OK, outcome.reason
    assert outcome.converted.sop_uid == sop
    assert "0040A730" in outcome.converted.row["DroppedTags"]
    # the levels above the cut are in Metadata
    level, kept = outcome.converted.row["Metadata"], 0
    while "0040A730" in level and level["0040A730"].get("Value"):
        level = level["0040A730"]["Value"][0]
        kept += 1
    assert kept >= MAX_NESTING


def test_worker_processes_report_malformed_files_as_failures(tmp_path):
    from airflow_provider_dicom.sources.parallel import convert_files

    (tmp_path / "a-bad-meta.dcm").write_bytes(bad_meta_group_length())
    deep, deep_sop = deep_file(1000, False, True)
    (tmp_path / "b-deep.dcm").write_bytes(deep)
    good = make_dataset()
    (tmp_path / "c-good.dcm").write_bytes(to_file_bytes(good))
    paths = sorted(str(p) for p in tmp_path.iterdir())
    outcomes = {o.path: o for o in convert_files(paths, processes=2)}
    assert outcomes[paths[0]].status == FAILED
    assert outcomes[paths[1]].status == OK and outcomes[paths[1]].sop_uid == deep_sop
    assert outcomes[paths[2]].status == OK and outcomes[paths[2]].sop_uid == good.SOPInstanceUID
