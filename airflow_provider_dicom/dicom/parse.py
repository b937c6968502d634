"""A lean DICOM Part 10 parser for well-formed files, producing the Dataset pydicom would.

pydicom's reader is general (deferred reads, tag filters, VR-switch detection, debugging hooks)
and costs about half of the export's time per instance. Most files need none of that, so this
parser walks the bytes with struct and builds pydicom's own structures directly: a FileDataset
whose elements are RawDataElements and whose sequences are Sequence objects of Datasets, exactly
what `dcmread` gives, so the converter cannot tell the difference. Pixel data at the top level is
recorded as a deferred element (value None) and never copied.

Anything unusual (deflate, a VR that is not two letters, an explicit/implicit mix, a value that
runs past the end) raises `Unsupported`, and the caller reads the file with pydicom instead:
speed for the common case, pydicom's judgement for every other.
"""

from __future__ import annotations

from struct import Struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydicom.dataset import FileDataset

_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_PIXEL_TAGS = frozenset((0x7FE00010, 0x7FE00008, 0x7FE00009))
_LONG_VRS = frozenset(("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"))
_KNOWN_VRS = _LONG_VRS | frozenset(
    ("AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US")
)
_SYNTAXES = {
    "1.2.840.10008.1.2": (True, True),
    "1.2.840.10008.1.2.2": (False, False),
}
_DEFLATED = frozenset(("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1"))


class Unsupported(Exception):
    """Not a file for the lean parser; read it with pydicom."""


class Truncated(Unsupported):
    """The file ends inside an element: broken, whoever reads it (pydicom would keep a stub)."""


class NeedMoreData(Unsupported):
    """Parsing a prefix of an object: the header goes on past the prefix. `needed` is the
    smallest prefix length that could hold it, so a remote reader can fetch the next range."""

    def __init__(self, needed: int) -> None:
        super().__init__(f"the header goes on past the first {needed} bytes read")
        self.needed = needed


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

    probe = {}
    made, expected = fast(probe), slow(probe)
    if made.__dict__ != expected.__dict__ or type(made) is not type(expected):
        return slow
    return fast


_ITEM_MAKERS: dict[tuple[bool, bool], object] = {}


