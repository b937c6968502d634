"""Walking a DICOM Part 10 header into plain Python values: the lean parser's byte walker.

The export's hot path needs, per element, only its tag, VR and value bytes. Building pydicom's
objects for them (BaseTag, RawDataElement, Dataset and Sequence for every item) costs more than
walking the bytes, so the walk produces plain dicts and tuples instead:

    {tag: (vr, value, offset, length)}     one dict per dataset (the top level, or an item)

- `tag` is a plain int, `vr` the two-letter VR (None for an implicit VR element that is not a
  sequence), `offset` where the value starts in the buffer, `length` the declared length;
- `value` is the value's bytes, or for a sequence ("SQ") the list of its items' dicts, or None
  for top-level pixel data (listed, never read).

Dict order is file order and a repeated tag keeps its first place with its last value, as in
pydicom's reader. `parse.parse_part10` turns this into the Dataset pydicom would build; the
converter's fast route (`convert.InstanceConverter.convert_lean`) reads it directly.

Sequences are walked 16 levels deep, one more than BigQuery's 15 levels of RECORDs (the
converter drops what lies below 15 and lists it in DroppedTags). A sequence deeper than that is
skipped without recursion (`_skip_sequence` keeps an explicit stack) and kept as an empty
sequence, its tag recorded in `LeanInstance.cut`: nesting 1,000 deep costs a loop, not Python's
recursion limit.

Anything unusual (deflate, a VR that is not two letters, an explicit/implicit mix, a value that
runs past the end) raises `Unsupported`, and the caller reads the file with pydicom instead:
speed for the common case, pydicom's judgement for every other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from mmap import mmap
from struct import Struct
from typing import Any

from airflow_provider_dicom.dicom.vocabulary import (
    DEFLATED_SYNTAXES,
    EXPLICIT_VR_BIG_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    ITEM,
    ITEM_END,
    KNOWN_VRS,
    LONG_LENGTH_VRS,
    PIXEL_TAGS,
    SEQUENCE_END,
    TRANSFER_SYNTAX_UID,
    UNDEFINED_LENGTH,
)
from airflow_provider_dicom.utils.errors import DicomProviderError

_UNDEFINED = UNDEFINED_LENGTH
_ITEM = ITEM
_ITEM_END = ITEM_END
_SEQUENCE_END = SEQUENCE_END
_PIXEL_TAGS = PIXEL_TAGS
_LONG_VRS = LONG_LENGTH_VRS
# VR bytes -> VR: one dict lookup both decodes and validates the VR.
_VR_OF_BYTES = {vr.encode("ascii"): vr for vr in KNOWN_VRS}
# The VRs whose explicit length is 2 bytes (never undefined): the explicit walk's short path.
_SHORT_VR_OF_BYTES = {vr_bytes: vr for vr_bytes, vr in _VR_OF_BYTES.items() if vr not in LONG_LENGTH_VRS}
# Tags from here up (pixel data, (7FE0,0008) on, and the FFFE delimiters) take the full path.
_FULL_PATH_FROM = min(PIXEL_TAGS | {ITEM, ITEM_END, SEQUENCE_END})
_SYNTAXES = {
    IMPLICIT_VR_LITTLE_ENDIAN: (True, True),
    EXPLICIT_VR_BIG_ENDIAN: (False, False),
}
# Sequence levels walked into items; deeper sequences are skipped (see the module docstring).
# One beyond BigQuery's 15 RECORD levels (convert.MAX_NESTING), so the converter sees all it keeps.
MAX_SEQUENCE_DEPTH = 16

_LE_EXPLICIT, _BE_EXPLICIT = Struct("<HH2sH"), Struct(">HH2sH")
_LE_TAG_LENGTH, _BE_TAG_LENGTH = Struct("<HHL"), Struct(">HHL")
_LE_LENGTH, _BE_LENGTH = Struct("<L"), Struct(">L")

# What a scan reads: a file's bytes, a memory map of the file (read.py: pixel data pages are
# never touched), or the first bytes of a remote object.
Part10Buffer = bytes | bytearray | memoryview | mmap
# {tag: (vr, value, offset, length)}, see the module docstring; the walker's element records.
ScannedElement = tuple[str | None, Any, int, int]
Elements = dict[int, ScannedElement]


class Unsupported(DicomProviderError):
    """Not a file for the lean parser; read it with pydicom."""


class Truncated(Unsupported):
    """The file ends inside an element: broken, whoever reads it (pydicom would keep a stub)."""


class NeedMoreData(Unsupported):
    """Parsing a prefix of an object: the header goes on past the prefix. `needed` is the
    smallest prefix length that could hold it, so a remote reader can fetch the next range."""

    def __init__(self, needed: int) -> None:
        super().__init__(f"the header goes on past the first {needed} bytes read")
        self.needed = needed


@dataclass(slots=True)
class LeanInstance:
    """A Part 10 header as plain values: File Meta Information, dataset, and the body's encoding."""

    meta: Elements
    body: Elements
    implicit: bool
    little: bool
    # It holds explicit UN or implicit VR private elements, whose VR only pydicom works out (with
    # its private dictionary): the fast converter would hand the instance on, so skip it.
    unusual: bool = False
    # Tags (as ints) of the sequences below MAX_SEQUENCE_DEPTH that were skipped, outermost only.
    cut: tuple[int, ...] = ()


