"""Export DICOM files from a folder, a gs:// prefix or a DICOMweb server to Cloud Storage, laid out
as the Cloud Healthcare export lays them out: `{uri_prefix}/{study}/{series}/{instance}.dcm`.

Each instance is read the way the BigQuery export reads it (so the filter file, the failure
reporting and the one-instance-per-UID rule are the same), then its bytes are copied: a local file
is uploaded, a gs:// object is copied server-side (its bytes never pass through the worker), a
DICOMweb instance is retrieved with WADO-RS. Files are copied as they are (the original transfer
syntax); transcoding is what only a Cloud Healthcare store does, so another MIME type is refused.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from airflow_provider_dicom.export.counts import SourceCounts
from airflow_provider_dicom.model.sources import DicomSource, SourceKind
from airflow_provider_dicom.model.uris import GcsUri
from airflow_provider_dicom.utils.deadlines import endpoint_of, remote, request_timeout, storage_call

log = logging.getLogger(__name__)

ORIGINAL_MIME_TYPES = ("application/dicom", "application/dicom; transfer-syntax=*")
DICOM_CONTENT_TYPE = "application/dicom"


@dataclass
class GcsExportResult(SourceCounts):
    uri_prefix: str
    instances_copied: int = 0
    bytes_copied: int = 0

    @property
    def done_count(self) -> int:
        return self.instances_copied

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri_prefix": self.uri_prefix,
            "instances_copied": self.instances_copied,
            **self.counts_dict(),
            "bytes_copied": self.bytes_copied,
        }


def check_mime_type_for_copy(mime_type: str | None) -> None:
    """Only a Cloud Healthcare store transcodes; from other sources files are copied as they are."""
    if mime_type is None:
        return
    normalised = "; ".join(part.strip() for part in str(mime_type).split(";")).lower()
    if normalised not in ORIGINAL_MIME_TYPES:
        raise ValueError(
            f"mime_type {mime_type!r} needs transcoding, which only a Cloud Healthcare store does: from a "
            f"folder, gs:// prefix or DICOMweb server files are copied as they are ({' or '.join(ORIGINAL_MIME_TYPES)})"
        )


def _bucket_may_exist(storage_client: Any, bucket: Any) -> bool:
    """False only when the bucket surely does not exist (404). Checking needs storage.buckets.get,
    which the object roles users grant for writing (Storage Object Admin, User, Creator) lack:
    a 403 there says nothing about the bucket, and the writes themselves will say whether they
    are allowed."""
    from google.api_core.exceptions import Forbidden

    doing = f"checking bucket gs://{bucket.name}"
    try:
        with remote(doing, endpoint_of(storage_client)):
            return bool(bucket.exists(**storage_call(storage_client, doing)))
    except Forbidden:
        log.info("Not allowed to read bucket gs://%s's metadata (storage.buckets.get); writing to it anyway", bucket.name)
        return True


def export_to_gcs(
    source: str | os.PathLike,
    uri_prefix: str,
    *,
    storage_client: Any,
    filter_config: Any = None,
    mime_type: str | None = None,
    dicomweb_client: Any = None,
    workers: int = 16,
    progress: Callable[[GcsExportResult], None] | None = None,
) -> GcsExportResult:
    """Copy the instances of `source` (not a Cloud Healthcare store) under `uri_prefix`."""
    from airflow_provider_dicom.export.bigquery import checked_source, load_filter_config, source_outcomes

    check_mime_type_for_copy(mime_type)
    destination = GcsUri.parse(uri_prefix)
    if DicomSource.parse(source).kind is SourceKind.DICOM_STORE:
        raise ValueError(f"{source!r} is a Cloud Healthcare store: its export to GCS is dicomStores.export")
    parsed = checked_source(source)
    accept = load_filter_config(filter_config, storage_client)
    if parsed.kind is SourceKind.DICOMWEB and dicomweb_client is None:
        from airflow_provider_dicom.sources.dicomweb import DicomWebClient

        dicomweb_client = DicomWebClient(parsed.value, pool_size=workers)
    bucket = storage_client.bucket(destination.bucket)
    if not _bucket_may_exist(storage_client, bucket):
        raise ValueError(f"Cloud Storage bucket {destination.bucket!r} of {uri_prefix!r} does not exist")
    prefix = destination.name.rstrip("/")
    result = GcsExportResult(str(uri_prefix))
    copy = _copier(parsed, storage_client, bucket, dicomweb_client)
    outcomes = source_outcomes(
        parsed, _UidReader(), accept, storage_client=storage_client, dicomweb_client=dicomweb_client,
        workers=workers,
    )
    seen: set[str] = set()
    for path, target, done in _copy_in_parallel(outcomes, prefix, copy, seen, result, workers):
        try:
            result.bytes_copied += done.result()
            result.instances_copied += 1
        except Exception as exc:  # noqa: BLE001 - one failed copy must not stop the others
            from airflow_provider_dicom.utils.redact import redact_quoted

            result.failures.append((path, f"copy to gs://{bucket.name}/{target} failed: {redact_quoted(exc)}"))
        if progress is not None:
            progress(result)
    log.info(
        "Copied %d instances (%d bytes) to %s: %d failed, %d not DICOM, %d filtered out, %d duplicates",
        result.instances_copied, result.bytes_copied, uri_prefix, result.failure_count,
        result.not_dicom_count, result.filtered_out_count, result.duplicate_count,
    )
    return result


class _UidReader:
    """Stands in for InstanceConverter where only the three UIDs are needed: a copy names its
    object from them, and building the whole row would be work thrown away."""

    def convert(self, ds: Any, **_: Any) -> Any:
        from airflow_provider_dicom.dicom.convert import ConvertedInstance
        from airflow_provider_dicom.dicom.outcomes import instance_uids

        study, series, sop = instance_uids(ds)
        meta = getattr(ds, "file_meta", None)
        sop_class = meta.get("MediaStorageSOPClassUID") if meta is not None else None
        row = {"MediaStorageSOPClassUID": str(sop_class)} if sop_class else {}
        return ConvertedInstance(row, (), study, series, sop)


UID_ELEMENTS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def object_name_problem(study: object, series: object, sop: object) -> str | None:
    """Why these UIDs cannot name an object (`{study}/{series}/{sop}.dcm`), or None. The rule is
    DICOM's (`uid.uid_problem`): anything else (`../`, `/`, CR LF, letters) could choose where the
    object lands or forge a log line, so it makes the instance a failure and is never quoted."""
    from airflow_provider_dicom.dicom.uid import uid_problem

    for element, value in zip(UID_ELEMENTS, (study, series, sop)):
        problem = uid_problem(value)
        if problem is not None:
            return f"{element} is not a valid UID ({problem}): no object name can be made from it"
    return None


def _copy_in_parallel(
    outcomes: Iterator[Any],
    prefix: str,
    copy: Callable[[str, str], int],
    seen: set[str],
    result: GcsExportResult,
    workers: int,
) -> Iterator[tuple[str, str, Future]]:
    """Start each good instance's copy on a thread pool (at most 2 x workers in flight) and yield
    them in source order; count the other outcomes as they come."""
    from collections import deque

    pending: deque[tuple[str, str, Future]] = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for outcome in outcomes:
            if outcome.status == "ok":
                converted = outcome.converted
                problem = object_name_problem(converted.study_uid, converted.series_uid, converted.sop_uid)
                if problem is not None:
                    result.count_not_done("failed", outcome.path, problem)
                    continue
                uid = converted.sop_uid
                if uid in seen:
                    result.add_duplicate(outcome.path, uid)
                    continue
                seen.add(uid)
                target = "/".join(p for p in (prefix, converted.study_uid, converted.series_uid, f"{uid}.dcm") if p)
                pending.append((outcome.path, target, pool.submit(copy, outcome.path, target)))
                if len(pending) >= 2 * workers:
                    yield pending.popleft()
            else:
                result.count_not_done(outcome.status, outcome.path, outcome.reason)
        while pending:
            yield pending.popleft()


def _copier(parsed: DicomSource, storage_client: Any, bucket: Any, dicomweb_client: Any) -> Callable[[str, str], int]:
    """A function copying one instance (named as its outcome names it) to an object; returns bytes."""
    if parsed.kind is SourceKind.FOLDER:

        def upload(path: str, target: str) -> int:
            bucket.blob(target).upload_from_filename(path, content_type=DICOM_CONTENT_TYPE, timeout=request_timeout())
            return os.path.getsize(path)

        return upload
    if parsed.kind is SourceKind.GCS_PREFIX:

        def server_side_copy(uri: str, target: str) -> int:
            source = GcsUri.parse(uri, require_object=True)
            blob = storage_client.bucket(source.bucket).blob(source.name)
            copied = storage_client.bucket(source.bucket).copy_blob(blob, bucket, target, timeout=request_timeout())
            return int(copied.size or 0)

        return server_side_copy

    def retrieve(instance_url: str, target: str) -> int:
        return stream_instance(dicomweb_client, instance_url, bucket.blob(target))

    return retrieve


RETRIEVE_CHUNK = 64 * 1024  # bytes read from the DICOMweb response at a time
SMALL_INSTANCE = 2 * 1024 * 1024  # up to this size an instance is uploaded in one request
UPLOAD_CHUNK = 2 * 1024 * 1024  # larger ones stream in resumable-upload chunks of this size


def stream_instance(client: Any, instance_url: str, blob: Any) -> int:
    """WADO-RS retrieve of one instance (its stored transfer syntax, as Part 10 bytes) streamed
    into `blob`; returns its size. Memory holds at most SMALL_INSTANCE + UPLOAD_CHUNK bytes, and
    nothing touches the disk. The object appears only when the whole part has arrived and was
    followed by the close delimiter: a response cut short, malformed or holding a second part
    cancels the upload (OSError naming what was wrong), so no truncated instance is left."""
    from airflow_provider_dicom.sources.multipart import MultipartError, MultipartReader, boundary_of

    response = client.session.get(
        instance_url,
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        timeout=client.timeout,
        stream=True,
    )
    try:
        if response.status_code != 200:
            raise OSError(f"WADO-RS retrieve answered HTTP {response.status_code}")
        reader = MultipartReader(
            response.iter_content(RETRIEVE_CHUNK), boundary_of(response.headers.get("Content-Type", ""))
        )
        if reader.next_part() is None:
            raise OSError("WADO-RS retrieve returned no part, expected one instance")
        upload = _InstanceUpload(blob)
        try:
            for piece in reader.iter_body():
                upload.write(piece)
            if reader.next_part() is not None:
                raise OSError("WADO-RS retrieve returned more than one part, expected one instance")
            size = upload.finish()
        except BaseException:
            upload.abort()
            raise
        with contextlib.suppress(Exception):  # the instance is stored; this only helps reuse
            reader.discard_epilogue()  # a fully read response returns its connection to the pool
        return size
    except MultipartError as exc:
        raise OSError(f"WADO-RS retrieve: {exc}") from None
    finally:
        response.close()


class _InstanceUpload:
    """One instance's bytes to an object: a single request when it is small (most are), else a
    resumable upload finalised only by `finish()` (see `atomic_write.GcsAtomicWriter`)."""

    def __init__(self, blob: Any) -> None:
        self._blob = blob
        self._buffer = bytearray()
        self._writer: Any = None
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self._writer is not None:
            self._writer.write(data)
            return
        self._buffer += data
        if len(self._buffer) > SMALL_INSTANCE:
            from airflow_provider_dicom.utils.atomic_write import GcsAtomicWriter

            self._writer = GcsAtomicWriter(self._blob, chunk_size=UPLOAD_CHUNK, content_type=DICOM_CONTENT_TYPE)
            self._writer.write(bytes(self._buffer))
            self._buffer = bytearray()

    def finish(self) -> int:
        if self._writer is None:
            from airflow_provider_dicom.utils.deadlines import endpoint_of, remote, request_timeout

            with remote(f"uploading gs://{self._blob.bucket.name}/{self._blob.name}", endpoint_of(self._blob)):
                self._blob.upload_from_string(
                    bytes(self._buffer), content_type=DICOM_CONTENT_TYPE, timeout=request_timeout()
                )
        else:
            self._writer.close()
        return self.size

    def abort(self) -> None:
        self._buffer = bytearray()
        if self._writer is not None:
            self._writer.abort()
