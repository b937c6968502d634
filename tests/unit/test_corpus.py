"""The whole pydicom test corpus through the engine, as a folder export would see it.

pydicom ships 176 files: CT, MR, RT, SR, SEG, ECG, US; every transfer syntax family; private
tags, nested sequences; and also truncated files, bare datasets, DICOMDIRs, READMEs and JSON.
Every file must come out as exactly one outcome (a row, or not-DICOM / failed with a reason);
every file pydicom itself can read must become a row, except the few listed below with why; and
every row must load under the table schema the export would create (the union of all rows'
schemas), checked value by value the way a BigQuery load job would.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from pathlib import Path

import pydicom
import pytest

from airflow_provider_dicom.dicom.schema import Field, TableSchema
from tests.helpers.schema_check import assert_row_fits, row_problems, schema_problems

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"

# Files pydicom can read (dcmread, force=False) that legitimately yield no row. Key: path relative
# to TEST_FILES; value: (expected status, a phrase the reported reason must contain, why).
READABLE_WITHOUT_ROW: dict[str, tuple[str, str, str]] = {
    **{
        name: ("not_dicom", "DICOMDIR", "a media storage directory lists instances, it is not one")
        for name in (
            "dicomdirtests/DICOMDIR",
            "dicomdirtests/DICOMDIR-bigEnd",
            "dicomdirtests/DICOMDIR-empty.dcm",
            "dicomdirtests/DICOMDIR-implicit",
            "dicomdirtests/DICOMDIR-nooffset",
            "dicomdirtests/DICOMDIR-nopatient",
            "dicomdirtests/DICOMDIR-reordered",
            "dicomdirtests/TINY_ALPHA/DICOMDIR",
        )
    },
    **{
        name: ("failed", "SOPInstanceUID", "a fragment with no SOPInstanceUID: no row can be identified")
        for name in (
            "UN_sequence.dcm",
            "empty_charset_LEI.dcm",
            "meta_missing_tsyntax.dcm",
            "nested_priv_SQ.dcm",
            "no_meta_group_length.dcm",
            "priv_SQ.dcm",
        )
    },
    "rtplan_truncated.dcm": (
        "failed",
        "truncated",
        "cut inside a sequence; pydicom reads it only because it parses values lazily",
    ),
}


def _corpus_files() -> list[Path]:
    return sorted(p for p in TEST_FILES.glob("**/*") if p.is_file())


def _pydicom_can_read(path: Path) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pydicom.dcmread(path, force=False)
        except Exception:  # noqa: BLE001 - anything pydicom refuses is "not readable" here
            return False
    return True


@pytest.fixture(scope="module")
def corpus_files() -> list[Path]:
    files = _corpus_files()
    if not files:
        pytest.fail(f"pydicom's test corpus is missing at {TEST_FILES}")
    return files


@pytest.fixture(scope="module")
def readable(corpus_files) -> set[str]:
    return {_relative(p) for p in corpus_files if _pydicom_can_read(p)}


def _relative(path: str | Path) -> str:
    return Path(path).relative_to(TEST_FILES).as_posix()


def _export(schema: str) -> dict[str, object]:
    from airflow_provider_dicom.dicom.convert import InstanceConverter
    from airflow_provider_dicom.sources.folder import convert_folder

    return {_relative(o.path): o for o in convert_folder(TEST_FILES, InstanceConverter(schema=schema))}


@pytest.fixture(scope="module")
def flattened() -> dict[str, object]:
    return _export("flattened")


@pytest.fixture(scope="module")
def json_variant() -> dict[str, object]:
    return _export("json")


def test_every_file_has_exactly_one_outcome_with_a_reason(corpus_files, flattened) -> None:
    assert sorted(flattened) == [_relative(p) for p in corpus_files]
    for name, outcome in flattened.items():
        assert outcome.status in ("ok", "not_dicom", "failed"), (name, outcome.status)
        if outcome.status == "ok":
            assert outcome.converted is not None and outcome.reason is None, name
        else:
            assert outcome.converted is None, name
            assert outcome.reason and outcome.reason.strip(), f"{name}: {outcome.status} without a reason"
            # The engine caught its own crash: that is a bug, not a bad file.
            assert not outcome.reason.startswith("conversion failed"), f"{name}: {outcome.reason}"


def test_every_readable_file_converts(readable, flattened) -> None:
    # Guards the expectation itself: pydicom 3.0.2 reads 163 of its 176 test files.
    assert len(readable) >= 160, f"pydicom reads only {len(readable)} of its test files"
    not_listed = sorted(set(READABLE_WITHOUT_ROW) - readable)
    assert not not_listed, f"listed as readable exceptions but pydicom cannot read them: {not_listed}"
    unexpected = {
        name: f"{flattened[name].status}: {flattened[name].reason}"
        for name in sorted(readable - set(READABLE_WITHOUT_ROW))
        if flattened[name].status != "ok"
    }
    assert not unexpected, f"readable by pydicom but not converted: {unexpected}"
    for name, (status, phrase, why) in READABLE_WITHOUT_ROW.items():
        outcome = flattened[name]
        assert outcome.status == status, f"{name} ({why}): {outcome.status}: {outcome.reason}"
        assert phrase.lower() in outcome.reason.lower(), f"{name}: reason {outcome.reason!r} lacks {phrase!r}"
    converted = sum(1 for o in flattened.values() if o.status == "ok")
    assert converted == len(readable) - len(READABLE_WITHOUT_ROW)


def test_unreadable_files_are_reported_not_converted(readable, flattened) -> None:
    unreadable = {name: o for name, o in flattened.items() if name not in readable}
    assert {"README.txt", "crayons.icc", "test1.json", "zipMR.gz", "rtplan.dump"} <= set(unreadable)
    for name, outcome in unreadable.items():
        assert outcome.status in ("not_dicom", "failed"), f"{name}: pydicom refuses it, engine says ok"
    statuses = Counter(o.status for o in unreadable.values())
    assert statuses["not_dicom"] >= 5, statuses


def test_uids_match_what_pydicom_reads(flattened) -> None:
    for name, outcome in flattened.items():
        if outcome.status != "ok":
            continue
        ds = pydicom.dcmread(TEST_FILES / name, stop_before_pixels=True)
        row = outcome.converted.row
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            expected = str(ds[keyword].value) if keyword in ds and ds[keyword].value else None
            assert row.get(keyword) == expected, f"{name}: {keyword} {row.get(keyword)!r} != {expected!r}"
        assert outcome.converted.sop_uid == str(ds.SOPInstanceUID), name
        assert row["BlobStorageSize"] == os.path.getsize(TEST_FILES / name), name


@pytest.mark.parametrize("variant", ["flattened", "json_variant"])
def test_rows_are_json_and_fit_the_merged_schema(variant, request) -> None:
    outcomes = request.getfixturevalue(variant)
    rows = {name: o.converted for name, o in outcomes.items() if o.status == "ok"}
    assert len(rows) >= 140, f"only {len(rows)} rows"
    table = TableSchema()
    for converted in rows.values():
        table.add(converted.fields)
    assert not schema_problems(table.fields), schema_problems(table.fields)
    problems: dict[str, list[str]] = {}
    for name, converted in rows.items():
        line = json.dumps(converted.row, allow_nan=False)
        assert json.loads(line) == converted.row, f"{name}: the row does not survive a JSON round trip"
        found = row_problems(converted.row, table.fields) + [
            f"(own schema) {p}" for p in row_problems(converted.row, converted.fields)
        ]
        if found:
            problems[name] = found[:10]
    assert not problems, json.dumps(problems, indent=1)


# The validator the tests above rely on must catch what a load job rejects.


_SCHEMA = (
    Field("S", "STRING"),
    Field("I", "INTEGER"),
    Field("F", "FLOAT", "REPEATED"),
    Field("D", "DATE"),
    Field("T", "TIME"),
    Field("TS", "TIMESTAMP"),
    Field("R", "RECORD", "REPEATED", (Field("Tag", "STRING"), Field("Data", "STRING", "REPEATED"))),
)


def test_schema_check_accepts_good_rows() -> None:
    row = {
        "S": "x",
        "I": 3,
        "F": [1.5, 2],
        "D": "2024-01-31",
        "T": "12:34:56.123456",
        "TS": "2024-01-31T12:34:56.5+01:00",
        "R": [{"Tag": "Tag_00091001", "Data": ["a"]}],
    }
    assert row_problems(row, _SCHEMA) == []
    assert row_problems({"S": None, "R": None}, _SCHEMA) == []


@pytest.mark.parametrize(
    ("row", "phrase"),
    [
        ({"S": 3}, "STRING expects str"),
        ({"I": "3"}, "INTEGER expects int"),
        ({"I": True}, "INTEGER expects int"),
        ({"I": 2**63}, "INT64 range"),
        ({"F": 1.5}, "REPEATED column expects a list"),
        ({"F": [float("nan")]}, "not a finite number"),
        ({"F": [1.0, None]}, "cannot hold NULL"),
        ({"D": "20240131"}, "YYYY-MM-DD"),
        ({"D": "2024-02-30"}, "not a calendar date"),
        ({"T": "25:00:00"}, "HH:MM:SS"),
        ({"TS": "2024-01-31"}, "TIMESTAMP must look like"),
        ({"R": [{"Tag": "x", "Extra": 1}]}, "R[0].Extra: no such column"),
        ({"R": ["x"]}, "RECORD expects a JSON object"),
        ({"Nope": 1}, "no such column"),
    ],
)
def test_schema_check_rejects_bad_values(row, phrase) -> None:
    problems = row_problems(row, _SCHEMA)
    assert any(phrase in p for p in problems), problems
    with pytest.raises(AssertionError, match="does not fit the schema"):
        assert_row_fits(row, _SCHEMA)


def test_schema_check_rejects_bad_schemas() -> None:
    assert schema_problems((Field("R", "RECORD"),)) == ["R: RECORD without sub-fields"]
    assert "duplicate" in schema_problems((Field("a", "STRING"), Field("A", "STRING")))[0]
    deep = Field("L", "STRING")
    for level in range(16):
        deep = Field(f"R{level}", "RECORD", "NULLABLE", (deep,))
    assert any("15" in p for p in schema_problems((deep,)))
