"""Converting many local files on several cores, in order, in bounded memory.

Parsing and converting headers is CPU-bound Python, so threads do not help; worker processes do.
What crosses the process boundary is kept small: each worker returns the finished NDJSON line
(a str, cheap to pickle, where a nested row dict is not) and sends an instance's schema fields
only the first time that worker meets that exact schema, after which a short key stands for it.
Results come back in the order the paths were given, with at most `window` chunks in flight, so
memory does not grow with the number of files and the export stays deterministic.

Workers are started with "spawn": forking an Airflow task process that may hold threads (log
shippers, client pools) can deadlock, and spawn costs well under a second per worker.

Workers die with their parent: a task killed with SIGKILL (the OOM killer, `kill -9`, a lost
Airflow worker) cannot shut its pool down, and its workers would go on converting, holding memory
and files, for minutes. Each worker watches its parent's pid from a daemon thread and exits when
the parent is gone. (Linux's PR_SET_PDEATHSIG fires when the *thread* that started the worker
ends, which need not be the process's end: an export run from a pool thread could lose its
workers mid-run, so it is not used.) multiprocessing's resource tracker exits by itself once the
parent and every worker are gone: it ends when the last holder of its pipe does.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_dicom.dicom.outcomes import OK, Accept, InstanceOutcome, failure

if TYPE_CHECKING:
    from airflow_provider_dicom.dicom.schema import Field

CHUNK = 128  # files per task: fewer messages and wake-ups for the parent (~1 MB of lines each)
PARENT_CHECK_SECONDS = 0.5  # how often a worker checks that its parent is alive


@dataclass(slots=True)
class LineOutcome:
    """An instance's outcome with its row already serialised: what the export writes to NDJSON."""

    path: str
    status: str
    reason: str | None = None
    line: str | None = None
    fields: tuple[Field, ...] | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None


# The line format every export has written: compact, UTF-8 text as is, NaN and infinity refused.
_json_line = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
# orjson writes the same bytes for JSON's own types (str, int, float, bool, None, list, dict, and
# their subclasses) about 8x faster, except in three places where its output is told apart below:
# floats under 1e-4 in magnitude (orjson: 0.00001, 1e-7; Python: 1e-05, 1e-07), NaN and infinity
# (orjson writes null, the line format refuses them), and what it cannot encode (integers beyond
# 64 bits, lone surrogates, other types), where it raises. Dates and dataclasses, which orjson
# would encode and the line format refuses, are passed through so that it raises for them too.
try:
    import orjson
except ImportError:  # an environment installed before orjson became a dependency: same lines, slower
    orjson = None  # type: ignore[assignment]
_ORJSON_OPTIONS = 0 if orjson is None else orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_NUMBER_BYTES = frozenset(b"0123456789.-")
_VALUE_STARTS = frozenset(b":,[")  # what precedes a value in compact JSON (not inside a string)


