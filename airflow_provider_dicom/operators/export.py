"""Operator exporting DICOM metadata to the BigQuery table the Cloud Healthcare API export writes.

The operator is thin: it validates its arguments, says which Airflow connections the clients come
from, and hands the export to the export service (`airflow_provider_dicom.export.service`, which
`airflow-dicom export bq` uses too; Cloud Healthcare stores: `healthcare.store_export`). Nothing heavy
(pydicom, google-cloud-bigquery, the Google provider's hooks) is imported until `execute()`, so
DAG files that use it parse fast on schedulers and DAG processors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_dicom.links.bigquery import DicomBigQueryTableLink
from airflow_provider_dicom.links.healthcare import DicomOperationLogsLink, DicomStoreLink
from airflow_provider_dicom.model import uris
from airflow_provider_dicom.model.arguments import (
    check_concurrency,
    check_identifier,
    check_impersonation_chain,
    parse_max_failed_instances,
)
from airflow_provider_dicom.model.request import ExportRequest, parse_export_request
from airflow_provider_dicom.model.sources import SourceKind
from airflow_provider_dicom.operators.store_export import BigQueryStoreExportBase, store_template_fields
from airflow_provider_dicom.utils.assets import AssetOutletsMixin
from airflow_provider_dicom.utils.clients import ConnectionClients  # light: clients load when called

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_dicom.utils.lineage import WrittenTable


PROGRESS_INTERVAL_SECONDS = 30.0


class DicomExportToBigQueryOperator(AssetOutletsMixin, BigQueryStoreExportBase):
    """Export DICOM metadata into a BigQuery table shaped exactly like the Cloud Healthcare export's.

    :param source: where the DICOM instances are. A local folder (a path, or ``file:///path``), read
        recursively; a ``gs://bucket/path`` prefix (the objects under ``path/``, read header-only
        with ranged reads through the ``gcp_conn_id`` connection, so pixel data is never downloaded);
        or a DICOMweb base URL such as ``https://pacs.example.org/dicom-web`` (QIDO-RS to list,
        WADO-RS series metadata to read; credentials from ``dicomweb_conn_id``). Objects and files
        that are not DICOM are skipped and counted. A Cloud Healthcare store
        (``projects/P/locations/L/datasets/D/dicomStores/S``) is exported by the API itself
        (``dicomStores.export``; the task waits on its operation: see `DicomStoreExportBase` for
        ``deferrable``, ``wait_for_completion``, ``poll_interval``, ``cancel_on_kill``,
        ``api_endpoint`` and ``include_source_store``; the filter file must then be on ``gs://``).
        Through DICOMweb the table lacks what the DICOM JSON model does not carry: the File Meta
        Information columns, BlobStorageSize and LastUpdated; DS/IS values come back as numbers.
    :param destination_table_uri: ``bq://PROJECT.DATASET.TABLE``. The dataset must exist.
    :param write_disposition: ``WRITE_EMPTY`` (an existing empty table is fine, a non-empty one is an
        error), ``WRITE_TRUNCATE`` (replace atomically) or ``WRITE_APPEND`` (add rows, add new columns);
        gcloud's ``write-empty`` spellings are accepted. Do not combine with ``force``.
    :param force: legacy flag: ``True`` replaces an existing table; ``False`` or neither option given
        makes any existing table an error, exactly as the Cloud Healthcare API does.
    :param filter_config: optional filter file (local path or ``gs://BUCKET/OBJECT``) listing
        ``/studies/S[/series/SE[/instances/I]]`` lines; only those resources are exported.
    :param schema: ``flattened`` (one column per data element) or ``json`` (the schemaJson table).
    :param max_failed_instances: how many instances may fail to convert (broken DICOM) before the task
        fails. Failures never stop the export: every good instance is loaded first, then the task fails
        if the count is above this number, with the count and the first failures in its message. The
        default 0 fails the task on any failure; ``None`` never fails it for that reason. Templated:
        a rendered ``"3"`` or ``"None"`` is understood. The failing
        task is not retried (retrying cannot fix a broken file and, with ``WRITE_APPEND``, would load
        the good instances twice); the result is still pushed to XCom as ``return_value``.
        Other errors a retry cannot fix (a bad rendered argument, a destination table whose state
        forbids the export) fail the task without retries too; BigQuery and network errors are
        retried as usual.
    :param project_id: project the BigQuery load jobs run in and are billed to; defaults to the
        destination table's project.
    :param location: BigQuery location for the load jobs (e.g. ``EU``); defaults to the dataset's.
    :param gcp_conn_id: Airflow connection to Google Cloud. ``BIGQUERY_EMULATOR_HOST`` in the
        worker's environment redirects the client to a BigQuery emulator.
    :param impersonation_chain: service account (or chain of them) to impersonate, as in the Google
        provider's operators.
    :param dicomweb_conn_id: Airflow connection holding the DICOMweb server's credentials, of type
        ``dicomweb`` (its form: bearer token, timeout, TLS verification; see `DicomWebHook`) or
        ``http``: login and password for basic authentication; the connection's extra (a JSON
        object) is sent as HTTP headers (e.g. ``{"Authorization": "Bearer ..."}``), except
        ``verify`` (false, or a CA bundle path) and ``timeout`` (seconds). Only for a DICOMweb
        source; without it the server is read anonymously.
    :param max_concurrent_requests: requests in flight at once to a gs:// or DICOMweb source
        (remote reads wait on latency, so many at once is what makes them fast). Default 16.
    :param processes: worker processes converting a folder's files (parsing is CPU-bound): an
        integer, or "auto" for one per core available to the task. Default 1 (in the task's own
        process). The table is the same whatever the number.

    Returns (XCom ``return_value``) the export summary: counts of exported, failed and non-DICOM
    files, and each failure's path and reason.

    Outlets: unless ``outlets`` is given, the table's Asset (``bigquery://PROJECT/DATASET/TABLE``),
    or for a templated table an AssetAlias ``dicom-export/<dag_id>/<task_id>`` that gets the
    rendered table's Asset event when the task succeeds (see `airflow_provider_dicom.utils.assets`).
    """

    asset_destination_field = "destination_table_uri"

    template_fields: Sequence[str] = store_template_fields((
        "source",
        "destination_table_uri",
        "write_disposition",
        "filter_config",
        "schema",
        "project_id",
        "location",
        "gcp_conn_id",
        "impersonation_chain",
        "max_failed_instances",
        "dicomweb_conn_id",
    ))
    ui_color = "#e8f0fe"
    operator_extra_links = (DicomBigQueryTableLink(), DicomStoreLink(), DicomOperationLogsLink())

    def __init__(
        self,
        *,
        source: str,
        destination_table_uri: str,
        write_disposition: str | None = None,
        force: bool | None = None,
        filter_config: str | None = None,
        schema: str = "flattened",
        max_failed_instances: int | str | None = 0,
        project_id: str | None = None,
        location: str | None = None,
        gcp_conn_id: str = "google_cloud_default",
        impersonation_chain: str | Sequence[str] | None = None,
        dicomweb_conn_id: str | None = None,
        max_concurrent_requests: int = 16,
        processes: int | str = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._load_job: tuple[str, str] | None = None  # (project, job id) while a load job runs
        self._written: WrittenTable | None = None  # what a folder, gs:// or DICOMweb export loaded
        self.source = source
        self.destination_table_uri = destination_table_uri
        self.write_disposition = write_disposition
        self.force = force
        self.filter_config = filter_config
        self.schema = schema
        self.max_failed_instances = max_failed_instances
        self.project_id = project_id
        self.location = location
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain
        self.dicomweb_conn_id = dicomweb_conn_id
        self.max_concurrent_requests = check_concurrency(max_concurrent_requests)
        from airflow_provider_dicom.sources.parallel import resolve_processes

        resolve_processes(processes)  # a ValueError naming the value, at DAG parse time
        self.processes = processes
        self._validate(skip_templated=True)
        self._declare_default_outlets("outlets" in kwargs)

    def _emits_asset(self) -> bool:
        return bool(self.wait_for_completion)  # an export not waited for has written nothing yet

    def asset_event_extra(self) -> dict[str, Any]:
        return {"source": self.source}

    def _validate(self, *, skip_templated: bool) -> ExportRequest:
        request = parse_export_request(
            source=self.source,
            destination_table_uri=self.destination_table_uri,
            write_disposition=self.write_disposition,
            force=self.force,
            schema=self.schema,
            filter_config=self.filter_config,
            skip_templated=skip_templated,
        )
        if request.source is not None and request.source.kind is not SourceKind.DICOM_STORE:
            # A literal store name or URL fails the DAG at parse time, not hours later in a task.
            # (Stores are exported by the Healthcare API: see execute_store_export.)
            request.source.require_supported()
        self.validate_source_options(request.source.kind if request.source else None, skip_templated=skip_templated)
        for name in ("project_id", "location", "gcp_conn_id"):
            value = getattr(self, name)
            if not (skip_templated and uris.is_templated(value)):
                check_identifier(name, value, optional=name != "gcp_conn_id")
        if not (skip_templated and uris.is_templated(self.impersonation_chain)):
            check_impersonation_chain(self.impersonation_chain)
        if not (skip_templated and uris.is_templated(self.max_failed_instances)):
            parse_max_failed_instances(self.max_failed_instances)
        if not (skip_templated and uris.is_templated(self.dicomweb_conn_id)):
            if self.dicomweb_conn_id == "":
                self.dicomweb_conn_id = None  # a DAG param left empty renders to "": no connection
            check_identifier("dicomweb_conn_id", self.dicomweb_conn_id, optional=True)
            if (
                self.dicomweb_conn_id is not None
                and request.source is not None
                and request.source.kind is not SourceKind.DICOMWEB
            ):
                raise ValueError(
                    f"dicomweb_conn_id={self.dicomweb_conn_id!r} is for a DICOMweb source; "
                    f"{request.source.display} is not one"
                )
        return request

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            request = self._validate(skip_templated=False)
        except (ValueError, NotImplementedError) as exc:
            # A rendered value that is wrong stays wrong: fail without burning retries.
            raise AirflowFailException(str(exc)) from exc
        assert request.source and request.table and request.write and request.schema
        if request.source.kind is SourceKind.DICOM_STORE:
            return self.execute_store_export(context)  # Google exports; the task waits on the operation
        from airflow_provider_dicom.export import service
        from airflow_provider_dicom.export.bigquery import DestinationError
        from airflow_provider_dicom.export.progress import ProgressReporter

        try:
            export = service.bigquery_export_of(
                request,
                project=self.project_id,
                workers=self.max_concurrent_requests,
                processes=self.processes,
            )
        except (ValueError, NotImplementedError) as exc:
            raise AirflowFailException(str(exc)) from exc
        project = export.project
        self.log.info(
            "Exporting DICOM metadata from %s to %s (%s, %s schema%s)",
            request.source.display,
            request.table,
            request.write.disposition.value,
            request.schema.value,
            f", filter {request.filter_config}" if request.filter_config else "",
        )
        from airflow_provider_dicom.utils.try_lineage import TryLineage, load_job_base_id

        # The same on every retry of this try lineage, new after a clear: a retry finds the load
        # its earlier try committed instead of loading (and, with WRITE_APPEND, doubling) again.
        load_job_id = load_job_base_id(context, TryLineage.from_context(context))
        clients = _OperatorClients(self)
        try:
            result = service.run_bigquery_export(
                export,
                clients,
                progress=ProgressReporter(self.log.info, PROGRESS_INTERVAL_SECONDS),
                load_job_id=load_job_id,
                on_load_job=lambda job_id: setattr(self, "_load_job", (project, job_id)),
            )
        except DestinationError as exc:
            # The table's state forbids the export (exists, not empty, no dataset): a retry would
            # meet the same table. Load-job and network errors stay retryable: the single load job
            # is atomic, so a retry never duplicates rows.
            raise AirflowFailException(str(exc)) from exc
        self._load_job = None  # finished: nothing for on_kill to cancel
        from airflow_provider_dicom.utils.lineage import WrittenTable

        self._written = WrittenTable(
            result.fields or None, result.instances_exported if result.table_written else 0, result.output_bytes
        )
        summary = result.to_dict()
        failures = list(result.failures)
        # Each failed file is already logged, with its reason, as the export meets it.
        self.log.info(
            "Exported %d instances to %s; %d failed; %d files were not DICOM and were skipped; "
            "%d filtered out",
            result.instances_exported,
            request.table,
            len(failures),
            result.not_dicom_count,
            result.filtered_out_count,
        )
        try:
            service.check_failures(result, parse_max_failed_instances(self.max_failed_instances))
        except service.TooManyFailedInstances as exc:
            # The summary is the task's result even though the task fails: downstream tasks with a
            # permissive trigger rule, and people reading the UI, still get the counts.
            context["ti"].xcom_push(key="return_value", value=summary)
            raise AirflowFailException(
                service.failed_instances_message(
                    failures, result.instances_exported, request.table, self.max_failed_instances
                )
            ) from exc
        return summary

    def lineage_written(self) -> WrittenTable | None:
        """The columns, rows and bytes the load job wrote (a folder, gs:// or DICOMweb source), or
        what the store export wrote (see `BigQueryStoreExportBase`)."""
        return self._written if self._written is not None else super().lineage_written()

    def on_kill(self) -> None:
        """Cancel the load job this try is waiting on (if any), and the Healthcare operation of a
        store export. A load that already committed stays: cancelling is best effort."""
        load = getattr(self, "_load_job", None)
        if load is not None:
            project, job_id = load
            try:
                self._bigquery_client(project).cancel_job(job_id, location=self.location)
                self.log.info("Cancelled BigQuery load job %s because the task was killed", job_id)
            except Exception as exc:  # noqa: BLE001 - on_kill must not raise
                self.log.warning("Could not cancel BigQuery load job %s: %s", job_id, exc)
        super().on_kill()

    def _bigquery_client(self, project: str):
        from airflow_provider_dicom.utils.clients import bigquery_client

        return bigquery_client(self.gcp_conn_id, self.impersonation_chain, self.location, project)


class _OperatorClients(ConnectionClients):
    """The task's connections; BigQuery through the operator's own `_bigquery_client`, the one
    `on_kill` uses to cancel the load job."""

    def __init__(self, operator: DicomExportToBigQueryOperator) -> None:
        super().__init__(
            operator.gcp_conn_id,
            operator.impersonation_chain,
            location=operator.location,
            dicomweb_conn_id=operator.dicomweb_conn_id,
        )
        self._operator = operator

    def bigquery(self, project: str) -> Any:
        return self._operator._bigquery_client(project)
