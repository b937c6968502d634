"""What a retry is and what a clear is, for tasks that start remote work (exports, load jobs).

- A **retry** (Airflow retrying a failed try, a try resumed after deferral, a try after the
  worker was killed) continues the same *try lineage*: it reattaches to the operation or load job
  an earlier try of the lineage started, reuses its result if it succeeded, and starts anew only
  if it failed.
- A **clear** (`airflow tasks clear`, Clear in the UI) starts a new lineage: the task exports
  again, whatever earlier tries did.

Airflow 3.3's `ResumableJobMixin` keeps the remote job's id in the task state store, which is
scoped to (DAG run, task, map index) and which a clear does *not* reset (only
`[state_store] clear_on_success` removes it, and only when a try succeeds). On its own the mixin
therefore reattaches after a clear too. What a clear does change is the task instance's
`max_tries`: `clear_task_instances` sets it to `try_number + retries`, while a retry leaves it
alone. So the first try of the current lineage is `max_tries - retries + 1`: the same rule
Airflow's task runner uses to find a lineage's first reschedule
(`RuntimeTaskInstance.get_first_reschedule_date`). A record written by a try older than that is
from before the clear, and is not adopted.

Changing a task's `retries` between two tries of one lineage moves the computed start: the next
try then counts as a new lineage and exports again (it never adopts something it should not).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TryLineage:
    """The running try and the first try of its lineage (1 for a task never cleared)."""

    try_number: int
    first_try: int

    @classmethod
    def from_context(cls, context: Mapping[str, Any] | None) -> TryLineage:
        ti = context.get("ti") if context else None
        try_number = _int(getattr(ti, "try_number", None), 1)
        max_tries = _int(getattr(ti, "max_tries", None), None)
        task = (context or {}).get("task") or getattr(ti, "task", None)
        retries = _int(getattr(task, "retries", None), 0)
        if max_tries is None:
            return cls(try_number, 1)
        first = max_tries - retries + 1
        # A try number outside [first, ...] means the numbers do not tell (e.g. retries changed):
        # treat this try as the start of its own lineage rather than adopt an older record.
        if not 1 <= first <= try_number:
            first = try_number
        return cls(try_number, first)

    def includes(self, try_number: int | None) -> bool:
        """Whether a record written by `try_number` belongs to this lineage (None: an older
        provider wrote it without one; it is kept, as before)."""
        return try_number is None or self.first_try <= try_number <= self.try_number


def _int(value: Any, default: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return value


_NOT_JOB_ID = re.compile(r"[^A-Za-z0-9_-]+")
MAX_READABLE = 120


def load_job_base_id(context: Mapping[str, Any], lineage: TryLineage, prefix: str = "dicom_export_") -> str:
    """The BigQuery load job id of this task's lineage: the same on every retry, new after a clear.

    The job's id names the DAG, task and run readably (letters, digits, `_`, `-` only, as
    BigQuery requires) and ends with a digest of the exact (dag, run, task, map index), so two
    runs or mapped tasks never share one; `_l<first try>` tells lineages apart.
    """
    ti = context.get("ti")
    dag_id = str(getattr(ti, "dag_id", "") or "")
    task_id = str(getattr(ti, "task_id", "") or "")
    run_id = str(getattr(ti, "run_id", "") or "")
    map_index = getattr(ti, "map_index", -1)
    digest = hashlib.sha256(f"{dag_id}\0{run_id}\0{task_id}\0{map_index}".encode()).hexdigest()[:16]
    readable = _NOT_JOB_ID.sub("_", f"{dag_id}_{task_id}")[:MAX_READABLE]
    return f"{prefix}{readable}_{digest}_l{lineage.first_try}"



def is_stale_resumption(
    context: Mapping[str, Any] | None, event: Mapping[str, Any] | None, warn: Callable[..., object] | None = None
) -> bool:
    """True when a later try runs the resume method with an earlier try's trigger event.

    A resumption after deferral runs in the try that deferred, and our triggers put that try's
    number in their event (`deferred_by_try`). Airflow 3.0 to 3.1.0 (Cloud Composer's 3.1.0 image
    among them) do not clear a task instance's `next_method` when a resumed try fails, so its
    retry skips `execute` and replays the failed try's event (apache/airflow#56704, fixed in
    3.1.1): every retry of a failed poll would fail the same way. A resume method that sees this
    starts the try from `execute` instead; `warn` (a logger's warning method) says so.
    """
    deferred_by_try = event.get("deferred_by_try") if isinstance(event, Mapping) else None
    if isinstance(deferred_by_try, bool) or not isinstance(deferred_by_try, int):
        return False  # an event of a trigger that did not say
    try_number = TryLineage.from_context(context).try_number
    if try_number <= deferred_by_try:
        return False
    if warn is not None:
        warn(
            "Try %d was handed the trigger event of try %d (an Airflow before 3.1.1 bug, "
            "apache/airflow#56704): starting this try from execute instead",
            try_number,
            deferred_by_try,
        )
    return True
