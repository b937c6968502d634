"""Operators of a sharded export: plan -> shards (dynamic task mapping) -> one atomic load.

One `DicomExportToBigQueryOperator` task reads the whole source on one worker, with at most the
cores of that worker. When a source is too large for one task's time window (millions of
instances, a slow DICOMweb server that allows many connections per client), the same export can
be split across workers:

    plan  = DicomShardPlanOperator(task_id="plan", source=..., destination_table_uri=..., staging_uri=..., shards=16)
    shard = DicomShardExportOperator.partial(task_id="shard").expand(shard=plan.output)
    load  = DicomShardLoadOperator(task_id="load", shards=plan.output, destination_table_uri=...)
    shard >> load

or, with the same arguments, `dicom_sharded_export(group_id="export", ...)`, which builds that
task group. The shards write only to the staging area; the table is written once, by the load,
with one load job, so WRITE_TRUNCATE and WRITE_EMPTY mean what they mean for a single task, and a
shard that fails leaves the table as it was (the load does not run; run the shard again and the
load follows).

Nothing heavy is imported here at DAG-parse time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator

from airflow_provider_dicom.links.bigquery import DicomBigQueryTableLink
from airflow_provider_dicom.model import uris
from airflow_provider_dicom.model.arguments import (
    check_concurrency,
    check_identifier,
    check_impersonation_chain,
)
from airflow_provider_dicom.model.sources import DicomSource, SourceKind
from airflow_provider_dicom.utils.assets import AssetOutletsMixin

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

PROGRESS_INTERVAL_SECONDS = 30.0
LISTING_CONNECTIONS = 4  # the plan pages through QIDO-RS one request at a time
_SPEC_KEYS = ("staging_uri", "plan", "plan_id", "index", "shard_count")


def _pending(value: object, skip_templated: bool) -> bool:
    return skip_templated and uris.is_templated(value)


def check_shard_spec(value: object) -> dict[str, Any]:
    """One element of the plan's result, as the shard task receives it."""
    if not isinstance(value, dict) or any(key not in value for key in _SPEC_KEYS):
        raise ValueError(
            f"invalid shard {value!r}: expected one element of DicomShardPlanOperator's result "
            f"(a dict with {', '.join(_SPEC_KEYS)}); map the shard task over the plan task's output"
        )
    return value


def check_shard_specs(value: object) -> list[dict[str, Any]]:
    """The plan's whole result, as the load task receives it: shards of one plan, all of them."""
    if isinstance(value, dict):
        raise ValueError("invalid shards: got one shard; pass the plan task's whole output (plan.output)")
    try:
        specs = [check_shard_spec(item) for item in cast("Iterable[object]", value)]  # else TypeError below
    except TypeError:
        raise ValueError(f"invalid shards {value!r}: expected the plan task's output, a list of shards") from None
    if not specs:
        raise ValueError("invalid shards []: the plan task's output always holds at least one shard")
    plans = {(spec["staging_uri"], spec["plan"]) for spec in specs}
    if len(plans) != 1:
        raise ValueError(f"invalid shards: they come from {len(plans)} different plans; expected one plan's output")
    if len(specs) != specs[0]["shard_count"]:
        raise ValueError(
            f"invalid shards: got {len(specs)} of the plan's {specs[0]['shard_count']}; pass the whole plan output"
        )
    return specs


