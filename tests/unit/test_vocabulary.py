"""The codec's vocabulary (dicom/vocabulary.py) is pydicom's wherever pydicom has the same fact.

The module keeps plain literals so that importing it stays cheap at DAG-parse time; these tests are
what stops a literal drifting from the standard as pydicom knows it.
"""

from __future__ import annotations

import warnings

import pydicom.tag
import pydicom.uid
import pydicom.valuerep as valuerep
from pydicom.datadict import tag_for_keyword

from airflow_provider_dicom.dicom import uid, vocabulary


def _plain(vrs) -> frozenset[str]:
    return frozenset(str(vr.value) if hasattr(vr, "value") else str(vr) for vr in vrs)


def test_length_classes_are_pydicoms():
    assert vocabulary.LONG_LENGTH_VRS == _plain(valuerep.EXPLICIT_VR_LENGTH_32)
    assert vocabulary.SHORT_LENGTH_VRS == _plain(valuerep.EXPLICIT_VR_LENGTH_16)
    assert vocabulary.KNOWN_VRS == _plain(valuerep.STANDARD_VR)
    assert vocabulary.LONG_LENGTH_VR_BYTES == {vr.encode() for vr in _plain(valuerep.EXPLICIT_VR_LENGTH_32)}


def test_character_set_and_binary_classes_are_pydicoms_plus_what_the_export_adds():
    assert vocabulary.TEXT_VRS == _plain(valuerep.CUSTOMIZABLE_CHARSET_VR)
    assert vocabulary.BINARY_VRS == _plain(valuerep.BYTES_VR) | {"SV", "UV"}
    assert vocabulary.ASCII_STRING_VRS < _plain(valuerep.DEFAULT_CHARSET_VR)
    assert vocabulary.SHORT_TEXT_VRS < vocabulary.TEXT_VRS
    assert vocabulary.BINARY_NUMBER_VRS | {"AT", "SV", "UV"} == _plain(valuerep.INT_VR | valuerep.FLOAT_VR) - {"DS", "IS"}
    assert vocabulary.TEXT_NUMBER_VRS == _plain(valuerep.INT_VR | valuerep.FLOAT_VR) & _plain(valuerep.STR_VR)
    backslash = {vr for vr in _plain(valuerep.ALLOW_BACKSLASH) if vr in vocabulary.KNOWN_VRS}
    single = backslash - vocabulary.BINARY_VRS
    assert vocabulary.SINGLE_VALUED == single | {"UR"}


def test_tags_are_pydicoms():
    assert vocabulary.PIXEL_TAGS == {
        tag_for_keyword(k) for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
    }
    assert vocabulary.ITEM == pydicom.tag.ItemTag
    assert vocabulary.ITEM_END == pydicom.tag.ItemDelimiterTag
    assert vocabulary.SEQUENCE_END == pydicom.tag.SequenceDelimiterTag
    assert vocabulary.TRANSFER_SYNTAX_UID == tag_for_keyword("TransferSyntaxUID")
    assert vocabulary.FILE_META_GROUP == vocabulary.TRANSFER_SYNTAX_UID >> 16
    assert vocabulary.SOP_CLASS_UID == tag_for_keyword("SOPClassUID")
    assert vocabulary.SPECIFIC_CHARACTER_SET == tag_for_keyword("SpecificCharacterSet")
    assert vocabulary.TIMEZONE_OFFSET_FROM_UTC == tag_for_keyword("TimezoneOffsetFromUTC")
    assert vocabulary.SOP_INSTANCE_UID == tag_for_keyword("SOPInstanceUID")
    assert vocabulary.STUDY_INSTANCE_UID == tag_for_keyword("StudyInstanceUID")
    assert vocabulary.SERIES_INSTANCE_UID == tag_for_keyword("SeriesInstanceUID")


def test_transfer_syntaxes_are_pydicoms():
    assert vocabulary.IMPLICIT_VR_LITTLE_ENDIAN == pydicom.uid.ImplicitVRLittleEndian
    assert vocabulary.EXPLICIT_VR_LITTLE_ENDIAN == pydicom.uid.ExplicitVRLittleEndian
    assert vocabulary.EXPLICIT_VR_BIG_ENDIAN == pydicom.uid.ExplicitVRBigEndian
    assert vocabulary.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN == pydicom.uid.DeflatedExplicitVRLittleEndian
    assert vocabulary.NATIVE_TRANSFER_SYNTAXES | {vocabulary.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN} == set(
        pydicom.uid.UncompressedTransferSyntaxes
    )
    assert vocabulary.MEDIA_STORAGE_DIRECTORY == pydicom.uid.MediaStorageDirectoryStorage


def test_the_uid_rule_is_pydicoms():
    assert uid.UID_REGEX == pydicom.uid.RE_VALID_UID.pattern
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about each invalid UID it is shown
        values = ("1.2.840.10008.1.2", "0.1", "1.02", "1..2", "1.2.", "a.1", "1." * 32 + "1", "1." * 31 + "1")
        for value in values:
            assert (uid.uid_problem(value) is None) == pydicom.uid.UID(value).is_valid, value


def test_the_vocabulary_is_cheap_to_import():
    import subprocess
    import sys

    code = (
        "import sys, airflow_provider_dicom.dicom.vocabulary, airflow_provider_dicom.dicom.uid\n"
        "print(sorted(m for m in sys.modules if m.startswith('pydicom')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def test_the_console_address_is_written_once():
    """Every console link is built by links/console.py, so a change of address is one edit."""
    from pathlib import Path

    package = Path(__file__).resolve().parents[2] / "airflow_provider_dicom"
    holders = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "console.cloud.google.com" in path.read_text()
    )
    assert holders == ["links/console.py"]
