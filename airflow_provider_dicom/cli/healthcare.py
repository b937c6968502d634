"""`airflow-dicom` against Cloud Healthcare API stores: `export bq|gcs STORE` and `operations describe|list|cancel`.

The verbs and flags mirror gcloud's (`gcloud healthcare dicom-stores export bq|gcs`,
`gcloud healthcare operations describe|list|cancel`): the export is started, then waited on
unless `--async`, and the result printed as JSON on stdout, progress on stderr. The export
itself is the service the operators use (`healthcare.store_export`), and calls go through
`healthcare.client.HealthcareClient`, the same calls `DicomStoreHook` makes in a DAG (retries,
lost answers resolved), without Airflow; $HEALTHCARE_EMULATOR_HOST (or `--api-endpoint`) points
them at the local emulator exactly as it does for DAGs.

Credentials: Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS or `gcloud auth
application-default login`, as gcloud and the folder export use), anonymous against an emulator
endpoint, or an Airflow connection named with `--gcp-conn-id` (that one needs Airflow installed).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any, TextIO

from airflow_provider_dicom.cli.common import (
    CommandFailed,
    UsageError,
    _err,
    _non_negative_int,
    concurrency_option,
    filter_config_options,
    no_credentials,
)

if TYPE_CHECKING:
    from airflow_provider_dicom.healthcare.client import HealthcareClient
    from airflow_provider_dicom.healthcare.store_export import StoreExport

EXIT_INTERRUPTED = 130
DEFAULT_POLL_INTERVAL = 5.0


# -- parsers (called from cli.build_parser) ------------------------------------------------------


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-endpoint",
        metavar="URL",
        help="Cloud Healthcare API base URL (default: $HEALTHCARE_EMULATOR_HOST, else Google's)",
    )
    parser.add_argument(
        "--gcp-conn-id",
        metavar="CONN_ID",
        help="use this Airflow connection's credentials (needs Airflow installed; default: Application "
        "Default Credentials, anonymous against an emulator)",
    )
    parser.add_argument(
        "--impersonate-service-account", metavar="EMAIL", help="service account to impersonate"
    )


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--async",
        dest="run_async",
        action="store_true",
        help="print the started operation and exit without waiting (gcloud's --async)",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=DEFAULT_POLL_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between operation polls (default {DEFAULT_POLL_INTERVAL:g})",
    )


def add_store_options_to_export_bq(bq: argparse.ArgumentParser) -> None:
    """Flags `export bq` needs when SOURCE is a DICOM store (the export runs in Google)."""
    group = bq.add_argument_group("when SOURCE is a Cloud Healthcare DICOM store")
    group.add_argument(
        "--include-source-store",
        action="store_true",
        help="add the store's name as a column (SourceDicomStore)",
    )
    _wait_options(group)  # type: ignore[arg-type]
    _connection_options(group)  # type: ignore[arg-type]


def add_export_gcs_parser(destinations: Any, parser_class: type) -> None:
    gcs = destinations.add_parser(
        "gcs",
        help="export the instance files of a DICOM store (or a folder, gs:// prefix, DICOMweb server) to Cloud Storage",
        description="Export the DICOM instances of a Cloud Healthcare store (all, or those a filter file "
        "lists) to Cloud Storage, as {prefix}/{study}/{series}/{instance}.dcm. Waits for the operation "
        "unless --async and prints its summary as JSON. From a folder, a gs:// prefix or a DICOMweb "
        "server the files are copied as stored, in the same layout, by this command.",
    )
    gcs.add_argument("source", metavar="SOURCE", help="projects/P/locations/L/datasets/D/dicomStores/S, or a "
                     "folder, gs://BUCKET/PATH or DICOMweb URL")
    gcs.add_argument("--gcs-uri-prefix", required=True, metavar="gs://BUCKET/DIR", help="destination prefix")
    gcs.add_argument(
        "--mime-type",
        metavar="TYPE",
        help="e.g. 'application/dicom; transfer-syntax=*' (as stored, the default), "
        "'application/dicom; transfer-syntax=UID', 'image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50', "
        "'image/png'",
    )
    filter_config_options(gcs, metavar="gs://BUCKET/OBJECT", help="filter file of /studies/... lines "
                          "(a local path too when SOURCE is not a store)")
    gcs.add_argument(
        "--max-failed-instances",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="exit 1 when the operation reports more than N failed instances (default 0; 'none' never)",
    )
    gcs.add_argument("--quiet", action="store_true", help="no progress messages")
    concurrency_option(gcs)
    _wait_options(gcs)
    _connection_options(gcs)
    gcs.set_defaults(handler=cmd_export_gcs)


def add_operations_parser(verbs: Any, parser_class: type) -> None:
    operations = verbs.add_parser(
        "operations",
        help="describe, list or cancel Cloud Healthcare long-running operations (gcloud: healthcare operations)",
    )
    actions = operations.add_subparsers(
        dest="action", required=True, metavar="{describe,list,cancel}", parser_class=parser_class
    )
    dataset_help = "the dataset, projects/P/locations/L/datasets/D (needed when OPERATION is a bare id)"

    describe = actions.add_parser("describe", help="print an operation as the API returns it (JSON)")
    describe.add_argument(
        "operation", metavar="OPERATION", help="full operation name, or its id with --dataset"
    )
    describe.add_argument("--dataset", help=dataset_help)
    _connection_options(describe)
    describe.set_defaults(handler=cmd_operations_describe)

    listing = actions.add_parser("list", help="list a dataset's operations, newest first")
    listing.add_argument("dataset", metavar="DATASET", help="projects/P/locations/L/datasets/D")
    listing.add_argument("--running", action="store_true", help="only operations that are not done")
    listing.add_argument("--limit", type=int, metavar="N", help="print at most N operations")
    listing.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    _connection_options(listing)
    listing.set_defaults(handler=cmd_operations_list)

    cancel = actions.add_parser(
        "cancel", help="request cancellation (best effort; the operation ends with code 1)"
    )
    cancel.add_argument(
        "operation", metavar="OPERATION", help="full operation name, or its id with --dataset"
    )
    cancel.add_argument("--dataset", help=dataset_help)
    _connection_options(cancel)
    cancel.set_defaults(handler=cmd_operations_cancel)


# -- client --------------------------------------------------------------------------------------


def make_client(args: argparse.Namespace) -> HealthcareClient:
    """A HealthcareClient for the command line: ADC (anonymous when the endpoint is an emulator),
    or the credentials of the Airflow connection named with --gcp-conn-id."""
    from airflow_provider_dicom.healthcare.endpoint import resolve_api_endpoint

    try:
        endpoint = resolve_api_endpoint(args.api_endpoint)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    credentials = None
    impersonate = args.impersonate_service_account
    if args.gcp_conn_id:
        credentials = _connection_credentials(args.gcp_conn_id, impersonate)
        impersonate = None  # the connection's credentials already act as that account
    from airflow_provider_dicom.cli.common import _log_to_stderr
    from airflow_provider_dicom.healthcare.client import HealthcareClient

    # Progress and retry messages, as plain lines on stderr (stdout is the JSON result).
    _log_to_stderr(quiet=getattr(args, "quiet", False))
    return HealthcareClient(credentials, api_endpoint=endpoint, impersonate=impersonate)


def _connection_credentials(conn_id: str, impersonate: str | None) -> Any:
    from airflow_provider_dicom.utils.clients import google_credentials

    try:
        return google_credentials(conn_id, impersonate)
    except ImportError as exc:
        raise CommandFailed(
            f"--gcp-conn-id={conn_id} reads an Airflow connection and needs Airflow with its Google provider "
            f"installed ({exc}); without Airflow, set GOOGLE_APPLICATION_CREDENTIALS to a service account key "
            "file or run `gcloud auth application-default login`"
        ) from exc
    except Exception as exc:
        raise CommandFailed(f"cannot use connection {conn_id!r}: {exc}") from exc


def _call(what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a client call, turning API and credential errors into one-line failures."""
    from airflow_provider_dicom.healthcare.operations import HealthcareApiError

    try:
        return func(*args, **kwargs)
    except HealthcareApiError as exc:
        raise CommandFailed(str(exc)) from exc
    except Exception as exc:
        if type(exc).__name__ == "DefaultCredentialsError":
            raise no_credentials(
                "for the Cloud Healthcare API", exc, emulator="HEALTHCARE_EMULATOR_HOST (or --api-endpoint)",
                alternative="pass --gcp-conn-id",
            ) from exc
        raise


