"""Where the shards of a sharded export leave their output for the load step: a folder or `gs://`.

Shards run as separate Airflow task instances, usually on different workers, so what one writes
the load step must find by name. On Cloud Composer or any multi-worker deployment that place is a
Cloud Storage prefix; a local folder is enough when every task runs on one machine
(LocalExecutor, `dag.test()`, a laptop). Both offer the same few operations, named by a relative
path below the staging root, so nothing above this module cares which one it is.

Writes go to a temporary name first and are renamed (or, on GCS, uploaded whole in one request
or one resumable session), so a reader never sees half a file: a shard's `result.json`, written
last, is what says the shard finished.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal, Protocol

from airflow_provider_dicom.model.uris import GcsUri, InvalidUriError
from airflow_provider_dicom.utils.errors import DicomProviderError

_COPY_BLOCK = 8 * 1024 * 1024


class StagingError(DicomProviderError, RuntimeError):
    """The staging area cannot be used (missing bucket, permission, ...); the message names it."""


class Staging(Protocol):
    """A staging root: files named by slash-separated paths relative to it."""

    uri: str

    def uri_of(self, name: str) -> str: ...

    def write_bytes(self, name: str, data: bytes) -> None: ...

    def upload(self, name: str, local: Path | IO[bytes]) -> None:
        """Copy a local file, or a whole open binary file (from its start), to `name`."""
        ...

    def read_bytes(self, name: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""

    def download(self, name: str, out: IO[bytes]) -> bool:
        """Copy the file into `out`; False when it does not exist."""

    def delete_tree(self, name: str) -> int:
        """Delete everything under `name`; returns how many files went."""

    def is_gcs(self) -> bool: ...


def check_staging_uri(uri: object) -> str:
    """The staging root as given, or a ValueError naming the bad value (no remote call)."""
    if not isinstance(uri, str) or not uri.strip() or uri != uri.strip():
        raise ValueError(
            f"invalid staging_uri {uri!r}: expected gs://BUCKET/PREFIX (shared by every worker) or an "
            "absolute local folder (one machine only)"
        )
    if uri.startswith("gs://"):
        try:
            GcsUri.parse(uri)
        except InvalidUriError as exc:
            raise ValueError(f"invalid staging_uri {uri!r}: {exc}") from None
        return uri
    path = uri[len("file://"):] if uri.startswith("file://") else uri
    if "://" in path or not os.path.isabs(path):
        raise ValueError(
            f"invalid staging_uri {uri!r}: expected gs://BUCKET/PREFIX or an absolute local folder path"
        )
    return uri


def open_staging(uri: str, storage_client: Any = None) -> Staging:
    """The staging area at `uri`; `storage_client` (google-cloud-storage) is needed for `gs://`."""
    uri = check_staging_uri(uri)
    if uri.startswith("gs://"):
        if storage_client is None:
            from airflow_provider_dicom.sources.gcs import default_storage_client

            storage_client = default_storage_client()
        return GcsStaging(uri, storage_client)
    return LocalStaging(Path(uri[len("file://"):] if uri.startswith("file://") else uri))


def join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


class LocalStaging:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = str(root)

    def is_gcs(self) -> bool:
        return False

    def uri_of(self, name: str) -> str:
        return str(self.root / name)

    def _path(self, name: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_bytes(self, name: str, data: bytes) -> None:
        path = self._path(name)
        temporary = path.with_name(path.name + ".partial")
        temporary.write_bytes(data)
        os.replace(temporary, path)

    def upload(self, name: str, local: Path | IO[bytes]) -> None:
        path = self._path(name)
        temporary = path.with_name(path.name + ".partial")
        if isinstance(local, (str, os.PathLike)):
            shutil.copyfile(local, temporary)
        else:
            local.seek(0)
            with open(temporary, "wb") as out:
                shutil.copyfileobj(local, out)
        os.replace(temporary, path)

    def read_bytes(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None

    def download(self, name: str, out: IO[bytes]) -> bool:
        try:
            with open(self.root / name, "rb") as source:
                shutil.copyfileobj(source, out, _COPY_BLOCK)
        except FileNotFoundError:
            return False
        return True

    def delete_tree(self, name: str) -> int:
        path = self.root / name
        if not path.exists():
            return 0
        count = sum(1 for p in path.rglob("*") if p.is_file())
        shutil.rmtree(path)
        return count


class GcsStaging:
    def __init__(self, uri: str, client: Any) -> None:
        parsed = GcsUri.parse(uri)
        self.bucket_name = parsed.bucket
        self.prefix = parsed.name.strip("/")
        self.uri = f"gs://{self.bucket_name}/{self.prefix}" if self.prefix else f"gs://{self.bucket_name}"
        self.client = client
        self._bucket = client.bucket(self.bucket_name)

    def is_gcs(self) -> bool:
        return True

    def _name(self, name: str) -> str:
        return join(self.prefix, name)

    def uri_of(self, name: str) -> str:
        return f"gs://{self.bucket_name}/{self._name(name)}"

    def write_bytes(self, name: str, data: bytes) -> None:
        with self._errors(name):
            self._bucket.blob(self._name(name)).upload_from_string(
                data, content_type="application/octet-stream", **self._call(name, "uploading")
            )

    def upload(self, name: str, local: Path | IO[bytes]) -> None:
        with self._errors(name):
            blob = self._bucket.blob(self._name(name))
            if isinstance(local, (str, os.PathLike)):
                blob.upload_from_filename(
                    str(local), content_type="application/octet-stream", **self._call(name, "uploading")
                )
            else:
                blob.upload_from_file(
                    local, rewind=True, content_type="application/octet-stream", **self._call(name, "uploading")
                )

    def read_bytes(self, name: str) -> bytes | None:
        from google.api_core.exceptions import NotFound

        with self._errors(name):
            try:
                return self._bucket.blob(self._name(name)).download_as_bytes(**self._call(name, "reading"))
            except NotFound:
                return None

    def download(self, name: str, out: IO[bytes]) -> bool:
        from google.api_core.exceptions import NotFound

        with self._errors(name):
            try:
                self._bucket.blob(self._name(name)).download_to_file(out, **self._call(name, "reading"))
            except NotFound:
                return False
        return True

    def delete_tree(self, name: str) -> int:
        prefix = self._name(name) + "/"
        count = 0
        with self._errors(name):
            for blob in self.client.list_blobs(self.bucket_name, prefix=prefix, **self._call(name, "listing")):
                blob.delete(**self._call(name, "deleting objects under"))
                count += 1
        return count

    def _errors(self, name: str) -> Any:
        from contextlib import ExitStack

        from airflow_provider_dicom.utils.deadlines import endpoint_of, remote

        stack = ExitStack()
        stack.enter_context(_translated(self.uri_of(name)))
        stack.enter_context(remote(f"using staging object {self.uri_of(name)}", endpoint_of(self.client)))
        return stack

    def _call(self, name: str, doing: str) -> dict[str, Any]:
        """The deadline of one call (staging objects hold the same bytes on every try: retrying
        an upload is safe)."""
        from airflow_provider_dicom.utils.deadlines import storage_call

        return storage_call(self.client, f"{doing} staging object {self.uri_of(name)}")


class _translated:
    """Turn a Cloud Storage API error into a StagingError naming the object, not a stack of HTTP."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        if exc is None:
            return False
        from google.api_core.exceptions import GoogleAPICallError, NotFound

        if isinstance(exc, NotFound):
            raise StagingError(f"staging object {self.uri}: bucket or object not found") from None
        if isinstance(exc, GoogleAPICallError):
            raise StagingError(
                f"staging object {self.uri}: HTTP {exc.code} {type(exc).__name__}"
            ) from None
        return False


def iter_lines(data: bytes | None) -> Iterator[str]:
    if not data:
        return
    for line in data.decode("utf-8").split("\n"):
        if line:
            yield line
