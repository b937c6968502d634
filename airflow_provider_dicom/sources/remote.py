"""What the remote sources (gs:// prefixes, DICOMweb servers) share: bounded, ordered concurrency.

Remote reads are latency bound: one request waits tens of milliseconds for a few kilobytes. Many
requests in flight hide that latency, but an unbounded fan-out would hold every response in
memory and reorder the outcomes. `ordered_map` keeps a fixed number of calls in flight, pulls its
input lazily, and yields results in input order, so a million-object listing costs the memory of
`max_in_flight` results and an export's outcomes (and its log) come out in listing order.

Only I/O runs in the worker threads. Parsing and conversion stay in the consuming thread: pydicom's
validation mode and Python's warning filters are process-wide, and `quiet_pydicom()` switching
them from several threads at once could leave them switched.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from airflow_provider_dicom.utils.errors import DicomProviderError

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_WORKERS = 16


class RemoteReadError(DicomProviderError, OSError):
    """A remote read failed after the client's own retries; the message says what and why (no PHI)."""


def ordered_map(
    pool: ThreadPoolExecutor,
    fn: Callable[[T], R],
    items: Iterable[T],
    max_in_flight: int,
    *,
    warm_up: int = 0,
) -> Iterator[R]:
    """`map(fn, items)` run on `pool` with at most `max_in_flight` calls pending, in input order.

    The first `warm_up` items run one at a time: a source that learns from its first results
    (the GCS reader sizes its first range from the headers it has seen) gets to learn before the
    fan-out. An exception raised by `fn` is re-raised here when its turn comes; the calls still
    pending are cancelled when the consumer stops early.
    """
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
    pending: deque[Future[R]] = deque()
    iterator = iter(items)
    started = 0
    try:
        while True:
            limit = 1 if started < warm_up else max_in_flight
            while len(pending) < limit:
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                pending.append(pool.submit(fn, item))
                started += 1
            if not pending:
                return
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