# -- export --------------------------------------------------------------------------------------


def cmd_export_bq_store(args: argparse.Namespace, out: TextIO) -> int:
    """`export bq STORE --bq-table=...`: the API exports; we start it and wait."""
    from airflow_provider_dicom.healthcare.store_export import bigquery_store_export, check_filter_for_store

    if getattr(args, "project", None):
        raise UsageError(
            "--project applies to local exports only; a store export runs in the store's project"
        )
    try:
        export = bigquery_store_export(
            args.source,
            args.bq_table,
            write_disposition=args.write_disposition,
            force=True if args.overwrite_table else None,
            include_source_store=True if args.include_source_store else None,
            schema=args.schema,
            filter_gcs_uri=check_filter_for_store(args.filter_config),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return _run_export(args, export, out)


def cmd_export_gcs(args: argparse.Namespace, out: TextIO) -> int:
    if not args.source.startswith("projects/"):  # not a store: the files are copied here
        from airflow_provider_dicom.cli.copy import cmd_export_gcs_copy

        return cmd_export_gcs_copy(args, out)
    from airflow_provider_dicom.healthcare.store_export import check_filter_for_store, gcs_store_export

    try:
        export = gcs_store_export(
            args.source,
            args.gcs_uri_prefix,
            mime_type=args.mime_type,
            filter_gcs_uri=check_filter_for_store(args.filter_config),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return _run_export(args, export, out)


def _check_poll_interval(value: float) -> None:
    if not value > 0:
        raise UsageError(f"--poll-interval must be > 0 seconds, got {value:g}")


def _run_export(args: argparse.Namespace, export: StoreExport, out: TextIO) -> int:
    from airflow_provider_dicom.healthcare import store_export as service

    _check_poll_interval(args.poll_interval)
    client = make_client(args)
    started = _call("starting the export", service.start, client, export)
    if args.run_async:
        _err(f"check operation [{started.name}] for status")
        _print(out, service.summarize(started, export))
        return 0
    if not args.quiet:
        _err(f"waiting for operation [{started.name}] to complete...")
    try:
        final = _call(
            "waiting for the export", client.wait_for_operation, started.name, poll_interval=args.poll_interval
        )
    except KeyboardInterrupt:
        # As gcloud: stopping the wait does not stop the export.
        _err(
            f"stopped waiting; operation [{started.name}] continues "
            f"(`{_prog()} operations cancel {started.name}` stops it)"
        )
        return EXIT_INTERRUPTED
    try:
        summary = service.finish(final, export, args.max_failed_instances)
    except service.StoreExportFailed as exc:
        _print(out, exc.summary)
        raise CommandFailed(str(exc.reason)) from exc
    _print(out, summary)
    return 0


def _prog() -> str:
    from airflow_provider_dicom.cli.common import PROG

    return PROG


def _print(out: TextIO, value: Any) -> None:
    out.write(json.dumps(value, indent=2, default=str) + "\n")
    out.flush()


# -- operations ----------------------------------------------------------------------------------


def _operation_name(args: argparse.Namespace) -> str:
    from airflow_provider_dicom.healthcare.operations import OperationName, check_dataset_name

    value = args.operation
    try:
        if "/" not in value and args.dataset:
            return str(OperationName.parse(f"{check_dataset_name(args.dataset)}/operations/{value}"))
        return str(OperationName.parse(value))
    except ValueError as exc:
        raise UsageError(f"{exc} (or give the bare id with --dataset)") from exc


def cmd_operations_describe(args: argparse.Namespace, out: TextIO) -> int:
    name = _operation_name(args)
    client = make_client(args)
    _print(out, _call("describing the operation", client.get_operation, name))
    return 0


def cmd_operations_cancel(args: argparse.Namespace, out: TextIO) -> int:
    name = _operation_name(args)
    client = make_client(args)
    _call("cancelling the operation", client.cancel_operation, name)  # the client says so on stderr
    return 0


def cmd_operations_list(args: argparse.Namespace, out: TextIO) -> int:
    from airflow_provider_dicom.healthcare.operations import OperationStatus, check_dataset_name

    try:
        dataset = check_dataset_name(args.dataset)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be >= 1, got {args.limit}")
    client = make_client(args)
    operations = _call("listing operations", client.list_operations, dataset)
    statuses = [OperationStatus.from_api(op) for op in operations]
    # Newest first, whatever order the server used.
    pairs = sorted(zip(statuses, operations, strict=True), key=lambda p: p[0].create_time or "", reverse=True)
    if args.running:
        pairs = [p for p in pairs if not p[0].done]
    pairs = pairs[: args.limit] if args.limit else pairs
    if args.format == "json":
        _print(out, [op for _, op in pairs])
        return 0
    rows = [("ID", "METHOD", "STATE", "CREATED", "SUCCESS", "FAILURE", "PENDING")]
    for status, _ in pairs:
        method = (status.api_method_name or "").rpartition(".")[2]
        rows.append(
            (
                status.name.rpartition("/")[2],
                method,
                status.state,
                status.create_time or "",
                str(status.success),
                str(status.failure),
                str(status.pending),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out.writelines(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n"
        for row in rows
    )
    out.flush()
    return 0
