"""Which Cloud Healthcare export a task instance started, kept across its tries.

A retried or resumed export task must reattach to the operation its earlier try started: starting
a second `dicomStores.export` of the same run doubles the rows with WRITE_APPEND, races the first
one with WRITE_TRUNCATE, and leaves an orphan either way. The task therefore needs to remember the
operation's name somewhere that survives the end of a try:

- XCom does not: Airflow clears a task instance's XComs when its next try starts (verified on
  Airflow 3.3 under `dag.test()`; Airflow 2 does the same in `_run_raw_task`).
- Airflow 3.3's task state store (`context["task_state_store"]`) does: it is scoped to
  (dag, run, task, map index), kept across tries and deferrals, and outlives the task's success
  unless `[state_store] clear_on_success` is set. The ledger writes the name there *before*
  waiting on the operation, and removes it once the task has consumed the operation's outcome,
  so a later clear of a finished task exports afresh rather than replaying the old result.

Each entry carries a fingerprint of the request (store and request body): a retry whose rendered
arguments differ (the DAG changed between tries) starts its own export instead of adopting an
operation that writes somewhere else. It also carries the try that wrote it: the task state store
survives a clear, so an entry written before the task was cleared (by a try older than the
current try lineage's first, see `try_lineage`) is not adopted; a clear exports again.

Without a task state store (Airflow before 3.3) the ledger keeps its entry in an Airflow Variable
scoped to the task instance instead (`variable_state_store`): the same lifecycle, so a retry after
the operation finished reuses its outcome there too rather than exporting again. Only a context
that names no task instance leaves the ledger without a store (`durable` False): nothing is kept,
and such a call exports as a first try does.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

LEDGER_KEY = "dicom_export_operation"


def request_fingerprint(store: str, body: Mapping[str, Any]) -> str:
    """A short, stable digest of what an export does: same store and body, same fingerprint."""
    canonical = json.dumps({"store": store, "body": body}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class LedgerEntry:
    """An operation a try started, or (`operation` None) an export request a try was sending at
    `sent_at` (RFC 3339) whose operation it never recorded: killed mid-request, say."""

    operation: str | None
    fingerprint: str
    try_number: int | None = None  # the try that wrote the entry; None from older versions
    sent_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"operation": self.operation, "fingerprint": self.fingerprint}
        if self.try_number is not None:
            data["try_number"] = self.try_number
        if self.sent_at is not None:
            data["sent_at"] = self.sent_at
        return data

    @classmethod
    def from_json(cls, value: Any) -> LedgerEntry | None:
        if not isinstance(value, Mapping):
            return None
        operation, sent_at = value.get("operation"), value.get("sent_at")
        if not isinstance(operation, str) and not isinstance(sent_at, str):
            return None
        try_number = value.get("try_number")
        return cls(
            operation if isinstance(operation, str) else None,
            str(value.get("fingerprint") or ""),
            try_number if isinstance(try_number, int) and not isinstance(try_number, bool) else None,
            sent_at if isinstance(sent_at, str) else None,
        )


class OperationLedger:
    """The task instance's record of the export operation it started, in the task state store.

    :param context: the task's context; its ``task_state_store`` is used when present (Airflow
        >= 3.3), else a Variable scoped to its task instance.
    :param key: the state key; one key per operator, so two export tasks never share an entry.
    """

    def __init__(self, context: Mapping[str, Any] | None, key: str = LEDGER_KEY) -> None:
        from airflow_provider_dicom.utils.try_lineage import TryLineage
        from airflow_provider_dicom.utils.variable_state_store import VariableStateStore

        self._store = context.get("task_state_store") if context else None
        self.store_name = "task state store"
        if self._store is None:
            self._store = VariableStateStore.for_context(context)
            self.store_name = "Airflow Variables"
        self.key = key
        self.lineage = TryLineage.from_context(context)

    @property
    def durable(self) -> bool:
        """True when entries survive the end of a try: always, unless the context names no task
        instance (then there is nowhere to keep them)."""
        return self._store is not None

    def recall(self) -> LedgerEntry | None:
        """The entry an earlier try left, if any. Read errors propagate: guessing "none" could
        start a duplicate export, failing the try (to be retried) cannot."""
        if self._store is None:
            return None
        entry = LedgerEntry.from_json(self._store.get(self.key))
        if entry is not None and not self.lineage.includes(entry.try_number):
            log.info(
                "Operation %s was started by try %d, before this task was cleared (this run of it "
                "began with try %d): a clear exports again, so it is not adopted",
                entry.operation or f"(sent at {entry.sent_at})",
                entry.try_number,
                self.lineage.first_try,
            )
            return None
        return entry

    def remember_sending(self, fingerprint: str, sent_at: str) -> bool:
        """Record, before the export request goes out, that this try is sending it: if the try
        dies before `remember`, a retry looks for the operation the request may have started
        instead of sending another (see `DicomStoreExportBase`). Best effort, as `remember`."""
        return self._set(LedgerEntry(None, fingerprint, self.lineage.try_number, sent_at), "the export request")

    def remember(self, operation: str, fingerprint: str) -> bool:
        """Record the operation just started; returns False (and logs) if the store refused it.

        The export is already running by then, so a failing store must not fail the task: the
        only cost is that a retry of this try could not reattach.
        """
        return self._set(LedgerEntry(operation, fingerprint, self.lineage.try_number), f"operation {operation}")

    def _set(self, entry: LedgerEntry, what: str) -> bool:
        if self._store is None:
            return False
        try:
            self._store.set(self.key, entry.to_json())
        except Exception as exc:  # noqa: BLE001 - see remember's docstring
            log.warning(
                "Could not record %s in the %s (%s); a retry of this try will not be able to "
                "reattach to it",
                what,
                self.store_name,
                exc,
            )
            return False
        return True

    def forget(self) -> None:
        """Drop the entry once the task has consumed the operation's outcome (best effort)."""
        if self._store is None:
            return
        try:
            self._store.delete(self.key)
        except Exception as exc:  # noqa: BLE001 - a stale entry only matters to a later clear
            log.warning("Could not remove operation record %r from the %s: %s", self.key, self.store_name, exc)
