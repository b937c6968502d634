"""`airflow-dicom`: run an export, or preview rows and schemas, without writing a DAG.

The verbs mirror gcloud's (`gcloud healthcare dicom-stores export bq STORE --bq-table=...`) so
people can move between the two. Bad input ends the command with one line on stderr and a
non-zero exit code, never a traceback: exit 2 for arguments that are wrong before anything runs,
1 for failures while running (including instances that could not be converted; their good
neighbours are still printed or exported).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

from airflow_provider_dicom.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    PROG,
    CommandFailed,
    EnvironmentClients,
    UsageError,
    _count,
    _err,
    _log_to_stderr,
    _non_negative_int,
    concurrency_option,
    filter_config_options,
    project_id_arg,
    with_remedy,
)

if TYPE_CHECKING:
    from airflow_provider_dicom.dicom.convert import ConvertedInstance, InstanceConverter

WRITE_DISPOSITION_CHOICES = ("write-empty", "write-truncate", "write-append")


# -- reading instances -------------------------------------------------------------------------


@dataclass
class FileOutcome:
    path: Path
    converted: ConvertedInstance | None = None
    reason: str | None = None  # set when the file could not be turned into a row


def iter_outcomes(paths: Sequence[str], converter: InstanceConverter, skipped: list[Path]) -> Iterator[FileOutcome]:
    """Folders are walked as an export walks them: files inside that are not DICOM are skipped
    (collected in `skipped`) and broken DICOM is reported. A file named explicitly that is not
    DICOM is reported too: the user asked for it."""
    from airflow_provider_dicom.sources.folder import NOT_DICOM, OK, convert_file, iter_folder

    for name in paths:
        path = Path(name)
        if path.is_dir():
            files, explicit = iter_folder(path), False
        elif path.exists():
            files, explicit = iter((path,)), True
        else:
            yield FileOutcome(path, reason="no such file or directory")
            continue
        for file in files:
            outcome = convert_file(file, converter)
            if outcome.status == OK:
                yield FileOutcome(Path(outcome.path), outcome.converted)
            elif outcome.status == NOT_DICOM and not explicit:
                skipped.append(Path(outcome.path))
            elif outcome.status == NOT_DICOM:
                yield FileOutcome(Path(outcome.path), reason=f"not a DICOM file: {outcome.reason}")
            else:
                yield FileOutcome(Path(outcome.path), reason=outcome.reason or "invalid DICOM")


def _converter(schema: str) -> InstanceConverter:
    from airflow_provider_dicom.dicom.convert import InstanceConverter

    return InstanceConverter(schema=schema)


def _report_skipped(skipped: list[Path]) -> None:
    if skipped:
        _err(f"skipped {_count(len(skipped), 'file')} that {'is' if len(skipped) == 1 else 'are'} not DICOM")


# -- commands ----------------------------------------------------------------------------------


def cmd_rows(args: argparse.Namespace, out: TextIO) -> int:
    converter = _converter(args.schema)
    skipped: list[Path] = []
    failed = 0
    for outcome in iter_outcomes(args.paths, converter, skipped):
        if outcome.converted is None:
            failed += 1
            _err(f"{outcome.path}: {outcome.reason}")
            continue
        out.write(json.dumps(outcome.converted.row, ensure_ascii=False, separators=(",", ":")) + "\n")
    _report_skipped(skipped)
    if failed:
        _err(f"{_count(failed, 'file')} could not be converted")
        return EXIT_FAILED
    return 0


def cmd_schema(args: argparse.Namespace, out: TextIO) -> int:
    from airflow_provider_dicom.dicom.schema import TableSchema

    converter = _converter(args.schema)
    schema = TableSchema()
    skipped: list[Path] = []
    failed = converted = 0
    for outcome in iter_outcomes(args.paths, converter, skipped):
        if outcome.converted is None:
            failed += 1
            _err(f"{outcome.path}: {outcome.reason}")
            continue
        converted += 1
        schema.add(outcome.converted.fields)
    _report_skipped(skipped)
    if not converted:
        raise CommandFailed("no DICOM instances found: no schema to print")
    out.write(json.dumps(schema.to_api_repr(), indent=2) + "\n")
    if failed:
        _err(f"{_count(failed, 'file')} could not be converted; the schema covers the other {converted}")
        return EXIT_FAILED
    return 0


PROGRESS_INTERVAL_SECONDS = 5.0


def cmd_export_bq(args: argparse.Namespace, out: TextIO) -> int:
    """`export bq SOURCE`: the export service the operators use, with clients from the environment."""
    if args.source.startswith("projects/"):  # a Cloud Healthcare store: the API exports it
        from airflow_provider_dicom.cli.healthcare import cmd_export_bq_store

        return cmd_export_bq_store(args, out)
    from airflow_provider_dicom.export import service
    from airflow_provider_dicom.export.progress import ProgressReporter

    try:
        export = service.bigquery_export(
            source=args.source,
            destination_table_uri=args.bq_table,
            write_disposition=args.write_disposition,
            force=True if args.overwrite_table else None,
            schema=args.schema,
            filter_config=args.filter_config,
            project=args.project,
            workers=args.concurrency,
            processes=args.processes,
            check_local_files=True,
        )
    except (ValueError, NotImplementedError) as exc:
        raise UsageError(str(exc)) from exc
    from airflow_provider_dicom.export.bigquery import ExportError

    _log_to_stderr(quiet=args.quiet)
    try:
        result = service.run_bigquery_export(
            export,
            EnvironmentClients(),
            progress=None if args.quiet else ProgressReporter(_err, PROGRESS_INTERVAL_SECONDS),
        )
    except (ExportError, OSError, ValueError) as exc:
        raise CommandFailed(with_remedy(exc)) from exc
    out.write(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    out.flush()
    if service.found_no_dicom(result):
        raise CommandFailed(service.no_dicom_message(export.source.display, result, str(export.table)))
    try:
        service.check_failures(result, args.max_failed_instances)
    except service.TooManyFailedInstances as exc:
        raise CommandFailed(
            f"{_count(result.failure_count, 'instance')} failed to export "
            f"(--max-failed-instances={args.max_failed_instances}); "
            f"the {result.instances_exported} good ones were loaded into {export.table}"
        ) from exc
    return 0


def write_disposition_arg(text: str) -> str:
    """`--write-disposition`: gcloud's write-append or the API's WRITE_APPEND, any case; the
    value as typed in the error."""
    from airflow_provider_dicom.model.options import WriteDisposition

    try:
        WriteDisposition.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _processes(text: str) -> int | str:
    from airflow_provider_dicom.sources.parallel import resolve_processes

    value: int | str = text if text == "auto" else (int(text) if text.isdigit() else text)
    try:
        resolve_processes(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


# -- parser ------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, like every other bad input
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Export DICOM metadata to BigQuery like the Cloud Healthcare API does, "
        "and preview the rows and schema it produces.",
    )
    from airflow_provider_dicom import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="{export,rows,schema,operations,filter}", parser_class=_Parser)

    schema_help = "table variant: flattened (one column per data element, the default) or json"

    export = verbs.add_parser("export", help="export DICOM metadata (gcloud: healthcare dicom-stores export)")
    destinations = export.add_subparsers(dest="destination", required=True, metavar="{bq,gcs}", parser_class=_Parser)
    bq = destinations.add_parser(
        "bq",
        help="export to a BigQuery table",
        description="Export the DICOM instances of SOURCE into a BigQuery table with the Cloud Healthcare "
        "schema: a local folder (read recursively), a gs://BUCKET/PATH prefix (objects read header-only "
        "with ranged reads), or a DICOMweb base URL (QIDO-RS and WADO-RS metadata; credentials from "
        "DICOMWEB_USERNAME / DICOMWEB_PASSWORD, or DICOMWEB_HEADERS, a JSON object of HTTP headers). Files "
        "that are not DICOM are skipped. Prints the export summary as JSON. Set BIGQUERY_EMULATOR_HOST "
        "(STORAGE_EMULATOR_HOST) to use a BigQuery (Cloud Storage) emulator.",
    )
    bq.add_argument("source", metavar="SOURCE", help="folder of DICOM files, gs://BUCKET/PATH, a DICOMweb URL, "
                    "or a DICOM store projects/P/locations/L/datasets/D/dicomStores/S (exported by the "
                    "Cloud Healthcare API)")
    bq.add_argument("--bq-table", required=True, metavar="bq://PROJECT.DATASET.TABLE", help="destination table")
    bq.add_argument(
        "--write-disposition",
        type=write_disposition_arg,
        metavar="{" + ",".join(WRITE_DISPOSITION_CHOICES) + "}",
        help="write-empty: fail on a non-empty table; write-truncate: replace it; write-append: add rows "
        "(and columns). The API's spelling (WRITE_APPEND, ...) works too. Default, as in gcloud: fail "
        "if the table exists.",
    )
    bq.add_argument(
        "--overwrite-table", action="store_true", help="legacy: replace an existing table (force=true)"
    )
    filter_config_options(bq, metavar="PATH", help="filter file (local path or gs://) of /studies/... lines")
    bq.add_argument("--schema", default="flattened", choices=("flattened", "json"), help=schema_help)
    bq.add_argument("--project", type=project_id_arg, help="project the load jobs run in (default: the table's project)")
    bq.add_argument(
        "--max-failed-instances",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="exit 1 when more than N instances fail to convert (default 0; 'none' never); "
        "the good instances are loaded either way",
    )
    bq.add_argument("--quiet", action="store_true", help="no progress messages")
    concurrency_option(bq)
    bq.add_argument(
        "--processes", type=_processes, default=1, metavar="N|auto",
        help="worker processes converting a folder's files (default 1; 'auto': one per core)",
    )
    bq.set_defaults(handler=cmd_export_bq)
    from airflow_provider_dicom.cli import healthcare as cli_healthcare

    cli_healthcare.add_store_options_to_export_bq(bq)
    cli_healthcare.add_export_gcs_parser(destinations, _Parser)

    rows = verbs.add_parser(
        "rows",
        help="print each instance's BigQuery row as one JSON line",
        description="Print the row each DICOM instance becomes, one JSON object per line (NDJSON). "
        "Folders are read recursively. Files that fail are reported on stderr and make the exit code 1; "
        "the other files are still printed.",
    )
    rows.add_argument("paths", nargs="+", metavar="PATH", help="DICOM files or folders")
    rows.add_argument("--schema", default="flattened", choices=("flattened", "json"), help=schema_help)
    rows.set_defaults(handler=cmd_rows)

    schema = verbs.add_parser(
        "schema",
        help="print the merged BigQuery schema of the instances as JSON",
        description="Print the BigQuery schema (the union over all instances, as `bq show --schema` "
        "prints it) that exporting these files would create.",
    )
    schema.add_argument("paths", nargs="+", metavar="PATH", help="DICOM files or folders")
    schema.add_argument("--schema", default="flattened", choices=("flattened", "json"), help=schema_help)
    schema.set_defaults(handler=cmd_schema)
    cli_healthcare.add_operations_parser(verbs, _Parser)
    from airflow_provider_dicom.cli import filter as cli_filter

    cli_filter.add_filter_parser(verbs, _Parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # pydicom warns about every oddity it tolerates; what matters (a file that fails) is reported
    # by the engine with its path and reason, so keep stderr to those lines.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\.|$)")
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args, sys.stdout)
    except UsageError as exc:
        _err(f"error: {exc}")
        return EXIT_USAGE
    except CommandFailed as exc:
        _err(f"error: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:
        # `airflow-dicom rows ... | head`: the reader left; stop quietly.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_FAILED
    except Exception as exc:  # the command line promises one line, not a traceback
        first_line = (str(exc).strip().splitlines() or [""])[0]
        _err(f"error: {type(exc).__name__}: {first_line}" if first_line else f"error: {type(exc).__name__}")
        if os.environ.get("AIRFLOW_DICOM_TRACEBACK"):
            raise
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
