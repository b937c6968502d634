"""Conformance of our columns with a table the real Cloud Healthcare export wrote.

`tests/data/idc_dicom_all_schema.json` is the BigQuery schema of Imaging Data Commons'
`dicom_all` table, which Google's `dicomStores.export` produced (plus IDC's own columns). For every
field in it whose name is a DICOM keyword, at the top level and inside sequences, we build an
instance carrying that element, convert it with our engine, and require the column the engine
declares to have the reference's type and mode, sub-records included (PN's three groups of five
components, repeating groups' {Id, Value}, OtherElements' {Tag, Data}). Private sequences
(`Tag_GGGGEEEE` columns) are rebuilt as private SQ elements and must come back as the same
REPEATED RECORD columns. Users' existing queries on Google's tables run on ours only if this holds.

Test ids are field paths, e.g. ``ContentSequence.ConceptNameCodeSequence.CodeValue``.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pydicom import datadict
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

from airflow_provider_dicom.dicom.schema import Field
from tests.helpers.schema_check import assert_row_fits

# A copy in the repository (of ../shared/reference/), so every clone runs these checks.
REFERENCE_PATH = Path(__file__).resolve().parents[1] / "data" / "idc_dicom_all_schema.json"

_PRIVATE_COLUMN = re.compile(r"^Tag_([0-9A-F]{4})([0-9A-F]{4})$")
PRIVATE_CREATOR = "CONFORMANCE TEST"

# A plausible value of each VR, valid enough that pydicom does not warn about it.
_SAMPLE_VALUES: dict[str, Any] = {
    "AE": "STORESCP",
    "AS": "045Y",
    "CS": "ORIGINAL",
    "DA": "20240131",
    "DS": "0.50",
    "DT": "20240131123456.123456",
    "IS": "12",
    "LO": "long string",
    "LT": "long text",
    "PN": "Doe^Jane^M^Dr^Jr",
    "SH": "short",
    "ST": "short text",
    "TM": "123456.123",
    "UC": "unlimited characters",
    "UI": "1.2.840.10008.5.1.4.1.1.2",
    "UR": "http://example.org/conformance",
    "UT": "unlimited text",
    "FL": 1.5,
    "FD": 2.25,
    "AT": 0x00100010,
    "SL": -70000,
    "SS": -7,
    "UL": 70000,
    "US": 7,
}
_SPECIAL_VALUES: dict[str, Any] = {
    "SpecificCharacterSet": "ISO_IR 192",
    "TransferSyntaxUID": "1.2.840.10008.1.2.1",
    "TimezoneOffsetFromUTC": "+0100",
}
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN", "SV", "UV"}


# --------------------------------------------------------------------------------------------
# The reference schema and the cases it yields


@dataclass(frozen=True)
class Case:
    """One reference field to check: its path of names from the top-level column, and its definition."""

    path: tuple[str, ...]
    field: Field
    kind: str  # "keyword", "repeating_group", "private_sequence", "other_elements"

    @property
    def id(self) -> str:
        return ".".join(self.path)


@cache
def reference_fields() -> tuple[Field, ...]:
    data = json.loads(REFERENCE_PATH.read_text())
    return tuple(Field.from_api_repr(item) for item in data["schema"]["fields"])


@cache
def _repeater_entries() -> dict[str, tuple[int, str, str]]:
    """Repeating-group keyword -> (tag in the first group of its range, VR, VM)."""
    out = {}
    for mask, (vr, vm, _name, _retired, keyword) in datadict.RepeatersDictionary.items():
        if keyword and mask.startswith(("50xx", "60xx")):
            out[keyword] = (int(mask.replace("xx", "00"), 16), vr, vm)
    return out


def _kind_of(name: str) -> str | None:
    if name in datadict.keyword_dict:
        return "keyword"
    if name in _repeater_entries():
        return "repeating_group"
    if _PRIVATE_COLUMN.match(name):
        return "private_sequence"
    if name == "OtherElements":
        return "other_elements"
    return None


def _collect(
    fields: tuple[Field, ...], prefix: tuple[str, ...], cases: list[Case], skipped: list[str]
) -> None:
    for field in fields:
        path = prefix + (field.name,)
        kind = _kind_of(field.name)
        if kind is None:
            # At the top level these are IDC's own columns (collection_id, gcs_url, ...).
            if prefix:
                skipped.append(f"{'.'.join(path)}: not a DICOM keyword, private tag or OtherElements")
            continue
        cases.append(Case(path, field, kind))
        if kind == "private_sequence" or (kind == "keyword" and _is_sequence(field.name)):
            _collect(field.fields, path, cases, skipped)


def _is_sequence(keyword: str) -> bool:
    return datadict.dictionary_VR(datadict.keyword_dict[keyword]) == "SQ"


@cache
def reference_cases() -> tuple[tuple[Case, ...], tuple[str, ...]]:
    """All checkable fields of the reference, and the DICOM-looking ones we cannot check (with why)."""
    cases: list[Case] = []
    skipped: list[str] = []
    _collect(reference_fields(), (), cases, skipped)
    return tuple(cases), tuple(skipped)


def _params(kinds: set[str], top_level_only: bool = False) -> list:
    cases, _ = reference_cases()
    return [
        pytest.param(case, id=case.id)
        for case in cases
        if case.kind in kinds and (len(case.path) == 1 or not top_level_only)
    ]


# --------------------------------------------------------------------------------------------
# Building an instance that carries a reference field


def _pick_vr(dictionary_vr: str) -> str:
    """The VR to write for a dictionary VR; for ambiguous ones ("US or SS") the first non-binary."""
    options = [vr.strip() for vr in dictionary_vr.split(" or ")]
    for vr in options:
        if vr not in _BINARY_VRS:
            return vr
    return options[0]


def _value_count(vm: str) -> int:
    """How many values to give an element: one for VM 1, else the smallest count its VM allows (>= 2)."""
    if vm == "1":
        return 1
    first = int(re.match(r"\d+", vm).group())
    return max(first, 2)


def _sample_value(keyword: str, vr: str, vm: str) -> Any:
    value = _SPECIAL_VALUES.get(keyword, _SAMPLE_VALUES[vr])
    count = 1 if keyword in _SPECIAL_VALUES else _value_count(vm)
    return value if count == 1 else [value] * count


def _ensure_private_creator(ds: Dataset, group: int, element: int) -> None:
    creator_tag = (group << 16) | (element >> 8)
    if creator_tag not in ds:
        ds.add_new(creator_tag, "LO", PRIVATE_CREATOR)


def _add_private_filler(ds: Dataset) -> None:
    """A private creator and one private element, which belong in the item's OtherElements."""
    _ensure_private_creator(ds, 0x0011, 0x1001)
    ds.add_new(0x00111001, "LO", "private value")


