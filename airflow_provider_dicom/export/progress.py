"""Progress of a long export, as one line at a steady cadence: done, rate, time left, failures.

A nightly export of a million instances runs for hours; the task log should show it move without
a line per file. Counts and rates only, never instance content.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from airflow_provider_dicom.utils.text import counted


def describe(result: Any, elapsed: float) -> str:
    """`result` is a running ExportResult; `elapsed` the seconds since the export started."""
    seen = result.files_seen
    total = getattr(result, "files_total", None)
    rate = seen / elapsed if elapsed > 0 else 0.0
    done = f"{seen:,} of {counted(total, 'file')} ({100.0 * seen / total:.0f}%)" if total else counted(seen, "file")
    parts = [f"read {done}", f"{rate:,.0f} files/s"]
    if total and rate > 0 and seen < total:
        parts.append(f"about {_duration((total - seen) / rate)} left")
    exported = getattr(result, "instances_exported", None)
    done_part = f"{exported:,} to export" if exported is not None else f"{result.instances_copied:,} copied"
    parts.append(f"{done_part}, {result.failure_count:,} failed, {result.not_dicom_count:,} not DICOM")
    duplicates = getattr(result, "duplicate_count", 0)
    if duplicates:
        parts.append(f"{duplicates:,} duplicates")
    if result.filtered_out_count:
        parts.append(f"{result.filtered_out_count:,} filtered out")
    return ", ".join(parts)


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class ProgressReporter:
    """Called after every instance; emits `describe()` at most every `interval` seconds."""

    def __init__(self, emit: Callable[[str], None], interval: float, clock: Callable[[], float] = time.monotonic):
        self.emit = emit
        self.interval = interval
        self.clock = clock
        self._start = clock()
        self._last = self._start

    def __call__(self, result: Any) -> None:
        now = self.clock()
        if now - self._last >= self.interval:
            self._last = now
            self.emit(describe(result, now - self._start))
