"""Rows become NDJSON lines through orjson (sources.parallel.encode_row), and the lines are byte
for byte those the standard encoder wrote before (compact, UTF-8 as is, NaN refused): on every
row of pydicom's test files, of the fuzz corpus, in both table schemas, and on the values where
the two encoders are known to differ."""

from __future__ import annotations

import json
import math
import random
import struct
from datetime import date, datetime
from pathlib import Path

import pytest

from airflow_provider_dicom.dicom.convert import InstanceConverter
from airflow_provider_dicom.dicom.outcomes import OK, InstanceOutcome
from airflow_provider_dicom.dicom.read import quiet_pydicom
from airflow_provider_dicom.sources.folder import convert_file
from airflow_provider_dicom.sources.parallel import encode_row, to_line
from tests.helpers.fuzz_corpus import generate

pytest.importorskip("orjson")  # without it encode_row *is* the standard encoder

STANDARD = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def standard(row):
    """What the standard encoder gives: the line, or the exception's type."""
    try:
        return STANDARD(row)
    except Exception as exc:  # noqa: BLE001
        return type(exc)


def ours(row):
    try:
        return encode_row(row)
    except Exception as exc:  # noqa: BLE001
        return type(exc)


@pytest.fixture(scope="module")
def corpus_paths(tmp_path_factory, pydicom_corpus: Path) -> list[str]:
    fuzz = generate(tmp_path_factory.mktemp("fuzz"))
    return sorted(str(p) for p in pydicom_corpus.rglob("*") if p.is_file()) + fuzz.paths


def _converted_corpus(paths, schema: str):
    """(path, ConvertedInstance) of every corpus file the folder route converts."""
    converter = InstanceConverter(schema=schema)
    with quiet_pydicom():
        for path in paths:
            converted = convert_file(path, converter).converted
            if converted is not None:
                yield path, converted


@pytest.mark.parametrize("schema", ["flattened", "json"])
def test_every_corpus_row_encodes_to_the_same_bytes(corpus_paths, schema) -> None:
    import orjson

    from airflow_provider_dicom.sources.parallel import _may_differ

    rows = through_orjson = 0
    for path, converted in _converted_corpus(corpus_paths, schema):
        rows += 1
        assert ours(converted.row) == standard(converted.row), path
        through_orjson += not _may_differ(orjson.dumps(converted.row))
    assert rows > 200
    assert through_orjson > 0.8 * rows  # the fast path is the common one, not a fallback every time


def _holds_a_float(value) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(map(_holds_a_float, value.values()))
    if isinstance(value, list):
        return any(map(_holds_a_float, value))
    return False


@pytest.mark.parametrize("schema", ["flattened", "json"])
def test_a_row_said_to_hold_no_float_holds_none_and_its_line_is_the_standard_one(corpus_paths, schema):
    """ConvertedInstance.float_free spares the line its float checks: it must never be said of a
    row holding a float (NaN and small floats are where orjson and the standard encoder differ)."""
    said = with_floats = 0
    for path, converted in _converted_corpus(corpus_paths, schema):
        holds = _holds_a_float(converted.row)
        with_floats += holds
        if converted.float_free:
            said += 1
            assert not holds, path
            line = to_line(InstanceOutcome(path, OK, converted=converted)).line
            assert line == STANDARD(converted.row), path
    if schema == "flattened":
        assert said > 100 and with_floats > 10  # both kinds of row are in the corpus
    else:
        assert said == 0  # the JSON column holds DICOM JSON, numbers and all


def _floats() -> list[float]:
    """Floats of every magnitude (random bit patterns), and the boundaries of Python's repr."""
    rng = random.Random(13)
    values = [struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0] for _ in range(20_000)]
    for exponent in range(-30, 30):
        values += [m * 10.0**exponent for m in (1, -1, 1.5, -3.25, 9.999)]
    values += [0.0, -0.0, 1e-4, 9.99e-5, 1e-5, 1e16, 1e15, 5e-324, 1.7976931348623157e308, 0.1, 2.5]
    return [v for v in values if math.isfinite(v)]


def test_floats_of_every_magnitude_encode_as_the_standard_encoder_does() -> None:
    values = _floats()
    for value in values:
        for row in ({"F": value}, {"F": [1, value]}, {"R": [{"Data": [value, "x"]}]}):
            assert ours(row) == standard(row), value
    assert ours({"F": values}) == standard({"F": values})


@pytest.mark.parametrize(
    "row",
    [
        {"F": float("nan")},  # refused by both: the line format takes no NaN or infinity
        {"F": [1.0, float("inf")]},
        {"F": [{"G": -float("inf")}]},
        {"I": 2**64},  # beyond orjson's 64 bits: written by the standard encoder
        {"I": -(2**63) - 1},
        {"I": [2**63 - 1, -(2**63), 2**64 - 1]},
        {"S": "\ud800"},  # a lone surrogate
        {"S": "é \u2028 \x00 \x1f \x7f 😀 \"quoted\" \\"},
        {"N": None, "L": [None]},
        {"S": "null", "T": "0.00001", "U": "1.0e-6", "V": "a,0.00001", "W": "x,1e-5"},  # look-alikes in text
        {"D": datetime(2024, 1, 31, 12, 0)},  # not JSON: both refuse
        {"D": date(2024, 1, 31)},
        {1: "int key"},
        {"B": [True, False], "E": [], "O": {}},
        {"Deep": json.loads("[" * 300 + "]" * 300)},  # deeper than orjson nests
    ],
)
def test_values_where_the_encoders_differ_give_the_standard_answer(row) -> None:
    assert ours(row) == standard(row)


def test_subclasses_of_json_types_encode_as_their_values() -> None:
    from pydicom.uid import UID

    class Number(float):
        pass

    row = {"U": UID("1.2.3"), "F": Number(1.5), "I": [True, 3]}
    assert ours(row) == standard(row) == '{"U":"1.2.3","F":1.5,"I":[true,3]}'


def test_a_row_that_does_not_encode_is_that_instance_failure() -> None:
    from airflow_provider_dicom.dicom.convert import ConvertedInstance

    converted = ConvertedInstance(row={"F": [float("nan")]}, fields=(), study_uid="1", series_uid="2", sop_uid="3")
    line = to_line(InstanceOutcome("a.dcm", OK, converted=converted))
    assert line.status != OK and line.line is None and "conversion failed" in (line.reason or "")
