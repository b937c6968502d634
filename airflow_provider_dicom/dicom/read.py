"""Reading DICOM Part 10 headers: everything but the pixel data, without loading the pixel data.

pydicom's `stop_before_pixels` stops at (7FE0,0010) and forgets that the element exists and
anything after it. The export must list Pixel Data in DroppedTags and keep trailing elements
(padding, digital signatures), so after pydicom stops we read the pixel element's header, seek
over its value (item by item when encapsulated, which touches only item headers) and let pydicom
read whatever follows.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import struct
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from airflow_provider_dicom.dicom.vocabulary import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    FILE_META_GROUP,
    ITEM,
    LONG_LENGTH_VR_BYTES,
    PIXEL_TAGS,
    SEQUENCE_END,
    UNDEFINED_LENGTH,
)
from airflow_provider_dicom.utils.errors import DicomProviderError
from airflow_provider_dicom.utils.redact import redact_quoted

if TYPE_CHECKING:
    from pydicom.dataset import Dataset


class NotDicomError(DicomProviderError):
    """The file is not DICOM at all (no DICM prefix, not a dataset): skipped and counted."""


class InvalidDicomError(DicomProviderError):
    """The file claims to be DICOM but cannot be read; the message is the reason reported."""


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Keep pydicom from warning about invalid values: its warnings quote the values, which can be
    PHI, and the export reports bad values through OtherElements instead."""
    import logging
    import warnings

    from pydicom import config

    previous = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = config.IGNORE
    # Structural complaints ("Expected explicit VR, but found implicit VR") come once per file as
    # both a warning and a log line: across a million files that drowns the task log, and the
    # outcome of each file is reported by the export anyway.
    pydicom_log = logging.getLogger("pydicom")
    previous_level = pydicom_log.level
    pydicom_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
            warnings.filterwarnings("ignore", category=UserWarning, message=r"(?s).*(VR|DICOM|tag|element|Expected)")
            yield
    finally:
        config.settings.reading_validation_mode = previous
        pydicom_log.setLevel(previous_level)


def read_instance(source: str | os.PathLike | BinaryIO) -> Dataset:
    """Read one instance's header (all elements, pixel data listed but not loaded).

    Well-formed files go through our lean parser over a memory map (pixel data pages are never
    touched); anything it does not handle is read by pydicom."""
    with quiet_pydicom():
        return _read_instance(source)


def read_with_pydicom(source: str | os.PathLike | BinaryIO) -> Dataset:
    """Read one instance's header with pydicom's reader only: for a file the lean parser has
    already declined (see outcomes.convert_part10), so it is not scanned twice."""
    with quiet_pydicom():
        if hasattr(source, "read"):
            return _read(source)  # type: ignore[arg-type]
        with open(source, "rb") as fp:
            return _read(fp)


def _read_instance(source: str | os.PathLike | BinaryIO) -> Dataset:
    from airflow_provider_dicom.dicom.parse import Truncated, Unsupported, parse_part10

    try:
        if isinstance(source, io.BytesIO):
            try:
                return parse_part10(source.getvalue())
            except Truncated:
                raise
            except Unsupported:
                source.seek(0)
                return _read(source)
        if hasattr(source, "read"):
            return _read(source)  # type: ignore[arg-type]
        with open(source, "rb") as fp:
            if os.fstat(fp.fileno()).st_size >= 132:
                with mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                    try:
                        # parse_part10 reads any buffer; its hint names bytes and memoryview only
                        return parse_part10(cast(bytes, mapped), os.fspath(source))
                    except Truncated:
                        raise
                    except Unsupported:
                        pass
            return _read(fp)
    except Truncated as exc:
        raise InvalidDicomError(f"truncated DICOM file: {exc}") from None


def _looks_like_raw_dataset(head: bytes) -> bool:
    """A dataset written without the Part 10 header starts with a low even group tag."""
    if len(head) < 8:
        return False
    group_le = head[0] | head[1] << 8
    group_be = head[1] | head[0] << 8
    return group_le in (FILE_META_GROUP, 0x0008) or group_be == 0x0008