class _Parser:
    __slots__ = ("buf", "end", "implicit", "little", "tag_len", "short", "long", "raw", "prefix", "new_item")

    def __init__(self, buf, implicit: bool, little: bool, prefix: bool = False) -> None:
        from pydicom.dataelem import RawDataElement

        self.buf = buf
        self.end = len(buf)
        self.implicit = implicit
        self.little = little
        order = "<" if little else ">"
        self.tag_len = Struct(order + "HHL")
        self.short = Struct(order + "HH2sH")
        self.long = Struct(order + "L")
        self.raw = RawDataElement
        # True when `buf` is only the start of the object: its end is not the object's end.
        self.prefix = prefix
        maker = _ITEM_MAKERS.get((implicit, little))
        if maker is None:
            maker = _ITEM_MAKERS[(implicit, little)] = _item_maker(implicit, little)
        self.new_item = maker

    def elements(self, pos: int, end: int, top: bool, stop_group: int | None = None) -> tuple[dict, int]:
        """Elements from `pos` up to `end` (or an item delimiter); returns them and the end offset."""
        from pydicom.tag import BaseTag

        buf = self.buf
        out: dict = {}
        implicit = self.implicit
        little = self.little
        raw = self.raw
        tag_len = self.tag_len
        short = self.short
        long_ = self.long
        while pos < end:
            if pos + 8 > end:
                self._past_end(pos + 8, "element header")
            group, element, length = tag_len.unpack_from(buf, pos)
            if stop_group is not None and group != stop_group:
                return out, pos
            tag = group << 16 | element
            if tag == _ITEM_END:
                return out, pos + 8
            if implicit:
                vr = None
                pos += 8
            else:
                _, _, vr_bytes, short_length = short.unpack_from(buf, pos)
                try:
                    vr = vr_bytes.decode("ascii")
                except UnicodeDecodeError:
                    raise Unsupported("VR is not ASCII") from None
                if vr not in _KNOWN_VRS:
                    raise Unsupported(f"unknown VR {vr!r}")
                if vr in _LONG_VRS:
                    if pos + 12 > end:
                        self._past_end(pos + 12, "element header")
                    (length,) = long_.unpack_from(buf, pos + 8)
                    pos += 12
                else:
                    length = short_length
                    pos += 8
            btag = BaseTag(tag)
            if vr == "UN" and length == _UNDEFINED:
                raise Unsupported("UN of undefined length (an implicit VR sequence inside explicit VR)")
            if vr == "SQ" or (vr is None and (length == _UNDEFINED or self._implicit_sequence(tag, length))):
                items, pos = self.sequence(pos, length, end)
                out[btag] = self._sequence_element(btag, items, length)
                continue
            if top and tag in _PIXEL_TAGS:
                # Pixel data is listed, never read; a file cut inside it still has its whole
                # header, which is all a metadata export needs (a header-only read of a remote
                # object could not tell either).
                out[btag] = raw(btag, vr or ("OB" if length == _UNDEFINED else "OW"), length, None, pos, implicit, little)
                if self.prefix:
                    return out, pos  # a prefix read stops here: the pixels are not fetched
                pos = self._skip_fragments(pos, end) if length == _UNDEFINED else min(pos + length, end)
                continue
            if length == _UNDEFINED:
                raise Unsupported("undefined length outside pixel data")
            if pos + length > end:
                self._past_end(pos + length, f"value of ({group:04X},{element:04X})")
            out[btag] = raw(btag, vr, length, buf[pos : pos + length], pos, implicit, little)
            pos += length
        if top and self.prefix:
            raise NeedMoreData(self.end + 1)  # no pixel data yet: the header may go on
        return out, pos

    def _past_end(self, needed: int, what: str, nested: bool = False) -> None:
        if needed > self.end and self.prefix:
            raise NeedMoreData(needed)
        if needed > self.end and not nested:
            raise Truncated(f"the {what} needs {needed} bytes but the file has {self.end}")
        # An item or sequence whose declared length overruns is often a writer's mistake that
        # pydicom reads through; let it judge.
        raise Unsupported(f"{what} runs past its container")

    def _implicit_sequence(self, tag: int, length: int) -> bool:
        if length < 8:
            return False
        from pydicom.datadict import dictionary_VR

        # Like pydicom: a defined-length implicit element is a sequence only if the dictionary
        # says so; an unknown private one stays UN (and is dropped), whatever bytes follow.
        try:
            return dictionary_VR(tag) == "SQ"
        except KeyError:
            return False

    def sequence(self, pos: int, length: int, end: int) -> tuple[list, int]:
        limit = end if length == _UNDEFINED else pos + length
        if limit > end:
            self._past_end(limit, "sequence", nested=True)
        items = []
        while pos < limit:
            if pos + 8 > limit:
                self._past_end(pos + 8, "item header", nested=True)
            group, element, item_length = self.tag_len.unpack_from(self.buf, pos)
            tag = group << 16 | element
            pos += 8
            if tag == _SEQUENCE_END:
                return items, pos
            if tag != _ITEM:
                raise Unsupported("sequence content is not an item")
            if item_length == _UNDEFINED:
                elements, pos = self.elements(pos, limit, False)
            else:
                if pos + item_length > limit:
                    self._past_end(pos + item_length, "item", nested=True)
                elements, _ = self.elements(pos, pos + item_length, False)
                pos += item_length
            items.append(self.new_item(elements))
        if length == _UNDEFINED:
            if self.prefix:
                raise NeedMoreData(self.end + 1)  # the delimiter may lie past the prefix
            raise Unsupported("sequence without a delimiter")
        return items, pos

    def _sequence_element(self, tag, items: list, length: int):
        from pydicom.dataelem import DataElement
        from pydicom.sequence import Sequence

        return DataElement(tag, "SQ", Sequence(items), is_undefined_length=length == _UNDEFINED)

    def _skip_fragments(self, pos: int, end: int) -> int:
        while pos + 8 <= end:
            group, element, length = self.tag_len.unpack_from(self.buf, pos)
            tag = group << 16 | element
            pos += 8
            if tag == _SEQUENCE_END:
                return pos
            if tag != _ITEM or length == _UNDEFINED:
                raise Unsupported("bad encapsulated pixel data")
            pos += length
        return end  # cut inside the pixel data: the header is whole (see elements())


def parse_part10(buf: bytes | memoryview, name: str | None = None, *, object_size: int | None = None) -> FileDataset:
    """Parse a Part 10 file held in `buf` (bytes, or an mmap of the file).

    With `object_size` larger than `buf`, `buf` is the first bytes of a remote object: parsing
    stops at the pixel data, and NeedMoreData says how many bytes to fetch when the header goes
    on past the prefix (a whole header is never silently cut short)."""
    from pydicom.dataset import FileDataset, FileMetaDataset

    prefix = object_size is not None and len(buf) < object_size
    if len(buf) < 132:
        if prefix:
            raise NeedMoreData(132)
        raise Unsupported("no DICM prefix")
    if bytes(buf[128:132]) != b"DICM":
        raise Unsupported("no DICM prefix")
    meta_parser = _Parser(buf, implicit=False, little=True, prefix=prefix)
    meta_elements, pos = meta_parser.elements(132, len(buf), False, stop_group=0x0002)
    if prefix and pos >= len(buf):
        raise NeedMoreData(len(buf) + 1)  # the File Meta Information may go on past the prefix
    syntax_element = meta_elements.get(0x00020010)
    if syntax_element is None or syntax_element.value is None:
        raise Unsupported("no transfer syntax")
    syntax = syntax_element.value.decode("latin_1").strip("\x00 ")
    if syntax in _DEFLATED:
        raise Unsupported("deflated")
    implicit, little = _SYNTAXES.get(syntax, (False, True))
    body = _Parser(buf, implicit, little, prefix=prefix)
    # A body that is implicit despite an explicit syntax fails the VR check: pydicom handles those.
    elements, _ = body.elements(pos, len(buf), True)
    file_meta = FileMetaDataset(meta_elements)
    ds = FileDataset(name or "", elements, preamble=bytes(buf[:128]), file_meta=file_meta,
                     is_implicit_VR=implicit, is_little_endian=little)
    ds.set_original_encoding(implicit, little, None)
    return ds
