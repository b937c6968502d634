"""Wait for any Cloud Healthcare long-running operation: poke, reschedule or deferrable.

Use it after a task that started an operation without waiting (its name in XCom), or for
operations started outside Airflow. It succeeds when the operation finished without an error and
with no more failed instances than `max_failed_instances`, and returns the operation's summary
(`OperationStatus.to_dict()`: counts, times, logs URL, state) as its XCom. A failed or cancelled
operation fails the task with the API's error and the logs link.

Nothing heavy is imported here: the hook (googleapiclient) and the trigger load in `execute`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, BaseSensorOperator, PokeReturnValue, conf

from airflow_provider_dicom.healthcare.operations import (
    OperationFailedError,
    OperationName,
    OperationStatus,
    is_transient_error,
)
from airflow_provider_dicom.model.uris import is_templated

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


class DicomOperationSensor(BaseSensorOperator):
    """Waits until a Cloud Healthcare operation (``projects/P/locations/L/datasets/D/operations/ID``) is done.

    :param operation_name: the operation; templated (e.g. ``{{ ti.xcom_pull('export')['name'] }}``).
    :param max_failed_instances: failed instances tolerated in the operation's counter before the
        task fails (default 0: any failure fails it; None: never for that reason).
    :param gcp_conn_id: Airflow connection to Google Cloud.
    :param impersonation_chain: service account (or chain) to impersonate.
    :param api_endpoint: API base URL (default: $HEALTHCARE_EMULATOR_HOST, else Google's).
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
        ``poke_interval`` is the polling interval in every mode; ``timeout`` bounds the wait.
    :param cancel_on_kill: cancel the operation when the task is killed while deferred.
    """

    template_fields: Sequence[str] = ("operation_name", "gcp_conn_id", "impersonation_chain", "api_endpoint")
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        operation_name: str,
        max_failed_instances: int | None = 0,
        gcp_conn_id: str = "google_cloud_default",
        impersonation_chain: str | Sequence[str] | None = None,
        api_endpoint: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        cancel_on_kill: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not is_templated(operation_name):
            OperationName.parse(operation_name)
        if max_failed_instances is not None and (
            not isinstance(max_failed_instances, int) or isinstance(max_failed_instances, bool) or max_failed_instances < 0
        ):
            raise ValueError(f"invalid max_failed_instances {max_failed_instances!r}: expected an integer >= 0, or None")
        self.operation_name = operation_name
        self.max_failed_instances = max_failed_instances
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain
        self.api_endpoint = api_endpoint
        self.deferrable = deferrable
        self.cancel_on_kill = cancel_on_kill

    def _hook(self):
        from airflow_provider_dicom.hooks.dicom_store import DicomStoreHook

        return DicomStoreHook(
            gcp_conn_id=self.gcp_conn_id,
            impersonation_chain=self.impersonation_chain,
            api_endpoint=self.api_endpoint,
        )

    def _check_name(self) -> None:
        try:
            OperationName.parse(self.operation_name)
        except ValueError as exc:
            raise AirflowException(str(exc)) from exc

    def poke(self, context: Context) -> PokeReturnValue | bool:
        self._check_name()
        try:
            status = self._hook().get_operation_status(self.operation_name)
        except Exception as exc:
            if is_transient_error(exc):
                # The hook already retried; the next poke (or reschedule) tries again.
                self.log.warning("Could not read operation %s this time: %s", self.operation_name, exc)
                return False
            raise
        self.log.info("Operation %s %s", self.operation_name, status.describe())
        if not status.done:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._finish(status))

    def _finish(self, status: OperationStatus) -> dict[str, Any]:
        try:
            status.check(self.max_failed_instances)
        except OperationFailedError as exc:
            raise AirflowException(str(exc)) from exc
        return status.to_dict()

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        self._check_name()
        result = self.poke(context)
        if result:
            return result.xcom_value if isinstance(result, PokeReturnValue) else None
        from airflow_provider_dicom.triggers.operation import DicomOperationTrigger
        from airflow_provider_dicom.utils.try_lineage import TryLineage

        self.defer(
            timeout=timedelta(seconds=self.timeout) if self.timeout else None,
            trigger=DicomOperationTrigger(
                operation_name=self.operation_name,
                gcp_conn_id=self.gcp_conn_id,
                impersonation_chain=self.impersonation_chain,
                poll_interval=self.poke_interval,
                api_endpoint=self.api_endpoint,
                cancel_on_kill=self.cancel_on_kill,
                deferred_by_try=TryLineage.from_context(context).try_number,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        from airflow_provider_dicom.utils.try_lineage import is_stale_resumption

        if is_stale_resumption(context, event, self.log.warning):
            return self.execute(context)
        if not event:
            raise AirflowException(f"no event received while waiting for operation {self.operation_name}")
        if event.get("status") == "error" or not event.get("operation"):
            raise AirflowException(event.get("message") or f"waiting for operation {self.operation_name} failed")
        status = OperationStatus.from_api(event["operation"])
        self.log.info("Operation %s %s", status.name, status.describe())
        return self._finish(status)
