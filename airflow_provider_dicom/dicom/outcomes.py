"""One DICOM instance, from wherever it came, to exactly one outcome.

Every source (a folder, a gs:// prefix, a DICOMweb server) ends here: the instance is read,
filtered on its UIDs before any conversion work, converted, and reported as converted, not DICOM
(skipped and counted), filtered out, or failed with a reason. Nothing raises for bad content, so a
bad instance never costs its neighbours their rows.

This module is the one place where an exception becomes an outcome: every entry point below is
wrapped by `never_raises`, so whatever escapes reading or converting one instance (pydicom's
BytesLengthException, a RecursionError, a MemoryError, a bug of ours) is that instance's failure,
with its path and a reason that quotes no value (see redact.py), and never the export's end.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Unpack, cast

from airflow_provider_dicom.dicom.convert import (
    ConvertedInstance,
    InstanceConverter,
    NeedsPydicom,
    StoredFacts,
)
from airflow_provider_dicom.dicom.parse import to_dataset
from airflow_provider_dicom.dicom.read import (
    InvalidDicomError,
    NotDicomError,
    quiet_pydicom,
    read_instance,
    read_with_pydicom,
)
from airflow_provider_dicom.dicom.scan import Truncated, Unsupported, scan_part10
from airflow_provider_dicom.dicom.scanned import hands_on
from airflow_provider_dicom.dicom.vocabulary import (
    MEDIA_STORAGE_DIRECTORY,
    SERIES_INSTANCE_UID,
    SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID,
)
from airflow_provider_dicom.utils.deadlines import RemoteCallError
from airflow_provider_dicom.utils.redact import redact_quoted

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from airflow_provider_dicom.dicom.scan import LeanInstance, Part10Buffer

OK = "ok"
NOT_DICOM = "not_dicom"
FAILED = "failed"
FILTERED = "filtered"

Accept = Callable[[str | None, str | None, str | None], bool]


@dataclass(slots=True)
class InstanceOutcome:
    path: str  # a file path, gs:// URI or DICOMweb URL: where the instance came from, never PHI
    status: str
    converted: ConvertedInstance | None = None
    reason: str | None = None


def failure(name: str, exc: BaseException, doing: str = "unreadable DICOM") -> InstanceOutcome:
    """The outcome of an instance whose reading or converting raised `exc`.

    The reason names the exception's type and keeps its message with every quoted value
    redacted: messages from pydicom and Python quote the offending bytes, which can be PHI."""
    if isinstance(exc, NotDicomError):
        return InstanceOutcome(name, NOT_DICOM, reason=str(exc))
    if isinstance(exc, InvalidDicomError):
        return InstanceOutcome(name, FAILED, reason=str(exc))
    if isinstance(exc, OSError):
        return InstanceOutcome(name, FAILED, reason=f"cannot read: {exc.strerror or redact_quoted(exc)}")
    if isinstance(exc, RecursionError):
        return InstanceOutcome(name, FAILED, reason=f"{doing} (RecursionError): nested too deeply to walk")
    message = redact_quoted(exc).strip().splitlines()
    detail = f": {message[0][:500]}" if message else ""
    return InstanceOutcome(name, FAILED, reason=f"{doing} ({type(exc).__name__}){detail}")


def never_raises(decide: Callable[..., InstanceOutcome]) -> Callable[..., InstanceOutcome]:
    """Wrap a function deciding the outcome of the instance named by its first argument, so that
    any exception it lets out becomes that instance's failure (see `failure`).

    Except one: a service that stopped answering within its deadline (RemoteCallError) is no fault
    of the instance being read, and would fail every instance after it, each only after the whole
    retry deadline; it ends the export, naming the endpoint."""

    @functools.wraps(decide)
    def decided(name: str, *args, **kwargs) -> InstanceOutcome:
        try:
            return decide(name, *args, **kwargs)
        except RemoteCallError:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad instance must not end the export
            return failure(os.fspath(name), exc)

    return decided


@never_raises
def convert_instance(
    name: str,
    read: Callable[[], Dataset],
    converter: InstanceConverter,
    accept: Accept | None = None,
    **facts: Unpack[StoredFacts],
) -> InstanceOutcome:
    """Read (with `read`; NotDicomError makes the instance "not DICOM", any other exception a
    failure) and convert."""
    try:
        ds = read()
    except Exception as exc:  # noqa: BLE001 - see never_raises
        return failure(name, exc)
    return convert_dataset(name, ds, converter, accept, **facts)


@never_raises
def convert_bytes(
    name: str,
    data: bytes,
    converter: InstanceConverter,
    accept: Accept | None = None,
    **facts: Unpack[StoredFacts],
) -> InstanceOutcome:
    """An instance whose Part 10 bytes (at least its whole header) are in memory."""
    return convert_part10(name, data, converter, accept, lambda: read_with_pydicom(io.BytesIO(data)), **facts)


def walks_scans(converter: object) -> bool:
    """Whether converting a scanned header (`convert_lean`) gives what `converter.convert` would
    on its Dataset: a stock InstanceConverter (not a subclass that converts otherwise, nor a
    stand-in with only `convert`), of either table."""
    return getattr(type(converter), "convert", None) is InstanceConverter.convert


@never_raises
def convert_part10(
    name: str,
    buf: Part10Buffer,
    converter: InstanceConverter,
    accept: Accept | None = None,
    read: Callable[[], Dataset] | None = None,
    **facts: Unpack[StoredFacts],
) -> InstanceOutcome:
    """An instance whose whole Part 10 file is in `buf` (bytes, or an mmap of the file), by the
    fast route where it applies (see `walks_scans`): scanned into plain values and converted without building
    pydicom objects (scan.py, scanned.py, walker.py). The outcome is the one `convert_instance` gives
    with `read_instance`: a file the scan declines is read by `read` (pydicom's reader, without
    a second scan; `read_instance` on `buf` when not given), and an instance the fast converter
    declines (NeedsPydicom) is converted from the Dataset built from the same scan."""
    if not walks_scans(converter):
        def read_all() -> Dataset:
            return read_instance(io.BytesIO(bytes(buf)))

        return convert_instance(name, read_all, converter, accept, **facts)
    if read is None:
        def read() -> Dataset:
            return read_with_pydicom(io.BytesIO(bytes(buf)))

    try:
        lean = scan_part10(buf)
    except Truncated as exc:
        return InstanceOutcome(name, FAILED, reason=f"truncated DICOM file: {exc}")
    except Unsupported:
        return convert_instance(name, read, converter, accept, **facts)
    return convert_scan(name, lean, buf, converter, accept, **facts)


@never_raises
def convert_scan(
    name: str,
    lean: LeanInstance,
    buf: Part10Buffer,
    converter: InstanceConverter,
    accept: Accept | None = None,
    **facts: Unpack[StoredFacts],
) -> InstanceOutcome:
    """An instance whose header has been scanned (scan.py) from `buf` (the file, or the bytes of
    a remote object read so far: at least its whole header): converted by the walker straight
    from the scan, or, when the walker hands it on (NeedsPydicom) or the converter is not the
    stock one (see `walks_scans`), from the Dataset built from the same scan."""
    if not walks_scans(converter):
        with quiet_pydicom():
            ds = to_dataset(lean, buf, name)
        return convert_dataset(name, ds, converter, accept, **facts)
    if accept is not None:
        study, series, sop = lean_uids(lean)
        if sop and not accept(study, series, sop):
            return InstanceOutcome(name, FILTERED)
    try:
        if hands_on(lean):
            raise NeedsPydicom("flagged before converting")
        converted = converter.convert_lean(lean, **facts)
    except NeedsPydicom:
        with quiet_pydicom():
            ds = to_dataset(lean, buf, name)
        return convert_dataset(name, ds, converter, accept, **facts)
    except Exception as exc:  # noqa: BLE001 - one bad instance must not end the export
        return failure(name, exc, "conversion failed")
    return _judged(name, converted, accept)


@never_raises
def convert_json_metadata(
    name: str,
    metadata: dict,
    converter: InstanceConverter,
    accept: Accept | None = None,
    on_bulk_data: Callable[[str], None] | None = None,
) -> InstanceOutcome:
    """An instance's DICOM JSON (a DICOMweb server's metadata), converted straight to a row by the
    walker (json_model.py; the JSON table's Metadata by json_table.py) where it applies (see
    `walks_scans`); from the Dataset pydicom builds of it when the walker hands it on (NeedsPydicom)."""
    from airflow_provider_dicom.dicom.json_model import dataset_from_prepared, prepare

    try:
        prepared = prepare(metadata, on_bulk_data)
    except Exception as exc:  # noqa: BLE001 - one bad dataset must not end the export
        return InstanceOutcome(name, FAILED, reason=f"invalid DICOM JSON ({type(exc).__name__}): {redact_quoted(exc)}")
    if walks_scans(converter):
        try:
            converted = converter.convert_prepared(prepared)
        except NeedsPydicom:
            pass
        except Exception as exc:  # noqa: BLE001 - one bad instance must not end the export
            return failure(name, exc, "conversion failed")
        else:
            return _judged(name, converted, accept)
    try:
        ds = dataset_from_prepared(prepared)
    except Exception as exc:  # noqa: BLE001 - one bad dataset must not end the export
        return InstanceOutcome(name, FAILED, reason=f"invalid DICOM JSON ({type(exc).__name__}): {redact_quoted(exc)}")
    return convert_dataset(name, ds, converter, accept)


@never_raises
def convert_dataset(
    name: str,
    ds: Dataset,
    converter: InstanceConverter,
    accept: Accept | None = None,
    **facts: Unpack[StoredFacts],
) -> InstanceOutcome:
    """An instance already parsed (e.g. from DICOMweb JSON metadata)."""
    if accept is not None:
        # Filter on the three UIDs before paying for the conversion of an unwanted instance.
        study, series, sop = instance_uids(ds)
        if sop and not accept(study, series, sop):
            return InstanceOutcome(name, FILTERED)
    try:
        with quiet_pydicom():
            converted = converter.convert(ds, **facts)
    except Exception as exc:  # noqa: BLE001 - one bad instance must not end the export
        return failure(name, exc, "conversion failed")
    return _judged(name, converted, accept)


def _judged(name: str, converted: ConvertedInstance, accept: Accept | None) -> InstanceOutcome:
    """A converted instance's outcome: identified, not a DICOMDIR, and accepted by the filter."""
    if not converted.sop_uid:
        if converted.row.get("MediaStorageSOPClassUID") == MEDIA_STORAGE_DIRECTORY:
            return InstanceOutcome(name, NOT_DICOM, reason="a DICOMDIR (media storage directory), not an instance")
        return InstanceOutcome(name, FAILED, reason="no SOPInstanceUID: the instance cannot be identified")
    if accept is not None and not accept(converted.study_uid, converted.series_uid, converted.sop_uid):
        return InstanceOutcome(name, FILTERED)
    return InstanceOutcome(name, OK, converted)


def instance_uids(ds: Dataset) -> tuple[str | None, str | None, str | None]:
    """Study, series and SOP instance UIDs of a dataset, without converting anything else."""
    return _uid(ds, STUDY_INSTANCE_UID), _uid(ds, SERIES_INSTANCE_UID), _uid(ds, SOP_INSTANCE_UID)


def lean_uids(lean: LeanInstance) -> tuple[str | None, str | None, str | None]:
    """`instance_uids` of a scanned header (scan.py)."""
    body = lean.body
    return (
        _uid_value(body.get(STUDY_INSTANCE_UID)),
        _uid_value(body.get(SERIES_INSTANCE_UID)),
        _uid_value(body.get(SOP_INSTANCE_UID)),
    )


def _uid_value(element: tuple | None) -> str | None:
    return None if element is None else _uid_text(element[1])


def _uid(ds: Dataset, tag: int) -> str | None:
    elem = cast("dict[int, Any]", ds._dict).get(tag)  # keyed by BaseTag, an int: a plain int finds it
    if elem is None:
        return None
    return _uid_text(elem.value)


def _uid_text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("latin_1")
    if not isinstance(value, str):
        return None
    return value.strip("\x00 ") or None
