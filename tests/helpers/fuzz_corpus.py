"""A deterministic corpus of malformed DICOM files, mixed with good ones, for the fuzz tests.

Each bad file is a good file (a pydicom test file given fresh UIDs, or one built with pydicom)
broken the ways files from real modalities, half-finished transfers and hostile senders are:
truncated at many offsets, bytes flipped, bogus lengths and VRs (in the File Meta Information
too), sequences nested 1,000 deep, 100,000 values in one element, broken character sets, missing
UIDs, deflated bodies that do not inflate. Good files are interleaved with the bad ones (sorted
names: every good file is followed by broken ones), so a bad file that ended an export would
cost the good files after it.

The same seed gives the same bytes: a failure found here reproduces.
"""

from __future__ import annotations

import io
import random
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
# Good templates: explicit and implicit VR, big endian, encapsulated pixel data, deep SR trees,
# private sequences and a deflated body, all of which the export reads today.
TEMPLATES = (
    "CT_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "rtplan.dcm",
    "test-SR.dcm",
    "JPEG2000.dcm",
    "nested_priv_SQ.dcm",
    "image_dfl.dcm",
)
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


@dataclass
class Corpus:
    root: Path
    good: dict[str, str] = field(default_factory=dict)  # path -> SOPInstanceUID it must export
    bad: dict[str, str] = field(default_factory=dict)  # path -> what was done to it

    @property
    def paths(self) -> list[str]:
        return sorted([*self.good, *self.bad])


class _Uids:
    """Fresh, valid, deterministic UIDs (2.25 form)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def __call__(self) -> str:
        return f"2.25.{self.rng.getrandbits(100)}"


def _to_bytes(ds: Dataset, enforce: bool = True) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=enforce)
    return buffer.getvalue()


def with_fresh_uids(name: str, uid) -> tuple[bytes, str]:
    """A pydicom test file with new study/series/instance UIDs: its bytes and its SOPInstanceUID."""
    ds = pydicom.dcmread(TEST_FILES / name)
    sop = uid()
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = uid()
    ds.SeriesInstanceUID = uid()
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    if "SOPClassUID" not in ds:
        ds.SOPClassUID = ds.file_meta.get("MediaStorageSOPClassUID") or CT_IMAGE_STORAGE
    return _to_bytes(ds), sop


def built(uid, syntax: str = ExplicitVRLittleEndian, **elements) -> tuple[Dataset, str]:
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE_STORAGE
    sop = uid()
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = uid()
    ds.SeriesInstanceUID = uid()
    ds.Modality = "CT"
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta
    return ds, sop


def element_offsets(data: bytes) -> list[tuple[int, int, bytes]]:
    """(offset, tag, VR) of the top-level explicit VR little endian elements of a Part 10 file,
    File Meta Information included, up to the pixel data or the first thing that is not one."""
    out = []
    pos = 132
    while pos + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, pos)
        vr = data[pos + 4 : pos + 6]
        if not vr.isalpha() or not vr.isupper():
            break
        tag = group << 16 | element
        out.append((pos, tag, vr))
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<L", data, pos + 8)
            pos += 12
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            pos += 8
        if length == 0xFFFFFFFF or tag == 0x7FE00010:
            break
        pos += length
    return out


def nested_sequences(depth: int, *, implicit: bool, undefined: bool) -> bytes:
    """ContentSequence items nested `depth` deep, each item holding a CodeValue, as raw bytes."""
    def tag(value: int) -> bytes:
        return struct.pack("<HH", value >> 16, value & 0xFFFF)

    code = b"X "
    code_value = tag(0x00080100) + (
        struct.pack("<L", len(code)) if implicit else b"SH" + struct.pack("<H", len(code))
    ) + code
    inner = b""
    for _ in range(depth):
        content = code_value + inner
        if undefined:
            item = tag(_ITEM) + struct.pack("<L", 0xFFFFFFFF) + content + tag(_ITEM_END) + b"\0\0\0\0"
            value, length = item + tag(_SEQUENCE_END) + b"\0\0\0\0", 0xFFFFFFFF
        else:
            item = tag(_ITEM) + struct.pack("<L", len(content)) + content
            value, length = item, len(item)
        header = tag(0x0040A730) + (b"" if implicit else b"SQ\0\0") + struct.pack("<L", length)
        inner = header + value
    return inner


def generate(root: Path, seed: int = 11) -> Corpus:
    """Write the corpus under `root` (a few hundred files, a few MB) and say what is in it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about what we break on purpose
        return _generate(root, seed)


