"""Airflow Assets for what our operators write, so a DAG can be scheduled on "metadata exported".

URIs are the ones Airflow's Google provider and OpenLineage use (providers-google `assets/`):
a BigQuery table is ``bigquery://PROJECT/DATASET/TABLE``, a Cloud Storage object or prefix
``gs://BUCKET/PATH`` (no trailing slash), a local file ``file:///PATH``.

Outlets must be known when the DAG is parsed (the scheduler wires asset schedules from them), but
a templated destination (``bq://{{ params.project }}.dicom.cohort_{{ run_key(run_id) }}``) is known
only when the task runs. So an operator that is not given ``outlets``:

- declares the destination's `Asset` when the destination has no template (Airflow records the
  event when the task succeeds);
- otherwise declares an `AssetAlias` named ``dicom-export/<dag_id>/<task_id>`` and, when the task
  has succeeded, attaches an event for the rendered destination's Asset to it
  (`outlet_events[alias].add(...)`). A DAG scheduled on that alias runs after each export; the
  event names the concrete table or prefix (`triggering_asset_events`).

Outlets given explicitly (``outlets=[...]``, ``outlets=[]`` for none) are left alone.
Nothing heavy is imported here: the Asset classes come from the compat SDK.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_dicom.model import uris

ALIAS_PREFIX = "dicom-export"


def asset_uri(destination: str) -> str:
    """The Asset URI of a destination as our operators take it (bq://, gs://, file path)."""
    if destination.startswith("bq://"):
        table = uris.BigQueryTableUri.parse(destination)
        return f"bigquery://{table.project}/{table.dataset}/{table.table}"
    if destination.startswith("gs://"):
        parsed = uris.GcsUri.parse(destination)
        path = parsed.name.rstrip("/")
        return f"gs://{parsed.bucket}/{path}" if path else f"gs://{parsed.bucket}"
    path = destination[len("file://"):] if destination.startswith("file://") else destination
    if not path.startswith("/"):
        raise ValueError(f"cannot name an asset for {destination!r}: expected bq://, gs:// or an absolute path")
    return f"file://{path}"


def table_uri_from_asset(uri: str) -> str:
    """``bigquery://P/D/T`` (an asset event's URI) back to the ``bq://P.D.T`` our operators take."""
    if not uri.startswith("bigquery://") or uri.count("/") != 4:
        raise ValueError(f"not a BigQuery table asset URI: {uri!r} (expected bigquery://PROJECT/DATASET/TABLE)")
    project, dataset, table = uri[len("bigquery://"):].split("/")
    return f"bq://{uris.BigQueryTableUri.parse(f'bq://{project}.{dataset}.{table}').table_id}"


def alias_name(dag_id: str | None, task_id: str) -> str:
    return f"{ALIAS_PREFIX}/{dag_id}/{task_id}" if dag_id else f"{ALIAS_PREFIX}/{task_id}"


class AssetOutletsMixin:
    """Default outlets for one destination attribute (see the module docstring).

    Subclasses set `asset_destination_field` (the name of the attribute holding the destination)
    and call `_declare_default_outlets(explicit)` at the end of `__init__`, `explicit` being whether
    the caller passed `outlets`.
    """

    asset_destination_field: str = ""
    outlets: list[Any]  # the operator's (declared for the type checker only: BaseOperator holds it)

    def _declare_default_outlets(self, explicit: bool) -> None:
        if explicit or not self._emits_asset():
            return
        from airflow.providers.common.compat.sdk import Asset, AssetAlias

        destination = getattr(self, self.asset_destination_field)
        if isinstance(destination, str) and not uris.is_templated(destination):
            try:
                self.outlets = [Asset(uri=asset_uri(destination))]
            except ValueError:
                return  # a destination we cannot name (a relative path) declares nothing
            return
        dag_id = self.dag_id if getattr(self, "has_dag", lambda: False)() else None  # type: ignore[attr-defined]
        self._asset_alias = alias_name(dag_id, self.task_id)  # type: ignore[attr-defined]
        self.outlets = [AssetAlias(name=self._asset_alias)]

    def _emits_asset(self) -> bool:
        """False when a successful task has not written anything yet (an export not waited for)."""
        return True

    def asset_event_extra(self) -> dict[str, Any]:
        """Extra recorded with the runtime asset event (counts, the source); no patient data."""
        return {}

    def post_execute(self, context: Any, result: Any = None) -> None:
        alias = getattr(self, "_asset_alias", None)
        if alias is None:
            return
        from airflow.providers.common.compat.sdk import Asset

        try:
            uri = asset_uri(getattr(self, self.asset_destination_field))
        except ValueError as exc:  # e.g. a relative local path: nothing to name, nothing to fail
            self.log.warning("No asset event: %s", exc)  # type: ignore[attr-defined]
            return
        context["outlet_events"][_alias_key(alias)].add(Asset(uri=uri), extra=self.asset_event_extra())
        self.log.info("Asset event for %s (alias %s)", uri, alias)  # type: ignore[attr-defined]


def _alias_key(name: str) -> Any:
    from airflow.providers.common.compat.sdk import AssetAlias

    return AssetAlias(name=name)


__all__ = ["ALIAS_PREFIX", "AssetOutletsMixin", "alias_name", "asset_uri", "table_uri_from_asset"]
