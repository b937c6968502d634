"""A sharded export as one task group: plan -> mapped shards -> load, wired and named for you.

Use it where one `DicomExportToBigQueryOperator` task would take too long; see
`airflow_provider_dicom.operators.sharded_export` for what each step does and README's "Sharded
export" for when it pays off. The group can be placed between other tasks like a single task:

    with DAG(...):
        export = dicom_sharded_export(
            "export", source="gs://archive/dicom", destination_table_uri="bq://p.d.t",
            staging_uri="gs://scratch/dicom-staging", shards=32, write_disposition="WRITE_TRUNCATE",
        )
        export >> build_filter
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.common.compat.sdk import TaskGroup

from airflow_provider_dicom.operators.sharded_export import (
    DicomShardExportOperator,
    DicomShardLoadOperator,
    DicomShardPlanOperator,
)

# The UI's name for each mapped shard, instead of a bare map index.
SHARD_LABEL = "shard {{ task.shard['index'] + 1 }} of {{ task.shard['shard_count'] }}"


def dicom_sharded_export(
    group_id: str,
    *,
    source: str,
    destination_table_uri: str,
    staging_uri: str,
    shards: int | str = 8,
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
    max_active_shards: int | None = None,
    load_from: str = "auto",
    keep_staging: bool = False,
    shard_retries: int | None = None,
    tooltip: str = "",
) -> TaskGroup:
    """Build the task group `group_id` with tasks `plan`, `shard` (mapped) and `load`.

    The arguments are those of `DicomExportToBigQueryOperator` plus ``staging_uri``, ``shards``,
    ``load_from`` and ``keep_staging`` (see the three operators). ``max_active_shards`` caps how
    many shards of one run read at once (mapped tasks' ``max_active_tis_per_dagrun``): a DICOMweb
    server or a worker pool has a limit even when the source is large. ``shard_retries``
    overrides the DAG's default retries for shard tasks only.
    """
    connections = {"gcp_conn_id": gcp_conn_id, "impersonation_chain": impersonation_chain}
    with TaskGroup(group_id, tooltip=tooltip or f"Sharded DICOM export to {destination_table_uri}") as group:
        plan = DicomShardPlanOperator(
            task_id="plan", source=source, destination_table_uri=destination_table_uri, staging_uri=staging_uri,
            shards=shards, write_disposition=write_disposition, force=force, filter_config=filter_config,
            schema=schema, project_id=project_id, location=location, dicomweb_conn_id=dicomweb_conn_id,
            **connections,
        )
        shard_options: dict[str, Any] = {}
        if max_active_shards is not None:
            shard_options["max_active_tis_per_dagrun"] = max_active_shards
        if shard_retries is not None:
            shard_options["retries"] = shard_retries
        shard = DicomShardExportOperator.partial(
            task_id="shard", dicomweb_conn_id=dicomweb_conn_id, max_concurrent_requests=max_concurrent_requests,
            processes=processes, map_index_template=SHARD_LABEL, **connections, **shard_options,
        ).expand(shard=plan.output)
        load = DicomShardLoadOperator(
            task_id="load", shards=plan.output, destination_table_uri=destination_table_uri,
            write_disposition=write_disposition, force=force, max_failed_instances=max_failed_instances,
            load_from=load_from, keep_staging=keep_staging, project_id=project_id, location=location,
            source=source, **connections,
        )
        shard >> load
    return group
