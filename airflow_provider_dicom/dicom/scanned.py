"""The walker's adapter for scanned headers (scan.py's plain dicts and tuples): the export's fast route.

A folder's files and a gs:// prefix's objects are scanned into `{tag: (vr, value, offset,
length)}` dicts (scan.py); those tuples are already the walker's element records (VR, raw value),
so the walker reads them directly, without building pydicom objects (a BaseTag, a
RawDataElement, a Dataset per sequence item) only to read their bytes back.

What only pydicom can judge raises NeedsPydicom, and the caller converts that instance from the
Dataset pydicom builds (parse.to_dataset): an implicit VR element whose VR the dictionary does not
settle (private tags, "US or SS"), UN elements (pydicom may know their real VR), text in a
character set with code extensions, a value that was not read. tests/unit/test_lean_convert.py
holds this route to the Dataset route, byte for byte, on the whole pydicom test corpus.
"""

from __future__ import annotations

from collections.abc import ItemsView, Sequence

from airflow_provider_dicom.dicom.scan import Elements, LeanInstance
from airflow_provider_dicom.dicom.vocabulary import SPECIFIC_CHARACTER_SET, TIMEZONE_OFFSET_FROM_UTC
from airflow_provider_dicom.dicom.walker import (
    _CACHE_LIMIT,
    DEFAULT_ENCODINGS,
    PYDICOM,
    Element,
    InstanceParts,
    NeedsPydicom,
    decode_raw,
    plan_for,
)


def lean_values(element: Element, vr: str, little: bool, codec: str | None) -> list | None:
    """A scanned element's values, as the Dataset adapter gives them for the same raw element."""
    value = element[1]
    if value is None:
        if not element[3]:
            return []
        raise NeedsPydicom("a value not read (deferred)")
    if value.__class__ is list:
        raise NeedsPydicom("a sequence where a value was expected")
    if not value:
        return []
    return decode_raw(value, vr, little, codec)


_lean_encodings: dict[bytes, list[str]] = {}


def lean_encodings(elements: Elements, inherited: list[str]) -> list[str]:
    """The character sets of a scanned dataset, as pydicom works them out."""
    element = elements.get(SPECIFIC_CHARACTER_SET)
    if element is None:
        return inherited
    value = element[1]
    if not isinstance(value, bytes):
        raise NeedsPydicom("Specific Character Set is not text")
    found = _lean_encodings.get(value)
    if found is None:
        names = [part.strip(" \x00") for part in value.decode("latin_1").split("\\")]
        if not any(names):
            return DEFAULT_ENCODINGS
        from pydicom.charset import convert_encodings

        from airflow_provider_dicom.dicom.read import quiet_pydicom

        with quiet_pydicom():  # a misspelt name is corrected with a warning; the row says enough
            found = convert_encodings(names if len(names) > 1 else names[0])
        if len(_lean_encodings) >= _CACHE_LIMIT:
            _lean_encodings.clear()
        _lean_encodings[value] = found
    return found


class ScanSource:
    """Elements of a scanned header (see scan.py), raw values in one byte order."""

    __slots__ = ("little",)

    def __init__(self, little: bool) -> None:
        self.little = little

    def entries(self, elements: Elements) -> ItemsView[int, Element]:
        return elements.items()

    def values(self, element: Element, vr: str, codec: str | None) -> list | None:
        return lean_values(element, vr, self.little, codec)

    def items(self, element: Element) -> Sequence[Elements]:
        items = element[1]
        if items.__class__ is not list:
            if items:
                # An implicit element the dictionary calls a sequence, too short to be one: pydicom decides.
                raise NeedsPydicom("a sequence value that is not items")
            return ()
        return items  # type: ignore[no-any-return]

    def encodings(self, elements: Elements, inherited: list[str]) -> list[str]:
        return lean_encodings(elements, inherited)

    def resolve(self, tag: int, element: Element) -> Element:
        raise NeedsPydicom("an element whose VR pydicom must work out")


_LITTLE, _BIG = ScanSource(True), ScanSource(False)


def instance_parts(lean: LeanInstance) -> InstanceParts:
    """A scanned header as the walker takes it; raises NeedsPydicom (see the module docstring)."""
    body = lean.body
    offset = body.get(TIMEZONE_OFFSET_FROM_UTC)
    # The File Meta Information is explicit VR little endian whatever the body's syntax.
    return InstanceParts(
        [(_LITTLE, lean.meta, DEFAULT_ENCODINGS),
         (_LITTLE if lean.little else _BIG, body, lean_encodings(body, DEFAULT_ENCODINGS))],
        None if offset is None else lean_values(offset, "SH", True, "latin_1"),
    )


def hands_on(lean: LeanInstance) -> bool:
    """Whether the fast route would hand this instance to pydicom (NeedsPydicom), judged before
    converting anything: what the scan flagged, and for implicit VR the top-level elements whose
    dictionary VR is ambiguous ("US or SS"). A cheap early answer, not a complete one."""
    if lean.unusual:
        return True
    if not lean.implicit:
        return False
    return any(plan_for(tag, element[0]).kind == PYDICOM for tag, element in lean.body.items())
