"""A `gs://bucket/prefix` of DICOM objects as a stream of per-object outcomes, reading headers only.

A metadata export needs the header, which is usually a few kilobytes in front of megabytes of
pixel data. Each object is read with ranged reads: a first range sized from the headers seen so
far, then, while the lean parser says the header goes on past what we have (NeedMoreData), a
larger range (at least what it needs, at least double what we have). The parser stops at the
pixel data, so the pixel data is never downloaded. The scanned header is converted as a folder's file is (the one
walker over the scan, outcomes.convert_scan), without building a pydicom Dataset. Files the lean
parser leaves to pydicom (deflated, odd encodings) are read through a seekable file that fetches
the ranges pydicom asks for, so they cost header bytes too.

Object names are listed page by page and read by a bounded pool of threads (reads are latency
bound); outcomes come out in listing order and memory stays flat whatever the prefix holds.
BlobStorageSize is the object's size and LastUpdated its `updated` time, as the Cloud Healthcare
export reports its own stored size and update time.

`gs://bucket/path` means the objects under `path/`, like a folder (so `gs://b/ct` does not pick
up `gs://b/ct-old/...`), or the object `path` itself when nothing is under `path/`;
`gs://bucket` or `gs://bucket/` means the whole bucket. Names ending in `/` (folder placeholders)
are not objects of the export and are skipped.
"""

from __future__ import annotations

import io
import struct
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_provider_dicom.dicom.outcomes import (
    FAILED,
    Accept,
    InstanceOutcome,
    convert_instance,
    convert_scan,
)
from airflow_provider_dicom.dicom.vocabulary import PIXEL_TAGS, SEQUENCE_END, UNDEFINED_LENGTH
from airflow_provider_dicom.sources.remote import DEFAULT_WORKERS, RemoteReadError, ordered_map
from airflow_provider_dicom.utils.deadlines import RemoteCallError
from airflow_provider_dicom.utils.redact import redact_quoted

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from airflow_provider_dicom.dicom.convert import InstanceConverter
    from airflow_provider_dicom.dicom.scan import LeanInstance

# The first range of the first object, before any header has been seen: most single-frame headers
# (1-6 KB) fit; a larger one costs that one object a few more requests, once per export.
INITIAL_FIRST_READ = 8 * 1024
# Bounds of the learned first range: small enough to waste little on a small header, large
# enough that a corpus of multi-megabyte enhanced headers does not make every read huge.
MIN_FIRST_READ = 512
MAX_FIRST_READ = 1024 * 1024
# The learned first range is the largest recent header plus this margin (10%, at least 128 bytes):
# UIDs and optional elements make headers of one kind vary by tens of bytes.
_MARGIN_FRACTION = 0.10
_MARGIN_MIN = 128
_RECENT_HEADERS = 32
# Kinds of object (lengths after the header) remembered, and how far a predicted header may be
# from its kind's last one (headers of one kind vary by tens to hundreds of bytes).
_KINDS_REMEMBERED = 64
_KIND_TOLERANCE_MIN = 1024
# Ranges pydicom asks for (fallback reader) are rounded up to this, so it does not fetch byte by byte.
_FALLBACK_BLOCK = 16 * 1024
# Objects up to this size are read whole, in one request. Reading only a small object's header
# saves a few kilobytes, but whatever lies after its pixel data (the 8-byte check for the end of
# encapsulated pixel data, elements after native pixel data) then costs a second request, and a
# request costs far more than 64 KiB of transfer: tens of milliseconds of latency on Cloud Storage
# and, in the exporting process, more CPU than converting the header.
WHOLE_OBJECT_MAX = 64 * 1024
_LIST_FIELDS = "items(name,size,updated,generation,contentEncoding),nextPageToken"

Fetch = Callable[[int, int], bytes]  # (start, end exclusive) -> bytes of that range


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One listed object: what the listing says about it."""

    name: str
    size: int
    updated: datetime | None = None
    generation: int | None = None
    content_encoding: str | None = None


@dataclass(slots=True)
class FetchRecord:
    """What reading one object cost: `bytes_fetched` over `requests` ranged reads. `header_end` is
    where the pixel data's value starts (None when the object has no pixel data)."""

    name: str
    size: int
    bytes_fetched: int = 0
    requests: int = 0
    header_end: int | None = None


@dataclass(slots=True)
class FetchStats:
    """Totals over an export, for the log and the benchmarks."""

    objects: int = 0
    bytes_fetched: int = 0
    requests: int = 0
    object_bytes: int = 0  # sum of the sizes of the objects read


