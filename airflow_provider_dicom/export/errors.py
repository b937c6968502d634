"""What a failed export to BigQuery raises: one module, so the engine's steps (plan, load, reattach)
share the error types without importing each other."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_dicom.utils.errors import DicomProviderError
from airflow_provider_dicom.utils.redact import redact_quoted

if TYPE_CHECKING:
    from airflow_provider_dicom.model.uris import BigQueryTableUri


class ExportError(DicomProviderError, RuntimeError):
    """The export was refused or failed; the message names the table and the reason."""


class DestinationError(ExportError):
    """The destination's state forbids this export (missing dataset, table exists, not empty, ...)."""


def load_error(exc: Any, job: Any, table: BigQueryTableUri) -> ExportError:
    """An ExportError naming the job and table, with BigQuery's reasons stripped of quoted values
    (a reason may quote a row's content)."""
    job_id = job.job_id if job is not None else "not started"
    details = "; ".join(redact_quoted(e.get("message", "")) for e in (getattr(job, "errors", None) or [])[:5])
    return ExportError(
        f"BigQuery load job {job_id} into {table} failed ({exc.code} {type(exc).__name__}): "
        f"{redact_quoted(exc.message)}{'; ' + details if details else ''}"
    )
