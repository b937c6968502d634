"""Extra links to Cloud Storage objects our tasks wrote: the filter file in the Cloud Storage console."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_dicom.links.console import ConsoleLink, gcs_object_console_url
from airflow_provider_dicom.model.uris import InvalidUriError

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator


class DicomFilterFileLink(ConsoleLink):
    """The filter file the task wrote, in the Cloud Storage console (no link for a local file)."""

    name = "Filter File"

    def console_url(self, operator: BaseOperator) -> str:
        destination = getattr(operator, "destination", None)
        if not isinstance(destination, str) or not destination.startswith("gs://"):
            raise InvalidUriError("not a gs:// destination")
        return gcs_object_console_url(destination)
