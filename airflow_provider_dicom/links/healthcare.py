"""Extra links of the Cloud Healthcare exports: the source DICOM store, the operation's logs, the
Cloud Storage destination (the BigQuery table link is `links.DicomBigQueryTableLink`).

Airflow 3 computes a link on the worker when the task finishes, from the operator that ran, and
stores it in XCom; so the logs link reads the operation the operator recorded while it ran
(`OPERATION_ATTRIBUTE`). Airflow 2's webserver asks the parsed DAG's operator instead, which never
ran: there the link falls back to the XCom the operator pushed when it started the export.
Nothing heavy is imported here: DAG files import these classes through the operators.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperatorLink

from airflow_provider_dicom.links.console import ConsoleLink, dicom_store_console_url, gcs_console_url
from airflow_provider_dicom.model.uris import DicomStoreName, GcsUri

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, TaskInstanceKey

# The operator sets this attribute to {"name": ..., "logs_url": ...} once it knows its operation,
# and pushes the same dict to XCom under this key.
OPERATION_ATTRIBUTE = "_dicom_operation"
OPERATION_XCOM_KEY = "dicom_operation"


class DicomStoreLink(ConsoleLink):
    """The source Cloud Healthcare DICOM store, in the Google Cloud console (no link for a folder
    or other non-store source)."""

    name = "DICOM Store"

    def console_url(self, operator: BaseOperator) -> str:
        return dicom_store_console_url(DicomStoreName.parse(getattr(operator, "source", None)))


class DicomOperationLogsLink(BaseOperatorLink):
    """Where the export operation's per-instance errors are: its `logsUrl` (Cloud Logging)."""

    name = "Operation Logs"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        recorded = getattr(operator, OPERATION_ATTRIBUTE, None) or _pushed_operation(ti_key)
        url = recorded.get("logs_url") if isinstance(recorded, dict) else None
        return url if isinstance(url, str) and url.startswith(("https://", "http://")) else ""


class DicomGcsDestinationLink(ConsoleLink):
    """The Cloud Storage prefix the instance files are exported to, in the console."""

    name = "Cloud Storage Destination"

    def console_url(self, operator: BaseOperator) -> str:
        return gcs_console_url(GcsUri.parse(getattr(operator, "uri_prefix", None)))


def _pushed_operation(ti_key: Any) -> Any:
    try:
        from airflow.providers.common.compat.sdk import XCom

        return XCom.get_value(ti_key=ti_key, key=OPERATION_XCOM_KEY)
    except Exception:  # noqa: BLE001 - a link must never fail the page or the task
        return None
