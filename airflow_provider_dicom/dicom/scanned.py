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

One exception: the "US or SS" elements at the top level of an implicit VR dataset (smallest and
largest pixel values, palette descriptors, ...), common in implicit VR images, are settled here
by pydicom itself (`_ambiguous_settled`): the element is read (`ds[tag]`, which converts it and
corrects its VR: filewriter.correct_ambiguous_vr_element) from a Dataset holding what that
correction reads of the top level (Pixel Representation, Pixel Data), and its values are taken
from pydicom's DataElement as the Dataset route takes them (datasets.converted_values). Whenever its answer could depend on more (an empty
Pixel Representation, an element it leaves ambiguous, an error), the element is left as it was
and the instance goes to pydicom as before.
"""

from __future__ import annotations

from collections.abc import ItemsView, Sequence
from typing import Any

from airflow_provider_dicom.dicom.read import quiet_pydicom
from airflow_provider_dicom.dicom.scan import Elements, LeanInstance
from airflow_provider_dicom.dicom.vocabulary import (
    PIXEL_DATA,
    PIXEL_REPRESENTATION,
    SPECIFIC_CHARACTER_SET,
    TIMEZONE_OFFSET_FROM_UTC,
)
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
        if len(element) == _SETTLED_LENGTH:  # a DataElement pydicom settled (_ambiguous_settled)
            from airflow_provider_dicom.dicom.datasets import converted_values

            return converted_values(element[2], vr)
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
# An element pydicom settled is (VR, None, pydicom's DataElement); a scanned one (VR, value, offset, length).
_SETTLED_LENGTH = 3
_us_or_ss: tuple[int, ...] | None = None


def _us_or_ss_tags() -> tuple[int, ...]:
    """The tags pydicom's dictionary gives "US or SS" (two dozen)."""
    global _us_or_ss
    if _us_or_ss is None:
        from pydicom.datadict import DicomDictionary

        _us_or_ss = tuple(sorted(tag for tag, entry in DicomDictionary.items() if entry[0] == "US or SS"))
    return _us_or_ss


def _ambiguous_settled(body: Elements, little: bool) -> Elements:
    """An implicit VR top level with its "US or SS" elements settled by pydicom (see the module
    docstring); `body` itself when it has none, or none pydicom settles on what is given here."""
    found = [tag for tag in _us_or_ss_tags() if tag in body]
    if not found:
        return body
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import Dataset
    from pydicom.tag import BaseTag

    pixel_representation = body.get(PIXEL_REPRESENTATION)
    if pixel_representation is not None and not pixel_representation[1]:
        return body  # empty: pydicom would look for what sequences passed down instead

    def raw(tag: int) -> RawDataElement:
        vr, value, offset, length = body[tag]
        return RawDataElement(BaseTag(tag), vr, length, value, offset, True, little)  # as parse.to_dataset

    found = [tag for tag in found if body[tag][0] is None and body[tag][1].__class__ is bytes]
    # The top level as far as the correction reads it: Pixel Representation, else whether there
    # is Pixel Data (it has no ancestors to look in); `ds[tag]` is the Dataset route's own
    # conversion (Dataset.__getitem__: convert, then correct the ambiguous VR).
    ds = Dataset({BaseTag(t): raw(t) for t in (PIXEL_REPRESENTATION, PIXEL_DATA, *found) if t in body})
    ds.set_original_encoding(True, little, None)
    settled: dict[int, Any] = dict(body)
    with quiet_pydicom():
        for tag in found:
            try:
                element = ds[BaseTag(tag)]
            except Exception:  # noqa: BLE001, S112 - pydicom's verdict on the whole Dataset decides
                continue
            if " or " not in element.VR:
                settled[tag] = (element.VR, None, element)
    return settled


def instance_parts(lean: LeanInstance, settle: bool = True) -> InstanceParts:
    """A scanned header as the walker takes it; raises NeedsPydicom (see the module docstring).
    `settle`: with the "US or SS" elements pydicom settles (not for the JSON table, which writes
    raw values only and leaves those instances to pydicom)."""
    body = _ambiguous_settled(lean.body, lean.little) if lean.implicit and settle else lean.body
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
    settled = _us_or_ss_tags()  # most likely settled here (instance_parts)
    return any(
        plan_for(tag, element[0]).kind == PYDICOM and tag not in settled for tag, element in lean.body.items()
    )