def _generate(root: Path, seed: int) -> Corpus:
    rng = random.Random(seed)
    uid = _Uids(rng)
    root.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(root)
    counter = iter(range(100_000))

    def write(kind: str, data: bytes, sop: str | None = None) -> None:
        path = root / f"{next(counter):04d}_{kind}.dcm"
        path.write_bytes(data)
        if sop is not None:
            corpus.good[str(path)] = sop
        else:
            corpus.bad[str(path)] = kind

    def good_file() -> None:
        name = TEMPLATES[rng.randrange(len(TEMPLATES))]
        data, sop = with_fresh_uids(name, uid)
        write(f"good-{name.removesuffix('.dcm')}", data, sop)

    def template() -> tuple[str, bytes]:
        name = rng.choice(
            ("CT_small.dcm", "rtplan.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "test-SR.dcm")
        )
        return name, with_fresh_uids(name, uid)[0]

    for name in TEMPLATES:  # every template once, good
        data, sop = with_fresh_uids(name, uid)
        write(f"good-{name.removesuffix('.dcm')}", data, sop)

    # Truncations: inside the preamble, the prefix, the meta group, the body, the pixel data.
    for _ in range(6):
        good_file()
        name, data = template()
        header_end = min(len(data), 3000)
        fixed = {0, 1, 127, 128, 131, 132, 136, 140, 144, 150}
        offsets = sorted({*fixed, *rng.sample(range(150, header_end), 10)})
        for offset in offsets:
            write(f"truncated-at-{offset}", data[:offset])
    # Flipped bytes in the header.
    for _ in range(60):
        if rng.random() < 0.15:
            good_file()
        name, data = template()
        buf = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(128, min(len(buf), 2500))
            buf[position] ^= rng.randrange(1, 256)
        write("flipped", bytes(buf))
    # Bogus lengths and VRs, meta group included (explicit VR little endian templates).
    bogus_lengths = (0, 1, 3, 0x7FFF, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF)
    bogus_vrs = (b"ZZ", b"\0\0", b"US", b"UL", b"SQ", b"OB", b"UN", b"DS", b"AT", b"FD", b"ox")
    for round_ in range(40):
        if round_ % 5 == 0:
            good_file()
        name = rng.choice(("CT_small.dcm", "JPEG2000.dcm", "test-SR.dcm"))
        data = with_fresh_uids(name, uid)[0]
        elements = element_offsets(data)
        meta = [e for e in elements if e[1] >> 16 == 2]
        pos, tag, vr = rng.choice(meta if round_ % 2 == 0 else elements)
        buf = bytearray(data)
        if round_ % 4 < 2:
            buf[pos + 4 : pos + 6] = rng.choice(bogus_vrs)
            write(f"bogus-vr-{tag:08X}", bytes(buf))
        else:
            length = rng.choice(bogus_lengths)
            if vr in _LONG_VRS:
                struct.pack_into("<L", buf, pos + 8, length)
            else:
                struct.pack_into("<H", buf, pos + 6, length & 0xFFFF)
            write(f"bogus-length-{tag:08X}", bytes(buf))
    # The meta group case: (0002,0000) UL 4 read as US 3.
    data = with_fresh_uids("CT_small.dcm", uid)[0]
    pos = element_offsets(data)[0][0]
    buf = bytearray(data)
    buf[pos + 4 : pos + 8] = b"US" + struct.pack("<H", 3)
    write("meta-group-length-US-3", bytes(buf))
    # Nesting 1,000 deep (500 too), explicit and implicit, defined and undefined lengths.
    for depth, implicit, undefined in ((1000, False, True), (1000, False, False), (1000, True, True),
                                       (1000, True, False), (500, False, True)):
        good_file()
        syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        ds, sop = built(uid, syntax)
        data = _to_bytes(ds) + nested_sequences(depth, implicit=implicit, undefined=undefined)
        # Deep, but well formed: these export (content below BigQuery's 15 levels is dropped).
        encoding = "implicit" if implicit else "explicit"
        write(f"nested-{depth}-{encoding}-{'undefined' if undefined else 'defined'}", data, sop)
    # Huge VM: 100,000 values in one standard element, and in a private one.
    good_file()
    # Implicit VR: an explicit VR file cannot hold more than 64 KiB in these VRs (pydicom would
    # write them as UN, which is the last case).
    ds, sop = built(uid, ImplicitVRLittleEndian, ImageType=["DERIVED"] * 100_000)
    write("huge-vm-CS", _to_bytes(ds), sop)
    ds, sop = built(uid, ImplicitVRLittleEndian)
    ds.private_block(0x0009, "FUZZ", create=True).add_new(0x10, "FD", [1.5] * 100_000)
    write("huge-vm-private-FD", _to_bytes(ds), sop)
    ds, sop = built(uid, ImplicitVRLittleEndian)
    ds.add(DataElement(0x00186060, "FL", [0.5] * 100_000))  # RWaveTimeVector FL 1-n
    write("huge-vm-FL", _to_bytes(ds), sop)
    ds, sop = built(uid)
    ds.add(DataElement(0x00186060, "FL", [0.5] * 100_000))  # written as UN by pydicom
    write("huge-vm-FL-as-UN", _to_bytes(ds), sop)
    # Broken character sets.
    for charset, name_bytes in ((b"ISO_IR 999", b"Doe^Jane"), (b"ISO_IR 192", b"\xff\xfe\xc3("),
                                (b"\\\\\\", b"Doe"), (b"ISO 2022 IR 87", b"\x1b$B\xff\xff\x1b(B"),
                                (b"\xff\xfe", b"\xe9\xe8"), (b"ISO_IR 100\\ISO_IR 999", b"\x1b-A\xe9")):
        good_file()
        ds, _ = built(uid)
        for tag, vr, value in ((0x00080005, "CS", charset), (0x00100010, "PN", name_bytes),
                               (0x00081030, "LO", name_bytes)):  # raw bytes, written as they are
            ds._dict[BaseTag(tag)] = RawDataElement(BaseTag(tag), vr, len(value), value, 0, False, True)
        write("charset", _to_bytes(ds))
    # Missing or empty UIDs.
    all_three = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
    for missing in (("SOPInstanceUID",), all_three, ("empty",)):
        good_file()
        ds, _ = built(uid)
        if missing == ("empty",):
            ds.SOPInstanceUID = ""
            ds.file_meta.MediaStorageSOPInstanceUID = "1.2"
        else:
            for keyword in missing:
                delattr(ds, keyword)
            del ds.file_meta.MediaStorageSOPInstanceUID
        write("missing-uids", _to_bytes(ds, enforce=False))
    # Deflated bodies that do not inflate.
    for round_ in range(6):
        good_file()
        ds, _ = built(uid, DEFLATED)
        data = _to_bytes(ds)
        body_start = 132 + 12 + struct.unpack_from("<L", data, 140)[0]  # after the meta group
        if round_ % 2:
            garbage = rng.randbytes(rng.randint(1, 400))
        else:  # a valid deflate stream, cut short
            garbage = zlib.compress(rng.randbytes(200))[2:][: rng.randint(1, 60)]
        write("deflate-garbage", data[:body_start] + garbage)
    good_file()
    return corpus