# Whether the dictionary makes an implicit VR tag a sequence; bounded by the tags a corpus uses.
_IMPLICIT_SQ: dict[int, bool] = {}


def _dictionary_says_sequence(tag: int) -> bool:
    known = _IMPLICIT_SQ.get(tag)
    if known is None:
        from pydicom.datadict import dictionary_VR

        try:
            known = dictionary_VR(tag) == "SQ"
        except KeyError:
            known = False
        _IMPLICIT_SQ[tag] = known
    return known


class _Walker:
    __slots__ = (
        "at_pixels", "buf", "cut", "depth", "elements", "end", "explicit_header", "implicit", "little",
        "long_length", "prefix", "tag_length", "unusual",
    )

    def __init__(self, buf: Part10Buffer, implicit: bool, little: bool, prefix: bool = False) -> None:
        self.buf = buf
        self.end = len(buf)
        self.little = little
        # True when `buf` is only the start of the object: its end is not the object's end.
        self.prefix = prefix
        self.at_pixels = False  # a prefix's walk reached the top-level pixel data and stopped there
        self.tag_length = _LE_TAG_LENGTH if little else _BE_TAG_LENGTH
        self.explicit_header = _LE_EXPLICIT if little else _BE_EXPLICIT
        self.long_length = _LE_LENGTH if little else _BE_LENGTH
        self.implicit = implicit
        self.elements = self._implicit if implicit else self._explicit
        self.unusual = False  # see LeanInstance.unusual
        self.depth = 0  # sequence levels entered
        self.cut: list[int] = []  # see LeanInstance.cut

    def _explicit(self, pos: int, end: int, top: bool, stop_group: int | None = None) -> tuple[Elements, int]:
        """Explicit VR elements from `pos` up to `end` (or an item delimiter); returns them and the end offset.

        The loop runs for every element of every instance, so the common element (a VR with a
        2-byte length, below the pixel data's group) takes a short path: its length cannot be
        undefined, and it is neither a delimiter nor pixel data. Everything else (4-byte length
        VRs, delimiters, pixel data, tags from (7FE0,0008) up, bytes that are no VR) takes the
        full path below it."""
        buf = self.buf
        unpack = self.explicit_header.unpack_from
        short_vr_of = _SHORT_VR_OF_BYTES
        full_path_from = _FULL_PATH_FROM
        out: Elements = {}
        while pos + 8 <= end:  # a whole element header; less than one left is an error (below)
            group, element, vr_bytes, length = unpack(buf, pos)
            if stop_group is not None and group != stop_group:
                return out, pos
            tag = group << 16 | element
            vr = short_vr_of.get(vr_bytes)
            if vr is not None and tag < full_path_from:
                pos += 8
                stop = pos + length
                if stop > end:
                    self._past_end(stop, f"value of ({group:04X},{element:04X})")
                out[tag] = (vr, buf[pos:stop], pos, length)
                pos = stop
                continue
            if tag == _ITEM_END:
                return out, pos + 8
            vr = _VR_OF_BYTES.get(vr_bytes)
            if vr is None:
                raise Unsupported("VR is not one of DICOM's")
            if vr in _LONG_VRS:
                if pos + 12 > end:
                    self._past_end(pos + 12, "element header")
                (length,) = self.long_length.unpack_from(buf, pos + 8)
                pos += 12
                if vr == "SQ":
                    out[tag], pos = self._sequence_element(tag, pos, length, end)
                    continue
                if vr == "UN":
                    if length == _UNDEFINED:
                        raise Unsupported("UN of undefined length (an implicit VR sequence inside explicit VR)")
                    self.unusual = True
            else:
                pos += 8
            if top and tag in _PIXEL_TAGS:
                pos = self._pixel_data(out, tag, vr, pos, length, end)
                continue
            if length == _UNDEFINED:
                raise Unsupported("undefined length outside pixel data")
            stop = pos + length
            if stop > end:
                self._past_end(stop, f"value of ({group:04X},{element:04X})")
            out[tag] = (vr, buf[pos:stop], pos, length)
            pos = stop
        return self._walked(out, pos, end, top)

    def _implicit(self, pos: int, end: int, top: bool, stop_group: int | None = None) -> tuple[Elements, int]:
        """Implicit VR elements, as `_explicit`; a sequence is told by undefined length or the dictionary."""
        buf = self.buf
        unpack = self.tag_length.unpack_from
        known_sequences = _IMPLICIT_SQ
        out: Elements = {}
        while pos + 8 <= end:  # as in _explicit
            group, element, length = unpack(buf, pos)
            if stop_group is not None and group != stop_group:
                return out, pos
            tag = group << 16 | element
            if tag == _ITEM_END:
                return out, pos + 8
            if group & 1:
                self.unusual = True
            pos += 8
            # Like pydicom: a defined-length implicit element is a sequence only if the dictionary
            # says so; an unknown private one stays UN (and is dropped), whatever bytes follow.
            # (The cache answers first: a tag known not to be a sequence costs no call.)
            if length == _UNDEFINED or (
                length >= 8 and known_sequences.get(tag, True) and _dictionary_says_sequence(tag)
            ):
                out[tag], pos = self._sequence_element(tag, pos, length, end)
                continue
            if tag >= _FULL_PATH_FROM and top and tag in _PIXEL_TAGS:
                pos = self._pixel_data(out, tag, "OB" if length == _UNDEFINED else "OW", pos, length, end)
                continue
            if (stop := pos + length) > end:
                self._past_end(stop, f"value of ({group:04X},{element:04X})")
            out[tag] = (None, buf[pos:stop], pos, length)
            pos = stop
        return self._walked(out, pos, end, top)

    def _pixel_data(self, out: Elements, tag: int, vr: str, pos: int, length: int, end: int) -> int:
        """Record top-level pixel data (its value starts at `pos`) and return where the walk goes
        on. Pixel data is listed, never read; a file cut inside it still has its whole header,
        which is all a metadata export needs (a header-only read of a remote object could not
        tell either). A prefix's walk stops here (`end`): the pixels are not fetched, and what
        follows them, if anything, is walked by `scan_trailer`."""
        out[tag] = (vr, None, pos, length)
        if self.prefix:
            self.at_pixels = True
            return end
        return self._skip_fragments(pos, end) if length == _UNDEFINED else min(pos + length, end)

    def _walked(self, out: Elements, pos: int, end: int, top: bool) -> tuple[Elements, int]:
        """The end of a dataset's elements: fewer bytes than an element header left over is a
        cut header; at the top level of a prefix without pixel data yet, the header may go on
        past what was read."""
        if pos < end:
            self._past_end(pos + 8, "element header")
        if top and self.prefix and not self.at_pixels:
            raise NeedMoreData(self.end + 1)
        return out, pos

    def _past_end(self, needed: int, what: str, nested: bool = False) -> None:
        if needed > self.end and self.prefix:
            raise NeedMoreData(needed)
        if needed > self.end and not nested:
            raise Truncated(f"the {what} needs {needed} bytes but the file has {self.end}")
        # An item or sequence whose declared length overruns is often a writer's mistake that
        # pydicom reads through; let it judge.
        raise Unsupported(f"{what} runs past its container")

    def _sequence_element(self, tag: int, pos: int, length: int, end: int) -> tuple[tuple, int]:
        if self.depth >= MAX_SEQUENCE_DEPTH:
            after = self._skip_sequence(pos, length, end)
            self.cut.append(tag)
            return ("SQ", [], pos, length), after
        self.depth += 1
        try:
            items, after = self.sequence(pos, length, end)
        finally:
            self.depth -= 1
        return ("SQ", items, pos, length), after

    def _skip_sequence(self, pos: int, length: int, end: int) -> int:
        """The offset after a sequence's value, found without recursion: a defined length is
        skipped whole; undefined lengths are walked with an explicit stack of open sequences
        ("S") and items ("I"), reading only element headers."""
        if length != _UNDEFINED:
            if pos + length > end:
                self._past_end(pos + length, "sequence", nested=True)
            return pos + length
        buf = self.buf
        tag_length = self.tag_length
        stack = ["S"]
        while stack:
            if pos + 8 > end:
                self._past_end(pos + 8, "nested sequence", nested=True)
            group, element, item_length = tag_length.unpack_from(buf, pos)
            tag = group << 16 | element
            if stack[-1] == "S":
                pos += 8
                if tag == _SEQUENCE_END:
                    stack.pop()
                elif tag != _ITEM:
                    raise Unsupported("sequence content is not an item")
                elif item_length == _UNDEFINED:
                    stack.append("I")
                else:
                    pos += item_length
                continue
            if tag == _ITEM_END:
                pos += 8
                stack.pop()
                continue
            if self.implicit:
                value_length = item_length
                pos += 8
                opens_sequence = value_length == _UNDEFINED
            else:
                _, _, vr_bytes, value_length = self.explicit_header.unpack_from(buf, pos)
                vr = _VR_OF_BYTES.get(vr_bytes)
                if vr is None:
                    raise Unsupported("VR is not one of DICOM's")
                if vr in _LONG_VRS:
                    if pos + 12 > end:
                        self._past_end(pos + 12, "element header", nested=True)
                    (value_length,) = self.long_length.unpack_from(buf, pos + 8)
                    pos += 12
                else:
                    pos += 8
                opens_sequence = value_length == _UNDEFINED
                if opens_sequence and vr != "SQ":
                    raise Unsupported("undefined length outside a sequence")
            if opens_sequence:
                stack.append("S")
            else:
                pos += value_length
        if pos > end:
            self._past_end(pos, "nested sequence", nested=True)
        return pos

    def sequence(self, pos: int, length: int, end: int) -> tuple[list[Elements], int]:
        limit = end if length == _UNDEFINED else pos + length
        if limit > end:
            self._past_end(limit, "sequence", nested=True)
        buf = self.buf
        tag_length = self.tag_length
        items: list[Elements] = []
        while pos < limit:
            if pos + 8 > limit:
                self._past_end(pos + 8, "item header", nested=True)
            group, element, item_length = tag_length.unpack_from(buf, pos)
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
            items.append(elements)
        if length == _UNDEFINED:
            if self.prefix:
                raise NeedMoreData(self.end + 1)  # the delimiter may lie past the prefix
            raise Unsupported("sequence without a delimiter")
        return items, pos

    def _skip_fragments(self, pos: int, end: int) -> int:
        buf = self.buf
        return fragments_end(lambda at: buf[at : at + 8], pos, end, self.little)


