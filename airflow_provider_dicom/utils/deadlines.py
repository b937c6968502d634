"""How long any remote call may take: the one deadline policy for BigQuery, Cloud Storage,
DICOMweb and Cloud Healthcare calls.

Left to their defaults the client libraries wait far too long on a frozen or wrong server:
google-cloud-bigquery sends requests without a timeout and retries for 10 minutes in silence, a
resumable Cloud Storage upload can hang for minutes. Every call site passes what this module
builds instead, so a frozen service turns into an error that names the endpoint and what was
being done, within a bound the operator can change:

- ``AIRFLOW_DICOM_REQUEST_TIMEOUT`` (default 60 s): one HTTP request (connect + read).
- ``AIRFLOW_DICOM_RETRY_DEADLINE`` (default 180 s): all the retries of one call together. A
  request already in flight when it passes still runs to its own timeout, so one call ends
  within about deadline + request timeout.
- ``AIRFLOW_DICOM_JOB_TIMEOUT`` (default 6 h): how long a BigQuery job (a load may legitimately
  take long) is waited for; "still waiting on job X" is logged every minute meanwhile.

The values are read from the environment at each call, so a worker's environment (or a test)
changes them without code. Every retry is logged as a warning naming the attempt, the reason and
the endpoint. Nothing here imports a Google library at module import time.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from airflow_provider_dicom.utils.errors import DicomProviderError

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_ENV = "AIRFLOW_DICOM_REQUEST_TIMEOUT"
RETRY_DEADLINE_ENV = "AIRFLOW_DICOM_RETRY_DEADLINE"
JOB_TIMEOUT_ENV = "AIRFLOW_DICOM_JOB_TIMEOUT"
DEFAULT_REQUEST_TIMEOUT = 60.0
DEFAULT_RETRY_DEADLINE = 180.0
DEFAULT_JOB_TIMEOUT = 6 * 3600.0
STILL_WAITING_EVERY = 60.0  # seconds between "still waiting on job X" lines
MAX_JOB_POLL_INTERVAL = 10.0
# DICOMweb (connect, read): building a large series' metadata legitimately takes minutes.
DICOMWEB_TIMEOUT = (10.0, 300.0)


class RemoteCallError(DicomProviderError, RuntimeError):
    """A remote call got no usable answer within its deadline; the message names the endpoint and
    what was being done. Not an OSError on purpose: code that turns a file's OSError into that
    instance's failure must not mistake a frozen service for one bad file."""

    def __init__(self, message: str, *, what: str, endpoint: str) -> None:
        super().__init__(message)
        self.what = what
        self.endpoint = endpoint


@dataclass(frozen=True)
class Deadlines:
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    retry_deadline: float = DEFAULT_RETRY_DEADLINE
    job_timeout: float = DEFAULT_JOB_TIMEOUT

    @classmethod
    def current(cls) -> Deadlines:
        """The deadlines in force now: the environment's, else the defaults."""
        return cls(
            _seconds(REQUEST_TIMEOUT_ENV, DEFAULT_REQUEST_TIMEOUT),
            _seconds(RETRY_DEADLINE_ENV, DEFAULT_RETRY_DEADLINE),
            _seconds(JOB_TIMEOUT_ENV, DEFAULT_JOB_TIMEOUT),
        )


