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

from typing import TYPE_CHECKING, ClassVar
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
    attribute holds no such resource (a folder source, an unrendered template on Airflow 2's
    webserver, a bad value): the task then shows no link rather than a wrong one.
    """

    name: ClassVar[str]

    def console_url(self, operator: BaseOperator) -> str:
        raise NotImplementedError

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        try:
            return self.console_url(operator)
        except InvalidUriError:
            return ""