def fragments_end(
    header_at: Callable[[int], bytes | bytearray | memoryview], pos: int, end: int, little: bool
) -> int:
    """Where encapsulated pixel data whose first item starts at `pos` ends, in an object of `end`
    bytes: its items are skipped by their 8-byte headers alone (`header_at(offset)` gives those
    bytes: a slice of the buffer, or a read of the file), up to the sequence delimiter; `end` when
    the object is cut inside them (its header is whole: see _Walker._explicit). Anything but items
    raises Unsupported."""
    unpack = (_LE_TAG_LENGTH if little else _BE_TAG_LENGTH).unpack
    while pos + 8 <= end:
        group, element, length = unpack(header_at(pos))
        tag = group << 16 | element
        pos += 8
        if tag == _SEQUENCE_END:
            return pos
        if tag != _ITEM or length == _UNDEFINED:
            raise Unsupported("bad encapsulated pixel data")
        pos += length
    return end


def scan_part10(buf: Part10Buffer, *, object_size: int | None = None) -> LeanInstance:
    """Walk a Part 10 file held in `buf` (bytes, or an mmap of the file) into plain values.

    With `object_size` larger than `buf`, `buf` is the first bytes of a remote object: the walk
    stops at the pixel data, and NeedMoreData says how many bytes to fetch when the header goes
    on past the prefix (a whole header is never silently cut short)."""
    prefix = object_size is not None and len(buf) < object_size
    if len(buf) < 132:
        if prefix:
            raise NeedMoreData(132)
        raise Unsupported("no DICM prefix")
    if bytes(buf[128:132]) != b"DICM":
        raise Unsupported("no DICM prefix")
    meta, pos = _Walker(buf, implicit=False, little=True, prefix=prefix).elements(132, len(buf), False, 0x0002)
    if prefix and pos >= len(buf):
        raise NeedMoreData(len(buf) + 1)  # the File Meta Information may go on past the prefix
    syntax_element = meta.get(TRANSFER_SYNTAX_UID)
    syntax_value = None if syntax_element is None else syntax_element[1]
    if not isinstance(syntax_value, bytes):
        raise Unsupported("no transfer syntax")
    syntax = syntax_value.decode("latin_1").strip("\x00 ")
    if syntax in DEFLATED_SYNTAXES:
        raise Unsupported("deflated")
    implicit, little = _SYNTAXES.get(syntax, (False, True))
    # A body that is implicit despite an explicit syntax fails the VR check: pydicom handles those.
    walker = _Walker(buf, implicit, little, prefix=prefix)
    body, _ = walker.elements(pos, len(buf), True)
    return LeanInstance(meta, body, implicit, little, walker.unusual, tuple(walker.cut))