def _seconds(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise ValueError(f"invalid {name} {text!r}: expected a number of seconds > 0")
    return value


def request_timeout() -> float:
    """Seconds one HTTP request may take: pass as ``timeout=`` to every client call."""
    return Deadlines.current().request_timeout


def endpoint_of(client: Any, default: str = "") -> str:
    """The base URL a google-cloud client (or a blob/bucket/job holding one) talks to."""
    for holder in (client, getattr(client, "client", None), getattr(getattr(client, "bucket", None), "client", None),
                   getattr(client, "_client", None)):
        connection = getattr(holder, "_connection", None)
        url = getattr(connection, "API_BASE_URL", None)
        if isinstance(url, str) and url:
            return url
    return default or "the Google API endpoint"


def _retry(predicate: Callable[[Exception], bool], what: str, endpoint: str) -> Any:
    from google.api_core.retry import Retry

    deadline = Deadlines.current().retry_deadline
    attempts = [0]

    def on_error(exc: Exception) -> None:
        attempts[0] += 1
        log.warning(
            "%s at %s: attempt %d failed (%s); retrying until %g s have passed",
            what, endpoint, attempts[0], _reason(exc), deadline,
        )

    return Retry(predicate=predicate, initial=1.0, maximum=min(30.0, deadline / 4), timeout=deadline, on_error=on_error)


def bigquery_retry(what: str, endpoint: str) -> Any:
    """google-cloud-bigquery's retry rule, bounded by the retry deadline and logging each retry."""
    from google.cloud.bigquery.retry import _should_retry

    return _retry(_should_retry, what, endpoint)


def storage_retry(what: str, endpoint: str) -> Any:
    """google-cloud-storage's retry rule (for idempotent calls), bounded and logging each retry."""
    from google.cloud.storage.retry import _should_retry

    return _retry(_should_retry, what, endpoint)


def bigquery_call(client: Any, what: str) -> dict[str, Any]:
    """``timeout=`` and ``retry=`` for one google-cloud-bigquery client call: ``client.get_table(t,
    **bigquery_call(client, "getting table bq://..."))`` inside ``remote(...)``."""
    return {"timeout": request_timeout(), "retry": bigquery_retry(what, endpoint_of(client))}


def storage_call(client: Any, what: str) -> dict[str, Any]:
    """``timeout=`` and ``retry=`` for one idempotent google-cloud-storage call."""
    return {"timeout": request_timeout(), "retry": storage_retry(what, endpoint_of(client))}


def upload_retries() -> int:
    """Retries of a resumable upload's requests (google-resumable-media counts retries, not time):
    as many as fit the retry deadline at one request timeout each, at least one."""
    limits = Deadlines.current()
    return max(1, int(limits.retry_deadline // limits.request_timeout))


def _reason(exc: BaseException) -> str:
    """The exception's type and first line, quoted values redacted (a server may quote data)."""
    from airflow_provider_dicom.utils.redact import redact_quoted

    text = redact_quoted(str(exc).splitlines()[0]) if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


_TIMEOUT_TYPES: tuple[type[BaseException], ...] | None = None


def _timeout_types() -> tuple[type[BaseException], ...]:
    """What a client raises when a server does not answer: retries exhausted, a request timeout,
    a connection that cannot be made or was dropped."""
    global _TIMEOUT_TYPES
    if _TIMEOUT_TYPES is None:
        types: list[type[BaseException]] = [concurrent.futures.TimeoutError, ConnectionError, TimeoutError]
        try:
            from google.api_core.exceptions import RetryError

            types.append(RetryError)
        except ImportError:  # pragma: no cover - google-api-core comes with every Google client
            pass
        try:
            import requests

            types += [requests.exceptions.Timeout, requests.exceptions.ConnectionError]
        except ImportError:  # pragma: no cover
            pass
        try:
            from google.auth.exceptions import TransportError

            types.append(TransportError)
        except ImportError:  # pragma: no cover
            pass
        try:
            # Raw urllib3 errors (the gs:// ranged reads use urllib3 directly): recent google-auth
            # wraps them in TransportError, older ones (Cloud Composer's Airflow 3.1.0 image) let
            # them through, and none of them derives from the builtin TimeoutError or OSError.
            from urllib3 import exceptions as urllib3_exceptions

            types += [
                urllib3_exceptions.TimeoutError,
                urllib3_exceptions.ProtocolError,
                urllib3_exceptions.NewConnectionError,
            ]
        except ImportError:  # pragma: no cover
            pass
        _TIMEOUT_TYPES = tuple(types)
    return _TIMEOUT_TYPES


@contextmanager
def remote(what: str, endpoint: str) -> Iterator[None]:
    """Run a remote call; a server that does not answer in time becomes a RemoteCallError saying
    what was being done and where, with the last underlying reason."""
    try:
        yield
    except RemoteCallError:
        raise
    except _timeout_types() as exc:
        limits = Deadlines.current()
        cause = getattr(exc, "cause", None) or exc
        raise RemoteCallError(
            f"{what}: no answer from {endpoint} within the deadline (request timeout "
            f"{limits.request_timeout:g} s, retries up to {limits.retry_deadline:g} s; set "
            f"{REQUEST_TIMEOUT_ENV} / {RETRY_DEADLINE_ENV} to change them); last error: {_reason(cause)}",
            what=what, endpoint=endpoint,
        ) from exc


def wait_for_job(
    job: Any, what: str, *, endpoint: str = "", sleep: Callable[[float], None] = time.sleep, **result_kwargs: Any
) -> Any:
    """Wait for a BigQuery job and return ``job.result()``, never forever.

    Each status request has the request timeout and the bounded retry; the whole wait is bounded
    by the job timeout (a load may legitimately run long), and every minute "still waiting on job
    X" is logged. ``result_kwargs`` (e.g. ``page_size``) go to ``job.result()``. Raises RemoteCallError naming the job when the server stops answering or the
    job outlives the job timeout; a failed job raises what ``job.result()`` raises."""
    endpoint = endpoint or endpoint_of(job)
    limits = Deadlines.current()
    job_id = getattr(job, "job_id", "?")
    doing = f"waiting on BigQuery job {job_id} ({what})"
    start = last_said = time.monotonic()
    interval = 0.5
    while True:
        with remote(doing, endpoint):
            finished = job.done(timeout=limits.request_timeout, retry=bigquery_retry(doing, endpoint))
        if finished:
            with remote(doing, endpoint):
                return job.result(timeout=limits.request_timeout, retry=bigquery_retry(doing, endpoint), **result_kwargs)
        now = time.monotonic()
        if now - start > limits.job_timeout:
            raise RemoteCallError(
                f"{doing}: still {job.state} at {endpoint} after {now - start:.0f} s, more than "
                f"{JOB_TIMEOUT_ENV}={limits.job_timeout:g} s; the job keeps running unless cancelled",
                what=doing, endpoint=endpoint,
            )
        if now - last_said >= STILL_WAITING_EVERY:
            log.info("Still waiting on BigQuery job %s (%s): %s after %.0f s", job_id, what, job.state, now - start)
            last_said = now
        sleep(interval)
        interval = min(interval * 2, MAX_JOB_POLL_INTERVAL)