def _read(fp: BinaryIO) -> Dataset:
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError as PydicomInvalid

    head = fp.read(132)
    if len(head) < 132 or head[128:132] != b"DICM":
        if _looks_like_raw_dataset(head):
            raise InvalidDicomError(
                "not a DICOM Part 10 file: no 'DICM' prefix at byte 128 (a bare dataset without File Meta Information)"
            )
        raise NotDicomError("no 'DICM' prefix at byte 128")
    fp.seek(0)
    try:
        ds = dcmread(fp, stop_before_pixels=True)
        if ds.file_meta.get("TransferSyntaxUID") == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
            # pydicom inflated the body into memory; the file position means nothing here,
            # so read the whole (small, deflated) dataset instead.
            fp.seek(0)
            ds = dcmread(fp, defer_size=1024)
        else:
            _read_pixel_data_and_after(fp, ds)
        _check_not_truncated(ds)
    except PydicomInvalid as exc:
        raise InvalidDicomError(f"invalid DICOM: {redact_quoted(exc)}") from None
    except (EOFError, struct.error) as exc:
        raise InvalidDicomError(f"truncated DICOM file: {redact_quoted(exc) or type(exc).__name__}") from None
    except zlib.error as exc:  # a deflated body that does not inflate
        raise InvalidDicomError(f"invalid deflated DICOM: {redact_quoted(exc)}") from None
    except (ValueError, KeyError, TypeError, NotImplementedError, OverflowError, LookupError) as exc:
        raise InvalidDicomError(f"unreadable DICOM ({type(exc).__name__}): {redact_quoted(exc)}") from None
    return ds


def _check_not_truncated(ds: Dataset) -> None:
    """pydicom keeps the short value of a file cut off mid-element (with a warning); the export
    must report such a file as broken rather than load a silently shortened value."""
    from pydicom.dataelem import RawDataElement

    elements = cast("dict[Any, Any]", ds._dict)  # a dict, so ordered and reversible
    if not elements:
        return
    last = elements[next(reversed(elements))]
    value = last.value
    if isinstance(last, RawDataElement) and isinstance(value, bytes) and last.length != UNDEFINED_LENGTH:
        if len(value) < last.length:
            raise InvalidDicomError(
                f"truncated DICOM file: element ({last.tag >> 16:04X},{last.tag & 0xFFFF:04X}) declares "
                f"{last.length} bytes but the file ends after {len(value)}"
            )


def _read_pixel_data_and_after(fp: BinaryIO, ds: Dataset) -> None:
    from pydicom.dataelem import RawDataElement
    from pydicom.filereader import read_dataset
    from pydicom.tag import Tag

    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        return
    endian = "<" if little else ">"
    start = fp.tell()
    header = fp.read(8)
    if len(header) < 8:
        return
    group, element = struct.unpack(endian + "HH", header[:4])
    tag = group << 16 | element
    if tag not in PIXEL_TAGS:
        fp.seek(start)
        return
    if implicit:
        vr = None
        (length,) = struct.unpack(endian + "L", header[4:8])
    else:
        vr_bytes = header[4:6]
        vr = vr_bytes.decode("latin_1")
        if vr_bytes in LONG_LENGTH_VR_BYTES:
            extra = fp.read(4)
            if len(extra) < 4:
                raise EOFError("pixel data element header cut short")
            (length,) = struct.unpack(endian + "L", extra)
        else:
            (length,) = struct.unpack(endian + "H", header[6:8])
    value_tell = fp.tell()
    # A deferred raw element: pydicom's own representation of a value not read yet.
    ds._dict[Tag(tag)] = RawDataElement(Tag(tag), vr or "OW", length, None, value_tell, implicit, little)
    if length == UNDEFINED_LENGTH:
        _skip_encapsulated(fp, endian)
    else:
        fp.seek(value_tell + length)
    rest_start = fp.tell()
    if not fp.read(1):
        return
    fp.seek(rest_start)
    trailing = read_dataset(fp, implicit, little)
    for trailing_tag, trailing_element in trailing._dict.items():
        ds._dict.setdefault(trailing_tag, trailing_element)


def _skip_encapsulated(fp: BinaryIO, endian: str) -> None:
    """Seek past encapsulated pixel data by its item headers alone."""
    while True:
        header = fp.read(8)
        if len(header) < 8:
            return  # cut inside the pixel data: the header before it is whole
        group, element, length = struct.unpack(endian + "HHL", header)
        tag = group << 16 | element
        if tag == SEQUENCE_END:
            return
        if tag != ITEM or length == UNDEFINED_LENGTH:
            raise ValueError(f"unexpected tag ({group:04X},{element:04X}) inside encapsulated pixel data")
        fp.seek(length, os.SEEK_CUR)
