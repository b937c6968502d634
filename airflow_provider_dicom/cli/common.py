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
    from airflow_provider_dicom.utils.text import counted

    return counted(n, noun)


def _err(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


ADC_HOW = (
    "set GOOGLE_APPLICATION_CREDENTIALS to a service account key file or run "
    "`gcloud auth application-default login`"
)


def no_credentials(what: str, exc: BaseException, *, emulator: str, alternative: str = "") -> CommandFailed:
    """The one message for missing Google credentials: what needed them, what to set (the
    credentials, or the emulator's variable), and google-auth's own first line."""
    also = f", or {alternative}" if alternative else ""
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return CommandFailed(
        f"no Google credentials found {what}: {ADC_HOW}{also}; for a local emulator set {emulator} ({detail})"
    )


def bigquery_client_from_env(project: str):
    """Application Default Credentials, or anonymous against the emulator named by
    BIGQUERY_EMULATOR_HOST (google-cloud-bigquery points its endpoint there itself)."""
    import google.auth.exceptions

    from airflow_provider_dicom.export.bigquery import make_bigquery_client

    try:
        return make_bigquery_client(project)
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise no_credentials("for BigQuery", exc, emulator="BIGQUERY_EMULATOR_HOST") from exc


def storage_client_from_env(project: str, purpose: str = "for Cloud Storage"):
    """Anonymous against STORAGE_EMULATOR_HOST when set, else ADC; `purpose` ("to read gs://...")
    names what needed the client when there are no credentials."""
    import google.auth.exceptions
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project, credentials=AnonymousCredentials())
    try:
        return storage.Client(project=project)
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise no_credentials(purpose, exc, emulator="STORAGE_EMULATOR_HOST") from exc


class EnvironmentClients:
    """`export.service.Clients` from the environment, for the command line: Application Default
    Credentials, the emulators' variables, DICOMweb credentials from DICOMWEB_*."""

    def bigquery(self, project: str):
        return bigquery_client_from_env(project)

    def storage(self, project: str, purpose: str):
        return storage_client_from_env(project, purpose)

    def dicomweb(self, base_url: str, pool_size: int):
        return dicomweb_client_from_env(base_url, pool_size)


def filter_config_options(parser: argparse.ArgumentParser, *, metavar: str, help: str) -> None:
    """`--filter-config`, and gcloud's name for it, `--filter-config-gcs-uri`."""
    parser.add_argument("--filter-config", "--filter-config-gcs-uri", dest="filter_config", metavar=metavar, help=help)


DICOMWEB_CREDENTIALS_HOW = (
    "set DICOMWEB_USERNAME and DICOMWEB_PASSWORD (basic authentication) or DICOMWEB_HEADERS "
    "(a JSON object of HTTP headers, e.g. an Authorization token)"
)


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


def with_remedy(exc: BaseException) -> str:
    """The error, plus what to set when the cause is credentials the environment supplies."""
    from airflow_provider_dicom.sources.dicomweb import DicomWebAuthError

    if isinstance(exc, DicomWebAuthError):
        return f"{exc}: {DICOMWEB_CREDENTIALS_HOW}"
    return str(exc)


def default_project() -> str:
    """The project clients run in when no flag names one: gcloud's variables, else the stand-ins'."""
    return os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("CLOUDSDK_CORE_PROJECT") or "local-dicom"


def concurrency_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--concurrency", type=_positive_int, default=16, metavar="N",
        help="requests in flight at once to a gs:// or DICOMweb source (default 16)",
    )
