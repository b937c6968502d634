"""What every export from a source we read ourselves reports, whatever it writes.

The BigQuery export and the copy to Cloud Storage read instances the same way, so they account
for them the same way: each instance is done, failed (with a reason), not DICOM, filtered out, or
a duplicate of an instance already done. Lists are capped in XCom; counts are always complete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

XCOM_MAX_LISTED = 1_000  # failures and duplicates listed in XCom; the counts are always complete


@dataclass(kw_only=True)
class SourceCounts:
    failures: list[tuple[str, str]] = field(default_factory=list)
    not_dicom_count: int = 0
    filtered_out_count: int = 0
    # Files whose SOPInstanceUID an earlier file already had: a DICOM store holds one instance per
    # UID, so an export keeps the first and lists the others here.
    duplicates: list[str] = field(default_factory=list)
    duplicate_count: int = 0
    # Known up front for folders (one cheap directory walk), so progress can say how much is left.
    files_total: int | None = None

    @property
    def done_count(self) -> int:
        raise NotImplementedError

    @property
    def failure_count(self) -> int:
        return len(self.failures)

    @property
    def files_seen(self) -> int:
        return (
            self.done_count + self.failure_count + self.not_dicom_count + self.filtered_out_count
            + self.duplicate_count
        )

    def add_duplicate(self, path: str, sop_uid: str | None) -> None:
        self.duplicate_count += 1
        if len(self.duplicates) < XCOM_MAX_LISTED:
            self.duplicates.append(path)
        log.warning("Not exporting %s: SOPInstanceUID %s came already from another file", path, sop_uid)

    def count_not_done(self, status: str, path: str, reason: str | None) -> None:
        """Account for an instance that is not exported: not DICOM, filtered out or failed."""
        if status == "not_dicom":
            self.not_dicom_count += 1
        elif status == "filtered":
            self.filtered_out_count += 1
        else:
            self.failures.append((path, reason or "unknown error"))
            log.warning("Skipping %s: %s", path, reason or "unknown error")

    def counts_dict(self) -> dict[str, Any]:
        return {
            "failure_count": self.failure_count,
            "failures": [{"path": path, "reason": reason} for path, reason in self.failures[:XCOM_MAX_LISTED]],
            "failures_truncated": self.failure_count > XCOM_MAX_LISTED,
            "not_dicom_count": self.not_dicom_count,
            "filtered_out_count": self.filtered_out_count,
            "duplicate_count": self.duplicate_count,
            "duplicates": self.duplicates[:XCOM_MAX_LISTED],
        }