class _ShardedBase(BaseOperator):
    """Connections every step of a sharded export may need."""

    def __init__(
        self,
        *,
        gcp_conn_id: str = "google_cloud_default",
        impersonation_chain: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain

    def _check_connections(self, *, skip_templated: bool, **optional: object) -> None:
        """The Google connection arguments, and any optional identifiers (project, location, ...)."""
        if not _pending(self.gcp_conn_id, skip_templated):
            check_identifier("gcp_conn_id", self.gcp_conn_id, optional=False)
        if not _pending(self.impersonation_chain, skip_templated):
            check_impersonation_chain(self.impersonation_chain)
        for name, value in optional.items():
            if not _pending(value, skip_templated):
                check_identifier(name, value, optional=True)

    def _storage_client(self) -> Any:
        from airflow_provider_dicom.utils.clients import storage_client

        return storage_client(self.gcp_conn_id, self.impersonation_chain)

    def _staging(self, staging_uri: str, storage_client: Any = None) -> Any:
        from airflow_provider_dicom.export.staging import open_staging

        if staging_uri.startswith("gs://") and storage_client is None:
            storage_client = self._storage_client()
        return open_staging(staging_uri, storage_client)


class DicomShardPlanOperator(_ShardedBase):
    """Plan a sharded export: check the destination, list the source once, cut it into shards.

    :param source: a local folder, a ``gs://bucket/prefix`` or a DICOMweb base URL, as for
        `DicomExportToBigQueryOperator` (a Cloud Healthcare store is exported by Google and is not
        sharded). A folder must be visible at the same path on every worker.
    :param destination_table_uri: ``bq://PROJECT.DATASET.TABLE``; checked now, so an export that
        the table's state forbids (e.g. WRITE_EMPTY into a non-empty table) fails before listing.
    :param staging_uri: where shards leave their rows for the load: ``gs://BUCKET/PREFIX`` for
        deployments with several workers (Cloud Composer), or an absolute local folder when every
        task runs on one machine. Each run writes below ``{staging_uri}/{dag_id}/{run_id}/{plan id}/``;
        a successful load removes the rows and listings. A lifecycle rule on the bucket clears the
        rest and what failed runs leave.
    :param shards: at most this many shards (fewer for a small source). Each is one mapped task;
        limit how many run at once with ``max_active_tis_per_dagrun`` on the shard task.
    :param write_disposition: as for `DicomExportToBigQueryOperator`; give the load task the same.
    :param force: as for `DicomExportToBigQueryOperator`; give the load task the same.
    :param filter_config: as for `DicomExportToBigQueryOperator`; read once, here, and staged, so
        every shard applies the same filter even if the file changes during the run.
    :param schema: ``flattened`` or ``json``, as for `DicomExportToBigQueryOperator`.
    :param dicomweb_conn_id: DICOMweb (or HTTP) connection with the server's credentials, to list its
        studies (DICOMweb sources only).

    Returns (XCom) one small dict per shard, to map the shard task over.
    """

    template_fields: Sequence[str] = (
        "source", "destination_table_uri", "staging_uri", "shards", "write_disposition", "filter_config",
        "schema", "project_id", "location", "gcp_conn_id", "impersonation_chain", "dicomweb_conn_id",
    )
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        source: str,
        destination_table_uri: str,
        staging_uri: str,
        shards: int | str = 8,
        write_disposition: str | None = None,
        force: bool | None = None,
        filter_config: str | None = None,
        schema: str = "flattened",
        project_id: str | None = None,
        location: str | None = None,
        dicomweb_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.destination_table_uri = destination_table_uri
        self.staging_uri = staging_uri
        self.shards = shards
        self.write_disposition = write_disposition
        self.force = force
        self.filter_config = filter_config
        self.schema = schema
        self.project_id = project_id
        self.location = location
        self.dicomweb_conn_id = dicomweb_conn_id
        self._validate(skip_templated=True)

    def _validate(self, *, skip_templated: bool) -> Any:
        from airflow_provider_dicom.export.shard_plan import check_shard_count
        from airflow_provider_dicom.export.staging import check_staging_uri
        from airflow_provider_dicom.model.request import parse_export_request

        request = parse_export_request(
            source=self.source,
            destination_table_uri=self.destination_table_uri,
            write_disposition=self.write_disposition,
            force=self.force,
            schema=self.schema,
            filter_config=self.filter_config,
            skip_templated=skip_templated,
        )
        if request.source is not None:
            check_shardable(request.source)
        if not _pending(self.staging_uri, skip_templated):
            check_staging_uri(self.staging_uri)
        if not _pending(self.shards, skip_templated):
            self.shards = check_shard_count(self.shards)
        if self.dicomweb_conn_id == "" and not skip_templated:
            self.dicomweb_conn_id = None  # a DAG param left empty renders to "": no connection
        self._check_connections(
            skip_templated=skip_templated, project_id=self.project_id, location=self.location,
            dicomweb_conn_id=self.dicomweb_conn_id or None,
        )
        return request

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow_provider_dicom.export.bigquery import DestinationError
        from airflow_provider_dicom.export.shard_plan import check_shard_count, plan_sharded_export, run_label
        from airflow_provider_dicom.utils.clients import bigquery_client

        try:
            request = self._validate(skip_templated=False)
        except (ValueError, NotImplementedError) as exc:
            raise AirflowFailException(str(exc)) from exc
        from airflow_provider_dicom.export.service import source_clients
        from airflow_provider_dicom.utils.clients import ConnectionClients

        # The plan pages through QIDO-RS one request at a time: a few connections are plenty.
        storage, web = source_clients(
            request.source, request.filter_config,
            ConnectionClients(self.gcp_conn_id, self.impersonation_chain, dicomweb_conn_id=self.dicomweb_conn_id),
            project=self.project_id or request.table.project, pool_size=LISTING_CONNECTIONS,
        )
        staging = self._staging(self.staging_uri, storage)
        client = bigquery_client(
            self.gcp_conn_id, self.impersonation_chain, self.location, self.project_id or request.table.project
        )
        dag_run = context["dag_run"]
        try:
            plan = plan_sharded_export(
                request.source.value, staging, request.table, shards=check_shard_count(self.shards),
                label=run_label(dag_run.dag_id, dag_run.run_id), client=client,
                write_disposition=self.write_disposition, force=self.force, filter_config=request.filter_config,
                schema=request.schema, storage_client=storage, dicomweb_client=web,
            )
        except DestinationError as exc:
            raise AirflowFailException(str(exc)) from exc
        return [plan.spec(self.staging_uri, index) for index in range(plan.shard_count)]

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from airflow_provider_dicom.utils.lineage import operator_lineage, source_dataset_name

        try:
            return operator_lineage([source_dataset_name(self.source)], [])
        except ValueError:
            return None


def check_shardable(source: DicomSource) -> None:
    if source.kind is SourceKind.DICOM_STORE:
        raise ValueError(
            f"a sharded export reads folders, gs:// prefixes and DICOMweb servers; {source.display} is "
            "exported by the Cloud Healthcare API itself (use DicomExportToBigQueryOperator)"
        )
    source.require_supported()


class DicomShardExportOperator(_ShardedBase):
    """Read one shard of a planned export and stage its rows; never touches the table.

    Map it over the plan task's output: ``DicomShardExportOperator.partial(task_id="shard",
    ...).expand(shard=plan.output)``. Broken files are counted, not raised: the load task applies
    ``max_failed_instances`` to the whole export. A retried shard replaces its earlier output.

    :param shard: one element of the plan's result.
    :param dicomweb_conn_id: DICOMweb (or HTTP) connection with the server's credentials (DICOMweb only).
    :param max_concurrent_requests: requests in flight to a gs:// or DICOMweb source (default 16).
    :param processes: worker processes converting a folder's files: an integer or "auto".

    Returns (XCom) the shard's counts.
    """

    template_fields: Sequence[str] = ("shard", "gcp_conn_id", "impersonation_chain", "dicomweb_conn_id")
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        shard: dict[str, Any],
        dicomweb_conn_id: str | None = None,
        max_concurrent_requests: int = 16,
        processes: int | str = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from airflow_provider_dicom.sources.parallel import resolve_processes

        self.shard = shard
        self.dicomweb_conn_id = dicomweb_conn_id
        self.max_concurrent_requests = check_concurrency(max_concurrent_requests)
        resolve_processes(processes)
        self.processes = processes

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_dicom.export.progress import ProgressReporter
        from airflow_provider_dicom.export.shard_export import export_shard
        from airflow_provider_dicom.export.shard_plan import read_plan
        from airflow_provider_dicom.sources.parallel import resolve_processes

        try:
            spec = check_shard_spec(self.shard)
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from exc
        staging = self._staging(spec["staging_uri"])
        plan = read_plan(staging, spec["plan"])
        storage = staging.client if staging.is_gcs() else None
        if plan.source_kind == SourceKind.GCS_PREFIX.value and storage is None:
            storage = self._storage_client()
        web = None
        if plan.source_kind == SourceKind.DICOMWEB.value:
            from airflow_provider_dicom.utils.clients import dicomweb_client

            web = dicomweb_client(plan.source, self.dicomweb_conn_id or None, self.max_concurrent_requests)
        result = export_shard(
            staging, plan, int(spec["index"]), storage_client=storage, dicomweb_client=web,
            workers=self.max_concurrent_requests, processes=resolve_processes(self.processes),
            progress=ProgressReporter(self.log.info, PROGRESS_INTERVAL_SECONDS),
        )
        return result.summary()


class DicomShardLoadOperator(AssetOutletsMixin, _ShardedBase):
    """Load every shard of a planned export into the table with one atomic BigQuery load job.

    Runs only when every shard succeeded (the default trigger rule); even so it checks that each
    shard's result is staged, and refuses (table untouched) when one is missing. A
    SOPInstanceUID staged by two shards is loaded once (the first shard's, as an unsharded
    export keeps the first file). A retried load finds its earlier try's job and never loads
    the rows twice.

    :param shards: the plan task's output (``plan.output``).
    :param destination_table_uri: the table, as given to the plan task.
    :param write_disposition: as given to the plan task; the table's state is checked again here,
        as it may have changed while the shards ran.
    :param force: as given to the plan task.
    :param max_failed_instances: as for `DicomExportToBigQueryOperator`, over all shards: the
        good instances are loaded, then the task fails above this many failures.
    :param load_from: ``auto`` (default), ``uris`` or ``stream``: ``uris`` has BigQuery read the
        staged files from ``gs://`` itself (nothing passes through the worker); ``stream`` uploads
        them from the worker (needed for local staging and for BigQuery emulators). ``auto`` picks
        ``uris`` for ``gs://`` staging unless BIGQUERY_EMULATOR_HOST is set.
    :param keep_staging: keep the staged files after a successful load (default: remove them).
    :param source: the export's source, for lineage only (optional).

    Returns (XCom) the export summary, as `DicomExportToBigQueryOperator` does, plus the shard count.
    Outlets (unless given): the table's Asset, as for `DicomExportToBigQueryOperator`.
    """

    asset_destination_field = "destination_table_uri"

    template_fields: Sequence[str] = (
        "shards", "destination_table_uri", "write_disposition", "max_failed_instances", "project_id",
        "location", "gcp_conn_id", "impersonation_chain", "source",
    )
    ui_color = "#e8f0fe"
    operator_extra_links = (DicomBigQueryTableLink(),)

    def __init__(
        self,
        *,
        shards: Any,
        destination_table_uri: str,
        write_disposition: str | None = None,
        force: bool | None = None,
        max_failed_instances: int | str | None = 0,
        load_from: str = "auto",
        keep_staging: bool = False,
        project_id: str | None = None,
        location: str | None = None,
        source: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from airflow_provider_dicom.export.shard_load import check_load_route

        self.shards = shards
        self.destination_table_uri = destination_table_uri
        self.write_disposition = write_disposition
        self.force = force
        self.max_failed_instances = max_failed_instances
        self.load_from = check_load_route(load_from)
        self.keep_staging = keep_staging
        self.project_id = project_id
        self.location = location
        self.source = source
        self._written: Any = None  # a WrittenTable once the load ran, for lineage
        self._validate(skip_templated=True)
        self._declare_default_outlets("outlets" in kwargs)

    def asset_event_extra(self) -> dict[str, Any]:
        return {"source": self.source} if self.source else {}

    def _validate(self, *, skip_templated: bool) -> Any:
        from airflow_provider_dicom.model.arguments import parse_max_failed_instances
        from airflow_provider_dicom.model.options import WriteOptions

        table = None
        if not _pending(self.destination_table_uri, skip_templated):
            table = uris.BigQueryTableUri.parse(self.destination_table_uri)
        if not _pending(self.write_disposition, skip_templated):
            WriteOptions.resolve(self.write_disposition, self.force)
        if not _pending(self.max_failed_instances, skip_templated):
            parse_max_failed_instances(self.max_failed_instances)
        self._check_connections(skip_templated=skip_templated, project_id=self.project_id, location=self.location)
        return table

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_dicom.export.bigquery import DestinationError
        from airflow_provider_dicom.export.shard_load import IncompleteShardsError, load_sharded_export
        from airflow_provider_dicom.model.arguments import parse_max_failed_instances
        from airflow_provider_dicom.export.service import failed_instances_message
        from airflow_provider_dicom.utils.clients import bigquery_client

        try:
            table = self._validate(skip_templated=False)
            specs = check_shard_specs(self.shards)
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from exc
        staging = self._staging(specs[0]["staging_uri"])
        client = bigquery_client(self.gcp_conn_id, self.impersonation_chain, self.location, self.project_id or table.project)
        try:
            result = load_sharded_export(
                staging, specs[0]["plan"], table, client=client, write_disposition=self.write_disposition,
                force=self.force, load_from=self.load_from, keep_staging=self.keep_staging,
            )
        except (DestinationError, IncompleteShardsError) as exc:
            # A retry meets the same table, the same missing shards: fail now, clearly.
            raise AirflowFailException(str(exc)) from exc
        summary = result.to_dict()
        from airflow_provider_dicom.utils.lineage import WrittenTable

        # A retry that found the plan already loaded knows the rows, not the columns (None: no schema facet).
        self._written = WrittenTable(
            result.fields or None, result.instances_exported if result.table_written else 0, result.output_bytes
        )
        failures = list(result.failures)
        tolerated = parse_max_failed_instances(self.max_failed_instances)
        if tolerated is not None and len(failures) > tolerated:
            context["ti"].xcom_push(key="return_value", value=summary)
            raise AirflowFailException(
                failed_instances_message(failures, result.instances_exported, table, self.max_failed_instances)
            )
        return summary

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from airflow_provider_dicom.utils.lineage import (
            bigquery_dataset_name,
            operator_lineage,
            source_dataset_name,
        )

        try:
            inputs = [source_dataset_name(self.source)] if self.source else []
            output = bigquery_dataset_name(self.destination_table_uri)
        except ValueError:
            return None
        written = self._written
        return operator_lineage(inputs, [output], {output: written} if written is not None else None)