def add_reference_field(ds: Dataset, field: Field) -> None:
    """Put into `ds` an element that the reference field describes; SQ items carry the nested fields."""
    kind = _kind_of(field.name)
    if kind == "keyword":
        tag = datadict.keyword_dict[field.name]
        vr = _pick_vr(datadict.dictionary_VR(tag))
        if vr == "SQ":
            ds.add_new(tag, "SQ", Sequence([build_item(field.fields)]))
            return
        # As many values as the reference's column holds: one where Google keeps it NULLABLE.
        vm = datadict.dictionary_VM(tag) if field.mode == "REPEATED" else "1"
        value = _sample_value(field.name, vr, vm)
        if tag >> 16 == 0x0002:
            if not hasattr(ds, "file_meta"):
                ds.file_meta = FileMetaDataset()
            ds.file_meta.add_new(tag, vr, value)
        else:
            ds.add_new(tag, vr, value)
    elif kind == "repeating_group":
        tag, dictionary_vr, vm = _repeater_entries()[field.name]
        vr = _pick_vr(dictionary_vr)
        ds.add_new(tag, vr, _sample_value(field.name, vr, vm))
    elif kind == "private_sequence":
        match = _PRIVATE_COLUMN.match(field.name)
        group, element = int(match.group(1), 16), int(match.group(2), 16)
        _ensure_private_creator(ds, group, element)
        ds.add_new((group << 16) | element, "SQ", Sequence([build_item(field.fields)]))
    elif kind == "other_elements":
        _add_private_filler(ds)


def build_item(fields: tuple[Field, ...]) -> Dataset:
    item = Dataset()
    for child in fields:
        add_reference_field(item, child)
    return item


