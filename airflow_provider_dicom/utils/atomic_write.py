"""Writing a file so that a reader sees the old content or the new, never half of the new.

Filter files are replaced on every run (the task is idempotent), and an export that reads a
truncated filter silently selects less than intended. So a write that fails midway (a broken query
stream, a lost connection, a killed task) must leave the previous file exactly as it was:

- **gs://**: one resumable upload straight to the object name, finalised only by `close()`.
  Cloud Storage creates or replaces an object only when its upload is finalised, so until then
  readers see the old object. `abort()` cancels the upload session (and, if that request fails,
  makes sure nothing finalises it later: an io object's finaliser would otherwise `close()` it and
  commit what was sent, which is how a failed write used to replace a good file with a truncated
  one). A killed worker never finalises either. No temporary object exists, so none is left.
- **local paths**: a temporary file beside the target (same folder, so the same filesystem),
  fsynced, then `os.replace`d over it; the folder is fsynced so the rename survives a crash.
  `abort()` removes the temporary file.

Local destinations must be regular files or not exist yet (`check_local_target`): a device, FIFO
or folder is refused by name, never replaced, and a path with `..` segments is refused, so a
templated file name cannot climb out of the folder the path names. A final symbolic link is refused
too: replacing it would replace the link, not the file it points to.

Nothing heavy is imported here; google-cloud-storage only through the client the caller passes.
"""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from pathlib import Path, PurePath
from typing import Any, Protocol

from airflow_provider_dicom.utils.errors import DicomProviderError

GCS_CHUNK_SIZE = 8 * 1024 * 1024  # a multiple of 256 KiB, as resumable uploads require


class AtomicWriter(Protocol):
    """A text sink whose content becomes visible, whole, on `close()`; `abort()` leaves the old."""

    def write(self, text: str) -> int: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class UnsafeDestinationError(DicomProviderError, ValueError):
    """A local destination that is not (or cannot become) a regular file we may replace."""


def check_local_path(path: str | os.PathLike) -> Path:
    """The syntax rules for a local destination, checkable when a DAG is parsed (no filesystem
    access): not empty, no NUL byte, no `..` segment, not ending with a separator."""
    text = os.fspath(path)
    if not text or not text.strip():
        raise UnsafeDestinationError(f"invalid local destination {text!r}: empty")
    if "\x00" in text:
        raise UnsafeDestinationError(f"invalid local destination {text!r}: contains a NUL byte")
    if ".." in PurePath(text).parts:
        raise UnsafeDestinationError(
            f"invalid local destination {text!r}: '..' segments are not allowed (give the path without "
            "them, so the file stays inside the folder the path names)"
        )
    if text.endswith(("/", os.sep)):
        raise UnsafeDestinationError(f"invalid local destination {text!r}: a file, not a folder")
    return Path(text)


def check_local_target(path: str | os.PathLike) -> Path:
    """`check_local_path` plus what is on disk now: the target is missing or a regular file (not a
    symbolic link, device, FIFO, socket or folder). Returns the path, its folder made absolute."""
    target = check_local_path(path)
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        pass
    except NotADirectoryError:
        raise UnsafeDestinationError(f"local destination {str(target)!r}: a parent is not a folder") from None
    else:
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeDestinationError(
                f"local destination {str(target)!r} is {_kind(info.st_mode)}, not a regular file: refusing to "
                "replace it (give the path of a regular file, or of one that does not exist yet)"
            )
    return Path(os.path.abspath(target.parent)) / target.name


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


class LocalAtomicWriter:
    """A temporary file beside the target, fsynced and renamed over it on `close()`."""

    def __init__(self, path: str | os.PathLike) -> None:
        target = check_local_target(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._path = target
        self._tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
        # O_EXCL: never write through a file (or link) someone put at the temporary name.
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
        self._file = os.fdopen(fd, "w", encoding="utf-8", newline="\n")

    def write(self, text: str) -> int:
        return self._file.write(text)

    def close(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            check_local_target(self._path)  # still safe to replace (it may have changed meanwhile)
            with contextlib.suppress(FileNotFoundError):
                os.chmod(self._tmp, stat.S_IMODE(os.stat(self._path).st_mode))  # keep the old file's mode
            os.replace(self._tmp, self._path)
        except BaseException:
            self.abort()
            raise
        _fsync_folder(self._path.parent)

    def abort(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class GcsAtomicWriter:
    """A resumable upload to the object, chunks sent as they fill, finalised only on `close()`."""

    def __init__(self, blob: Any, *, chunk_size: int = GCS_CHUNK_SIZE, content_type: str = "text/plain") -> None:
        from google.cloud.storage.fileio import BlobWriter

        from airflow_provider_dicom.utils.deadlines import endpoint_of, storage_call

        self.uri = f"gs://{blob.bucket.name}/{blob.name}"
        self._doing = f"uploading {self.uri}"
        self._endpoint = endpoint_of(blob)
        # Binary BlobWriter, not blob.open("w"): a TextIOWrapper around it would be finalised (and
        # the upload committed) by the garbage collector after an abort. Each chunk request has the
        # request timeout and the bounded retry (a resumable session makes chunk retries safe).
        self._writer = BlobWriter(
            blob, chunk_size=chunk_size, content_type=content_type, **storage_call(blob, self._doing)
        )

    def write(self, data: str | bytes) -> int:
        from airflow_provider_dicom.utils.deadlines import remote

        with remote(self._doing, self._endpoint):
            self._writer.write(data.encode("utf-8") if isinstance(data, str) else data)
        return len(data)

    def close(self) -> None:
        from airflow_provider_dicom.utils.deadlines import remote

        try:
            with remote(self._doing, self._endpoint):
                self._writer.close()  # sends the last chunk with the total size: the object appears now
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        writer = self._writer
        if writer.closed:
            return
        with contextlib.suppress(Exception):
            writer.terminate()  # DELETE on the session URL: Cloud Storage discards what was sent
        # If the DELETE failed, the buffer is still open and the io finaliser would call close(),
        # finalising a truncated object. Closing the buffer makes close() a no-op.
        buffer = getattr(writer, "_buffer", None)
        if buffer is not None and not buffer.closed:
            buffer.close()


def open_atomic(
    destination: str, *, storage_client: Any = None, chunk_size: int = GCS_CHUNK_SIZE, content_type: str = "text/plain"
) -> AtomicWriter:
    """An `AtomicWriter` on `destination`: `gs://BUCKET/OBJECT`, `file://PATH` or a local path.
    Without `storage_client` a default google.cloud.storage.Client is built (it honours
    STORAGE_EMULATOR_HOST)."""
    if destination.startswith("gs://"):
        from airflow_provider_dicom.model.uris import GcsUri

        target = GcsUri.parse(destination, require_object=True)
        client = storage_client
        if client is None:
            from google.cloud import storage

            client = storage.Client()
        return GcsAtomicWriter(
            client.bucket(target.bucket).blob(target.name), chunk_size=chunk_size, content_type=content_type
        )
    return LocalAtomicWriter(local_path(destination))


def local_path(destination: str) -> str:
    """The filesystem path of a local destination (`file://` stripped)."""
    return destination[len("file://") :] if destination.startswith("file://") else destination
