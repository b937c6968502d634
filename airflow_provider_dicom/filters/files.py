"""Filter files: the list of DICOM resources an export is restricted to.

The Cloud Healthcare API takes a text object (`filterConfig.resourcePathsGcsUri`) with one
resource path per line, `\\n` or `\\r\\n` separated: `/studies/S`, `/studies/S/series/SE` or
`/studies/S/series/SE/instances/I`. A study line selects all of its series and instances, a
series line all of its instances. We read the same format from a local path or a `gs://` object,
so a filter built for Google's export works unchanged for ours, and the reverse.

A malformed line is an error naming its line number rather than a line silently skipped: a
filter that quietly selects less than intended produces a table that looks right and is not.
Nothing here imports google-cloud-storage until a `gs://` filter is actually loaded.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider_dicom.utils.errors import DicomProviderError

_STUDIES = "studies"
_SERIES = "series"
_INSTANCES = "instances"
_MAX_SHOWN = 200  # characters of a bad line quoted back in an error message


class FilterFileError(DicomProviderError, ValueError):
    """A filter file line that is not a resource path; the message names the line and its number."""


@dataclass(frozen=True, slots=True)
class ResourcePath:
    """One line of a filter file: a study, a series of it, or one instance of that series."""

    study: str
    series: str | None = None
    instance: str | None = None

    def __post_init__(self) -> None:
        if self.instance is not None and self.series is None:
            raise ValueError("an instance path needs its series")
        for part in (self.study, self.series, self.instance):
            if part is not None and not _is_valid_uid_segment(part):
                raise ValueError(f"invalid UID {part!r} in resource path")

    @classmethod
    def parse(cls, line: str) -> ResourcePath:
        """Parse one path; raises ValueError (without a line number) when it has another shape."""
        parts = line.split("/")
        # "/studies/S/series/SE/instances/I".split("/") == ["", "studies", S, "series", SE, "instances", I]
        keywords = (_STUDIES, _SERIES, _INSTANCES)
        if (
            parts[0] != ""
            or len(parts) not in (3, 5, 7)
            or any(parts[i] != keywords[(i - 1) // 2] for i in range(1, len(parts), 2))
            or not all(_is_valid_uid_segment(parts[i]) for i in range(2, len(parts), 2))
        ):
            raise ValueError(f"not a resource path {line!r}")
        values = parts[2::2] + [None] * (3 - len(parts[2::2]))
        return cls(parts[2], values[1], values[2])

    @property
    def level(self) -> str:
        """`study`, `series` or `instance`: how much of the hierarchy this path selects."""
        if self.instance is not None:
            return "instance"
        return "series" if self.series is not None else "study"

    def covers(self, study: str | None, series: str | None, sop: str | None) -> bool:
        if study != self.study:
            return False
        if self.series is None:
            return True
        if series != self.series:
            return False
        return self.instance is None or sop == self.instance

    def __str__(self) -> str:
        text = f"/{_STUDIES}/{self.study}"
        if self.series is not None:
            text += f"/{_SERIES}/{self.series}"
        if self.instance is not None:
            text += f"/{_INSTANCES}/{self.instance}"
        return text


def _is_valid_uid_segment(value: str) -> bool:
    # Real archives hold non-conformant UIDs (letters, leading zeros, > 64 characters), and such an
    # instance must still be selectable, so only what cannot be a path segment is refused.
    return bool(value) and not any(ch.isspace() or ch == "/" for ch in value)


class FilterSet:
    """The resources a filter file selects, answering "is this instance exported?" in O(1).

    Paths are kept deduplicated in first-seen order, so `format()` of a filter built from a query
    result is stable and as short as the selection allows.
    """

    __slots__ = ("_instances", "_paths", "_series", "_studies")

    def __init__(self, paths: Iterable[ResourcePath] = ()) -> None:
        self._paths: dict[ResourcePath, None] = {}
        self._studies: set[str] = set()
        self._series: set[tuple[str, str]] = set()
        self._instances: set[tuple[str, str, str]] = set()
        for path in paths:
            self.add(path)

    def add(self, path: ResourcePath) -> None:
        if path in self._paths:
            return
        self._paths[path] = None
        if path.instance is not None:
            self._instances.add((path.study, path.series, path.instance))  # type: ignore[arg-type]
        elif path.series is not None:
            self._series.add((path.study, path.series))
        else:
            self._studies.add(path.study)

    def accepts(self, study: str | None, series: str | None, sop: str | None) -> bool:
        """True when the instance is listed itself or through its series or study."""
        if study is None:
            return False
        return (
            study in self._studies
            or (study, series) in self._series
            or (study, series, sop) in self._instances
        )

    def __call__(self, study: str | None, series: str | None, sop: str | None) -> bool:
        return self.accepts(study, series, sop)

    @property
    def paths(self) -> tuple[ResourcePath, ...]:
        return tuple(self._paths)

    def __iter__(self) -> Iterator[ResourcePath]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FilterSet) and list(self._paths) == list(other._paths)

    def __repr__(self) -> str:
        return (
            f"FilterSet({len(self._studies)} studies, {len(self._series)} series, "
            f"{len(self._instances)} instances)"
        )

    def format(self) -> str:
        """The filter file text: one path a line, `\\n` separated, ending with a newline."""
        return "".join(f"{path}\n" for path in self._paths)

    @classmethod
    def parse(cls, text: str | bytes, *, source: str = "filter file") -> FilterSet:
        """Parse filter file text; raises FilterFileError naming `source`, the line number and the line."""
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise FilterFileError(f"{source} is not UTF-8 text: {exc}") from None
        return cls(_parse_lines(text.split("\n"), source))


def _parse_lines(lines: Iterable[str], source: str) -> Iterator[ResourcePath]:
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if number == 1:
            line = line.lstrip("\ufeff").strip()  # a byte-order mark left by Windows editors
        if not line:
            continue
        try:
            yield ResourcePath.parse(line)
        except ValueError:
            shown = line if len(line) <= _MAX_SHOWN else line[:_MAX_SHOWN] + "..."
            hint = ""
            if line.lower().startswith("/dicomweb/"):
                hint = " (drop the /dicomWeb prefix)"
            raise FilterFileError(
                f"{source}, line {number}: {shown!r} is not a resource path{hint}; expected "
                "/studies/STUDY_UID, /studies/STUDY_UID/series/SERIES_UID or "
                "/studies/STUDY_UID/series/SERIES_UID/instances/SOP_INSTANCE_UID"
            ) from None


MAX_FILTER_BYTES = 1024**3
"""The largest filter file read: 1 GiB, what BigQuery writes to one object (about 7 million
instance lines, the most our server-side filter route can build). A filter is held in memory as a
set, so the bound is also what keeps `/dev/zero` or a runaway file from exhausting the worker."""


def _too_large(source: str, size: int) -> FilterFileError:
    return FilterFileError(
        f"{source} is {size:,} bytes, more than the {MAX_FILTER_BYTES:,} bytes (1 GiB) a filter file may have"
    )


def check_local_filter_file(location: str | os.PathLike) -> Path:
    """The one rule for a local filter file, used by the operators and the CLI before anything is
    read: it exists, it is a regular file (not a device, FIFO or folder, which would never end or
    never answer) and it is at most MAX_FILTER_BYTES. Raises FileNotFoundError, IsADirectoryError or
    FilterFileError."""
    path = Path(location)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"filter file {str(path)!r} does not exist") from None
    _check_regular(str(path), info)
    return path


def _check_regular(shown: str, info: os.stat_result) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(f"filter file {shown!r} is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise FilterFileError(
            f"filter file {shown!r} is not a regular file (a device, FIFO or socket): give the path of a "
            f"text file of at most {MAX_FILTER_BYTES:,} bytes"
        )
    if info.st_size > MAX_FILTER_BYTES:
        raise _too_large(f"filter file {shown!r}", info.st_size)


def _read_local(path: Path) -> bytes:
    check_local_filter_file(path)
    # O_NONBLOCK: should the path have become a FIFO since the check, open() must not wait for a
    # writer; fstat of what was opened is the check that counts.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        _check_regular(str(path), os.fstat(fd))
        data = handle.read(MAX_FILTER_BYTES + 1)  # the file may grow after fstat
    if len(data) > MAX_FILTER_BYTES:
        raise _too_large(f"filter file {str(path)!r}", len(data))
    return data


def load_filter(location: str | os.PathLike, *, storage_client: Any = None) -> FilterSet:
    """Read a filter file from a local path or a `gs://bucket/object` (at most MAX_FILTER_BYTES).

    `storage_client` is a google.cloud.storage.Client (e.g. from Airflow's GCSHook); without one a
    default client is built, which honours STORAGE_EMULATOR_HOST.
    """
    if isinstance(location, str) and location.startswith("gs://"):
        return FilterSet.parse(_download(location, storage_client), source=f"filter file {location}")
    path = Path(location)
    return FilterSet.parse(_read_local(path), source=f"filter file {path}")


def _download(uri: str, storage_client: Any) -> bytes:
    """The object's bytes, its size checked from its metadata before any byte is downloaded, and
    the download pinned to that generation (a concurrent replace cannot mix two files)."""
    from airflow_provider_dicom.model.uris import GcsUri

    target = GcsUri.parse(uri, require_object=True)
    from google.api_core.exceptions import NotFound

    if storage_client is None:
        from google.cloud import storage

        storage_client = storage.Client()
    from airflow_provider_dicom.utils.deadlines import endpoint_of, remote, storage_call

    doing = f"reading filter file {uri}"
    try:
        with remote(doing, endpoint_of(storage_client)):
            blob = storage_client.bucket(target.bucket).get_blob(target.name, **storage_call(storage_client, doing))
            if blob is None:
                raise FileNotFoundError(f"filter file {uri} does not exist")
            if blob.size is not None and blob.size > MAX_FILTER_BYTES:
                raise _too_large(f"filter file {uri}", blob.size)
            data = blob.download_as_bytes(
                if_generation_match=blob.generation, **storage_call(storage_client, doing)
            )
    except NotFound:
        raise FileNotFoundError(f"filter file {uri} does not exist") from None
    return data