def build_instance(root: Field) -> Dataset:
    """An instance with the identifying UIDs every instance has, plus the reference field `root`."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.3"
    add_reference_field(ds, root)
    return ds


# --------------------------------------------------------------------------------------------
# Converting and looking up what the engine declared


@dataclass(frozen=True)
class Converted:
    fields: tuple[Field, ...]
    row: dict


# Each instance is converted twice: as the in-memory Dataset (what a DICOMweb or JSON source
# hands the engine) and written to an Explicit VR Little Endian file read back with read_instance
# (what a folder or gs:// export does).
VIAS = ("dataset", "file")


@pytest.fixture(scope="module", autouse=True)
def _scratch_dir(tmp_path_factory):
    global _SCRATCH
    _SCRATCH = tmp_path_factory.mktemp("conformance")
    yield
    converted_root.cache_clear()


_SCRATCH: Path | None = None


def _as_file(ds: Dataset, name: str) -> Path:
    from pydicom import dcmwrite

    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    meta.setdefault("TransferSyntaxUID", EXPLICIT_VR_LITTLE_ENDIAN)
    meta.setdefault("MediaStorageSOPClassUID", ds.SOPClassUID)
    meta.setdefault("MediaStorageSOPInstanceUID", ds.SOPInstanceUID)
    ds.file_meta = meta
    path = _SCRATCH / f"{name}.dcm"
    dcmwrite(path, ds, enforce_file_format=True)
    return path


@cache
def converted_root(name: str, via: str) -> Converted:
    """The engine's output for an instance carrying the top-level reference field `name` (cached:
    every nested case of one top-level field shares one conversion)."""
    from airflow_provider_dicom.dicom.convert import InstanceConverter
    from airflow_provider_dicom.dicom.read import read_instance

    root = next(f for f in reference_fields() if f.name == name)
    ds = build_instance(root)
    if via == "file":
        ds = read_instance(_as_file(ds, name))
    converted = InstanceConverter(schema="flattened").convert(ds, blob_storage_size=1234, last_updated=None)
    return Converted(tuple(converted.fields), converted.row)


def _find(fields: tuple[Field, ...], path: tuple[str, ...]) -> Field:
    for depth, name in enumerate(path):
        by_name = {f.name: f for f in fields}
        if name not in by_name:
            where = ".".join(path[:depth]) or "<top level>"
            raise AssertionError(f"no column {'.'.join(path[: depth + 1])!r}; {where} has {sorted(by_name)}")
        field = by_name[name]
        fields = field.fields
    return field


def _value_at(row: Any, path: tuple[str, ...]) -> Any:
    """The value at `path` in a row, taking the first item of every sequence on the way."""
    value = row
    for depth, name in enumerate(path):
        if isinstance(value, list):
            value = value[0] if value else None
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def _shape(field: Field) -> list:
    """Names, types, modes of the sub-fields of a fixed-shape RECORD, in order, recursively."""
    return [(f.name, f.type, f.mode, _shape(f)) for f in field.fields]


# --------------------------------------------------------------------------------------------
# Tests


def _check_keyword(case: Case, via: str) -> None:
    converted = converted_root(case.path[0], via)
    got = _find(converted.fields, case.path)
    expected = (case.field.type, case.field.mode)  # Google's table wins (google_columns.py)
    assert (got.type, got.mode) == expected, (
        f"{case.id} ({via}): reference {expected[0]} {expected[1]}, engine {got.type} {got.mode}"
    )
    is_sequence = case.kind == "keyword" and _is_sequence(case.field.name)
    if case.field.type == "RECORD" and not is_sequence:
        # PN and repeating groups have a fixed shape: every sub-field, in order, typed as the reference.
        assert _shape(got) == _shape(case.field), f"{case.id} ({via}): sub-fields differ from the reference"
    value = _value_at(converted.row, case.path)
    assert value not in (None, [], {}), f"{case.id} ({via}): the column exists but the row holds {value!r}"


@pytest.mark.parametrize("case", _params({"keyword", "repeating_group"}))
def test_keyword_column_matches_reference(case: Case) -> None:
    for via in VIAS:
        _check_keyword(case, via)


@pytest.mark.parametrize("case", _params({"private_sequence"}))
def test_private_sequence_column_matches_reference(case: Case) -> None:
    assert (case.field.type, case.field.mode) == ("RECORD", "REPEATED")
    for via in VIAS:
        converted = converted_root(case.path[0], via)
        got = _find(converted.fields, case.path)
        assert (got.type, got.mode) == ("RECORD", "REPEATED"), (
            f"{case.id} ({via}): engine {got.type} {got.mode}"
        )
        value = _value_at(converted.row, case.path)
        assert isinstance(value, list) and value, (
            f"{case.id} ({via}): expected a list of items, got {value!r}"
        )


@pytest.mark.parametrize("case", _params({"other_elements"}))
def test_other_elements_column_matches_reference(case: Case) -> None:
    for via in VIAS:
        converted = converted_root(case.path[0], via)
        got = _find(converted.fields, case.path)
        assert (got.type, got.mode) == (case.field.type, case.field.mode), f"{case.id} ({via})"
        assert _shape(got) == _shape(case.field), f"{case.id} ({via}): sub-fields differ from the reference"
        entries = _value_at(converted.row, case.path)
        assert isinstance(entries, list), f"{case.id} ({via}): row holds {entries!r}"
        assert {"Tag": "Tag_00111001", "Data": ["private value"]} in entries, (
            f"{case.id} ({via}): the private element (0011,1001) is not kept in OtherElements: {entries!r}"
        )


@pytest.mark.parametrize(
    "case", _params({"keyword", "repeating_group", "private_sequence", "other_elements"}, True)
)
def test_row_fits_declared_schema(case: Case) -> None:
    """The row built for each top-level field loads under the schema the engine declared for it."""
    for via in VIAS:
        converted = converted_root(case.path[0], via)
        json.dumps(converted.row, allow_nan=False)
        assert_row_fits(converted.row, converted.fields, label=f"{case.id} ({via})")


def test_reference_has_fields_to_check() -> None:
    """Guards the walker: if it found nothing (a renamed key, a new file layout), every other test
    here would pass vacuously."""
    cases, skipped = reference_cases()
    kinds = {
        kind: sum(1 for c in cases if c.kind == kind)
        for kind in ("keyword", "repeating_group", "private_sequence", "other_elements")
    }
    assert kinds["keyword"] > 1500, kinds
    assert kinds["repeating_group"] >= 14, kinds
    assert kinds["private_sequence"] >= 25, kinds
    assert kinds["other_elements"] >= 20, kinds
    assert skipped == (), f"reference fields the conformance test cannot build: {skipped}"


# Private sequences beyond the reference: the rule, on tags the reference does not happen to hold.


def _private_sequence_instance() -> Dataset:
    inner = Dataset()
    inner.add_new(0x00430010, "LO", "TEST")  # creator of block 0x10 inside the item
    inner.add_new(0x00431001, "LO", "nested private value")
    inner.PatientID = "not-a-real-id"  # a standard element inside a private item
    inner.add_new(0x00431002, "SQ", Sequence([Dataset()]))  # a private sequence inside a private one
    inner[0x00431002].value[0].WindowCenter = ["40", "400"]
    items = []
    for rows in (512, 256):
        item = Dataset()
        item.add_new(0x00430010, "LO", "TEST")  # creator of block 0x10 inside the outer item
        item.add_new(0x00431002, "SQ", Sequence([copy.deepcopy(inner)]))
        item.Rows = rows
        items.append(item)
    ds = build_instance(Field("StudyDate", "DATE"))
    ds.add_new(0x00430010, "LO", "TEST")
    ds.add_new(0x00431005, "SQ", Sequence(items))
    return ds


@pytest.mark.parametrize("via", VIAS)
def test_private_sequence_becomes_tag_column_with_item_rules(via: str) -> None:
    from airflow_provider_dicom.dicom.convert import InstanceConverter
    from airflow_provider_dicom.dicom.read import read_instance

    ds = _private_sequence_instance()
    if via == "file":
        ds = read_instance(_as_file(ds, "private_sequences"))
    converted = InstanceConverter(schema="flattened").convert(ds, blob_storage_size=1, last_updated=None)
    fields = tuple(converted.fields)
    column = _find(fields, ("Tag_00431005",))
    assert (column.type, column.mode) == ("RECORD", "REPEATED")
    rows = _find(fields, ("Tag_00431005", "Rows"))
    assert (rows.type, rows.mode) == ("INTEGER", "NULLABLE")
    nested = _find(fields, ("Tag_00431005", "Tag_00431002"))
    assert (nested.type, nested.mode) == ("RECORD", "REPEATED")
    deeper = _find(fields, ("Tag_00431005", "Tag_00431002", "Tag_00431002", "WindowCenter"))
    assert (deeper.type, deeper.mode) == ("STRING", "REPEATED")
    patient_id = _find(fields, ("Tag_00431005", "Tag_00431002", "PatientID"))
    assert (patient_id.type, patient_id.mode) == ("STRING", "NULLABLE")
    other = _find(fields, ("Tag_00431005", "Tag_00431002", "OtherElements"))
    assert _shape(other) == [("Tag", "STRING", "NULLABLE", []), ("Data", "STRING", "REPEATED", [])]

    items = converted.row["Tag_00431005"]
    assert [item["Rows"] for item in items] == [512, 256]
    inner = items[0]["Tag_00431002"][0]
    assert inner["Tag_00431002"][0]["WindowCenter"] == ["40", "400"]
    assert {"Tag": "Tag_00431001", "Data": ["nested private value"]} in inner["OtherElements"]
    # The private sequence has its own column: it is not also listed among OtherElements.
    listed = {entry["Tag"] for entry in converted.row.get("OtherElements") or ()}
    assert "Tag_00431005" not in listed
    assert_row_fits(converted.row, fields)
