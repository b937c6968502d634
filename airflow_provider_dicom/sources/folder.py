"""A folder of DICOM files as a stream of per-file outcomes.

Each file yields exactly one outcome (see outcomes.py); nothing is held beyond the current file.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from airflow_provider_dicom.dicom.convert import InstanceConverter
from airflow_provider_dicom.dicom.outcomes import (  # noqa: F401 - re-exported for callers of this module
    FAILED,
    FILTERED,
    MEDIA_STORAGE_DIRECTORY,
    NOT_DICOM,
    OK,
    Accept,
    InstanceOutcome,
    convert_instance,
    convert_part10,
    convert_scan,
    instance_uids,
    never_raises,
    walks_scans,
)
from airflow_provider_dicom.dicom.read import read_instance, read_with_pydicom
from airflow_provider_dicom.dicom.scan import (
    LeanInstance,
    Unsupported,
    fragments_end,
    scan_part10,
    scan_trailer,
)
from airflow_provider_dicom.dicom.vocabulary import UNDEFINED_LENGTH

# Files up to this size are read whole rather than memory-mapped (see convert_file): on a 39 KB
# CT, open+fstat+read takes about 14 us against 21 us for open+fstat+mmap+munmap.
READ_WHOLE = 128 * 1024
# A larger file's first bytes, read to find its whole header in them (see `_header_only`).
HEADER_READ = 64 * 1024


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


@never_raises
def convert_file(path: str | os.PathLike, converter: InstanceConverter, accept: Accept | None = None) -> InstanceOutcome:
    """Read and convert one file; BlobStorageSize and LastUpdated come from the file itself.

    For the fast route (outcomes.convert_part10) a small file (up to READ_WHOLE bytes) is read
    whole, in one system call: mapping and unmapping it cost more than copying it. Of a larger
    one the first HEADER_READ bytes are read, which usually hold the whole header (`_header_only`);
    otherwise it is memory-mapped: only the header's pages are touched, never the pixel data's."""
    name = os.fspath(path)
    with open(name, "rb", buffering=0) as handle:  # unbuffered: nothing is read through a buffer
        stat = os.fstat(handle.fileno())
        sizes = {
            "blob_storage_size": stat.st_size,
            "last_updated": datetime.fromtimestamp(stat.st_mtime, tz=timezone.utc),
        }
        if stat.st_size >= 132 and walks_scans(converter):
            if stat.st_size <= READ_WHOLE:
                data = handle.read(stat.st_size)
                return convert_part10(name, data, converter, accept, lambda: read_with_pydicom(name), **sizes)
            head = handle.read(HEADER_READ)
            lean = _header_only(head, stat.st_size, handle.fileno())
            if lean is not None:
                return convert_scan(name, lean, head, converter, accept, **sizes)
            try:
                mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError):  # not mappable (a special file): read it plainly
                mapped = None
            if mapped is not None:
                with mapped:
                    return convert_part10(
                        name, mapped, converter, accept, lambda: read_with_pydicom(name), **sizes
                    )
    return convert_instance(name, lambda: read_instance(name), converter, accept, **sizes)


def _header_only(head: bytes, size: int, fd: int) -> LeanInstance | None:
    """The scan of a file of `size` bytes made from its first bytes `head` and its end, when that
    is the scan of the whole file: the header ends in `head` at the top-level pixel data, and the
    pixel data ends where its length says, or, encapsulated, where its items' headers (read one by
    one from `fd`) say: skipped as the whole file's scan skips it; what follows it, if anything,
    is read and scanned on (scan.scan_trailer). None otherwise (a longer header, a long trailer,
    anything the scan declines): convert_file then maps the whole file, and judges it as before.

    For a multi-megabyte file this spares mapping it: the pages the whole file's scan touches
    (one per pixel data item) cost a page fault each, and unmapping them more (~100-400 us for
    the large JPEG files of pydicom's test data, against ~10-100 us for reading them this way)."""
    if not _holds_pixel_tag(head):
        return None  # a larger header, or none: not worth scanning twice
    try:
        lean = scan_part10(head, object_size=size)
        # Without NeedMoreData the walk of a prefix stopped at top-level pixel data, its last element.
        _, value, value_tell, length = lean.body[next(reversed(lean.body))]
        if value is not None:  # (cannot happen: a prefix's walk ends at pixel data)
            return None
        if length == UNDEFINED_LENGTH:
            end = fragments_end(lambda at: os.pread(fd, 8, at), value_tell, size, lean.little)
        else:
            end = value_tell + length
        if end >= size:
            return lean
        if size - end > HEADER_READ:
            return None
        # Elements after the pixel data (trailing padding, signatures): the scan of the file's end
        # goes on where the whole file's scan would (scan.scan_trailer).
        return scan_trailer(lean, os.pread(fd, size - end, end), end)
    except (Unsupported, StopIteration):  # NeedMoreData and Truncated included: the whole file judges
        return None


def _holds_pixel_tag(head: bytes) -> bool:
    """Whether `head` holds the bytes of a (7FE0,xxxx) tag, little or big endian: a cheap guess
    whether the header ends in it. Its 0x7F bytes are found by memchr (bytes.find of one byte);
    a two-byte bytes.find costs ~2 us per KiB, as much as scanning a header."""
    at = head.find(b"\x7f", 1)
    while at != -1:
        if head[at + 1 : at + 2] == b"\xe0" or (head[at - 1] == 0xE0 and head[at + 2 : at + 3] == b"\x00"):
            return True
        at = head.find(b"\x7f", at + 1)
    return False


def convert_folder(
    root: str | os.PathLike, converter: InstanceConverter, accept: Accept | None = None
) -> Iterator[InstanceOutcome]:
    for path in iter_folder(root):
        yield convert_file(path, converter, accept)
