"""A folder of DICOM files as a stream of per-file outcomes.

Each file yields exactly one outcome: converted, not DICOM (skipped and counted), or failed with
a reason. A bad file never stops the stream, so good data is never lost to a bad neighbour, and
nothing is held beyond the current file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from airflow_provider_dicom.dicom.convert import ConvertedInstance, InstanceConverter
from airflow_provider_dicom.redact import redact_quoted
from airflow_provider_dicom.dicom.read import InvalidDicomError, NotDicomError, quiet_pydicom, read_instance

OK = "ok"
NOT_DICOM = "not_dicom"
FAILED = "failed"
FILTERED = "filtered"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"

Accept = Callable[[str | None, str | None, str | None], bool]


@dataclass(slots=True)
class InstanceOutcome:
    path: str
    status: str
    converted: ConvertedInstance | None = None
    reason: str | None = None


def iter_folder(root: str | os.PathLike) -> Iterator[Path]:
    """Every regular file below `root`, recursively, in a stable (sorted) order."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"DICOM source folder {str(root)!r} does not exist or is not a directory")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for filename in sorted(filenames):
            path = Path(dirpath, filename)
            if path.is_file():
                yield path


def convert_file(path: str | os.PathLike, converter: InstanceConverter, accept: Accept | None = None) -> InstanceOutcome:
    """Read and convert one file; never raises for bad content."""
    name = os.fspath(path)
    try:
        stat = os.stat(name)
        ds = read_instance(name)
    except NotDicomError as exc:
        return InstanceOutcome(name, NOT_DICOM, reason=str(exc))
    except InvalidDicomError as exc:
        return InstanceOutcome(name, FAILED, reason=str(exc))
    except OSError as exc:
        return InstanceOutcome(name, FAILED, reason=f"cannot read file: {exc.strerror or exc}")
    if accept is not None:
        # Filter on the three UIDs before paying for the conversion of an unwanted instance.
        study, series, sop = instance_uids(ds)
        if sop and not accept(study, series, sop):
            return InstanceOutcome(name, FILTERED)
    try:
        with quiet_pydicom():
            converted = converter.convert(
                ds,
                blob_storage_size=stat.st_size,
                last_updated=datetime.fromtimestamp(stat.st_mtime, tz=timezone.utc),
            )
    except Exception as exc:  # noqa: BLE001 - one bad instance must not end the export
        return InstanceOutcome(name, FAILED, reason=f"conversion failed ({type(exc).__name__}): {redact_quoted(exc)}")
    if not converted.sop_uid:
        if converted.row.get("MediaStorageSOPClassUID") == MEDIA_STORAGE_DIRECTORY:
            return InstanceOutcome(name, NOT_DICOM, reason="a DICOMDIR (media storage directory), not an instance")
        return InstanceOutcome(name, FAILED, reason="no SOPInstanceUID: the instance cannot be identified")
    if accept is not None and not accept(converted.study_uid, converted.series_uid, converted.sop_uid):
        return InstanceOutcome(name, FILTERED)
    return InstanceOutcome(name, OK, converted)


def instance_uids(ds) -> tuple[str | None, str | None, str | None]:
    """Study, series and SOP instance UIDs of a dataset, without converting anything else."""
    return tuple(_uid(ds, tag) for tag in (0x0020000D, 0x0020000E, 0x00080018))  # type: ignore[return-value]


def _uid(ds, tag: int) -> str | None:
    elem = ds._dict.get(tag)
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        value = value.decode("latin_1")
    if not isinstance(value, str):
        return None
    return value.strip("\x00 ") or None


def convert_folder(
    root: str | os.PathLike, converter: InstanceConverter, accept: Accept | None = None
) -> Iterator[InstanceOutcome]:
    for path in iter_folder(root):
        yield convert_file(path, converter, accept)
