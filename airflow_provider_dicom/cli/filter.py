"""`airflow-dicom filter`: build a filter file outside a DAG, from SQL or a list of UIDs/paths.

The same validation, dedupe and streaming writes as BuildFilterFileOperator (`filter_build`,
`filter_query`); credentials come from Application Default Credentials, or anonymously from the
emulators named by BIGQUERY_EMULATOR_HOST / STORAGE_EMULATOR_HOST. The summary is printed as JSON
on stdout, rejects on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO


def add_filter_parser(verbs: Any, parser_class: type) -> None:
    parser = verbs.add_parser(
        "filter",
        help="build a filter file (/studies/... lines) from SQL or a UID list",
        description="Write a filter file for `export --filter-config` or dicomStores.export, from a GoogleSQL "
        "query (returning StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID) or from a list of resource "
        "paths, UIDs or comma-separated study,series,instance rows (a file, or - for stdin; \\n or \\r\\n "
        "lines). Every UID is validated; rejects are counted and the first few shown. Duplicates and "
        "lines covered by a broader line are dropped. Prints the counts as JSON.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--sql", metavar="QUERY", help="GoogleSQL query; values as @name parameters (--param)")
    source.add_argument("--uids", metavar="FILE", help="file of paths, UIDs or study,series,instance rows; - for stdin")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=TYPE:VALUE",
        help="query parameter, e.g. modality=STRING:CT, since=DATE:2024-01-01, ids=ARRAY<STRING>:a,b (repeatable)",
    )
    parser.add_argument("--level", choices=("study", "series", "instance"), help="default: instance for --sql, "
                        "as deep as each value goes for --uids")
    parser.add_argument("--out", required=True, metavar="PATH|gs://BUCKET/OBJECT", help="where to write the file")
    parser.add_argument("--on-empty", default="fail", type=on_empty_arg, metavar="{fail,skip,write-empty}",
                        help="an empty selection: fail (exit 1, default), skip (write nothing, exit 0) or "
                        "write-empty (write an empty file, exit 0)")
    from airflow_provider_dicom.cli.common import location_arg, project_id_arg

    parser.add_argument("--project", type=project_id_arg, help="project the query runs in (default: from the environment)")
    parser.add_argument("--location", type=location_arg, help="BigQuery location of the query job")
    parser.set_defaults(handler=cmd_filter)


ON_EMPTY_CHOICES = ("fail", "skip", "write-empty")


def on_empty_arg(text: str) -> str:
    """`--on-empty`: hyphens like every other choice of the command line; the operator's
    `write_empty` works too. Returns the engine's spelling."""
    value = text.strip().lower().replace("_", "-")
    if value not in ON_EMPTY_CHOICES:
        raise argparse.ArgumentTypeError(
            f"invalid choice {text!r} (choose from {', '.join(ON_EMPTY_CHOICES)})"
        )
    return value.replace("-", "_")


def cmd_filter(args: argparse.Namespace, out: TextIO) -> int:
    from airflow_provider_dicom.cli.common import CommandFailed, UsageError
    from airflow_provider_dicom.filters.build import (
        EmptyFilterError,
        UnorderedInputError,
        build_from_rows,
        check_destination,
        iter_lines,
        parse_cli_param,
    )

    try:
        check_destination(args.out, on_disk=True)
        params = dict(parse_cli_param(text) for text in args.param)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if params and args.sql is None:
        raise UsageError("--param applies to --sql only")
    from airflow_provider_dicom.cli.common import default_project

    project = args.project or default_project()
    storage_client = None
    if args.out.startswith("gs://"):
        from airflow_provider_dicom.cli.common import storage_client_from_env

        storage_client = storage_client_from_env(project, f"to write {args.out}")
    try:
        if args.uids is not None:
            items = _read_items(args.uids, iter_lines)
            result = build_from_rows(
                items, args.out, level=args.level, on_empty=args.on_empty, storage_client=storage_client, presorted=False
            )
        else:
            from airflow_provider_dicom.cli.common import bigquery_client_from_env
            from airflow_provider_dicom.filters.build import query_parameters
            from airflow_provider_dicom.filters.query import build_from_query

            try:
                parameters = query_parameters(params)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            client = bigquery_client_from_env(project)
            result = build_from_query(
                client,
                args.sql,
                args.out,
                level=args.level or "instance",
                parameters=parameters,
                on_empty=args.on_empty,
                storage_client=storage_client,
                location=args.location,
            )
    except (EmptyFilterError, UnorderedInputError) as exc:
        raise CommandFailed(str(exc)) from None
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    if result.rejected:
        print(
            f"airflow-dicom: {result.rejected} values rejected as invalid UIDs: {'; '.join(result.rejected_examples)}",
            file=sys.stderr,
        )
    json.dump(result.to_dict(), out, indent=2)
    out.write("\n")
    return 0


def _read_items(source: str, iter_lines: Any) -> list[object]:
    """Lines of the file (or stdin): a path or UID each, or `study,series[,instance]` rows."""
    if source == "-":
        lines = list(iter_lines(sys.stdin))
    else:
        try:
            with open(source, encoding="utf-8-sig", newline="") as handle:
                lines = list(iter_lines(handle))
        except FileNotFoundError:
            raise FileNotFoundError(f"UID list {source!r} does not exist") from None
    items: list[object] = []
    for line in lines:
        if "," in line:
            items.append(tuple(part.strip() or None for part in line.split(",")))
        else:
            items.append(line)
    return items