class _CountingFetch:
    """A fetch that records its bytes and requests in a FetchRecord."""

    __slots__ = ("_fetch", "record")

    def __init__(self, fetch: Fetch, record: FetchRecord) -> None:
        self._fetch = fetch
        self.record = record

    def __call__(self, start: int, end: int) -> bytes:
        data = self._fetch(start, end)
        self.record.requests += 1
        self.record.bytes_fetched += len(data)
        return data


class FirstReadEstimator:
    """Sizes an object's first range from the headers of the objects read before it.

    Objects under one prefix usually come from a few kinds of series (modality, device, image
    geometry). Within a kind, what follows the header (the pixel data) has one length, so an
    object's header size is its size minus that length: the estimator remembers, per length seen,
    the last header, and predicts a new object's header exactly when its size fits one of them.
    The prediction is accepted only when it lands near that kind's last header, so a coincidence
    between unrelated sizes is not trusted. Otherwise (compressed pixel data, a kind not seen yet)
    it falls back to the 90th percentile of recent headers rather than the largest: one odd object
    (an enhanced multi-frame header of megabytes among CT slices) must not make the next thirty
    reads fetch megabytes each; it costs itself a few requests instead."""

    def __init__(self, initial: int = INITIAL_FIRST_READ) -> None:
        self.initial = initial
        self._recent: deque[int] = deque(maxlen=_RECENT_HEADERS)
        # length after the header -> the last header size seen with it (most recent last)
        self._kinds: OrderedDict[int, int] = OrderedDict()
        self._lock = threading.Lock()

    def observe(self, header_end: int, size: int | None = None) -> None:
        with self._lock:
            self._recent.append(header_end)
            if size is not None and size > header_end:
                trailer = size - header_end
                self._kinds[trailer] = header_end
                self._kinds.move_to_end(trailer)
                if len(self._kinds) > _KINDS_REMEMBERED:
                    self._kinds.popitem(last=False)

    def first_read(self, size: int | None = None) -> int:
        with self._lock:
            if not self._recent:
                return self.initial
            predicted = self._predict(size) if size is not None else None
            recent = sorted(self._recent)
        typical = predicted if predicted is not None else recent[(len(recent) - 1) * 9 // 10]
        margin = max(_MARGIN_MIN, int(typical * _MARGIN_FRACTION))
        return max(MIN_FIRST_READ, min(MAX_FIRST_READ, typical + margin))

    def _predict(self, size: int) -> int | None:
        best: int | None = None
        best_gap = None
        for trailer, header in self._kinds.items():
            guess = size - trailer
            gap = abs(guess - header)
            if guess > 0 and gap <= max(_KIND_TOLERANCE_MIN, header // 4) and (best_gap is None or gap < best_gap):
                best, best_gap = guess, gap
        return best


@dataclass(slots=True)
class HeaderRead:
    """The result of reading one object's header in a worker thread.

    `lean` is set when the lean parser read it (scanned from `head`, the first bytes fetched, up
    to the pixel data, and from the trailer after it, if any: scan.scan_trailer); otherwise
    `head` holds the bytes
    fetched so far and the consumer reads the object with pydicom (`fallback`), or `error` says
    why it could not be read at all."""

    info: ObjectInfo
    record: FetchRecord
    lean: LeanInstance | None = None
    head: bytes = b""
    fallback: bool = False
    truncated: str | None = None
    error: str | None = None
    fetch: Fetch | None = field(default=None, repr=False)

    @property
    def dataset(self) -> Dataset | None:
        """The Dataset pydicom would build from the scanned header (None when not scanned): for
        callers that want pydicom's objects; the export converts `lean` itself."""
        if self.lean is None:
            return None
        from airflow_provider_dicom.dicom.parse import to_dataset

        return to_dataset(self.lean, self.head, self.record.name)


def read_header(info: ObjectInfo, fetch: Fetch, first_read: int, *, uri: str | None = None) -> HeaderRead:
    """Fetch ranges of the object until the lean parser has its whole header (pure I/O + parsing;
    safe in a worker thread). Never raises for the object's content or for a failed read."""
    from airflow_provider_dicom.dicom.scan import NeedMoreData, Truncated, Unsupported, scan_part10

    record = FetchRecord(uri or info.name, info.size)
    counting = _CountingFetch(fetch, record)
    size = info.size
    head = b""  # the bytes fetched so far (a single read's bytes are used as they came, uncopied)
    want = min(size, max(1, first_read))
    try:
        while True:
            if want > len(head):
                asked = want - len(head)
                chunk = counting(len(head), want)
                head = head + chunk if head else bytes(chunk)
                if len(chunk) < asked:
                    # The object is shorter than listed (a short read): what we have is all there is.
                    size = len(head)
            try:
                lean = scan_part10(head, object_size=size)
            except NeedMoreData as exc:
                grown = min(size, max(exc.needed, 2 * len(head)))
                if grown <= len(head):  # cannot happen with a consistent parser; never loop forever
                    return HeaderRead(info, record, head=head, fallback=True, fetch=counting)
                want = grown
                continue
            except Truncated as exc:
                return HeaderRead(info, record, truncated=str(exc))
            except Unsupported:
                return HeaderRead(info, record, head=head, fallback=True, fetch=counting)
            pixel = next((_Pixel(*lean.body[tag][2:]) for tag in PIXEL_TAGS if tag in lean.body), None)
            if pixel is not None:
                record.header_end = pixel.value_tell
            if pixel is not None and len(head) < size and _has_trailer(pixel, head, size, counting):
                # Elements after the pixel data (padding, digital signatures) belong in the row.
                with_trailer = _with_trailer(lean, pixel, head, size, counting)
                if with_trailer is not None:
                    return HeaderRead(info, record, lean=with_trailer, head=head)
                # Anything else: pydicom reads it, seeking over the pixel data through ranges.
                return HeaderRead(info, record, head=head, fallback=True, fetch=counting)
            return HeaderRead(info, record, lean=lean, head=head)
    except RemoteReadError as exc:
        return HeaderRead(info, record, error=str(exc))
    except RemoteCallError:
        raise  # the service stopped answering: the export's failure (see outcomes.never_raises)
    except Exception:  # noqa: BLE001 - whatever the lean parser cannot take, pydicom judges
        # (its verdict, exception or not, becomes the object's outcome: outcomes.never_raises)
        return HeaderRead(info, record, head=head, fallback=True, fetch=counting)


# The sequence delimitation item (tag and zero length) as little and big endian bytes.
_SEQUENCE_DELIMITERS = tuple(struct.pack(f"{order}HHL", SEQUENCE_END >> 16, SEQUENCE_END & 0xFFFF, 0) for order in "<>")


@dataclass(frozen=True, slots=True)
class _Pixel:
    """Where a scanned header's pixel data element's value starts, and its declared length."""

    value_tell: int
    length: int
# How much of an object's end is searched for the trailer after encapsulated pixel data: first
# 4 KiB, then 4 times more, up to 1 MiB (beyond that, pydicom walks the fragments).
_TRAILER_SCAN = 4 * 1024
_TRAILER_SCAN_MAX = 1024 * 1024


def _has_trailer(pixel: _Pixel, head: bytes, size: int, fetch: Fetch) -> bool:
    """Whether anything follows the pixel data of an object parsed from a prefix.

    Native pixel data has a length, so the answer is free. Encapsulated pixel data ends with a
    sequence delimiter; an object whose last 8 bytes are that delimiter has nothing after it, and
    checking costs one 8-byte read. Anything else (a trailer, or an object cut inside its pixel
    data) is left to pydicom, exactly as the folder export leaves it."""
    if pixel.length != UNDEFINED_LENGTH:
        return pixel.value_tell + pixel.length < size
    if size - 8 < pixel.value_tell:
        return True
    last = head[size - 8 : size] if len(head) >= size else fetch(size - 8, size)
    return last not in _SEQUENCE_DELIMITERS


def _with_trailer(
    lean: LeanInstance, pixel: _Pixel, head: bytes, size: int, fetch: Fetch
) -> LeanInstance | None:
    """The scanned header `lean` (scanned from the prefix `head`, up to its pixel data) of an
    object whose pixel data is followed by more elements, completed with them: read by the lean
    parser exactly as the folder export reads the file, without downloading the pixel data.

    Only the trailer is fetched and scanned (scan.scan_trailer), from where the pixel data ends:
    its length says where when it is native; when it is encapsulated, the last item's sequence
    delimiter does (the parser would only walk item headers, and the value is never read either
    way). None when the parser declines: pydicom then reads the object through ranges."""
    from airflow_provider_dicom.dicom.scan import Unsupported, scan_trailer

    def parse(trailer: bytes, offset: int) -> LeanInstance | None:
        try:
            return scan_trailer(lean, trailer, offset)
        except Unsupported:  # Truncated included: pydicom decides what a broken trailer means
            return None

    if pixel.length != UNDEFINED_LENGTH:
        tail_start = pixel.value_tell + pixel.length
        held = head[tail_start:] if len(head) > tail_start else b""
        rest_start = max(len(head), tail_start)
        return parse(held + (fetch(rest_start, size) if rest_start < size else b""), tail_start)
    # Encapsulated: the trailer starts after the last item's sequence delimiter, which only a
    # scan of the object's end can find. A delimiter pattern inside the compressed pixel data is
    # followed by bytes that do not parse as elements up to the end, so the first candidate that
    # does parse is the real one.
    span = _TRAILER_SCAN
    while True:
        start = max(pixel.value_tell, size - span)
        tail = head[start:size] if len(head) >= size else fetch(start, size)
        at = tail.find(_SEQUENCE_DELIMITERS[0])
        while at != -1:
            found = parse(tail[at + 8 :], start + at + 8)
            if found is not None:
                return found
            at = tail.find(_SEQUENCE_DELIMITERS[0], at + 1)
        if start == pixel.value_tell or span >= _TRAILER_SCAN_MAX:
            return None
        span *= 4


class RangedObjectFile(io.RawIOBase):
    """A read-only, seekable file over a remote object that fetches only the ranges read.

    pydicom reads a header as a file: with this, it pays for the bytes it reads and for nothing it
    seeks over (the pixel data). `head` seeds it with the bytes already fetched."""

    def __init__(
        self, fetch: Fetch, size: int, head: bytes = b"", name: str = "", block: int = _FALLBACK_BLOCK
    ) -> None:
        super().__init__()
        self._fetch = fetch
        self._size = size
        self._pos = 0
        self._block = block
        self.name = name
        # Non-overlapping fetched segments, sorted by start: (start, bytes).
        self._segments: list[tuple[int, bytes]] = [(0, bytes(head))] if head else []

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        end = min(self._pos + len(view), self._size)
        if end <= self._pos:
            return 0
        data = self._range(self._pos, end)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def _range(self, start: int, end: int) -> bytes:
        out = bytearray()
        pos = start
        while pos < end:
            segment = self._segment_at(pos)
            if segment is not None:
                seg_start, data = segment
                take = data[pos - seg_start : end - seg_start]
                out += take
                pos += len(take)
                continue
            # Not fetched yet: fetch from here up to the next segment (at least a block, never
            # past the object or into bytes we already hold).
            next_start = min((s for s, _ in self._segments if s > pos), default=self._size)
            fetch_end = min(max(end, pos + self._block), next_start, self._size)
            data = self._fetch(pos, fetch_end)
            if not data:
                break  # the object ended early
            self._insert(pos, data)
        return bytes(out)

    def _segment_at(self, pos: int) -> tuple[int, bytes] | None:
        for start, data in self._segments:
            if start <= pos < start + len(data):
                return start, data
        return None

    def _insert(self, start: int, data: bytes) -> None:
        self._segments.append((start, data))
        self._segments.sort(key=lambda segment: segment[0])


def gcs_fetch(blob: Any) -> Fetch:
    """A Fetch over a google-cloud-storage Blob (pinned to its generation when listed)."""

    def fetch(start: int, end: int) -> bytes:
        if end <= start:
            return b""
        from google.api_core.exceptions import GoogleAPIError

        from airflow_provider_dicom.utils.deadlines import endpoint_of, remote, storage_call

        doing = f"reading gs://{blob.bucket.name}/{blob.name} bytes {start}-{end - 1}"
        try:
            # Inclusive end; the object's stored bytes (no decompressive transcoding of ranges).
            # A service that does not answer in time is the export's failure (RemoteCallError),
            # not this object's.
            with remote(doing, endpoint_of(blob)):
                return blob.download_as_bytes(
                    start=start, end=end - 1, raw_download=True, checksum=None, **storage_call(blob, doing)
                )
        except GoogleAPIError as exc:
            code = getattr(exc, "code", None)
            raise RemoteReadError(
                f"cannot read gs://{blob.bucket.name}/{blob.name} bytes {start}-{end - 1}"
                f"{f' (HTTP {code})' if code else ''}: {redact_quoted(getattr(exc, 'message', exc))}"
            ) from None
        except OSError as exc:  # connection errors surface as requests/urllib3 OSErrors
            raise RemoteReadError(
                f"cannot read gs://{blob.bucket.name}/{blob.name}: {type(exc).__name__}"
            ) from None

    return fetch


def _whole_fetch(blob: Any) -> Fetch:
    """For gzip-encoded objects: ranges of the stored (compressed) bytes mean nothing to a parser,
    so the object is downloaded decompressed once and served from memory."""
    cache: list[bytes] = []

    def fetch(start: int, end: int) -> bytes:
        if not cache:
            from google.api_core.exceptions import GoogleAPIError

            from airflow_provider_dicom.utils.deadlines import endpoint_of, remote, storage_call

            doing = f"reading gs://{blob.bucket.name}/{blob.name}"
            try:
                with remote(doing, endpoint_of(blob)):
                    cache.append(blob.download_as_bytes(**storage_call(blob, doing)))
            except GoogleAPIError as exc:
                message = redact_quoted(getattr(exc, "message", exc))
                raise RemoteReadError(f"cannot read gs://{blob.bucket.name}/{blob.name}: {message}") from None
        return cache[0][start:end]

    return fetch


class GcsDicomSource:
    """The DICOM objects under a `gs://` prefix, read header-only with a bounded pool of threads.

    `client` is a google.cloud.storage.Client (from Airflow's GCSHook in the operator; it honours
    STORAGE_EMULATOR_HOST). `on_fetch` is called (in the consuming thread, in listing order) with
    each object's FetchRecord, so callers can check what reading cost; `stats` holds the totals.
    Objects of at most WHOLE_OBJECT_MAX bytes are read whole in one request; `first_read` fixes
    every object's first range instead (no learning, no whole reads).
    """

    def __init__(
        self,
        uri: str,
        client: Any = None,
        *,
        workers: int = DEFAULT_WORKERS,
        max_in_flight: int | None = None,
        first_read: int | None = None,
        on_fetch: Callable[[FetchRecord], None] | None = None,
    ) -> None:
        from airflow_provider_dicom.model.uris import GcsUri

        parsed = GcsUri.parse(uri)
        self.bucket = parsed.bucket
        prefix = parsed.name
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        # gs://b/path/file.dcm names one object: with nothing under "file.dcm/", that object is read.
        self._single_object = prefix if prefix and not prefix.endswith("/") else None
        self.uri = f"gs://{self.bucket}/{self.prefix}"
        self._client = client
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.max_in_flight = max_in_flight or 2 * workers
        self.estimator = FirstReadEstimator(first_read or INITIAL_FIRST_READ)
        self._fixed_first_read = first_read
        self.on_fetch = on_fetch
        self.stats = FetchStats()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = default_storage_client()
        return self._client

    def list_objects(self) -> Iterator[ObjectInfo]:
        """The objects under the prefix, in name order, page by page."""
        from google.api_core.exceptions import GoogleAPICallError, NotFound

        from airflow_provider_dicom.utils.deadlines import endpoint_of, remote, storage_call

        listed = False
        doing = f"listing {self.uri}"
        try:
            with remote(doing, endpoint_of(self.client)):
                for blob in self.client.list_blobs(
                    self.bucket, prefix=self.prefix or None, fields=_LIST_FIELDS, **storage_call(self.client, doing)
                ):
                    listed = True
                    if blob.name.endswith("/"):
                        continue
                    yield _info(blob)
                if not listed and self._single_object is not None:
                    doing = f"getting gs://{self.bucket}/{self._single_object}"
                    blob = self.client.bucket(self.bucket).get_blob(
                        self._single_object, **storage_call(self.client, doing)
                    )
                    if blob is not None:
                        yield _info(blob)
        except NotFound:
            raise FileNotFoundError(f"Cloud Storage bucket gs://{self.bucket} does not exist") from None
        except GoogleAPICallError as exc:
            raise RemoteReadError(
                f"cannot list {self.uri} (HTTP {exc.code} {type(exc).__name__}): {redact_quoted(exc.message)}"
            ) from None

    def outcomes(
        self,
        converter: InstanceConverter,
        accept: Accept | None = None,
        objects: Iterable[ObjectInfo] | None = None,
    ) -> Iterator[InstanceOutcome]:
        """One outcome per object, in listing order; `objects` (a listing made earlier, e.g. one
        shard's part of it) replaces listing the prefix now."""
        from airflow_provider_dicom.sources.gcs_ranges import range_reader_for

        _widen_connection_pool(self.client, self.workers)
        bucket = self.client.bucket(self.bucket)
        # Ranged reads with a fraction of the library's CPU per request, when equivalent.
        ranges = range_reader_for(self.client, self.workers)

        def read(info: ObjectInfo) -> HeaderRead:
            if (info.content_encoding or "").lower() == "gzip":
                fetch = _whole_fetch(bucket.blob(info.name, generation=info.generation))
            elif ranges is not None:
                fetch = ranges.fetch(self.bucket, info.name, info.generation)
            else:
                fetch = gcs_fetch(bucket.blob(info.name, generation=info.generation))
            if self._fixed_first_read is not None:
                first = self._fixed_first_read
            elif info.size <= WHOLE_OBJECT_MAX:
                first = info.size
            else:
                first = self.estimator.first_read(info.size)
            result = read_header(info, fetch, first, uri=f"gs://{self.bucket}/{info.name}")
            if result.record.header_end is not None and self._fixed_first_read is None:
                self.estimator.observe(result.record.header_end, info.size)
            return result

        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="dicom-gcs") as pool:
            listing = self.list_objects() if objects is None else objects
            for result in ordered_map(pool, read, listing, self.max_in_flight, warm_up=1):
                yield self._outcome(result, converter, accept)

    def _outcome(
        self, result: HeaderRead, converter: InstanceConverter, accept: Accept | None
    ) -> InstanceOutcome:
        from airflow_provider_dicom.dicom.read import InvalidDicomError, read_instance

        info, record = result.info, result.record
        name = record.name
        kwargs = {"blob_storage_size": info.size, "last_updated": info.updated}
        if result.error is not None:
            outcome = InstanceOutcome(name, FAILED, reason=f"cannot read: {result.error}")
        elif result.truncated is not None:
            outcome = InstanceOutcome(name, FAILED, reason=f"truncated DICOM file: {result.truncated}")
        elif result.lean is not None:
            outcome = convert_scan(name, result.lean, result.head, converter, accept, **kwargs)
        else:
            # pydicom judges what the lean parser does not handle; it reads through a ranged file.
            assert result.fetch is not None
            ranged = RangedObjectFile(result.fetch, info.size, result.head, name)

            def read() -> Dataset:
                try:
                    return read_instance(ranged)  # type: ignore[arg-type]  # a seekable binary file
                except RemoteReadError:
                    raise
                except OSError as exc:  # pragma: no cover - defensive: pydicom's own I/O errors
                    raise InvalidDicomError(f"unreadable DICOM: {type(exc).__name__}") from None

            outcome = convert_instance(name, read, converter, accept, **kwargs)
        self.stats.objects += 1
        self.stats.bytes_fetched += record.bytes_fetched
        self.stats.requests += record.requests
        self.stats.object_bytes += info.size
        if self.on_fetch is not None:
            self.on_fetch(record)
        return outcome


def _widen_connection_pool(client: Any, workers: int) -> None:
    """Let every worker thread keep its connection: the storage client's requests session pools
    10 connections per host, and more threads than that would reconnect (and warn) constantly."""
    session = getattr(client, "_http", None)
    adapters = getattr(session, "adapters", None)
    if session is None or not adapters:
        return
    from requests.adapters import HTTPAdapter

    for prefix, adapter in list(adapters.items()):
        if isinstance(adapter, HTTPAdapter) and getattr(adapter, "_pool_maxsize", workers) < workers:
            session.mount(prefix, HTTPAdapter(pool_maxsize=workers, max_retries=adapter.max_retries))


def _info(blob: Any) -> ObjectInfo:
    return ObjectInfo(blob.name, int(blob.size or 0), blob.updated, blob.generation, blob.content_encoding)


def default_storage_client(project: str | None = None) -> Any:
    """Anonymous against STORAGE_EMULATOR_HOST when set, else Application Default Credentials."""
    import os

    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project or "local", credentials=AnonymousCredentials())
    return storage.Client(project=project)


def convert_gcs_prefix(
    uri: str,
    converter: InstanceConverter,
    accept: Accept | None = None,
    *,
    client: Any = None,
    workers: int = DEFAULT_WORKERS,
    on_fetch: Callable[[FetchRecord], None] | None = None,
) -> Iterator[InstanceOutcome]:
    """Like `convert_folder`, for a gs:// prefix."""
    yield from GcsDicomSource(uri, client, workers=workers, on_fetch=on_fetch).outcomes(converter, accept)