def scan_trailer(lean: LeanInstance, trailer: Part10Buffer, offset: int) -> LeanInstance:
    """`lean`, a header scanned from a prefix of a remote object (it stops at the top-level pixel
    data), with the elements that follow the pixel data: `trailer`, the object's bytes from
    `offset` to its end. Only the trailer is walked, so neither the header is scanned again nor
    the pixel data stood in for; the result is what `scan_part10` gives for the whole object
    (a tag met again keeps its first place with its last value; offsets are the object's).

    Raises Unsupported (Truncated included) where `scan_part10` would for the whole object."""
    walker = _Walker(trailer, lean.implicit, lean.little)
    elements, _ = walker.elements(0, len(trailer), True)
    body = dict(lean.body)
    body.update(_moved(elements, offset))
    unusual = lean.unusual or walker.unusual
    return LeanInstance(lean.meta, body, lean.implicit, lean.little, unusual, lean.cut + tuple(walker.cut))


def _moved(elements: Elements, by: int) -> Elements:
    """Scanned elements with their value offsets moved `by` bytes, items included."""
    moved: Elements = {}
    for tag, (vr, value, offset, length) in elements.items():
        if value.__class__ is list:
            value = [_moved(item, by) for item in value]
        moved[tag] = (vr, value, offset + by, length)
    return moved
