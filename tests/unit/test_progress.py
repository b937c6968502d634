"""Progress lines: what a user reading the task log of a long export sees."""

from __future__ import annotations

from airflow_provider_dicom.export.bigquery import ExportResult
from airflow_provider_dicom.export.progress import ProgressReporter, describe


def _result(exported=0, failed=0, not_dicom=0, total=None, duplicates=0):
    result = ExportResult("bq://my-project.d.t", "WRITE_EMPTY", instances_exported=exported)
    result.failures = [("/x", "broken")] * failed
    result.not_dicom_count = not_dicom
    result.files_total = total
    result.duplicate_count = duplicates
    return result


def test_known_total_gives_share_rate_and_time_left():
    line = describe(_result(exported=900, failed=50, not_dicom=50, total=4000), elapsed=10.0)
    assert line.startswith("read 1,000 of 4,000 files (25%), 100 files/s, about 0m30s left")
    assert "900 to export, 50 failed, 50 not DICOM" in line


def test_unknown_total_gives_counts_and_rate_only():
    line = describe(_result(exported=3600, duplicates=2), elapsed=3600.0)
    assert line == "read 3,602 files, 1 files/s, 3,600 to export, 0 failed, 0 not DICOM, 2 duplicates"


def test_long_exports_count_hours():
    assert "about 2h46m left" in describe(_result(exported=1000, total=1_000_000), elapsed=10.0)


def test_reporter_emits_at_its_cadence_only():
    now = [0.0]
    lines = []
    report = ProgressReporter(lines.append, interval=30.0, clock=lambda: now[0])
    for second in range(0, 100):
        now[0] = float(second)
        report(_result(exported=second, total=100))
    assert len(lines) == 3  # at 30, 60 and 90 seconds
    assert lines[0].startswith("read 30 of 100 files (30%)")


def test_one_file_is_one_file():
    """Issue 14: counts never read "1 files"."""
    assert describe(_result(not_dicom=1), elapsed=0.0).startswith("read 1 file, ")
    assert describe(_result(exported=1, total=1), elapsed=1.0).startswith("read 1 of 1 file (100%)")
