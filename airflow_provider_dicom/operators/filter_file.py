"""Operator building a filter file: the middle step of "export -> query UIDs -> filter file -> re-export".

Google's guide does this by hand (query, save to a table, export the table to GCS); here it is one
task whose output URI goes straight into `filter_config` of DicomExportToBigQueryOperator or
DicomExportToGcsOperator. The work is in `filter_build` (validation, dedupe, streaming writes) and
`filter_query` (the BigQuery routes); this module only adapts it to Airflow: templating,
connections, the empty-selection policy, XCom, the extra link and lineage. Nothing heavy is
imported until `execute()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSkipException,
    BaseOperator,
)

from airflow_provider_dicom.filters.build import (
    REJECT_EXAMPLES,
    UID_COLUMNS,
    NestingError,
    check_column_name,
    check_destination,
    check_level,
    check_nesting,
    check_on_empty,
    parse_literal,
)
from airflow_provider_dicom.links.storage import DicomFilterFileLink
from airflow_provider_dicom.model import uris
from airflow_provider_dicom.utils.assets import AssetOutletsMixin

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

DEFAULT_THRESHOLD = 1_000_000  # rows; the same as filter_query.DEFAULT_THRESHOLD


class BuildFilterFileOperator(AssetOutletsMixin, BaseOperator):
    """Write a filter file (``/studies/S[/series/SE[/instances/I]]`` lines) selecting DICOM resources.

    Exactly one source:

    :param sql: a GoogleSQL query (templated; may be a ``.sql`` file) returning the UID columns
        (``StudyInstanceUID``, ``SeriesInstanceUID``, ``SOPInstanceUID`` by default, see
        ``uid_columns``) or, with ``path_column``, one column of resource paths. Values go in
        ``query_parameters``, never into the SQL text.
    :param source_table: ``bq://PROJECT.DATASET.TABLE`` (e.g. an export table): every resource in it.
    :param uids: values handed over, e.g. ``some_task.output`` or a rendered XCom list: resource
        paths, bare study UIDs, ``(study, series, instance)`` tuples or mappings with the column
        names (or ``study``/``series``/``instance``).

    :param destination: ``gs://BUCKET/OBJECT`` or a local path; replaced on every run (idempotent),
        whole or not at all (a failed write leaves the previous file). A local path must name a
        regular file or none yet (no device, FIFO, folder or symbolic link) and has no ``..``.
    :param level: ``study``, ``series`` or ``instance``: one line per distinct resource at that
        level. Default: ``instance`` for a query or table; for ``uids`` or a ``path_column``, as deep as
        each value goes.
    :param query_parameters: named parameters (``@name`` in the SQL): ``{"name": value}``, or
        ``{"name": {"type": "DATE", "value": "{{ ds }}"}}`` for templated values (rendered to
        strings), or BigQuery API parameter dicts. See `filter_build.query_parameters`.
    :param on_empty: ``fail`` (default), ``skip`` (the task is skipped, and so is everything
        downstream under the default trigger rule: no export of an empty cohort) or
        ``write_empty`` (an empty file; note an empty filter makes an export select nothing).
    :param max_rejected: how many invalid UIDs fail the task; None (default) never fails for that,
        but the count and the first rejects are always logged and returned.
    :param server_side_threshold: above this many rows (the query job's ``total_rows``) the file is
        built by BigQuery (query to a table in ``staging_dataset``, then an extract job to the gs://
        destination) instead of streaming rows through the worker. Needs ``staging_dataset``.
    :param staging_dataset: ``PROJECT.DATASET`` for the server-side route's tables (reused per
        destination, replaced on each run).
    :param path_column: the query returns resource paths in this column (worker route only).
    :param uid_columns: the three UID column names, if the query names them differently.
    :param project_id: project the query jobs run in; defaults to the connection's.
    :param location: BigQuery location of the jobs.
    :param gcp_conn_id: Airflow connection to Google Cloud (BigQuery and Cloud Storage).
    :param impersonation_chain: service account (or chain) to impersonate.

    Returns (XCom) ``uri``, ``lines``, ``studies``, ``series``, ``instances``, ``duplicates``,
    ``covered``, ``rejected``, ``rejected_examples``, ``route`` and ``level``.

    Outlets (unless given): the filter file's Asset (``gs://BUCKET/OBJECT`` or ``file:///PATH``), or
    an AssetAlias for a templated destination (see `airflow_provider_dicom.utils.assets`). A skipped task
    (empty selection) records no event.
    """

    asset_destination_field = "destination"

    template_fields: Sequence[str] = (
        "destination",
        "sql",
        "source_table",
        "uids",
        "query_parameters",
        "level",
        "on_empty",
        "max_rejected",
        "staging_dataset",
        "path_column",
        "project_id",
        "location",
        "gcp_conn_id",
        "impersonation_chain",
    )
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers = {"sql": "sql", "query_parameters": "json", "uids": "json"}
    ui_color = "#fef7e0"
    operator_extra_links = (DicomFilterFileLink(),)

    def __init__(
        self,
        *,
        destination: str,
        sql: str | None = None,
        source_table: str | None = None,
        uids: Any = None,
        level: str | None = None,
        query_parameters: Any = None,
        on_empty: str = "fail",
        max_rejected: int | str | None = None,
        server_side_threshold: int = DEFAULT_THRESHOLD,
        staging_dataset: str | None = None,
        path_column: str | None = None,
        uid_columns: Sequence[str] = UID_COLUMNS,
        project_id: str | None = None,
        location: str | None = None,
        gcp_conn_id: str = "google_cloud_default",
        impersonation_chain: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.destination = destination
        self.sql = sql
        self.source_table = source_table
        self.uids = uids
        self.level = level
        self.query_parameters = query_parameters
        self.on_empty = on_empty
        self.max_rejected = max_rejected
        self.server_side_threshold = server_side_threshold
        self.staging_dataset = staging_dataset
        self.path_column = path_column
        self.uid_columns = tuple(uid_columns)
        self.project_id = project_id
        self.location = location
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain
        given = [name for name in ("sql", "source_table", "uids") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                f"BuildFilterFileOperator needs exactly one of sql, source_table or uids; got {given or 'none'}"
            )
        if len(self.uid_columns) != 3:
            raise ValueError(f"invalid uid_columns {uid_columns!r}: expected three column names")
        if isinstance(server_side_threshold, bool) or not isinstance(server_side_threshold, int) or server_side_threshold < 0:
            raise ValueError(f"invalid server_side_threshold {server_side_threshold!r}: expected an integer >= 0")
        self._validate(skip_templated=True)
        self._declare_default_outlets("outlets" in kwargs)

    def _validate(self, *, skip_templated: bool) -> None:
        def pending(value: object) -> bool:
            return skip_templated and uris.is_templated(value)

        if not pending(self.destination):
            check_destination(self.destination, on_disk=not skip_templated)
        if self.level == "":
            self.level = None  # a DAG param left empty: the default level
        if not pending(self.level):
            check_level(self.level, allow_none=True)
        if not pending(self.on_empty):
            check_on_empty(self.on_empty)
        if not pending(self.max_rejected):
            _parse_max_rejected(self.max_rejected)
        if self.source_table is not None and not pending(self.source_table):
            uris.BigQueryTableUri.parse(self.source_table)
        if self.sql is not None and not pending(self.sql) and not str(self.sql).strip():
            raise ValueError("sql is empty")
        if self.path_column is not None and not pending(self.path_column):
            check_column_name(self.path_column)  # spliced into the SQL
        for column in self.uid_columns:
            if not pending(column):
                try:
                    check_column_name(column)
                except ValueError as exc:
                    raise ValueError(f"invalid uid_columns {self.uid_columns!r}: {exc}") from None
        if self.staging_dataset is not None and not pending(self.staging_dataset):
            uris.check_dataset_ref(self.staging_dataset, "staging_dataset")  # spliced into SQL
        if self.project_id is not None and not pending(self.project_id):
            uris.check_project_id(self.project_id, "project_id")
        for name in ("uids", "query_parameters"):
            value = getattr(self, name)
            if isinstance(value, str) and not pending(value) and name == "query_parameters":
                if value.strip():
                    parse_literal(value.strip(), name)  # JSON or a Python literal, nothing else
            elif isinstance(value, str) and not pending(value) and value.strip().startswith(("[", "(")):
                try:
                    parse_literal(value.strip(), name)
                except NestingError:
                    raise
                except ValueError:
                    pass  # not a literal: uids are then read one a line
            elif value is not None and not isinstance(value, str):
                check_nesting(value, name)

    def effective_level(self) -> str | None:
        level = check_level(self.level, allow_none=True)
        if level is None and self.uids is None and not self.path_column:
            return "instance"
        return level

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_dicom.filters.build import EmptyFilterError, UnorderedInputError

        try:
            self._validate(skip_templated=False)
            level = self.effective_level()
            policy = check_on_empty(self.on_empty)
            tolerated = _parse_max_rejected(self.max_rejected)
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from exc
        try:
            result = self._build(level, policy)
        except EmptyFilterError as exc:
            if policy == "skip":
                raise AirflowSkipException(f"{exc}; skipping downstream tasks (on_empty='skip')") from exc
            raise AirflowFailException(str(exc)) from exc
        except (UnorderedInputError, ValueError) as exc:
            raise AirflowFailException(str(exc)) from exc
        summary = result.to_dict()
        self.log.info(
            "Filter file %s: %d lines (%d studies, %d series, %d instances; level %s; route %s); "
            "%d duplicates and %d covered lines dropped",
            result.uri,
            result.lines,
            result.studies,
            result.series,
            result.instances,
            level or "as given",
            result.route,
            result.duplicates,
            result.covered,
        )
        if result.rejected:
            self.log.warning(
                "%d values rejected as invalid UIDs (first %d: %s)",
                result.rejected,
                REJECT_EXAMPLES,
                "; ".join(result.rejected_examples),
            )
        if tolerated is not None and result.rejected > tolerated:
            context["ti"].xcom_push(key="return_value", value=summary)
            raise AirflowFailException(
                f"{result.rejected} values rejected as invalid UIDs (max_rejected={tolerated}): "
                + "; ".join(result.rejected_examples)
            )
        if result.lines == 0 and policy == "skip":
            context["ti"].xcom_push(key="return_value", value=summary)
            raise AirflowSkipException(
                f"the filter selects nothing ({result.rejected} rejected); skipping downstream tasks (on_empty='skip')"
            )
        if result.lines == 0:
            self.log.warning("The filter selects nothing: wrote an empty %s (on_empty='write_empty')", result.uri)
        self._inputs = list(result.input_tables)
        return summary

    def _build(self, level: str | None, policy: str):
        from airflow_provider_dicom.filters.build import build_from_rows, coerce_items

        storage_client = self._storage_client() if self.destination.startswith("gs://") else None
        if self.uids is not None:
            items = coerce_items(self.uids)
            self.log.info("Building %s from %d values handed over", self.destination, len(items))
            return build_from_rows(
                items, self.destination, level=level, on_empty=policy, storage_client=storage_client, presorted=False
            )
        from airflow_provider_dicom.filters.build import query_parameters, table_sql
        from airflow_provider_dicom.filters.query import build_from_query

        if self.sql is not None:
            sql = self.sql
        else:
            sql = table_sql(uris.BigQueryTableUri.parse(self.source_table).table_id)
        client = self._bigquery_client()
        self._jobs: list[Any] = []
        return build_from_query(
            client,
            sql,
            self.destination,
            level=level,
            parameters=query_parameters(self.query_parameters),
            on_empty=policy,
            path_column=self.path_column or None,
            uid_columns=self.uid_columns,
            storage_client=storage_client,
            threshold=self.server_side_threshold,
            staging_dataset=self.staging_dataset or None,
            location=self.location,
            log=self.log,
            jobs=self._jobs,
        )

    def on_kill(self) -> None:
        """Cancel the BigQuery jobs still running (a killed task should not leave a large query or
        extract running and billed)."""
        from airflow_provider_dicom.utils.deadlines import bigquery_call

        for job in getattr(self, "_jobs", []):
            try:
                deadline = bigquery_call(job, f"cancelling BigQuery job {getattr(job, 'job_id', '?')}")
                if not job.done(**deadline):
                    job.cancel(**deadline)
                    self.log.info("Cancelled BigQuery job %s", getattr(job, "job_id", "?"))
            except Exception as exc:  # noqa: BLE001 - best effort while the task is being killed
                self.log.warning("Could not cancel BigQuery job %s: %s", getattr(job, "job_id", "?"), exc)

    def _bigquery_client(self):
        from airflow_provider_dicom.utils.clients import bigquery_client

        return bigquery_client(self.gcp_conn_id, self.impersonation_chain, self.location, self.project_id)

    def _storage_client(self):
        from airflow_provider_dicom.utils.clients import storage_client

        return storage_client(self.gcp_conn_id, self.impersonation_chain)

    def lineage_datasets(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        from airflow_provider_dicom.utils.lineage import (
            BIGQUERY_NAMESPACE,
            FILE_NAMESPACE,
            bigquery_dataset_name,
            gcs_dataset_name,
        )

        inputs: list[tuple[str, str]] = []
        if self.source_table is not None:
            inputs.append(bigquery_dataset_name(self.source_table))
        for table in getattr(self, "_inputs", []):
            pair = (BIGQUERY_NAMESPACE, table)
            anonymous = table.split(".")[1:2][0].startswith("_") if table.count(".") >= 2 else True
            if pair not in inputs and not anonymous:
                inputs.append(pair)
        if self.destination.startswith("gs://"):
            output = gcs_dataset_name(self.destination)
        else:
            output = (FILE_NAMESPACE, self.destination)
        return inputs, [output]

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The queried table(s) as inputs and the filter file as output; None without the OpenLineage provider."""
        from airflow_provider_dicom.utils.lineage import operator_lineage

        try:
            inputs, outputs = self.lineage_datasets()
        except ValueError:
            return None
        return operator_lineage(inputs, outputs)


def _parse_max_rejected(value: object) -> int | None:
    from airflow_provider_dicom.model.arguments import parse_optional_count

    return parse_optional_count(value, "max_rejected")


__all__ = ["BuildFilterFileOperator"]
