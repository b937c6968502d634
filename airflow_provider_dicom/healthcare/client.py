"""Cloud Healthcare API calls on DICOM stores and their datasets' long-running operations, without Airflow.

`HealthcareCalls` holds every call: starting `dicomStores.export`, getting, listing, cancelling
and waiting on operations. It needs an owner that says whose credentials sign the requests
(`_authorize`) and how many times to retry (`num_retries`), and that logs (`log`):
`HealthcareClient` below is that owner for the command line and for any Python program (Application
Default Credentials, a service account to impersonate, or anonymous against an emulator);
`airflow_provider_dicom.hooks.dicom_store.DicomStoreHook` is the owner inside Airflow (the
connection's credentials, `num_retries` from the connection). One implementation, so a DAG and
the command line retry, resolve lost answers and report errors the same way.

The client is built from the discovery document shipped in google-api-python-client
(`static_discovery=True`): no network call to fetch it, and the request shapes are the ones the
contract test checks. The endpoint is healthcare.googleapis.com unless `api_endpoint` or
$HEALTHCARE_EMULATOR_HOST names another server (see `airflow_provider_dicom.healthcare.endpoint`).

Retries: every call is retried with exponential backoff and jitter on 429 and 503 (the server
says it did not do the work) and, for calls that are safe to repeat (get, list, cancel), on the
other 5xx and on network errors too. Starting an export is never re-sent blindly: the transport
sends it once (`healthcare.transport`: httplib2 would otherwise silently send it again when the
connection drops before the answer), and after an unknown outcome (a reset or timed-out
connection, a 500/502/504) the dataset's export operations created since the request was sent
are listed and the one it started is adopted; only when none appears within a grace period
(the listing may lag) is the request sent again, and with several candidates nothing is started
and `ExportOutcomeUnknownError` is raised (see `start_export`).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_dicom.healthcare import export_requests
from airflow_provider_dicom.healthcare.endpoint import resolve_api_endpoint
from airflow_provider_dicom.healthcare.operations import (
    CLOCK_SKEW,
    EXPORT_DICOM_DATA_METHOD,
    RETRY_ALWAYS_STATUSES,
    RETRY_IF_IDEMPOTENT_STATUSES,
    ExportOutcomeUnknownError,
    HealthcareApiError,
    OperationName,
    OperationStatus,
    OperationTimeoutError,
    check_dataset_name,
    parse_timestamp,
)
from airflow_provider_dicom.utils.errors import DicomProviderError

if TYPE_CHECKING:
    from googleapiclient.discovery import Resource
    from googleapiclient.http import HttpRequest

    from airflow_provider_dicom.model.options import SchemaVariant, WriteDisposition
    from airflow_provider_dicom.model.uris import BigQueryTableUri, DicomStoreName

API_SERVICE = "healthcare"
API_VERSION = "v1"
DEFAULT_POLL_INTERVAL = 10.0
MAX_RETRY_AFTER = 60.0
DEFAULT_NUM_RETRIES = 5  # what GoogleBaseHook uses when the connection sets none
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


class _OutcomeUnknown(DicomProviderError):
    """A request that is not safe to repeat was sent and no answer says what became of it."""

    def __init__(self, reason: str, cause: BaseException) -> None:
        self.reason = reason
        self.cause = cause
        super().__init__(reason)


class HealthcareCalls:
    """The Cloud Healthcare API calls, over whatever authorises them (see the module docstring).

    Attributes the owner provides: `num_retries` (retries per call), `log` (a logger), and
    `_authorize()`; `_init_calls` sets the rest.
    """

    num_retries: int
    api_endpoint: str | None
    api_version: str
    retry_delay: float
    max_retry_delay: float
    lost_response_grace: float

    if TYPE_CHECKING:  # the owner's logger (Airflow's LoggingMixin.log for the hook)

        @property
        def log(self) -> Any: ...  # a logging.Logger, or whatever Airflow's LoggingMixin gives

    # -- client -------------------------------------------------------------------------------

    def _init_calls(
        self,
        *,
        api_endpoint: str | None,
        api_version: str,
        retry_delay: float,
        max_retry_delay: float,
        lost_response_grace: float,
    ) -> None:
        """What every call needs besides credentials; the owner's __init__ calls this."""
        self.lost_response_grace = lost_response_grace
        self.api_endpoint = resolve_api_endpoint(api_endpoint)
        self.api_version = api_version
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self._conn: Resource | None = None
        self._sleep: Callable[[float], None] = time.sleep

    def _authorize(self) -> Any:
        """An authorised httplib2 transport; the owner says whose credentials."""
        raise NotImplementedError

    def get_conn(self) -> Resource:
        """The discovery-based client, built once."""
        if self._conn is None:
            from googleapiclient.discovery import build

            from airflow_provider_dicom.healthcare.transport import forbid_resend

            self._conn = build(
                API_SERVICE,
                self.api_version,
                http=forbid_resend(self._authorize()),
                cache_discovery=False,
                static_discovery=True,
                client_options=self._client_options(),
            )
        return self._conn

    def _client_options(self) -> Any:
        from google.api_core.client_options import ClientOptions

        return ClientOptions(api_endpoint=self.api_endpoint) if self.api_endpoint else ClientOptions()

    def _datasets(self):
        return self.get_conn().projects().locations().datasets()

    def _execute(self, request: HttpRequest, what: str, *, idempotent: bool) -> Any:
        """Run `request`, retrying throttling and server errors with exponential backoff.

        A request that is not `idempotent` is repeated only when the server said it did not do
        the work (429, 503) or the request never left (refused, unknown host); other failures
        after sending raise `_OutcomeUnknown` for the caller to resolve.
        """
        from googleapiclient.errors import HttpError
        from httplib2 import HttpLib2Error, ServerNotFoundError

        retries = max(0, int(self.num_retries))
        attempt = 0
        while True:
            try:
                return request.execute(num_retries=0)
            except HttpError as exc:
                status = int(exc.resp.status)
                retryable = status in RETRY_ALWAYS_STATUSES or (
                    idempotent and status in RETRY_IF_IDEMPOTENT_STATUSES
                )
                if not idempotent and status in RETRY_IF_IDEMPOTENT_STATUSES:
                    raise _OutcomeUnknown(f"HTTP {status}", _api_error(what, exc)) from exc
                if not retryable or attempt >= retries:
                    raise _api_error(what, exc) from exc
                delay = self._backoff(attempt, exc.resp.get("retry-after"))
                reason = f"HTTP {status}"
            except (OSError, HttpLib2Error) as exc:
                # A refused connection or an unknown host means the request never reached the
                # server: safe to repeat even for an export. A reset or a timeout may have.
                never_sent = isinstance(exc, (ConnectionRefusedError, ServerNotFoundError))
                if not (idempotent or never_sent):
                    raise _OutcomeUnknown(type(exc).__name__, exc) from exc
                if attempt >= retries:
                    raise
                delay = self._backoff(attempt, None)
                reason = type(exc).__name__
            attempt += 1
            self.log.warning("%s: %s; retry %d of %d in %.1f s", what, reason, attempt, retries, delay)
            self._sleep(delay)

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), MAX_RETRY_AFTER)
            except ValueError:
                pass
        ceiling = min(self.max_retry_delay, self.retry_delay * (2**attempt))
        return random.uniform(ceiling / 2, ceiling)

    # -- stores -------------------------------------------------------------------------------

    def get_dicom_store(self, store: str | DicomStoreName) -> dict[str, Any]:
        name = str(export_requests.check_store_name(store))
        request = self._datasets().dicomStores().get(name=name)
        return self._execute(request, f"dicomStores.get {name}", idempotent=True)

    # -- exports ------------------------------------------------------------------------------

    def export_dicom_to_bigquery(
        self,
        store: str | DicomStoreName,
        table_uri: str | BigQueryTableUri,
        *,
        write_disposition: str | WriteDisposition | None = None,
        force: bool | None = None,
        include_source_store: bool | None = None,
        schema: str | SchemaVariant | None = None,
        filter_gcs_uri: str | None = None,
    ) -> dict[str, Any]:
        """Start `dicomStores.export` to a BigQuery table; returns the Operation as the API sent it.

        Arguments are validated (ValueError naming the value) before any call; see
        `export_requests.bigquery_export_request` for their meaning.
        """
        name = str(export_requests.check_store_name(store))
        body = export_requests.bigquery_export_request(
            table_uri,
            write_disposition=write_disposition,
            force=force,
            include_source_store=include_source_store,
            schema=schema,
            filter_gcs_uri=filter_gcs_uri,
        )
        return self.start_export(name, body, body["bigqueryDestination"]["tableUri"])

    def export_dicom_to_gcs(
        self,
        store: str | DicomStoreName,
        uri_prefix: str,
        *,
        mime_type: str | None = None,
        filter_gcs_uri: str | None = None,
    ) -> dict[str, Any]:
        """Start `dicomStores.export` of the instance files to `uri_prefix` (`gs://bucket/dir`);
        files land at `{uri_prefix}/{study}/{series}/{instance}.dcm`."""
        name = str(export_requests.check_store_name(store))
        body = export_requests.gcs_export_request(uri_prefix, mime_type=mime_type, filter_gcs_uri=filter_gcs_uri)
        return self.start_export(name, body, body["gcsDestination"]["uriPrefix"])

    def start_export(self, store: str, body: dict[str, Any], destination: str) -> dict[str, Any]:
        """Send `dicomStores.export` so that at most one export starts, whatever the network does.

        `body` is a request body as `export_requests` builds it (the two methods above, or a
        validated `healthcare.store_export.StoreExport`); `destination` only names it in logs.

        When the outcome of a sent request is unknown, the operation it started (if any) is looked
        up and adopted; the request is sent again only once the listing shows it started none.
        """
        what = f"dicomStores.export of {store}"
        sends = max(0, int(self.num_retries)) + 1
        for send in range(1, sends + 1):
            request = self._datasets().dicomStores().export(name=store, body=body)
            sent_at = datetime.now(timezone.utc)
            try:
                operation = self._execute(request, what, idempotent=False)
            except _OutcomeUnknown as unknown:
                self.log.warning(
                    "%s: %s after the request was sent; it may have started an export, looking for it",
                    what,
                    unknown.reason,
                )
                adopted = self._find_started_export(store, sent_at)
                if adopted is not None:
                    self.log.warning(
                        "%s: adopting operation %s, which the request started although its answer was lost",
                        what,
                        adopted.get("name"),
                    )
                    return adopted
                if send >= sends:
                    raise unknown.cause from None
                self.log.warning(
                    "%s: no export operation appeared in %s within %.0f s, so the request started "
                    "none; sending it again (%d of %d)",
                    what,
                    _dataset_of(store),
                    self.lost_response_grace,
                    send,
                    sends - 1,
                )
                continue
            self.log.info("Started export of %s to %s: operation %s", store, destination, operation.get("name"))
            return operation
        raise AssertionError("unreachable")  # pragma: no cover

    def _find_started_export(self, store: str, sent_at: datetime) -> dict[str, Any] | None:
        """The export operation a request sent at `sent_at` started, None if it started none.

        An operation's metadata names neither its store nor its destination (v1
        `OperationMetadata`: apiMethodName, createTime, endTime, counter, logsUrl), so the
        candidates are the dataset's export operations created since the request was sent (less
        `CLOCK_SKEW`). One candidate is ours. Several, and none can be told to be ours: starting
        another could double the rows, so `ExportOutcomeUnknownError` names them. None is
        believed only after `lost_response_grace` seconds of listing.
        """
        deadline = time.monotonic() + max(0.0, float(self.lost_response_grace))
        delay = 0.5
        while True:
            candidates = self.find_export_operations(store, created_after=sent_at - CLOCK_SKEW)
            if len(candidates) == 1:
                return self.get_operation(candidates[0].name)
            if len(candidates) > 1:
                names = [c.name for c in candidates]
                raise ExportOutcomeUnknownError(
                    f"dicomStores.export of {store}: the answer was lost and {len(names)} export "
                    f"operations were created in {_dataset_of(store)} since the request was sent "
                    f"({', '.join(names)}); the API does not say which store or destination an "
                    "operation exports, so none was adopted and no other export was started. "
                    "Check these operations before running the task again.",
                    names,
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._sleep(min(delay, remaining))
            delay *= 2

    # -- operations ---------------------------------------------------------------------------

    def get_operation(self, name: str) -> dict[str, Any]:
        name = str(OperationName.parse(name))
        request = self._datasets().operations().get(name=name)
        return self._execute(request, f"operations.get {name}", idempotent=True)

    def get_operation_status(self, name: str) -> OperationStatus:
        return OperationStatus.from_api(self.get_operation(name))

    def list_operations(
        self, dataset: str, *, page_size: int = 100, api_filter: str | None = None
    ) -> list[dict[str, Any]]:
        """Every operation of `dataset` (`projects/P/locations/L/datasets/D`), all pages.

        `api_filter` is passed to the API as is; Google documents only "the standard list
        filter", so prefer filtering the result (see `find_export_operations`).
        """
        dataset = check_dataset_name(dataset)
        operations: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"name": dataset, "pageSize": page_size}
            if token:
                kwargs["pageToken"] = token
            if api_filter:
                kwargs["filter"] = api_filter
            request = self._datasets().operations().list(**kwargs)
            page = self._execute(request, f"operations.list {dataset}", idempotent=True)
            operations.extend(page.get("operations", []))
            token = page.get("nextPageToken")
            if not token:
                return operations

    def cancel_operation(self, name: str) -> None:
        """Ask the API to cancel (best effort): a cancelled operation ends with error code 1."""
        name = str(OperationName.parse(name))
        request = self._datasets().operations().cancel(name=name, body={})
        self._execute(request, f"operations.cancel {name}", idempotent=True)
        self.log.info("Requested cancellation of operation %s", name)

    def wait_for_operation(
        self,
        name: str,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float | None = None,
        on_progress: Callable[[OperationStatus], None] | None = None,
    ) -> OperationStatus:
        """Poll until the operation is done and return its final status (failed ones included:
        the caller decides, e.g. with `OperationStatus.check`). Raises OperationTimeoutError
        after `timeout` seconds; the operation keeps running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last_progress: tuple[int, int, int] | None = None
        while True:
            status = self.get_operation_status(name)
            progress = (status.success, status.failure, status.pending)
            if status.done:
                self.log.info("Operation %s %s", name, status.describe())
                return status
            if progress != last_progress:
                self.log.info("Operation %s %s", name, status.describe())
                last_progress = progress
            if on_progress is not None:
                on_progress(status)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise OperationTimeoutError(name, timeout, status)  # type: ignore[arg-type]
                self._sleep(min(poll_interval, remaining))
            else:
                self._sleep(poll_interval)

    def find_export_operations(
        self,
        store: str | DicomStoreName,
        *,
        created_after: datetime | None = None,
        running_only: bool = False,
    ) -> list[OperationStatus]:
        """Export operations in the store's dataset, oldest first, for reattaching after a retry.

        The API records neither the store nor the destination in an operation's metadata, so this
        can only narrow by method (`ExportDicomData`), creation time and state; a caller that
        finds exactly one candidate created after its first try started can reattach to it, and
        must otherwise decide (several exports of one dataset may run at once). The reliable way
        is to remember the operation name the export returned (task state or XCom) and use this
        only when that name was lost.
        """
        name = export_requests.check_store_name(store)
        dataset = f"projects/{name.project}/locations/{name.location}/datasets/{name.dataset}"
        found = []
        for operation in self.list_operations(dataset):
            status = OperationStatus.from_api(operation)
            if status.api_method_name != EXPORT_DICOM_DATA_METHOD:
                continue
            if running_only and status.done:
                continue
            created = status.created_at
            if created_after is not None and (created is None or created < created_after):
                continue
            found.append(status)
        found.sort(key=lambda s: (parse_timestamp(s.create_time) is None, s.create_time or ""))
        return found


class HealthcareClient(HealthcareCalls):
    """`HealthcareCalls` for programs without Airflow, such as `airflow-dicom`.

    :param credentials: google-auth credentials; default: Application Default Credentials
        (GOOGLE_APPLICATION_CREDENTIALS, `gcloud auth application-default login`, or the metadata
        server), or anonymous when the endpoint is not Google's (an emulator).
    :param api_endpoint: base URL of the API; default ``$HEALTHCARE_EMULATOR_HOST``, else Google's.
    :param impersonate: a service account email to act as, with the credentials above.
    :param num_retries: retries of a call that may be retried (default 5, as the hook's).
    Other parameters: as `DicomStoreHook`'s.
    """

    def __init__(
        self,
        credentials: Any = None,
        *,
        api_endpoint: str | None = None,
        impersonate: str | None = None,
        num_retries: int = DEFAULT_NUM_RETRIES,
        api_version: str = API_VERSION,
        retry_delay: float = 1.0,
        max_retry_delay: float = 32.0,
        lost_response_grace: float = 8.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self._init_calls(
            api_endpoint=api_endpoint,
            api_version=api_version,
            retry_delay=retry_delay,
            max_retry_delay=max_retry_delay,
            lost_response_grace=lost_response_grace,
        )
        self.credentials = credentials
        self.impersonate = impersonate
        self.num_retries = num_retries
        self._logger = logger or logging.getLogger(__name__)

    @property
    def log(self) -> logging.Logger:
        return self._logger

    @property
    def anonymous(self) -> bool:
        """True when requests go unsigned: no credentials given and the endpoint is an emulator."""
        return self.credentials is None and self.api_endpoint is not None

    def resolve_credentials(self) -> Any:
        """The credentials requests are signed with; raises google.auth's DefaultCredentialsError
        when none are found."""
        if self.credentials is None:
            if self.api_endpoint is not None:
                from google.auth.credentials import AnonymousCredentials

                self.credentials = AnonymousCredentials()
            else:
                import google.auth

                self.credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
        if self.impersonate:
            from google.auth import impersonated_credentials

            self.credentials = impersonated_credentials.Credentials(
                source_credentials=self.credentials,
                target_principal=self.impersonate,
                target_scopes=[CLOUD_PLATFORM_SCOPE],
            )
            self.impersonate = None
        return self.credentials

    def _authorize(self) -> Any:
        """An authorised httplib2 client with the request timeout of `utils.deadlines`."""
        import google_auth_httplib2
        import httplib2

        from airflow_provider_dicom.utils.deadlines import request_timeout

        return google_auth_httplib2.AuthorizedHttp(
            self.resolve_credentials(), http=httplib2.Http(timeout=request_timeout())
        )


def _dataset_of(store: str) -> str:
    return store.rpartition("/dicomStores/")[0]


def _api_error(what: str, exc: Any) -> HealthcareApiError:
    """Google's error body `{"error": {"code", "message", "status"}}` as a HealthcareApiError."""
    status_code = int(exc.resp.status)
    status = None
    message = ""
    try:
        content = exc.content.decode("utf-8") if isinstance(exc.content, bytes) else str(exc.content)
        error = json.loads(content).get("error", {})
        status = error.get("status")
        message = error.get("message") or ""
    except (ValueError, AttributeError):
        message = ""
    if not message:
        message = getattr(exc, "reason", "") or str(exc)
    return HealthcareApiError(what, status_code, status, message)
