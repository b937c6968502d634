"""Extra links shown on our tasks in the Airflow UI: the BigQuery table an export wrote.

Our own small link classes rather than apache-airflow-providers-google's (see links/console.py for
why). On Airflow 3 the worker computes each link when the task finishes, from the rendered
operator, and stores it in XCom, so the link is right even when the table URI is templated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_dicom.links.console import ConsoleLink, bigquery_table_console_url
from airflow_provider_dicom.model.uris import BigQueryTableUri

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator


class DicomBigQueryTableLink(ConsoleLink):
    """The destination table of an export, in the BigQuery console."""

    name = "BigQuery Table"

    def console_url(self, operator: BaseOperator) -> str:
        table = BigQueryTableUri.parse(getattr(operator, "destination_table_uri", None))
        return bigquery_table_console_url(table)
