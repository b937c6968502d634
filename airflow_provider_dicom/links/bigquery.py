"""Extra links shown on our tasks in the Airflow UI.

Our own small link classes rather than apache-airflow-providers-google's: importing those pulls in
googleapiclient (~0.8 s and ~500 modules) at DAG-parse time, and we need nothing from them. On
Airflow 3 the worker computes each link when the task finishes, from the rendered operator, and
stores it in XCom, so the link is right even when the table URI is templated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlencode

from airflow.providers.common.compat.sdk import BaseOperatorLink

from airflow_provider_dicom.model.uris import BigQueryTableUri, InvalidUriError

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, TaskInstanceKey

CONSOLE_URL = "https://console.cloud.google.com"


def bigquery_table_console_url(table: BigQueryTableUri) -> str:
    query = urlencode(
        {"project": table.project, "p": table.project, "d": table.dataset, "t": table.table, "page": "table"}
    )
    return f"{CONSOLE_URL}/bigquery?{query}"


class DicomBigQueryTableLink(BaseOperatorLink):
    """The destination table of an export, in the BigQuery console."""

    name = "BigQuery Table"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        uri = getattr(operator, "destination_table_uri", None)
        try:
            return bigquery_table_console_url(BigQueryTableUri.parse(uri))
        except InvalidUriError:
            # Unrendered template (Airflow 2 webserver) or a bad value: no link rather than a wrong one.
            return ""
