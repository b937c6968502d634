"""Hooks for Cloud Healthcare API DICOM stores: start exports, and watch, list and cancel their operations.

`DicomStoreHook` is a `GoogleBaseHook`, so credentials come from the Airflow connection exactly as
for the Google provider's hooks (key file, ADC, `is_anonymous` for emulators, impersonation
chain), and `num_retries` from the connection's extra. The calls themselves (retries, at most one
export per request whatever the network does, waiting, listing) are Airflow-free and shared with
the command line: `airflow_provider_dicom.healthcare.client.HealthcareCalls`. This module only
says whose credentials sign them.
"""

from __future__ import annotations

import time  # noqa: F401 - tests pin the clock through this module's `time`
from collections.abc import Sequence
from typing import Any

from airflow.providers.google.common.hooks.base_google import GoogleBaseAsyncHook, GoogleBaseHook

from airflow_provider_dicom.healthcare.client import API_VERSION, HealthcareCalls


class DicomStoreHook(HealthcareCalls, GoogleBaseHook):
    """Cloud Healthcare API calls on DICOM stores and their datasets' long-running operations.

    :param gcp_conn_id: Airflow connection to Google Cloud (``google_cloud_platform``).
    :param impersonation_chain: service account, or chain of them, to impersonate.
    :param api_endpoint: base URL of the API, e.g. ``http://127.0.0.1:8090`` for the local emulator;
        default: ``$HEALTHCARE_EMULATOR_HOST`` if set, else healthcare.googleapis.com.
    :param retry_delay: first backoff delay in seconds; doubled on every retry, with full jitter,
        up to ``max_retry_delay``. The number of retries is the connection's ``num_retries`` (default 5).
    :param lost_response_grace: seconds to keep looking for the operation an export request
        started when its answer was lost, before concluding it started none (the operation list
        may lag behind the request).

    The calls (`export_dicom_to_bigquery`, `export_dicom_to_gcs`, `get_operation`,
    `list_operations`, `cancel_operation`, `wait_for_operation`, `find_export_operations`, ...)
    are `HealthcareCalls`'.
    """

    conn_name_attr = "gcp_conn_id"
    default_conn_name = "google_cloud_default"
    hook_name = "Cloud Healthcare DICOM store"

    def __init__(
        self,
        gcp_conn_id: str = default_conn_name,
        impersonation_chain: str | Sequence[str] | None = None,
        *,
        api_endpoint: str | None = None,
        api_version: str = API_VERSION,
        retry_delay: float = 1.0,
        max_retry_delay: float = 32.0,
        lost_response_grace: float = 8.0,
        **kwargs: Any,
    ) -> None:
        GoogleBaseHook.__init__(self, gcp_conn_id=gcp_conn_id, impersonation_chain=impersonation_chain, **kwargs)
        self._init_calls(
            api_endpoint=api_endpoint,
            api_version=api_version,
            retry_delay=retry_delay,
            max_retry_delay=max_retry_delay,
            lost_response_grace=lost_response_grace,
        )

    def _authorize(self):
        """The base hook's authorised httplib2 client, with the request timeout of
        `airflow_provider_dicom.utils.deadlines` (googleapiclient's default is the process-wide socket
        timeout, else 60 s); `_execute` bounds the retries."""
        from airflow_provider_dicom.utils.deadlines import request_timeout

        authed = GoogleBaseHook._authorize(self)
        authed.http.timeout = request_timeout()
        return authed

    def _client_options(self):
        if hasattr(self, "get_client_options"):  # provider >= 16: also honours the universe domain
            return self.get_client_options(self.api_endpoint)
        return HealthcareCalls._client_options(self)


class DicomStoreAsyncHook(GoogleBaseAsyncHook):
    """The trigger's side: the same calls, off the event loop, with the same credentials.

    Calls run the sync hook (built from `gcp_conn_id` / `impersonation_chain`, never bare default
    credentials) in a worker thread, so its retries and sleeps never block the triggerer's loop.
    """

    sync_hook_class = DicomStoreHook

    def __init__(
        self,
        gcp_conn_id: str = DicomStoreHook.default_conn_name,
        impersonation_chain: str | Sequence[str] | None = None,
        api_endpoint: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            gcp_conn_id=gcp_conn_id,
            impersonation_chain=impersonation_chain,
            api_endpoint=api_endpoint,
            **kwargs,
        )

    async def _call(self, method: str, *args: Any) -> Any:
        from asgiref.sync import sync_to_async

        hook = await self.get_sync_hook()
        # Not thread-sensitive: a slow call (retries sleep) must not hold the triggerer's one
        # shared sync thread; a hook is used by one trigger at a time, so no sharing races.
        return await sync_to_async(getattr(hook, method), thread_sensitive=False)(*args)

    async def get_operation(self, name: str) -> dict[str, Any]:
        return await self._call("get_operation", name)

    async def cancel_operation(self, name: str) -> None:
        await self._call("cancel_operation", name)
