"""The Dataset pydicom's reader would give, built from a scanned header (scan.py) without re-reading.

The export converts scanned headers itself (the walker, scanned.py); an instance it hands to
pydicom (NeedsPydicom), a caller that wants pydicom's objects, and the JSON table (pydicom's
`to_json_dict`) get a FileDataset built here from the same scan: RawDataElements, and Sequence
objects of Datasets for sequences, exactly what `dcmread` gives, so the Dataset adapter cannot
tell the difference. Pixel data at the top level is a deferred element (value None), never copied.
What the scanner declines (`Unsupported`) the caller reads with pydicom's own reader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_dicom.dicom.scan import (  # noqa: F401 - the parser's errors, re-exported for its callers
    LeanInstance,
    NeedMoreData,
    Truncated,
    Unsupported,
    scan_part10,
)
from airflow_provider_dicom.dicom.vocabulary import UNDEFINED_LENGTH

if TYPE_CHECKING:
    from pydicom.dataset import FileDataset

_UNDEFINED = UNDEFINED_LENGTH
# The Dataset attribute listing the tags of sequences the scan skipped below its depth limit
# (scan.MAX_SEQUENCE_DEPTH): kept as empty sequences, so the JSON table lists them as dropped.
CUT_SEQUENCES = "_cut_sequences"


def _item_maker(implicit: bool, little: bool):
    """A function making sequence-item Datasets, as `Dataset(elements)` plus
    `set_original_encoding()` would, about six times faster.

    A Dataset's constructor and attribute hook cost ~10 us, paid for every item of every
    sequence (tens per instance). The state they produce is plain attributes, so we copy it from
    one reference Dataset. That copy is checked against the real constructor once per process:
    should a pydicom release add state this copy does not reproduce, the real constructor is used.
    """
    from pydicom.dataset import Dataset

    def slow(elements: dict) -> Dataset:
        item = Dataset(elements)
        item.set_original_encoding(implicit, little, None)
        return item

    reference = slow({}).__dict__
    mutable = [key for key, value in reference.items() if isinstance(value, (dict, list, set)) and key != "_dict"]
    new = Dataset.__new__

    def fast(elements: dict) -> Dataset:
        item = new(Dataset)
        state = item.__dict__
        state.update(reference)
        state["_dict"] = elements
        for key in mutable:
            state[key] = reference[key].copy()
        return item

    probe: dict = {}
    made, expected = fast(probe), slow(probe)
    if made.__dict__ != expected.__dict__ or type(made) is not type(expected):
        return slow
    return fast


_ITEM_MAKERS: dict[tuple[bool, bool], object] = {}


def _item_maker_for(implicit: bool, little: bool):
    maker = _ITEM_MAKERS.get((implicit, little))
    if maker is None:
        maker = _ITEM_MAKERS[(implicit, little)] = _item_maker(implicit, little)
    return maker


def _pydicom_elements(elements: dict, implicit: bool, little: bool, new_item) -> dict:
    """pydicom's element dict for one dataset of a scan: RawDataElements, and DataElements
    holding Sequences of item Datasets, keyed by BaseTag in the scan's (file) order."""
    from pydicom.dataelem import DataElement, RawDataElement
    from pydicom.sequence import Sequence
    from pydicom.tag import BaseTag

    out: dict[BaseTag, DataElement | RawDataElement] = {}
    for tag, (vr, value, offset, length) in elements.items():
        btag = BaseTag(tag)
        if vr == "SQ" and value.__class__ is list:
            items = [new_item(_pydicom_elements(item, implicit, little, new_item)) for item in value]
            out[btag] = DataElement(btag, "SQ", Sequence(items), is_undefined_length=length == _UNDEFINED)
        else:
            out[btag] = RawDataElement(btag, vr, length, value, offset, implicit, little)
    return out


def to_dataset(lean: LeanInstance, buf: bytes | memoryview, name: str | None = None) -> FileDataset:
    """The FileDataset pydicom's reader would give for the file `lean` was scanned from."""
    from pydicom.dataset import FileDataset, FileMetaDataset

    implicit, little = lean.implicit, lean.little
    meta = _pydicom_elements(lean.meta, False, True, _item_maker_for(False, True))
    elements = _pydicom_elements(lean.body, implicit, little, _item_maker_for(implicit, little))
    ds = FileDataset(name or "", elements, preamble=bytes(buf[:128]), file_meta=FileMetaDataset(meta),
                     is_implicit_VR=implicit, is_little_endian=little)
    ds.set_original_encoding(implicit, little, None)
    if lean.cut:
        setattr(ds, CUT_SEQUENCES, lean.cut)
    return ds


def parse_part10(buf: bytes | memoryview, name: str | None = None, *, object_size: int | None = None) -> FileDataset:
    """Parse a Part 10 file held in `buf` (bytes, or an mmap of the file).

    With `object_size` larger than `buf`, `buf` is the first bytes of a remote object: parsing
    stops at the pixel data, and NeedMoreData says how many bytes to fetch when the header goes
    on past the prefix (a whole header is never silently cut short)."""
    return to_dataset(scan_part10(buf, object_size=object_size), buf, name)
