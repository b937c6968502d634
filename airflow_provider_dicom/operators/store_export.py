"""Exports from Cloud Healthcare API DICOM stores: start `dicomStores.export`, wait, judge the outcome.

`DicomStoreExportBase` is the part the BigQuery and Cloud Storage export operators share when the
source is a store (`projects/P/locations/L/datasets/D/dicomStores/S`): Google does the export,
the task starts it through `DicomStoreHook` and waits on the long-running operation, in the
worker (`deferrable=False`) or in the triggerer (`DicomOperationTrigger`), or not at all
(`wait_for_completion=False`, e.g. to wait with `DicomOperationSensor` later). The request, its
start, the summary and the judgement of the outcome are the export service's
(`airflow_provider_dicom.healthcare.store_export`, shared with `airflow-dicom`); this module adds
what only a task has: the ledger, deferral, XCom and links.

What it guarantees:

- Retry safety: the operation's name is recorded before any wait (`operation_ledger`: in the
  task state store on Airflow 3.3, in a Variable scoped to the task instance before); a retried, resumed or timed-out task reattaches to that operation, reuses
  its result if it already succeeded, and starts a new export only when it finished with an error.
  A cleared task exports again (`try_lineage`: a clear starts a new try lineage). A lost answer
  to the export request is resolved by the hook, which never sends the request blindly again.
- Failure policy: an operation that failed or was cancelled fails the task with the API's error
  and the logs link; instances the operation counts as failed fail it when more than
  `max_failed_instances`. Outcomes a retry cannot change (cancellation, a bad request, the
  destination's state, failed instances) fail without retries; transient server errors retry.
- `on_kill` (and, while deferred on Airflow 3.3, the trigger's `on_kill`) cancels the operation
  when `cancel_on_kill`.
- XCom `return_value`: operation name, state, success/failure/pending counts, create/end time,
  logs URL, source and destination; pushed even when the task fails on the outcome.

Nothing heavy is imported at module level: the hook (googleapiclient) and the trigger load when
the task runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, BaseOperator, conf

from airflow_provider_dicom.healthcare import store_export as service
from airflow_provider_dicom.healthcare.endpoint import resolve_api_endpoint
from airflow_provider_dicom.healthcare.operations import (
    ExportOutcomeUnknownError,
    HealthcareApiError,
    OperationStatus,
)
from airflow_provider_dicom.healthcare.store_export import StoreExport, check_filter_for_store, summarize
from airflow_provider_dicom.links.healthcare import (
    OPERATION_ATTRIBUTE,
    OPERATION_XCOM_KEY,
    DicomOperationLogsLink,
    DicomStoreLink,
)
from airflow_provider_dicom.model import uris
from airflow_provider_dicom.utils.operation_ledger import OperationLedger

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_dicom.hooks.dicom_store import DicomStoreHook
    from airflow_provider_dicom.utils.lineage import WrittenTable

DEFAULT_POLL_INTERVAL = 30.0
STORE_TEMPLATE_FIELDS = ("api_endpoint",)
_STORE_ONLY_LINKS = (DicomStoreLink, DicomOperationLogsLink)

def _check_bool(name: str, value: object, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, bool):
        raise ValueError(f"invalid {name} {value!r}: expected True or False")  # noqa: TRY004


def check_poll_interval(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"invalid poll_interval {value!r}: expected a number of seconds > 0")
    return float(value)


class DicomStoreExportBase(BaseOperator):
    """What export operators do when their source is a Cloud Healthcare DICOM store.

    Subclasses provide `source`, `gcp_conn_id`, `impersonation_chain`, `max_failed_instances`
    and `store_export()` (the validated request).

    :param deferrable: wait for the operation in the triggerer, freeing the worker slot (default:
        ``[operators] default_deferrable``). ``execution_timeout`` bounds the deferred wait too.
    :param wait_for_completion: False returns as soon as the export started, with the operation's
        name in the result, for a `DicomOperationSensor` or another DAG to wait on.
    :param poll_interval: seconds between `operations.get` calls.
    :param cancel_on_kill: cancel the operation when the task is killed (a user marks it failed
        or success or clears it, or ``execution_timeout`` is reached); False lets it run on, and a
        retry then reattaches to it.
    :param api_endpoint: Cloud Healthcare API base URL (default ``$HEALTHCARE_EMULATOR_HOST``, else
        Google's), e.g. the local emulator's ``http://127.0.0.1:8090``.
    :param include_source_store: BigQuery exports only: add the store's name as a column.
    """

    operation_ledger_key = "dicom_export_operation"

    def __init__(
        self,
        *,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        wait_for_completion: bool = True,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        cancel_on_kill: bool = True,
        api_endpoint: str | None = None,
        include_source_store: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.deferrable = deferrable
        self.wait_for_completion = wait_for_completion
        self.poll_interval = poll_interval
        self.cancel_on_kill = cancel_on_kill
        self.api_endpoint = api_endpoint
        self.include_source_store = include_source_store
        self._waiting_on: str | None = None
        self._succeeded: OperationStatus | None = None  # the operation this task saw succeed, for lineage
        for name in ("deferrable", "wait_for_completion", "cancel_on_kill"):
            _check_bool(name, getattr(self, name))
        _check_bool("include_source_store", include_source_store, optional=True)
        check_poll_interval(poll_interval)
        if not uris.is_templated(api_endpoint):
            resolve_api_endpoint(api_endpoint)

    # -- what subclasses provide ----------------------------------------------------------------

    def store_export(self) -> StoreExport:
        """The validated export request of this (rendered) task."""
        raise NotImplementedError

    def _tolerated_failures(self) -> int | None:
        from airflow_provider_dicom.model.arguments import parse_max_failed_instances

        return parse_max_failed_instances(getattr(self, "max_failed_instances", 0))

    # -- running --------------------------------------------------------------------------------

    def _store_hook(self) -> DicomStoreHook:
        from airflow_provider_dicom.hooks.dicom_store import DicomStoreHook

        return DicomStoreHook(
            gcp_conn_id=self.gcp_conn_id,  # type: ignore[attr-defined]
            impersonation_chain=self.impersonation_chain,  # type: ignore[attr-defined]
            api_endpoint=self.api_endpoint,
        )

    def _rendered_export(self) -> StoreExport:
        try:
            if not uris.is_templated(self.api_endpoint):
                resolve_api_endpoint(self.api_endpoint)
            return self.store_export()
        except ValueError as exc:
            # A rendered value that is wrong stays wrong: fail without burning retries.
            raise AirflowFailException(str(exc)) from exc

    def execute_store_export(self, context: Context) -> dict[str, Any]:
        """Start the export, or reattach to the one an earlier try started, and see it through."""
        export = self._rendered_export()
        hook = self._store_hook()
        ledger = OperationLedger(context, self.operation_ledger_key)
        status = self._earlier_operation(context, hook, ledger, export)
        if status is None:
            self.log.info("Starting export of DICOM store %s to %s", export.store, export.destination)
            ledger.remember_sending(export.fingerprint, service.rfc3339_now())
            try:
                status = service.start(hook, export)
            except ExportOutcomeUnknownError as exc:
                # An export may be running that nothing recorded: a retry would start another.
                raise AirflowFailException(str(exc)) from exc
            ledger.remember(status.name, export.fingerprint)
        self._record_operation(context, status, push=True)

        if not self.wait_for_completion:
            self.log.info("Not waiting for operation %s (wait_for_completion=False)", status.name)
            ledger.forget()
            return summarize(status, export)
        if status.done:
            return self._finish(context, status, export, ledger)
        if self.deferrable:
            self._defer_on(context, status.name, hook)
        # Kept when the wait raises: Airflow calls on_kill after an execution timeout has unwound
        # execute(), and it must still know what to cancel.
        self._waiting_on = status.name
        final = hook.wait_for_operation(status.name, poll_interval=float(self.poll_interval))
        self._waiting_on = None
        return self._finish(context, final, export, ledger)

    def _defer_on(self, context: Context, operation_name: str, hook: DicomStoreHook) -> None:
        from airflow_provider_dicom.triggers.operation import DicomOperationTrigger
        from airflow_provider_dicom.utils.try_lineage import TryLineage

        self.log.info(
            "Deferring until operation %s is done (polling every %s s)", operation_name, self.poll_interval
        )
        self.defer(
            trigger=DicomOperationTrigger(
                operation_name=operation_name,
                gcp_conn_id=self.gcp_conn_id,  # type: ignore[attr-defined]
                impersonation_chain=self.impersonation_chain,  # type: ignore[attr-defined]
                poll_interval=float(self.poll_interval),
                # Resolved here, so the triggerer polls the server the task used.
                api_endpoint=hook.api_endpoint,
                cancel_on_kill=self.cancel_on_kill,
                deferred_by_try=TryLineage.from_context(context).try_number,
            ),
            method_name="execute_complete",
            timeout=self.execution_timeout,
        )

    def execute_complete(self, context: Context, event: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Resumed from the trigger: judge the operation it reported."""
        from airflow_provider_dicom.utils.try_lineage import is_stale_resumption

        if is_stale_resumption(context, event, self.log.warning):
            return self.execute(context)  # which reattaches to the operation on record
        export = self._rendered_export()
        ledger = OperationLedger(context, self.operation_ledger_key)
        if not event:
            raise AirflowException(f"no event received while waiting for the export of {export.store}")
        if event.get("status") == "error" or not event.get("operation"):
            # Polling failed, not the export: a retry reattaches to the same operation.
            raise AirflowException(event.get("message") or f"waiting for the export of {export.store} failed")
        status = OperationStatus.from_api(dict(event["operation"]))
        self._record_operation(context, status, push=False)
        return self._finish(context, status, export, ledger)

    def _earlier_operation(
        self, context: Context, hook: DicomStoreHook, ledger: OperationLedger, export: StoreExport
    ) -> OperationStatus | None:
        """The operation an earlier try of this task instance started, when it may be adopted:
        still running, or finished successfully. None means: start a new export (so does a
        context that names no task instance: there is no record to consult)."""
        entry = ledger.recall()
        if entry is None:
            return None
        if entry.fingerprint != export.fingerprint:
            self.log.warning(
                "An earlier try started operation %s with different arguments; starting a new export "
                "rather than adopting it",
                entry.operation,
            )
            return None
        operation = entry.operation
        if operation is None:
            operation = self._find_unrecorded_operation(hook, export, entry.sent_at)
            if operation is None:
                return None
        try:
            status = hook.get_operation_status(operation)
        except HealthcareApiError as exc:
            if exc.status_code != 404:
                raise
            self.log.warning("Operation %s of an earlier try no longer exists; starting a new export", operation)
            return None
        if not status.done and status.cancel_requested:
            # The earlier try was killed and cancelled it (cancel_on_kill). Cancellation is best
            # effort and takes a while: see how it ends before deciding, rather than adopt an
            # operation about to end cancelled, or start a second one while it still writes.
            self.log.info(
                "Operation %s of an earlier try is being cancelled; waiting for it to end", status.name
            )
            status = hook.wait_for_operation(status.name, poll_interval=min(float(self.poll_interval), 5.0))
        if not status.done:
            self.log.info(
                "Reattaching to operation %s, started by an earlier try (%s)", status.name, status.describe()
            )
            return status
        if status.failed:
            self.log.warning(
                "Operation %s of an earlier try %s; starting a new export", status.name, status.describe()
            )
            return None
        self.log.info(
            "Operation %s of an earlier try already finished (%s); not exporting again",
            status.name,
            status.describe(),
        )
        return status

    def _find_unrecorded_operation(self, hook: DicomStoreHook, export: StoreExport, sent_at: str | None) -> str | None:
        """An earlier try sent the export request at `sent_at` and ended before recording what
        it started (killed mid-request, say): the operation it started, if any, is the dataset's
        one export operation created since. Several: fail for a person to look, never guess."""
        from airflow_provider_dicom.healthcare.operations import CLOCK_SKEW, parse_timestamp

        since = parse_timestamp(sent_at)
        if since is None:
            return None
        candidates = hook.find_export_operations(export.store, created_after=since - CLOCK_SKEW)
        if not candidates:
            self.log.info(
                "An earlier try sent the export request at %s but no export of the dataset started "
                "since: starting one",
                sent_at,
            )
            return None
        if len(candidates) > 1:
            raise AirflowFailException(
                f"An earlier try sent the export of {export.store} at {sent_at} and ended before it "
                f"recorded the operation; {len(candidates)} exports of the dataset started since "
                f"({', '.join(c.name for c in candidates)}) and the API does not say which store or "
                "destination each exports, so none is adopted and no other is started. Check them "
                "before running the task again."
            )
        self.log.warning(
            "An earlier try sent the export request at %s and ended before recording its operation: "
            "adopting %s, the one export of the dataset started since",
            sent_at,
            candidates[0].name,
        )
        return candidates[0].name

    def _record_operation(self, context: Context, status: OperationStatus, *, push: bool) -> None:
        """For the logs link and for people: which operation this task is about."""
        info = {"name": status.name, "logs_url": status.logs_url}
        setattr(self, OPERATION_ATTRIBUTE, info)
        if push:
            try:
                context["ti"].xcom_push(key=OPERATION_XCOM_KEY, value=info)
            except Exception as exc:  # noqa: BLE001 - informational only; the ledger is what matters
                self.log.warning("Could not push the operation name to XCom: %s", exc)

    def _finish(
        self, context: Context, status: OperationStatus, export: StoreExport, ledger: OperationLedger
    ) -> dict[str, Any]:
        # The outcome is consumed: a later clear of this task exports again.
        ledger.forget()
        try:
            summary = service.finish(status, export, self._tolerated_failures())
        except service.StoreExportFailed as exc:
            context["ti"].xcom_push(key="return_value", value=exc.summary)
            if exc.retryable:
                raise AirflowException(str(exc)) from exc
            raise AirflowFailException(str(exc)) from exc
        self.log.info(
            "Exported DICOM store %s to %s: %s", export.store, export.destination, status.describe()
        )
        self._succeeded = status
        return summary

    def on_kill(self) -> None:
        name = self._waiting_on
        if name and self.cancel_on_kill:
            try:
                # A new hook: the waiting one may be in the middle of a request on this thread.
                self._store_hook().cancel_operation(name)
                self.log.info("Cancelled operation %s because the task was killed", name)
            except Exception as exc:  # noqa: BLE001 - on_kill must not raise
                self.log.warning("Could not cancel operation %s: %s", name, exc)
        super().on_kill()

    # -- lineage --------------------------------------------------------------------------------

    def lineage_datasets(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(inputs, outputs) as (namespace, name) pairs; subclasses name their destination."""
        from airflow_provider_dicom.utils.lineage import source_dataset_name

        return [source_dataset_name(self.source)], []  # type: ignore[attr-defined]

    def lineage_written(self) -> WrittenTable | None:
        """What this task wrote into its output (for the schema and output-statistics facets),
        once it succeeded; None when it does not know. Subclasses that write tables say."""
        return None

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The source as input and the table or bucket prefix as output, with what was written
        (see `lineage_written`); None without the OpenLineage provider or when the rendered
        arguments cannot be parsed."""
        from airflow_provider_dicom.utils.lineage import openlineage_available, operator_lineage

        try:
            inputs, outputs = self.lineage_datasets()
        except ValueError:
            return None
        if not openlineage_available():
            return None
        written = self.lineage_written() if outputs else None
        return operator_lineage(inputs, outputs, {outputs[0]: written} if written is not None else None)


class BigQueryStoreExportBase(DicomStoreExportBase):
    """`DicomStoreExportBase` for `DicomExportToBigQueryOperator`: a store source becomes a
    `bigqueryDestination` export; other sources stay with the operator's own engine.

    Expects the operator's `source`, `destination_table_uri`, `write_disposition`, `force`,
    `schema` and `filter_config` attributes.
    """

    def store_export(self) -> StoreExport:
        return service.bigquery_store_export(
            self.source,  # type: ignore[attr-defined]
            self.destination_table_uri,  # type: ignore[attr-defined]
            write_disposition=getattr(self, "write_disposition", None),
            force=getattr(self, "force", None),
            include_source_store=self.include_source_store,
            schema=getattr(self, "schema", None),
            filter_gcs_uri=check_filter_for_store(getattr(self, "filter_config", None)),
        )

    def validate_source_options(self, source_kind: Any, *, skip_templated: bool) -> None:
        """Checks that depend on the kind of source, for the operator's own validation: a store
        export reads its filter from Cloud Storage; `include_source_store` needs a store."""
        from airflow_provider_dicom.model.sources import SourceKind

        if source_kind is SourceKind.DICOM_STORE:
            value = getattr(self, "filter_config", None)
            if not (skip_templated and uris.is_templated(value)):
                check_filter_for_store(value)
            return
        if source_kind is not None:
            # A literal folder, gs:// or DICOMweb source: no store and no operation to link to.
            self.operator_extra_links = tuple(
                link for link in type(self).operator_extra_links if not isinstance(link, _STORE_ONLY_LINKS)
            )
        if source_kind is not None and self.include_source_store:
            raise ValueError(
                "include_source_store=True needs a Cloud Healthcare DICOM store as the source "
                f"(projects/P/locations/L/datasets/D/dicomStores/S), not {getattr(self, 'source', None)!r}"
            )

    def lineage_datasets(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        from airflow_provider_dicom.utils.lineage import bigquery_dataset_name

        inputs, _ = super().lineage_datasets()
        return inputs, [bigquery_dataset_name(self.destination_table_uri)]  # type: ignore[attr-defined]

    def lineage_written(self) -> WrittenTable | None:
        """After a store export: the rows are the instances the operation exported (one row each)
        and the columns those of the table Google wrote, read back once (None when it cannot be
        read: lineage never fails the task). The operation reports no size."""
        if self._succeeded is None:
            return None
        from airflow_provider_dicom.utils.lineage import WrittenTable

        return WrittenTable(self._destination_columns(), self._succeeded.success)

    def _destination_columns(self) -> tuple | None:
        from airflow_provider_dicom.dicom.schema import from_bigquery_fields
        from airflow_provider_dicom.utils.deadlines import bigquery_call, endpoint_of, remote

        table = uris.BigQueryTableUri.parse(self.destination_table_uri)  # type: ignore[attr-defined]
        doing = f"getting table {table} for lineage"
        try:
            client = self._bigquery_client(getattr(self, "project_id", None) or table.project)
            with remote(doing, endpoint_of(client)):
                found = client.get_table(table.table_id, **bigquery_call(client, doing))
            return from_bigquery_fields(found.schema or ()) or None
        except Exception as exc:  # noqa: BLE001 - lineage is informational
            self.log.warning("Could not read the columns of %s for lineage: %s", table, exc)
            return None

    def _bigquery_client(self, project: str) -> Any:
        from airflow_provider_dicom.utils.clients import bigquery_client

        return bigquery_client(
            self.gcp_conn_id,  # type: ignore[attr-defined]
            self.impersonation_chain,  # type: ignore[attr-defined]
            getattr(self, "location", None),
            project,
        )


def store_template_fields(fields: Sequence[str]) -> tuple[str, ...]:
    """A subclass's template fields plus the store-export ones, without duplicates."""
    return tuple(dict.fromkeys((*fields, *STORE_TEMPLATE_FIELDS)))
