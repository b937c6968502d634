"""The DICOM facts the codec relies on, each written once: VR sets, structural tags, transfer syntaxes.

The scanner, the converter's walker and its adapters, the pydicom reader and the remote sources
all ask the same questions (is this VR binary? is this tag pixel data? is this syntax deflated?);
they import the answers from here so that a rule changed in one place changes everywhere.
"""

from __future__ import annotations

# -- value representations ----------------------------------------------------------------------

# Every VR DICOM defines (PS3.5 6.2).
SHORT_LENGTH_VRS = frozenset(
    ("AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "PN", "SH", "SL", "SS", "ST", "TM",
     "UI", "UL", "US")
)
# VRs whose explicit VR header has a 4-byte length (PS3.5 7.1.2).
LONG_LENGTH_VRS = frozenset(("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"))
KNOWN_VRS = SHORT_LENGTH_VRS | LONG_LENGTH_VRS
# Binary VRs get no column; their elements are listed in DroppedTags. SV/UV (64-bit integers)
# are dropped by the Cloud Healthcare export too.
BINARY_VRS = frozenset(("OB", "OD", "OF", "OL", "OV", "OW", "UN", "SV", "UV"))
# VRs whose bytes are in the dataset's Specific Character Set; the rest are plain ASCII.
TEXT_VRS = frozenset(("SH", "LO", "ST", "LT", "UC", "UT", "PN"))
# VRs that never hold more than one value: a backslash is text, not a separator.
SINGLE_VALUED = frozenset(("LT", "ST", "UT", "UR"))
# Plain string VRs whose values are ASCII whatever the character set (no escape sequences).
ASCII_STRING_VRS = frozenset(("AE", "AS", "CS", "DS", "IS", "UI"))
# Text VRs that hold a short, multi-valued string in the dataset's character set.
SHORT_TEXT_VRS = frozenset(("SH", "LO", "UC"))
# Binary numbers, fixed width (AT is a pair of US, handled on its own).
BINARY_NUMBER_VRS = frozenset(("FL", "FD", "SL", "SS", "UL", "US"))
# Numbers written as text: the DICOM JSON model carries them as JSON numbers.
TEXT_NUMBER_VRS = frozenset(("DS", "IS"))

# -- tags ----------------------------------------------------------------------------------------

SPECIFIC_CHARACTER_SET = 0x00080005
TIMEZONE_OFFSET_FROM_UTC = 0x00080201
SOP_INSTANCE_UID = 0x00080018
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
TRANSFER_SYNTAX_UID = 0x00020010
# Pixel Data, Float Pixel Data, Double Float Pixel Data: listed, never read.
PIXEL_TAGS = frozenset((0x7FE00010, 0x7FE00008, 0x7FE00009))
ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQUENCE_END = 0xFFFEE0DD
UNDEFINED_LENGTH = 0xFFFFFFFF

# -- transfer syntaxes ---------------------------------------------------------------------------

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
# Deflated Image Frame Compression deflates frames, not the dataset: pydicom judges it too.
DEFLATED_SYNTAXES = frozenset((DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, "1.2.840.10008.1.2.8.1"))
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
