"""One DICOM instance, from wherever it came, to exactly one outcome.

Every source (a folder, a gs:// prefix, a DICOMweb server) ends here: the instance is read,
filtered on its UIDs before any conversion work, converted, and reported as converted, not DICOM
(skipped and counted), filtered out, or failed with a reason. Nothing raises for bad content, so a
bad instance never costs its neighbours their rows.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from airflow_provider_dicom.dicom.convert import ConvertedInstance, InstanceConverter
from airflow_provider_dicom.dicom.read import InvalidDicomError, NotDicomError, quiet_pydicom, read_instance
from airflow_provider_dicom.redact import redact_quoted

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

OK = "ok"
NOT_DICOM = "not_dicom"
FAILED = "failed"
FILTERED = "filtered"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"

Accept = Callable[[str | None, str | None, str | None], bool]


@dataclass(slots=True)
class InstanceOutcome:
    path: str  # a file path, gs:// URI or DICOMweb URL: where the instance came from, never PHI
    status: str
    converted: ConvertedInstance | None = None
    reason: str | None = None


def convert_instance(
    name: str,
    read: Callable[[], Dataset],
    converter: InstanceConverter,
    accept: Accept | None = None,
    *,
    blob_storage_size: int | None = None,
    last_updated: datetime | None = None,
) -> InstanceOutcome:
    """Read (with `read`, which raises NotDicomError / InvalidDicomError / OSError) and convert."""
    try:
        ds = read()
    except NotDicomError as exc:
        return InstanceOutcome(name, NOT_DICOM, reason=str(exc))
    except InvalidDicomError as exc:
        return InstanceOutcome(name, FAILED, reason=str(exc))
    except OSError as exc:
        return InstanceOutcome(name, FAILED, reason=f"cannot read: {exc.strerror or redact_quoted(exc)}")
    return convert_dataset(name, ds, converter, accept, blob_storage_size=blob_storage_size, last_updated=last_updated)


def convert_bytes(
    name: str,
    data: bytes,
    converter: InstanceConverter,
    accept: Accept | None = None,
    *,
    blob_storage_size: int | None = None,
    last_updated: datetime | None = None,
) -> InstanceOutcome:
    """An instance whose Part 10 bytes (at least its whole header) are in memory."""
    return convert_instance(
        name, lambda: read_instance(io.BytesIO(data)), converter, accept,
        blob_storage_size=blob_storage_size, last_updated=last_updated,
    )


def convert_dataset(
    name: str,
    ds: Dataset,
    converter: InstanceConverter,
    accept: Accept | None = None,
    *,
    blob_storage_size: int | None = None,
    last_updated: datetime | None = None,
) -> InstanceOutcome:
    """An instance already parsed (e.g. from DICOMweb JSON metadata)."""
    if accept is not None:
        # Filter on the three UIDs before paying for the conversion of an unwanted instance.
        study, series, sop = instance_uids(ds)
        if sop and not accept(study, series, sop):
            return InstanceOutcome(name, FILTERED)
    try:
        with quiet_pydicom():
            converted = converter.convert(ds, blob_storage_size=blob_storage_size, last_updated=last_updated)
    except Exception as exc:  # noqa: BLE001 - one bad instance must not end the export
        return InstanceOutcome(name, FAILED, reason=f"conversion failed ({type(exc).__name__}): {redact_quoted(exc)}")
    if not converted.sop_uid:
        if converted.row.get("MediaStorageSOPClassUID") == MEDIA_STORAGE_DIRECTORY:
            return InstanceOutcome(name, NOT_DICOM, reason="a DICOMDIR (media storage directory), not an instance")
        return InstanceOutcome(name, FAILED, reason="no SOPInstanceUID: the instance cannot be identified")
    if accept is not None and not accept(converted.study_uid, converted.series_uid, converted.sop_uid):
        return InstanceOutcome(name, FILTERED)
    return InstanceOutcome(name, OK, converted)


def instance_uids(ds: Dataset) -> tuple[str | None, str | None, str | None]:
    """Study, series and SOP instance UIDs of a dataset, without converting anything else."""
    return _uid(ds, 0x0020000D), _uid(ds, 0x0020000E), _uid(ds, 0x00080018)


def _uid(ds: Dataset, tag: int) -> str | None:
    elem = ds._dict.get(tag)
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        value = value.decode("latin_1")
    if not isinstance(value, str):
        return None
    return value.strip("\x00 ") or None
