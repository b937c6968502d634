"""Cloud Healthcare long-running operations (LROs), as plain data the hook, trigger, sensor and operators share.

The API returns an `Operation` JSON object whose int64 counters arrive as JSON strings and whose
parts (metadata, counter, error, response) may each be absent. Parsing it once, here, gives every
caller the same answers to "is it finished, did it work, how many instances failed" and keeps
that logic free of Airflow and Google client imports, so DAG files and the triggerer can use it
cheaply. An operation's name says which dataset it belongs to; `operations.list` is per dataset.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from airflow_provider_dicom.utils.errors import DicomProviderError

EXPORT_DICOM_DATA_METHOD = "google.cloud.healthcare.v1.dicom.DicomService.ExportDicomData"
OPERATION_METADATA_TYPE = "type.googleapis.com/google.cloud.healthcare.v1.OperationMetadata"
EXPORT_RESPONSE_TYPE = "type.googleapis.com/google.cloud.healthcare.v1.dicom.ExportDicomDataResponse"

# google.rpc.Code values that matter to callers.
CODE_OK = 0
CODE_CANCELLED = 1

RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"

_OPERATION_NAME = re.compile(
    r"^projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/datasets/(?P<dataset>[^/]+)"
    r"/operations/(?P<operation>[^/]+)$"
)
_DATASET_NAME = re.compile(r"^projects/[^/]+/locations/[^/]+/datasets/[^/]+$")

# HTTP statuses worth retrying: 429 and 503 mean the server did not do the work; the other 5xx
# may mean it did, which only matters for calls that are not idempotent.
RETRY_ALWAYS_STATUSES = frozenset({429, 503})
RETRY_IF_IDEMPOTENT_STATUSES = frozenset({500, 502, 504})

# How far the server's clock (an operation's createTime) may be behind ours when looking for the
# operation an export request started although its answer was lost. Wider errs towards "several
# candidates" (nothing is started, the task fails for a person to look) rather than missing our
# own and exporting twice.
CLOCK_SKEW = timedelta(seconds=30)


class HealthcareApiError(DicomProviderError, RuntimeError):
    """A Cloud Healthcare API call answered with an HTTP error.

    `status_code` is the HTTP status, `status` Google's canonical name (NOT_FOUND, ...) when the
    body carried one, `api_message` the server's message. The string names the call and resource.
    """

    def __init__(self, what: str, status_code: int, status: str | None, api_message: str) -> None:
        self.what = what
        self.status_code = status_code
        self.status = status
        self.api_message = api_message
        label = f"{status_code} {status}" if status else str(status_code)
        super().__init__(f"{what} failed: HTTP {label}: {api_message}")

    @property
    def transient(self) -> bool:
        """True when trying the same call later may succeed (throttling, server trouble)."""
        return self.status_code in RETRY_ALWAYS_STATUSES or self.status_code in RETRY_IF_IDEMPOTENT_STATUSES


class ExportOutcomeUnknownError(DicomProviderError, RuntimeError):
    """A `dicomStores.export` request may or may not have started an export, and looking at the
    dataset's operations could not settle which (several candidates). Starting another export
    could double the rows, so nothing is started; a person must look at the listed operations."""

    def __init__(self, message: str, candidates: list[str]) -> None:
        self.candidates = candidates
        super().__init__(message)


class OperationTimeoutError(DicomProviderError, TimeoutError):
    """Waiting for an operation took longer than allowed; the operation itself may still be running."""

    def __init__(self, name: str, timeout: float, last: OperationStatus | None) -> None:
        self.name = name
        self.last = last
        progress = f" (last seen: {last.describe()})" if last is not None else ""
        super().__init__(f"operation {name} did not finish within {timeout:g} s{progress}")


class OperationFailedError(DicomProviderError, RuntimeError):
    """The operation finished with an error, was cancelled, or failed more instances than tolerated."""

    def __init__(self, message: str, status: OperationStatus) -> None:
        self.status = status
        super().__init__(message)


def is_transient_error(exc: BaseException) -> bool:
    """Whether an error from polling an operation is worth riding out (network trouble, 429, 5xx)."""
    if isinstance(exc, HealthcareApiError):
        return exc.transient
    # Socket errors are OSErrors (ConnectionError, TimeoutError); httplib2's own errors
    # (ServerNotFoundError, ...) are checked by module so this file needs no httplib2 import.
    return isinstance(exc, OSError) or type(exc).__module__.split(".")[0] == "httplib2"


@dataclass(frozen=True)
class OperationName:
    project: str
    location: str
    dataset: str
    operation_id: str

    @classmethod
    def parse(cls, name: str) -> OperationName:
        match = _OPERATION_NAME.match(name) if isinstance(name, str) else None
        if not match:
            raise ValueError(
                f"invalid operation name {name!r}: expected "
                "projects/PROJECT/locations/LOCATION/datasets/DATASET/operations/OPERATION_ID"
            )
        return cls(match["project"], match["location"], match["dataset"], match["operation"])

    @property
    def dataset_name(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/datasets/{self.dataset}"

    def __str__(self) -> str:
        return f"{self.dataset_name}/operations/{self.operation_id}"


def check_dataset_name(name: str) -> str:
    if not isinstance(name, str) or not _DATASET_NAME.match(name):
        raise ValueError(
            f"invalid dataset name {name!r}: expected projects/PROJECT/locations/LOCATION/datasets/DATASET"
        )
    return name


def _count(value: Any) -> int:
    """int64 counters arrive as JSON strings ("12"); tolerate numbers and absence too."""
    if value is None or value == "":
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"operation counter {value!r} is not an integer") from None


def parse_timestamp(value: str | None) -> datetime | None:
    """RFC 3339 timestamps as the API writes them ("2024-05-01T10:00:00.123456789Z")."""
    if not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python parses at most microseconds: cut nanosecond fractions down to six digits.
    match = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", text)
    if match and match[2] and len(match[2]) > 7:
        text = match[1] + match[2][:7] + match[3]
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class OperationStatus:
    """The parts of an Operation that decide what a task does next, with counters as ints.

    `response` and `metadata` are kept as received so nothing the API adds later is lost.
    """

    name: str
    done: bool = False
    error_code: int | None = None
    error_message: str | None = None
    success: int = 0
    failure: int = 0
    pending: int = 0
    secondary_success: int = 0
    secondary_failure: int = 0
    api_method_name: str | None = None
    create_time: str | None = None
    end_time: str | None = None
    logs_url: str | None = None
    cancel_requested: bool = False
    response: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_api(cls, operation: dict[str, Any]) -> OperationStatus:
        if not isinstance(operation, dict) or not operation.get("name"):
            raise ValueError(f"not an Operation: {operation!r:.200}")
        metadata = operation.get("metadata") or {}
        counter = metadata.get("counter") or {}
        error = operation.get("error")
        return cls(
            name=operation["name"],
            done=bool(operation.get("done", False)),
            error_code=int(error.get("code", 0)) if isinstance(error, dict) else None,
            error_message=(error.get("message") or "") if isinstance(error, dict) else None,
            success=_count(counter.get("success")),
            failure=_count(counter.get("failure")),
            pending=_count(counter.get("pending")),
            secondary_success=_count(counter.get("secondarySuccess")),
            secondary_failure=_count(counter.get("secondaryFailure")),
            api_method_name=metadata.get("apiMethodName"),
            create_time=metadata.get("createTime"),
            end_time=metadata.get("endTime"),
            logs_url=metadata.get("logsUrl"),
            cancel_requested=bool(metadata.get("cancelRequested", False)),
            response=operation.get("response"),
            metadata=dict(metadata),
        )

    @property
    def operation_name(self) -> OperationName | None:
        try:
            return OperationName.parse(self.name)
        except ValueError:
            return None

    @property
    def failed(self) -> bool:
        """Finished with an error (cancellation included)."""
        return self.done and self.error_code is not None and self.error_code != CODE_OK

    @property
    def cancelled(self) -> bool:
        return self.done and self.error_code == CODE_CANCELLED

    @property
    def succeeded(self) -> bool:
        """Finished without an error; some instances may still have failed (see `failure`)."""
        return self.done and not self.failed

    @property
    def state(self) -> str:
        if not self.done:
            return RUNNING
        if self.cancelled:
            return CANCELLED
        return FAILED if self.failed else SUCCEEDED

    @property
    def created_at(self) -> datetime | None:
        return parse_timestamp(self.create_time)

    @property
    def ended_at(self) -> datetime | None:
        return parse_timestamp(self.end_time)

    def describe(self) -> str:
        """One log line: state and counters (never instance content, so never PHI)."""
        text = (
            f"{self.state}: {self.success} succeeded, {self.failure} failed, {self.pending} pending"
        )
        if self.failed:
            text += f"; error {self.error_code}: {self.error_message}"
        return text

    def check(self, max_failed_instances: int | None = 0) -> None:
        """Raise OperationFailedError when the operation failed, was cancelled, or reported more
        failed instances than `max_failed_instances` (None: any number is tolerated).

        The message carries the counts and the logs link, where the API writes per-instance errors.
        """
        logs = f" Details: {self.logs_url}" if self.logs_url else ""
        if not self.done:
            raise ValueError(f"operation {self.name} has not finished")
        if self.cancelled:
            raise OperationFailedError(
                f"operation {self.name} was cancelled ({self.success} instances succeeded, "
                f"{self.failure} failed before it stopped).{logs}", self,
            )
        if self.failed:
            raise OperationFailedError(
                f"operation {self.name} failed with error {self.error_code}: {self.error_message} "
                f"({self.success} succeeded, {self.failure} failed).{logs}", self,
            )
        if max_failed_instances is not None and self.failure > max_failed_instances:
            noun = "instance" if self.failure == 1 else "instances"
            raise OperationFailedError(
                f"operation {self.name} finished but {self.failure} {noun} failed to export "
                f"(max_failed_instances={max_failed_instances}); {self.success} succeeded.{logs}", self,
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary for XCom and trigger events."""
        data = asdict(self)
        data["state"] = self.state
        return data
