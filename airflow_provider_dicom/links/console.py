"""The Google Cloud console: its address, the URL of each resource our tasks link to, and the base
of the links that point into it.

Shaped like apache-airflow-providers-google's `BaseGoogleLink` (a `name` per class, one base that
formats the URL and answers "" when it cannot) but computed from the rendered operator rather than
from XCom: on Airflow 3 the worker computes every link from the operator that ran and stores it,
so persisting the parts to XCom first, as `BaseGoogleLink.persist` does, would only add a write per
task and a read per page view. Google's own base is not imported: it pulls in googleapiclient
(~0.8 s, ~500 modules) at DAG-parse time. Its `format_str` templates are not used either: our
values (table names with spaces, object names with `#` or `?`) must be quoted, which `str.format`
does not do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, urlencode

from airflow.providers.common.compat.sdk import BaseOperatorLink

from airflow_provider_dicom.model.uris import BigQueryTableUri, DicomStoreName, GcsUri, InvalidUriError

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, TaskInstanceKey

CONSOLE_URL = "https://console.cloud.google.com"


def bigquery_table_console_url(table: BigQueryTableUri) -> str:
    query = urlencode(
        {"project": table.project, "p": table.project, "d": table.dataset, "t": table.table, "page": "table"}
    )
    return f"{CONSOLE_URL}/bigquery?{query}"


def dicom_store_console_url(store: DicomStoreName) -> str:
    path = "/".join(
        quote(part, safe="")
        for part in ("locations", store.location, "datasets", store.dataset, "dicomStores", store.store)
    )
    return f"{CONSOLE_URL}/healthcare/browser/{path}/details/overview?{urlencode({'project': store.project})}"


def gcs_console_url(uri: GcsUri) -> str:
    """A bucket or a prefix (a folder view)."""
    path = quote(f"{uri.bucket}/{uri.name}".rstrip("/"), safe="/")
    return f"{CONSOLE_URL}/storage/browser/{path}"


def gcs_object_console_url(uri: str) -> str:
    """One object (its details page); InvalidUriError unless `uri` names an object."""
    parsed = GcsUri.parse(uri, require_object=True)
    return f"{CONSOLE_URL}/storage/browser/_details/{quote(parsed.bucket)}/{quote(parsed.name, safe='/')}"


class ConsoleLink(BaseOperatorLink):
    """A link into the console built from the operator's rendered attributes.

    A subclass sets `name` and builds the URL in `console_url`, raising InvalidUriError when the
    attribute holds no such resource (a folder source, a bad value): the task then shows no link
    rather than a wrong one. On Airflow 2's webserver, where the operator is the parsed one and a
    templated attribute is still a template, the values rendered for the task instance are used.
    """

    name: ClassVar[str]

    def console_url(self, operator: BaseOperator) -> str:
        raise NotImplementedError

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        try:
            return self.console_url(operator)
        except InvalidUriError:
            pass
        rendered = _rendered_on_airflow_2(operator, ti_key)
        if rendered is None:
            return ""
        try:
            return self.console_url(rendered)
        except InvalidUriError:
            return ""


class _Rendered:
    """The operator seen through the values rendered for one task instance."""

    def __init__(self, operator: Any, fields: dict[str, Any]) -> None:
        self._operator = operator
        self._fields = fields

    def __getattr__(self, name: str) -> Any:
        if name in self._fields:
            return self._fields[name]
        return getattr(self._operator, name)


def _rendered_on_airflow_2(operator: Any, ti_key: Any) -> Any:
    """Airflow 2's webserver calls `get_link` with the parsed operator, whose templated fields are
    still templates; the values the worker rendered for the task instance are in its
    RenderedTaskInstanceFields. None on Airflow 3 (the worker computes the link from the
    rendered operator and stores it) and whenever nothing was recorded."""
    if ti_key is None:
        return None
    import airflow

    if not airflow.__version__.startswith("2."):
        return None
    try:
        from airflow.models.renderedtifields import RenderedTaskInstanceFields

        fields = RenderedTaskInstanceFields.get_templated_fields(ti_key)
    except Exception:  # noqa: BLE001 - a link must never fail the page
        return None
    return _Rendered(operator, fields) if fields else None
