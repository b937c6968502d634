"""Deferrable wait on a Cloud Healthcare long-running operation, in the triggerer instead of a worker slot.

An export can run for hours; a deferred task holds no worker while this trigger polls
`operations.get`. It yields exactly one event:

- `{"status": "success", "operation": {...}, ...}` when the operation finished without an error
  (instances may still have failed: the task applies its failure policy to the counters);
- `{"status": "failed", ...}` when it finished with an error (cancellation is error code 1);
- `{"status": "error", "message": ..., "operation": last seen or None}` when polling itself
  failed: a permanent API error (403, 404, ...) at once, transient ones (network, 429, 5xx)
  only after `max_poll_errors` in a row, so a blip never fails a long export.

`operation` is the Operation exactly as the API returned it; parse it with
`OperationStatus.from_api`. With `cancel_on_kill`, a user killing the deferred task (mark
failed/success, clear) cancels the operation too (Airflow 3.3's trigger `on_kill`).

Nothing here blocks the triggerer's event loop, which every trigger of the triggerer shares: the
hook module (the Google client stack, ~1.6 s to import the first time in a process) is imported
in a worker thread, and every API call, credential lookup and client build runs in one too
(`DicomStoreAsyncHook`). This module itself imports only light modules.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_dicom.healthcare.endpoint import resolve_api_endpoint
from airflow_provider_dicom.healthcare.operations import OperationName, OperationStatus, is_transient_error

HOOK_MODULE = "airflow_provider_dicom.hooks.dicom_store"
DEFAULT_POLL_INTERVAL = 30.0
DEFAULT_MAX_POLL_ERRORS = 10
MAX_ERROR_BACKOFF = 300.0


class DicomOperationTrigger(BaseTrigger):
    """Polls one Cloud Healthcare operation until it is done.

    :param operation_name: ``projects/P/locations/L/datasets/D/operations/ID``.
    :param gcp_conn_id: Airflow connection; the triggerer builds credentials from it (and
        `impersonation_chain`), never from bare default credentials.
    :param poll_interval: seconds between polls.
    :param api_endpoint: API base URL; resolved when the trigger is created (from
        $HEALTHCARE_EMULATOR_HOST if not given), so the triggerer polls the server the task used.
    :param max_poll_errors: transient polling errors in a row tolerated before giving up.
    :param cancel_on_kill: cancel the operation when a user kills the deferred task.
    :param deferred_by_try: the try of the task that deferred, repeated in the event so the task
        can tell a replayed event from its own (`try_lineage.is_stale_resumption`).
    """

    def __init__(
        self,
        operation_name: str,
        gcp_conn_id: str = "google_cloud_default",
        impersonation_chain: str | Sequence[str] | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        api_endpoint: str | None = None,
        max_poll_errors: int = DEFAULT_MAX_POLL_ERRORS,
        cancel_on_kill: bool = False,
        deferred_by_try: int | None = None,
    ) -> None:
        super().__init__()
        OperationName.parse(operation_name)
        if not poll_interval or poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval!r}")
        if max_poll_errors < 0:
            raise ValueError(f"max_poll_errors must be >= 0, got {max_poll_errors!r}")
        self.operation_name = operation_name
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = (
            list(impersonation_chain) if isinstance(impersonation_chain, (list, tuple)) else impersonation_chain
        )
        self.poll_interval = float(poll_interval)
        self.api_endpoint = resolve_api_endpoint(api_endpoint)
        self.max_poll_errors = int(max_poll_errors)
        self.cancel_on_kill = bool(cancel_on_kill)
        self.deferred_by_try = deferred_by_try

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "operation_name": self.operation_name,
                "gcp_conn_id": self.gcp_conn_id,
                "impersonation_chain": self.impersonation_chain,
                "poll_interval": self.poll_interval,
                "api_endpoint": self.api_endpoint,
                "max_poll_errors": self.max_poll_errors,
                "cancel_on_kill": self.cancel_on_kill,
                **({} if self.deferred_by_try is None else {"deferred_by_try": self.deferred_by_try}),
            },
        )

    def _event(self, payload: dict[str, Any]) -> TriggerEvent:
        if self.deferred_by_try is not None:
            payload["deferred_by_try"] = self.deferred_by_try
        return TriggerEvent(payload)

    async def _get_async_hook(self) -> Any:
        # The import is the slow part (google-api-python-client, auth, the Google provider's base
        # hook): off the loop. Constructing the async hook is cheap; it builds its sync hook and
        # credentials in a thread on first use.
        module = await asyncio.to_thread(importlib.import_module, HOOK_MODULE)
        return module.DicomStoreAsyncHook(
            gcp_conn_id=self.gcp_conn_id,
            impersonation_chain=self.impersonation_chain,
            api_endpoint=self.api_endpoint,
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = await self._get_async_hook()
        errors_in_a_row = 0
        last: dict[str, Any] | None = None
        last_progress: tuple[int, int, int] | None = None
        while True:
            try:
                operation = await hook.get_operation(self.operation_name)
                status = OperationStatus.from_api(operation)
            except Exception as exc:  # noqa: BLE001 - every failure ends in exactly one event
                errors_in_a_row += 1
                if not is_transient_error(exc) or errors_in_a_row > self.max_poll_errors:
                    why = "" if not is_transient_error(exc) else f" ({errors_in_a_row} failed polls in a row)"
                    self.log.error("Polling operation %s failed%s: %s", self.operation_name, why, exc)
                    yield self._event({
                        "status": "error",
                        "operation_name": self.operation_name,
                        "message": f"cannot poll operation {self.operation_name}{why}: {exc}",
                        "operation": last,
                    })
                    return
                delay = min(self.poll_interval * (2 ** (errors_in_a_row - 1)), max(MAX_ERROR_BACKOFF, self.poll_interval))
                self.log.warning(
                    "Polling operation %s failed (%d of %d tolerated in a row), next try in %.0f s: %s",
                    self.operation_name, errors_in_a_row, self.max_poll_errors, delay, exc,
                )
                await asyncio.sleep(delay)
                continue
            errors_in_a_row = 0
            last = operation
            if status.done:
                self.log.info("Operation %s %s", self.operation_name, status.describe())
                yield self._event({
                    "status": "failed" if status.failed else "success",
                    "operation_name": self.operation_name,
                    "message": f"operation {self.operation_name} {status.describe()}",
                    "operation": operation,
                })
                return
            progress = (status.success, status.failure, status.pending)
            if progress != last_progress:
                self.log.info("Operation %s %s", self.operation_name, status.describe())
                last_progress = progress
            await asyncio.sleep(self.poll_interval)

    async def on_kill(self) -> None:
        """A user killed the deferred task: cancel the operation if asked to (best effort)."""
        if not self.cancel_on_kill:
            return
        try:
            hook = await self._get_async_hook()
            await hook.cancel_operation(self.operation_name)
            self.log.info("Cancelled operation %s because its task was killed", self.operation_name)
        except Exception as exc:  # noqa: BLE001 - on_kill must not raise
            self.log.warning("Could not cancel operation %s: %s", self.operation_name, exc)
