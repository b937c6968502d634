"""The emulator's in-memory world: datasets, DICOM stores with their instances, and operations.

One lock guards it all; HTTP handler threads and export threads take it for short, bounded
sections and never while doing I/O. Instances keep their Part 10 bytes (exports write those to
Cloud Storage and convert them for BigQuery) and their three UIDs; DICOM JSON metadata is
computed when asked for.
"""

from __future__ import annotations

import itertools
import random
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_provider_dicom.healthcare.operations import OPERATION_METADATA_TYPE


def now() -> datetime:
    return datetime.now(timezone.utc)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class StoredInstance:
    study: str
    series: str
    sop: str
    sop_class: str | None
    data: bytes
    stored_at: datetime


@dataclass
class DicomStore:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    instances: dict[tuple[str, str, str], StoredInstance] = field(default_factory=dict)

    def to_api(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name}
        if self.labels:
            body["labels"] = dict(self.labels)
        return body


@dataclass
class Dataset:
    name: str
    time_zone: str | None = None
    stores: dict[str, DicomStore] = field(default_factory=dict)

    def to_api(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name}
        if self.time_zone:
            body["timeZone"] = self.time_zone
        return body


@dataclass
class Operation:
    """A long-running operation as the API reports it; counters move while an export runs."""

    name: str
    api_method_name: str
    create_time: datetime
    logs_url: str
    end_time: datetime | None = None
    done: bool = False
    error: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    success: int = 0
    failure: int = 0
    pending: int = 0
    cancel_requested: bool = False
    # Per-instance errors, as Cloud Logging would hold them (UIDs and reasons, no PHI).
    log_entries: list[dict[str, Any]] = field(default_factory=list)
    counted: bool = False  # whether the operation reports a counter (exports do)
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    def to_api(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "@type": OPERATION_METADATA_TYPE,
            "apiMethodName": self.api_method_name,
            "createTime": rfc3339(self.create_time),
            "logsUrl": self.logs_url,
        }
        if self.end_time is not None:
            metadata["endTime"] = rfc3339(self.end_time)
        if self.cancel_requested:
            metadata["cancelRequested"] = True
        if self.counted:
            # int64 fields travel as JSON strings; zero counters are omitted, as proto3 JSON does.
            counter = {k: str(v) for k, v in (("success", self.success), ("failure", self.failure),
                                             ("pending", self.pending)) if v}
            metadata["counter"] = counter
        body: dict[str, Any] = {"name": self.name, "metadata": metadata}
        if self.done:
            body["done"] = True
            if self.error is not None:
                body["error"] = dict(self.error)
            elif self.response is not None:
                body["response"] = dict(self.response)
        return body


class EmulatorState:
    """Everything the emulator holds. Call methods with `lock` held where they say so."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.datasets: dict[str, Dataset] = {}
        self.operations: dict[str, Operation] = {}
        # Google's operation ids are long decimal numbers; a random start keeps two emulator
        # runs from handing out the same names.
        self._ids = itertools.count(random.randrange(10**17, 9 * 10**17))

    def reset(self) -> None:
        with self.lock:
            self.datasets.clear()
            self.operations.clear()

    def new_operation(self, dataset: str, method: str, logs_url_base: str) -> Operation:
        with self.lock:
            op_id = str(next(self._ids))
            name = f"{dataset}/operations/{op_id}"
            operation = Operation(name, method, now(), f"{logs_url_base.rstrip('/')}/emulator/logs/{name}")
            self.operations[name] = operation
            return operation

    def dataset_operations(self, dataset: str) -> list[Operation]:
        with self.lock:
            prefix = f"{dataset}/operations/"
            return [op for name, op in self.operations.items() if name.startswith(prefix)]
