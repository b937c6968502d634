"""`airflow-dicom` against Cloud Healthcare API stores: `export bq|gcs STORE` and `operations describe|list|cancel`.

The verbs and flags mirror gcloud's (`gcloud healthcare dicom-stores export bq|gcs`,
`gcloud healthcare operations describe|list|cancel`): the export is started, then waited on
unless `--async`, and the result printed as JSON on stdout, progress on stderr. Calls go through
`DicomStoreHook`, so they get its retries, and $HEALTHCARE_EMULATOR_HOST (or `--api-endpoint`)
points them at the local emulator exactly as it does for DAGs.

Credentials: Application Default Credentials (as gcloud and the folder export use), anonymous
against an emulator endpoint, or an Airflow connection named with `--gcp-conn-id`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import TYPE_CHECKING, Any, TextIO

from airflow_provider_dicom.cli.common import CommandFailed, UsageError, _err, _non_negative_int

if TYPE_CHECKING:
    from airflow_provider_dicom.hooks.dicom_store import DicomStoreHook
    from airflow_provider_dicom.operators.store_export import StoreExport

# A connection defined for this process only, when no --gcp-conn-id is given.
CLI_CONN_ID = "airflow_dicom_cli"
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
        help="use this Airflow connection's credentials (default: Application Default Credentials, "
        "anonymous against an emulator)",
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
        help="export the instance files of a DICOM store to Cloud Storage",
        description="Export the DICOM instances of a Cloud Healthcare store (all, or those a filter file "
        "lists) to Cloud Storage, as {prefix}/{study}/{series}/{instance}.dcm. Waits for the operation "
        "unless --async and prints its summary as JSON.",
    )
    gcs.add_argument("source", metavar="STORE", help="projects/P/locations/L/datasets/D/dicomStores/S")
    gcs.add_argument("--gcs-uri-prefix", required=True, metavar="gs://BUCKET/DIR", help="destination prefix")
    gcs.add_argument(
        "--mime-type",
        metavar="TYPE",
        help="e.g. 'application/dicom; transfer-syntax=*' (as stored, the default), "
        "'application/dicom; transfer-syntax=UID', 'image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50', "
        "'image/png'",
    )
    gcs.add_argument(
        "--filter-config", metavar="gs://BUCKET/OBJECT", help="filter file of /studies/... lines"
    )
    gcs.add_argument(
        "--max-failed-instances",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="exit 1 when the operation reports more than N failed instances (default 0; 'none' never)",
    )
    gcs.add_argument("--quiet", action="store_true", help="no progress messages")
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


# -- hook ----------------------------------------------------------------------------------------


def make_hook(args: argparse.Namespace) -> DicomStoreHook:
    """A DicomStoreHook for the command line: an Airflow connection if one was named, else ADC
    (anonymous when the endpoint is an emulator)."""
    from airflow_provider_dicom.healthcare.endpoint import resolve_api_endpoint

    try:
        endpoint = resolve_api_endpoint(args.api_endpoint)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    conn_id = args.gcp_conn_id
    if not conn_id:
        conn_id = CLI_CONN_ID
        extra = {"is_anonymous": True} if endpoint else {}
        os.environ[f"AIRFLOW_CONN_{CLI_CONN_ID.upper()}"] = json.dumps(
            {"conn_type": "google_cloud_platform", "extra": extra}
        )
    from airflow_provider_dicom.cli.common import _log_to_stderr
    from airflow_provider_dicom.hooks.dicom_store import DicomStoreHook

    try:
        hook = DicomStoreHook(
            gcp_conn_id=conn_id, impersonation_chain=args.impersonate_service_account, api_endpoint=endpoint
        )
    except Exception as exc:
        raise CommandFailed(f"cannot use connection {conn_id!r}: {exc}") from exc
    # The hook's progress and retry messages, as plain lines on stderr (stdout is the JSON result),
    # rather than through Airflow's task logging, which prints to stdout.
    # A stdlib logger has every method the hook calls (its hint names Airflow's logger type).
    hook._log = logging.getLogger(DicomStoreHook.__module__)  # type: ignore[assignment]
    _log_to_stderr(quiet=getattr(args, "quiet", False))
    return hook


def _call(what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a hook call, turning API and credential errors into one-line failures."""
    from airflow_provider_dicom.healthcare.operations import HealthcareApiError

    try:
        return func(*args, **kwargs)
    except HealthcareApiError as exc:
        raise CommandFailed(str(exc)) from exc
    except Exception as exc:
        if type(exc).__name__ == "DefaultCredentialsError":
            raise CommandFailed(
                "no Google credentials found (run `gcloud auth application-default login`, pass --gcp-conn-id, "
                f"or set HEALTHCARE_EMULATOR_HOST for the local emulator): {str(exc).splitlines()[0]}"
            ) from exc
        raise


# -- export --------------------------------------------------------------------------------------


def cmd_export_bq_store(args: argparse.Namespace, out: TextIO) -> int:
    """`export bq STORE --bq-table=...`: the API exports; we start it and wait."""
    from airflow_provider_dicom.operators.store_export import bigquery_store_export, check_filter_for_store

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
    from airflow_provider_dicom.operators.store_export import check_filter_for_store, gcs_store_export

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
    from airflow_provider_dicom.healthcare.operations import OperationFailedError, OperationStatus
    from airflow_provider_dicom.operators.store_export import summarize

    _check_poll_interval(args.poll_interval)
    hook = make_hook(args)
    started = OperationStatus.from_api(_call("starting the export", export.start, hook))
    if args.run_async:
        _err(f"check operation [{started.name}] for status")
        _print(out, summarize(started, export))
        return 0
    if not args.quiet:
        _err(f"waiting for operation [{started.name}] to complete...")
    try:
        final = _call(
            "waiting for the export", hook.wait_for_operation, started.name, poll_interval=args.poll_interval
        )
    except KeyboardInterrupt:
        # As gcloud: stopping the wait does not stop the export.
        _err(
            f"stopped waiting; operation [{started.name}] continues "
            f"(`{_prog()} operations cancel {started.name}` stops it)"
        )
        return EXIT_INTERRUPTED
    _print(out, summarize(final, export))
    try:
        final.check(args.max_failed_instances)
    except OperationFailedError as exc:
        raise CommandFailed(str(exc)) from exc
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
    hook = make_hook(args)
    _print(out, _call("describing the operation", hook.get_operation, name))
    return 0


def cmd_operations_cancel(args: argparse.Namespace, out: TextIO) -> int:
    name = _operation_name(args)
    hook = make_hook(args)
    _call("cancelling the operation", hook.cancel_operation, name)  # the hook says so on stderr
    return 0


def cmd_operations_list(args: argparse.Namespace, out: TextIO) -> int:
    from airflow_provider_dicom.healthcare.operations import OperationStatus, check_dataset_name

    try:
        dataset = check_dataset_name(args.dataset)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be >= 1, got {args.limit}")
    hook = make_hook(args)
    operations = _call("listing operations", hook.list_operations, dataset)
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