def encode_row(row: dict[str, Any], *, float_free: bool = False) -> str:
    """A row as its NDJSON line, byte for byte what `_json_line` writes (and raising where it
    raises): orjson's output, unless it holds one of the values where the two differ, which the
    standard encoder then writes. Looking for those in the output costs three byte searches,
    spared when the caller knows the row holds no float (`float_free`, ConvertedInstance's): of
    the values orjson writes, only floats (NaN and infinity among them) differ, the rest raise."""
    if orjson is None:
        return _json_line(row)
    try:
        data = orjson.dumps(row, option=_ORJSON_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: the standard encoder gives its own answer
        return _json_line(row)
    if not float_free and _may_differ(data):
        return _json_line(row)
    return data.decode()


def _may_differ(data: bytes) -> bool:
    """Whether orjson's `data` may hold a float under 1e-4 or a null (NaN, infinity or None):
    a number token holding "0.0000" or "e-", or a null value. The same bytes inside a string
    (text such as "1.0e-6") only cost a needless second encoding."""
    at = data.find(b"0.0000")
    while at != -1:
        if data[at - 1] in _VALUE_STARTS or (data[at - 1] == 0x2D and data[at - 2] in _VALUE_STARTS):
            return True
        at = data.find(b"0.0000", at + 6)
    at = data.find(b"e-")
    while at != -1:
        start = at
        while data[start - 1] in _NUMBER_BYTES:
            start -= 1
        if start < at and data[start - 1] in _VALUE_STARTS:
            return True
        at = data.find(b"e-", at + 2)
    at = data.find(b"null")
    while at != -1:
        if data[at - 1] in _VALUE_STARTS:
            return True
        at = data.find(b"null", at + 4)
    return False


def to_line(outcome: InstanceOutcome) -> LineOutcome:
    """Serialise an in-process outcome the way workers do; a row that does not serialise is that
    instance's failure (outcomes.failure), like any other exception about one instance."""
    converted = outcome.converted
    if outcome.status != OK or converted is None:
        return LineOutcome(outcome.path, outcome.status, outcome.reason)
    try:
        line = encode_row(converted.row, float_free=converted.float_free)
    except Exception as exc:  # noqa: BLE001 - one bad instance must not end the export
        failed = failure(outcome.path, exc, "conversion failed")
        return LineOutcome(failed.path, failed.status, failed.reason)
    return LineOutcome(
        outcome.path, OK, None, line, converted.fields,
        converted.study_uid, converted.series_uid, converted.sop_uid,
    )


def resolve_processes(processes: int | str | None) -> int:
    """`None`/1: in this process; "auto": one per available core; N: N workers (validated)."""
    if processes is None:
        return 1
    if processes == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be a positive integer or 'auto', got {processes!r}")
    return processes


def convert_files(
    paths: Iterable[str | os.PathLike],
    *,
    schema: str = "flattened",
    accept: Accept | None = None,
    processes: int | str | None = 1,
    window: int | None = None,
) -> Iterator[LineOutcome]:
    """Convert files to NDJSON lines, in the given order, on `processes` cores.

    `accept` (a filter) must be picklable when `processes` > 1: it is sent once to each worker."""
    workers = resolve_processes(processes)
    if workers == 1:
        yield from _convert_here(paths, schema, accept)
        return
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    in_flight: deque[Future] = deque()
    limit = window or workers * 4
    fields_by_key: dict[Any, tuple[Field, ...]] = {}
    initargs = (schema, accept, os.getpid())
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=initargs)
    with pool:
        for chunk in _chunks(paths, CHUNK):
            in_flight.append(pool.submit(_convert_chunk, chunk))
            if len(in_flight) >= limit:
                yield from _unpack(in_flight.popleft().result(), fields_by_key)
        while in_flight:
            yield from _unpack(in_flight.popleft().result(), fields_by_key)


def _convert_here(paths: Iterable[str | os.PathLike], schema: str, accept: Accept | None) -> Iterator[LineOutcome]:
    from airflow_provider_dicom.dicom.convert import InstanceConverter
    from airflow_provider_dicom.sources.folder import convert_file

    converter = InstanceConverter(schema=schema)
    for path in paths:
        yield to_line(convert_file(path, converter, accept))


def _chunks(items: Iterable, size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(os.fspath(item))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _unpack(results: list[tuple], fields_by_key: dict[Any, tuple[Field, ...]]) -> Iterator[LineOutcome]:
    for path, status, reason, line, key, fields, study, series, sop in results:
        if fields is not None:
            fields_by_key[key] = fields
        yield LineOutcome(
            path, status, reason, line, fields_by_key.get(key) if key is not None else None, study, series, sop
        )


# -- worker side ---------------------------------------------------------------------------------

_worker: dict[str, Any] = {}


def _init_worker(schema: str, accept: Accept | None, parent_pid: int | None = None) -> None:
    from airflow_provider_dicom.dicom.convert import InstanceConverter

    if parent_pid is not None:
        watch = threading.Thread(
            target=_exit_with_parent, args=(parent_pid,), name="dicom-parent-watch", daemon=True
        )
        watch.start()
    _worker["converter"] = InstanceConverter(schema=schema)
    _worker["accept"] = accept
    _worker["keys"] = {}


def _exit_with_parent(parent_pid: int) -> None:
    """End this worker as soon as the process that started it is gone (see the module docstring).

    An orphan is re-parented (to init, or to a subreaper), so its parent pid changes; comparing
    with the pid the parent gave also covers a parent that died before this thread started."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)


def _convert_chunk(paths: Sequence[str]) -> list[tuple]:
    from airflow_provider_dicom.sources.folder import convert_file

    converter = _worker["converter"]
    accept = _worker["accept"]
    keys: dict[tuple, Any] = _worker["keys"]
    out = []
    for path in paths:
        outcome = to_line(convert_file(path, converter, accept))
        key = fields = None
        if outcome.fields is not None:
            key = keys.get(outcome.fields)
            if key is None:
                key = keys[outcome.fields] = (os.getpid(), len(keys))
                fields = outcome.fields
        out.append((
            outcome.path, outcome.status, outcome.reason, outcome.line, key, fields,
            outcome.study_uid, outcome.series_uid, outcome.sop_uid,
        ))
    return out
