"""The walker's adapter for pydicom Datasets: the route for what only pydicom can judge.

Files the scanner declines (deflate, broken files pydicom reads leniently), instances the scanned
route hands on (text with code extensions, implicit VR private elements, UN), and Datasets callers
build themselves are converted from pydicom's objects. Raw elements (RawDataElement, what
pydicom's reader and parse.to_dataset leave unconverted) give the walker their bytes, so the fast
path applies to them as to a scanned header; anything else is asked of pydicom: `ds[tag]`
converts an element in place with its private dictionary, its VR rules and its character sets.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_dicom.dicom.vocabulary import (
    BINARY_VRS,
    SPECIFIC_CHARACTER_SET,
    TIMEZONE_OFFSET_FROM_UTC,
)
from airflow_provider_dicom.dicom.walker import (
    DEFAULT_ENCODINGS,
    Element,
    InstanceParts,
    NeedsPydicom,
    Undecodable,
    decode_raw,
)

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

_RawDataElement: Any = None  # pydicom's, bound on first use to keep imports lazy


def _raw_class() -> Any:
    global _RawDataElement
    if _RawDataElement is None:
        from pydicom.dataelem import RawDataElement

        _RawDataElement = RawDataElement
    return _RawDataElement


def _elements(ds: Dataset) -> dict[int, Any]:
    """A Dataset's elements by tag (BaseTag is an int: plain ints find them too)."""
    return ds._dict  # type: ignore[return-value]


def encodings_of(ds: Dataset, inherited: list[str]) -> list[str]:
    """The character sets of a Dataset (its own Specific Character Set, or `inherited`)."""
    raw = _elements(ds).get(SPECIFIC_CHARACTER_SET)
    if raw is None:
        return inherited
    from pydicom.charset import convert_encodings

    value = raw.value
    if isinstance(value, bytes):
        names = [part.strip(" \x00") for part in value.decode("latin_1").split("\\")]
    elif value is None:
        names = []
    else:
        names = [value] if isinstance(value, str) else list(value)
    if not any(names):
        return DEFAULT_ENCODINGS
    return convert_encodings(names if len(names) > 1 else names[0])  # type: ignore[no-any-return]


class DatasetSource:
    """Elements of pydicom Datasets. An element record is (VR, raw bytes or None, the pydicom
    element, its Dataset); the raw bytes are given only in this source's byte order."""

    __slots__ = ("little",)

    def __init__(self, little: bool) -> None:
        self.little = little

    def entries(self, ds: Dataset) -> Iterator[tuple[int, Element]]:
        raw_class = _raw_class()
        little = self.little
        # pydicom replaces a raw element by its converted one in place when asked to convert it;
        # that changes values, not keys, so iterating the live dict is safe.
        for tag, elem in _elements(ds).items():
            if elem.__class__ is raw_class and elem.is_little_endian == little:
                yield tag & 0xFFFFFFFF, (elem.VR, elem.value, elem, ds)  # a plain int: BaseTag's __eq__ is slow
            else:
                yield tag & 0xFFFFFFFF, (elem.VR, None, elem, ds)

    def values(self, element: Element, vr: str, codec: str | None) -> list | None:
        elem, ds = element[2], element[3]
        if getattr(elem, "is_raw", False):
            value = elem.value
            if value is None and not elem.length:
                return []  # pydicom's reader gives empty values as None
            if value is None:  # deferred (e.g. a large value past a size limit): read it now
                elem = ds[elem.tag]
                return converted_values(elem, elem.VR)
            if not value:
                return []
            try:
                return decode_raw(value, vr, elem.is_little_endian, codec)
            except NeedsPydicom:  # text in a character set only pydicom decodes
                return converted_values(ds[elem.tag], vr) or []
        return converted_values(elem, vr)

    def items(self, element: Element) -> Sequence[Dataset]:
        elem, ds = element[2], element[3]
        if getattr(elem, "is_raw", False):
            elem = ds[elem.tag]
        return elem.value or []  # type: ignore[no-any-return]

    def encodings(self, item: Dataset, inherited: list[str]) -> list[str]:
        # pydicom decodes an item's text with its parent's character set; say what that is,
        # whoever parsed the file.
        parent = item._parent_encoding
        if (parent if isinstance(parent, list) else [parent]) != inherited:
            item._parent_encoding = inherited
        return encodings_of(item, inherited)

    def resolve(self, tag: int, element: Element) -> Element:
        elem, ds = element[2], element[3]
        if not getattr(elem, "is_raw", False):
            return element  # converted already: its VR is pydicom's
        # Implicit VR, or UN for a tag whose real VR is known: pydicom works out the VR (private
        # dictionaries, ambiguous US/SS from PixelRepresentation, UN replacement).
        try:
            converted = ds[tag]
        except Exception:  # noqa: BLE001 - a value pydicom itself cannot decode: keep its text
            value = elem.value
            raise Undecodable(
                [value.decode("latin_1").strip(" \x00")] if isinstance(value, bytes) else None
            ) from None
        return (converted.VR, None, converted, ds)


def converted_values(elem: Any, vr: str) -> list | None:
    """The values of an element pydicom has converted, as str (string VRs) or numbers; None for
    binary content. (The scanned route's too, for the elements it has pydicom settle: scanned.py.)"""
    value = elem.value
    if vr in BINARY_VRS:
        return None
    if value is None or value == "" or value == b"":
        return []
    from pydicom.multival import MultiValue

    items = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
    if vr == "AT":
        return [int(v) for v in items]
    if vr == "PN":
        return [_pn_text(v) for v in items]
    if isinstance(items[0], bytes):
        return None
    return [v if isinstance(v, (int, float)) and vr not in ("DS", "IS") else str(v) for v in items]


def _pn_text(value: Any) -> str:
    """A pydicom PersonName (already decoded) -> 'alphabetic=ideographic=phonetic' text."""
    components = getattr(value, "components", None)
    if components is not None:
        return "=".join(components)
    return str(value)


def _little_of(ds: Dataset) -> bool:
    try:
        little = ds.original_encoding[1]
    except AttributeError:  # pragma: no cover - a Dataset-like object without it
        little = None
    return True if little is None else bool(little)


_META = DatasetSource(True)
_BODY = {True: _META, False: DatasetSource(False)}


def instance_parts(ds: Dataset) -> InstanceParts:
    """A pydicom Dataset as the walker takes it (its File Meta Information first, when it has one)."""
    source = _BODY[_little_of(ds)]
    offset = _elements(ds).get(TIMEZONE_OFFSET_FROM_UTC)
    datasets: list[tuple[Any, Any, list[str]]] = []
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None:
        datasets.append((_META, file_meta, DEFAULT_ENCODINGS))
    datasets.append((source, ds, encodings_of(ds, DEFAULT_ENCODINGS)))
    return InstanceParts(
        datasets, None if offset is None else source.values((None, None, offset, ds), "SH", "latin_1")
    )
