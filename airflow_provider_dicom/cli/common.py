"""What every `airflow-dicom` command shares: exit codes, error types, messages, argument types and
clients built from the environment. Its own module so the subcommand modules import it, not each
other."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from airflow_provider_dicom.utils.errors import DicomProviderError

PROG = "airflow-dicom"


EXIT_FAILED = 1


EXIT_USAGE = 2


class UsageError(DicomProviderError):
    """Bad input found before any work started (exit 2)."""


class CommandFailed(DicomProviderError):
    """The command ran but could not finish its job (exit 1)."""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _err(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def bigquery_client_from_env(project: str):
    """Application Default Credentials, or anonymous against the emulator named by
    BIGQUERY_EMULATOR_HOST (google-cloud-bigquery points its endpoint there itself)."""
    import google.auth.exceptions

    from airflow_provider_dicom.export.bigquery import make_bigquery_client

    try:
        return make_bigquery_client(project)
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise CommandFailed(
            "no Google credentials found (run `gcloud auth application-default login`, or set "
            f"BIGQUERY_EMULATOR_HOST for a local emulator): {str(exc).splitlines()[0]}"
        ) from exc


def storage_client_from_env(project: str):
    """For a gs:// filter file: anonymous against STORAGE_EMULATOR_HOST when set, else ADC."""
    import google.auth.exceptions
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project, credentials=AnonymousCredentials())
    try:
        return storage.Client(project=project)
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise CommandFailed(f"no Google credentials found to read the filter file: {str(exc).splitlines()[0]}") from exc


def dicomweb_client_from_env(base_url: str, concurrency: int):
    """Credentials for a DICOMweb source from the environment, never from the command line (which
    other users of the machine can read): DICOMWEB_USERNAME and DICOMWEB_PASSWORD for basic
    authentication, DICOMWEB_HEADERS a JSON object of HTTP headers (e.g. an Authorization token)."""
    from airflow_provider_dicom.sources.dicomweb import client_from_connection

    headers_text = os.environ.get("DICOMWEB_HEADERS")
    try:
        extra = json.loads(headers_text) if headers_text else {}
    except ValueError:
        raise UsageError("DICOMWEB_HEADERS is not a JSON object of HTTP headers") from None
    if not isinstance(extra, dict):
        raise UsageError("DICOMWEB_HEADERS is not a JSON object of HTTP headers")
    try:
        return client_from_connection(
            base_url, login=os.environ.get("DICOMWEB_USERNAME") or None,
            password=os.environ.get("DICOMWEB_PASSWORD"), extra=extra, pool_size=concurrency,
            conn_id="DICOMWEB_HEADERS",
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _log_to_stderr(*, quiet: bool) -> None:
    """The export reports what it does (and each file it skips) through logging: show our
    package's records on stderr, one plain line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    logger = logging.getLogger("airflow_provider_dicom")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def _non_negative_int(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 or 'none', got {text!r}")
    return value


def project_id_arg(text: str) -> str:
    """`--project`: a Google Cloud project id, checked before any client is built."""
    from airflow_provider_dicom.model.uris import InvalidUriError, check_project_id

    try:
        return check_project_id(text, "project")
    except InvalidUriError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def location_arg(text: str) -> str:
    """`--location`: a Google Cloud location (US, us-central1), by the operators' rule."""
    from airflow_provider_dicom.model.arguments import check_identifier

    try:
        check_identifier("location", text, optional=False)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to 256, got {text!r}")
    return value
