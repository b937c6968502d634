"""Small DICOM instances built in memory for engine tests: a file written by pydicom and read back
through our reader, so tests exercise the same bytes-to-row path an export does."""

from __future__ import annotations

import io
import json

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def make_dataset(**elements) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def to_file_bytes(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def roundtrip(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> Dataset:
    from airflow_provider_dicom.dicom.read import read_instance

    return read_instance(io.BytesIO(to_file_bytes(ds, transfer_syntax)))


def convert(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian, **kwargs):
    """Convert through our reader, by the general route (a pydicom Dataset); the fast route
    (scanned values, see scanned.py) must give the very same row and schema whenever it
    takes the instance, so every rule tested through here holds for both."""
    from airflow_provider_dicom.dicom.convert import InstanceConverter
    from airflow_provider_dicom.dicom.read import read_instance

    converter = InstanceConverter(**kwargs)
    data = to_file_bytes(ds, transfer_syntax)
    general = converter.convert(read_instance(io.BytesIO(data)))
    fast = fast_route(converter, data)
    if fast is not None:
        assert json.dumps(fast.row) == json.dumps(general.row)
        assert fast.fields == general.fields
    return general


def fast_route(converter, data: bytes):
    """The fast route's conversion of a Part 10 file, or None where it hands the file to pydicom."""
    from airflow_provider_dicom.dicom.convert import NeedsPydicom
    from airflow_provider_dicom.dicom.scan import Unsupported, scan_part10

    try:
        return converter.convert_lean(scan_part10(data))
    except (Unsupported, NeedsPydicom):
        return None


def field_of(converted, name: str):
    for field in converted.fields:
        if field.name == name:
            return field
    raise AssertionError(f"no column {name!r} in {[f.name for f in converted.fields]}")


def other_elements(row: dict) -> dict[str, list[str]]:
    return {entry["Tag"]: entry["Data"] for entry in row.get("OtherElements", [])}
