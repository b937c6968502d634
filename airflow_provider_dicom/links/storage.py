"""Extra links to Cloud Storage objects our tasks wrote: the filter file in the Cloud Storage console."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from airflow.providers.common.compat.sdk import BaseOperatorLink

from airflow_provider_dicom.model import uris

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, TaskInstanceKey

CONSOLE_URL = "https://console.cloud.google.com"


def gcs_object_console_url(uri: str) -> str:
    parsed = uris.GcsUri.parse(uri, require_object=True)
    return f"{CONSOLE_URL}/storage/browser/_details/{quote(parsed.bucket)}/{quote(parsed.name, safe='/')}"


class DicomFilterFileLink(BaseOperatorLink):
    """The filter file the task wrote, in the Cloud Storage console (no link for a local file)."""

    name = "Filter File"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        destination = getattr(operator, "destination", None)
        if not isinstance(destination, str) or not destination.startswith("gs://"):
            return ""
        try:
            return gcs_object_console_url(destination)
        except uris.InvalidUriError:
            return ""
