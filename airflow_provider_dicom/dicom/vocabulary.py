"""The DICOM vocabulary every part of the codec speaks: VR sets, the structural tags, transfer syntaxes.

Each fact is written here once; readers, scanners, converters and sources import it instead of
keeping their own copy. Where pydicom has the same fact (`pydicom.valuerep`'s VR sets,
`pydicom.tag`'s item tags, `pydicom.uid`'s transfer syntaxes) the value is pydicom's, and
tests/unit/test_vocabulary.py holds each one to pydicom's own so they cannot drift apart. They are
plain literals rather than imports of pydicom because importing pydicom costs a DAG file ~0.3 s
and these sets are read by modules the operators import at parse time; and plain `str`/`int`
rather than pydicom's VR enum and BaseTag, whose Python-level `__eq__` and `__hash__` would slow
the per-element loops that test membership millions of times.

What is ours, not the standard's (which VRs get no BigQuery column, which are single-valued for
the export's splitting), says so where it is defined. The names are the ones the scanner and the
walker (dicom/scan.py, dicom/walker.py) were written against.
"""

from __future__ import annotations

# --- Value representations -------------------------------------------------------------------

# Explicit VR encoding gives these a 2 reserved bytes + 4-byte length (PS3.5 7.1.2); every other VR
# a 2-byte length. pydicom.valuerep.EXPLICIT_VR_LENGTH_32 / EXPLICIT_VR_LENGTH_16.
LONG_LENGTH_VRS: frozenset[str] = frozenset(
    ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV")
)
SHORT_LENGTH_VRS: frozenset[str] = frozenset(
    ("AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "PN", "SH", "SL", "SS", "ST")
    + ("TM", "UI", "UL", "US")
)
# Every standard VR (pydicom.valuerep.STANDARD_VR).
KNOWN_VRS: frozenset[str] = LONG_LENGTH_VRS | SHORT_LENGTH_VRS
# The same sets as the bytes a file holds, for parsers that compare the VR field undecoded.
LONG_LENGTH_VR_BYTES: frozenset[bytes] = frozenset(vr.encode("ascii") for vr in LONG_LENGTH_VRS)

# Ours: binary VRs get no column, their elements are listed in DroppedTags. pydicom's BYTES_VR
# (OB OD OF OL OV OW UN) plus SV and UV, the 64-bit integers the Cloud Healthcare export drops too.
BINARY_VRS: frozenset[str] = frozenset(("OB", "OD", "OF", "OL", "OV", "OW", "UN", "SV", "UV"))
# Text in the dataset's Specific Character Set (pydicom.valuerep.CUSTOMIZABLE_CHARSET_VR); the
# other string VRs are plain ASCII (the default repertoire).
TEXT_VRS: frozenset[str] = frozenset(("SH", "LO", "ST", "LT", "UC", "UT", "PN"))
# The default-repertoire string VRs whose value is kept as the column's text unchanged (no date,
# time or number parsing): what the fast path decodes as ASCII.
ASCII_STRING_VRS: frozenset[str] = frozenset(("AE", "AS", "CS", "DS", "IS", "UI"))
# Ours, from PS3.5 6.2: VRs that never hold more than one value, so a backslash is text, not a
# separator; for these only trailing padding is insignificant (leading spaces are text).
# pydicom's ALLOW_BACKSLASH without its binary VRs, plus UR (whose VM is always 1).
SINGLE_VALUED: frozenset[str] = frozenset(("LT", "ST", "UT", "UR"))
# Text VRs that hold a short, multi-valued string in the dataset's character set.
SHORT_TEXT_VRS: frozenset[str] = frozenset(("SH", "LO", "UC"))
# Binary numbers, fixed width (AT is a pair of US, handled on its own).
BINARY_NUMBER_VRS: frozenset[str] = frozenset(("FL", "FD", "SL", "SS", "UL", "US"))
# Numbers written as text: the DICOM JSON model carries them as JSON numbers, the export as text.
TEXT_NUMBER_VRS: frozenset[str] = frozenset(("DS", "IS"))

# --- Tags ------------------------------------------------------------------------------------

# Pixel Data, Float Pixel Data, Double Float Pixel Data: the values never read (their elements are
# listed in DroppedTags and skipped over).
PIXEL_DATA = 0x7FE00010
FLOAT_PIXEL_DATA = 0x7FE00008
DOUBLE_FLOAT_PIXEL_DATA = 0x7FE00009
PIXEL_TAGS: frozenset[int] = frozenset((PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_FLOAT_PIXEL_DATA))
# Pixel Representation: whether pixel values are signed, which settles the "US or SS" elements.
PIXEL_REPRESENTATION = 0x00280103
# Sequence and encapsulation delimiters (PS3.5 7.5): pydicom.tag.ItemTag, ItemDelimiterTag,
# SequenceDelimiterTag.
ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQUENCE_END = 0xFFFEE0DD
# A value length of 0xFFFFFFFF: the value runs to its delimiter (PS3.5 7.1.1).
UNDEFINED_LENGTH = 0xFFFFFFFF
# How the rest of the dataset is to be read: its character set, and the offset a DT without one takes.
SPECIFIC_CHARACTER_SET = 0x00080005
TIMEZONE_OFFSET_FROM_UTC = 0x00080201
# The identifying UIDs every instance carries: its row's key and its DICOMweb path.
SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
# File Meta Information is group 0002 (PS3.10 7.1); its Transfer Syntax UID says how the rest is encoded.
FILE_META_GROUP = 0x0002
TRANSFER_SYNTAX_UID = 0x00020010

# --- Transfer syntaxes and SOP classes (pydicom.uid) --------------------------------------------

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
# Deflated Image Frame Compression (PS3.5 A.4.11, 2023): the dataset is explicit VR little endian,
# only the frames are deflated; pydicom 3.0 has no constant for it.
DEFLATED_IMAGE_FRAME_COMPRESSION = "1.2.840.10008.1.2.8.1"
# The uncompressed syntaxes whose pixel data is stored as is (pydicom's UncompressedTransferSyntaxes
# without the deflated one): an instance in one of these can be served in another by re-encoding.
NATIVE_TRANSFER_SYNTAXES: frozenset[str] = frozenset(
    (IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN)
)
# Syntaxes with "deflate" in their name; the lean scanner hands both to pydicom.
DEFLATED_SYNTAXES: frozenset[str] = frozenset(
    (DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, DEFLATED_IMAGE_FRAME_COMPRESSION)
)
# A DICOMDIR's SOP class: a directory of a medium, not an instance, so never a row.
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
