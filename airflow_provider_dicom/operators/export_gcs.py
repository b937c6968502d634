"""Operator exporting DICOM instance files to Cloud Storage in the Cloud Healthcare layout.

For a Cloud Healthcare store it is a thin front on `dicomStores.export` with a `gcsDestination`:
Google writes each instance to `{uri_prefix}/{study}/{series}/{instance}.dcm` (or `.jpg`/`.png`,
per `mime_type`); the waiting, retry safety, failure policy and links are `DicomStoreExportBase`'s.
For a folder, a gs:// prefix or a DICOMweb server the task copies the files itself into the same
layout (`export/gcs_copy.py`), as they are stored. Typically the last step of "export metadata ->
query UIDs -> write a filter file -> export the subset".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_provider_dicom.healthcare import export_requests
from airflow_provider_dicom.healthcare.store_export import (
    StoreExport,
    check_filter_for_store,
    gcs_store_export,
)
from airflow_provider_dicom.links.healthcare import (
    DicomGcsDestinationLink,
    DicomOperationLogsLink,
    DicomStoreLink,
)
from airflow_provider_dicom.model import uris
from airflow_provider_dicom.model.arguments import check_concurrency
from airflow_provider_dicom.operators.store_export import DicomStoreExportBase, store_template_fields
from airflow_provider_dicom.utils.assets import AssetOutletsMixin


class DicomExportToGcsOperator(AssetOutletsMixin, DicomStoreExportBase):
    """Export the instances of a Cloud Healthcare DICOM store (all, or those a filter file lists) to Cloud Storage.

    :param source: the store, ``projects/P/locations/L/datasets/D/dicomStores/S`` (templated, so
        any piece may be a template), or a folder, ``gs://`` prefix or DICOMweb base URL whose
        files the task copies itself, as stored (only the two ``application/dicom`` MIME types).
    :param uri_prefix: ``gs://BUCKET[/DIR]``; files land at ``{uri_prefix}/{study}/{series}/{instance}.dcm``.
    :param mime_type: output format, as the API documents it: ``application/dicom; transfer-syntax=*``
        (as stored), ``application/dicom; transfer-syntax=UID`` (transcoded), ``application/octet-stream;
        transfer-syntax=*`` (raw pixel data), ``image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50`` or
        ``image/png``. Default: the API's (DICOM as stored).
    :param filter_config: optional ``gs://BUCKET/OBJECT`` filter file of ``/studies/S[/series/SE[/instances/I]]``
        lines; only those resources are exported.
    :param max_failed_instances: instances the operation may count as failed before the task fails
        (default 0; None: never for that reason). The message carries the count and the logs link.
    :param gcp_conn_id: Airflow connection to Google Cloud.
    :param impersonation_chain: service account (or chain) to impersonate.
    :param dicomweb_conn_id: DICOMweb (or HTTP) connection with the server's credentials (DICOMweb sources).
    :param max_concurrent_requests: copies in flight at once for non-store sources (default 16).

    ``deferrable``, ``wait_for_completion``, ``poll_interval``, ``cancel_on_kill`` and
    ``api_endpoint``: see `DicomStoreExportBase`. Returns (XCom) the operation's summary.
    """

    template_fields: Sequence[str] = store_template_fields(
        (
            "source",
            "uri_prefix",
            "mime_type",
            "filter_config",
            "gcp_conn_id",
            "impersonation_chain",
            "max_failed_instances",
            "dicomweb_conn_id",
        )
    )
    ui_color = "#e8f0fe"
    operator_extra_links = (DicomStoreLink(), DicomOperationLogsLink(), DicomGcsDestinationLink())
    # Outlets (unless given): the prefix's Asset gs://BUCKET/PREFIX, or an AssetAlias for a
    # templated prefix (see airflow_provider_dicom.utils.assets).
    asset_destination_field = "uri_prefix"

    def __init__(
        self,
        *,
        source: str,
        uri_prefix: str,
        mime_type: str | None = None,
        filter_config: str | None = None,
        max_failed_instances: int | str | None = 0,
        gcp_conn_id: str = "google_cloud_default",
        impersonation_chain: str | Sequence[str] | None = None,
        dicomweb_conn_id: str | None = None,
        max_concurrent_requests: int = 16,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dicomweb_conn_id = dicomweb_conn_id
        self.max_concurrent_requests = check_concurrency(max_concurrent_requests)
        self.source = source
        self.uri_prefix = uri_prefix
        self.mime_type = mime_type
        self.filter_config = filter_config
        self.max_failed_instances = max_failed_instances
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain
        if self.include_source_store is not None:
            raise ValueError(
                "include_source_store applies to BigQuery exports only, not to DicomExportToGcsOperator"
            )
        self._validate(skip_templated=True)
        self._declare_default_outlets("outlets" in kwargs)

    def _emits_asset(self) -> bool:
        return bool(self.wait_for_completion)  # an export not waited for has written nothing yet

    def asset_event_extra(self) -> dict[str, Any]:
        return {"source": self.source}

    def _validate(self, *, skip_templated: bool) -> None:
        """Literal bad values fail the DAG at parse time; templated ones after rendering."""
        from airflow_provider_dicom.model.arguments import (
            check_impersonation_chain,
            parse_max_failed_instances,
        )

        def pending(value: object) -> bool:
            return skip_templated and uris.is_templated(value)

        store = self._from_store()
        if not pending(self.source):
            if store:
                export_requests.check_store_name(self.source)
            else:
                from airflow_provider_dicom.model.sources import DicomSource

                DicomSource.parse(self.source).require_supported()
        if not pending(self.uri_prefix):
            export_requests.check_uri_prefix(self.uri_prefix)
        if self.mime_type is not None and not pending(self.mime_type):
            export_requests.parse_mime_type(self.mime_type)
            if not store and not pending(self.source):
                from airflow_provider_dicom.export.gcs_copy import check_mime_type_for_copy

                check_mime_type_for_copy(self.mime_type)
        if not pending(self.filter_config) and store:
            check_filter_for_store(self.filter_config)
        if not pending(self.max_failed_instances):
            parse_max_failed_instances(self.max_failed_instances)
        if not pending(self.impersonation_chain):
            check_impersonation_chain(self.impersonation_chain)
        if not pending(self.gcp_conn_id) and (
            not isinstance(self.gcp_conn_id, str) or not self.gcp_conn_id.strip()
        ):
            raise ValueError(f"invalid gcp_conn_id {self.gcp_conn_id!r}: expected a non-empty string")

    def store_export(self) -> StoreExport:
        self._validate(skip_templated=False)
        return gcs_store_export(
            self.source,
            self.uri_prefix,
            mime_type=self.mime_type,
            filter_gcs_uri=check_filter_for_store(self.filter_config),
        )

    def _from_store(self) -> bool:
        return uris.is_dicom_store_name(self.source) or (
            uris.is_templated(self.source) and str(self.source).startswith("projects/")
        )

    def execute(self, context: Any) -> dict[str, Any]:
        if self._from_store():
            return self.execute_store_export(context)
        return self._copy_files(context)

    def _copy_files(self, context: Any) -> dict[str, Any]:
        """Non-store sources: the task copies the files (it has no operation to wait on or defer)."""
        from airflow.providers.common.compat.sdk import AirflowFailException

        from airflow_provider_dicom.export import service
        from airflow_provider_dicom.export.progress import ProgressReporter
        from airflow_provider_dicom.model.arguments import parse_max_failed_instances
        from airflow_provider_dicom.utils.clients import ConnectionClients

        try:
            self._validate(skip_templated=False)
        except (ValueError, NotImplementedError) as exc:
            raise AirflowFailException(str(exc)) from exc
        from airflow_provider_dicom.model.sources import DicomSource

        self.log.info("Copying DICOM files from %s to %s", DicomSource.parse(self.source).display, self.uri_prefix)
        clients = ConnectionClients(self.gcp_conn_id, self.impersonation_chain, dicomweb_conn_id=self.dicomweb_conn_id)
        copy = service.gcs_copy(
            source=self.source, uri_prefix=self.uri_prefix, filter_config=self.filter_config,
            mime_type=self.mime_type, workers=self.max_concurrent_requests,
        )
        # The connection's project: the storage client reads and writes, it runs no jobs.
        result = service.run_gcs_copy(copy, clients, project="", progress=ProgressReporter(self.log.info, 30.0))
        summary = result.to_dict()
        try:
            service.check_failures(result, parse_max_failed_instances(self.max_failed_instances))
        except service.TooManyFailedInstances as exc:
            context["ti"].xcom_push(key="return_value", value=summary)
            raise AirflowFailException(
                service.failed_instances_message(
                    list(result.failures), result.instances_copied, self.uri_prefix, self.max_failed_instances,
                    verb="copy", done="copied to",
                )
            ) from exc
        return summary

    def lineage_datasets(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        from airflow_provider_dicom.utils.lineage import gcs_dataset_name

        inputs, _ = super().lineage_datasets()
        return inputs, [gcs_dataset_name(self.uri_prefix)]
