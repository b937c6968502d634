"""`airflow-dicom export gcs SOURCE` when SOURCE is a folder, a gs:// prefix or a DICOMweb server:
the files are copied as stored into the Cloud Healthcare layout by the export service
(`export.service`, as `DicomExportToGcsOperator` does), with clients from the environment.
Its own module so `cli.healthcare`, which holds the `export gcs` parser, imports it without a cycle.
"""

from __future__ import annotations

import argparse
import json
from typing import TextIO

from airflow_provider_dicom.cli.common import (
    CommandFailed,
    EnvironmentClients,
    UsageError,
    _count,
    _err,
    _log_to_stderr,
    default_project,
    with_remedy,
)

PROGRESS_INTERVAL_SECONDS = 5.0


def cmd_export_gcs_copy(args: argparse.Namespace, out: TextIO) -> int:
    from airflow_provider_dicom.export import service
    from airflow_provider_dicom.export.progress import ProgressReporter

    try:
        copy = service.gcs_copy(
            source=args.source,
            uri_prefix=args.gcs_uri_prefix,
            filter_config=args.filter_config,
            mime_type=args.mime_type,
            workers=args.concurrency,
            check_local_files=True,
        )
    except (ValueError, NotImplementedError) as exc:
        raise UsageError(str(exc)) from exc
    if args.run_async:
        raise UsageError("--async applies to a DICOM store's export only: other sources are copied by this command")
    _log_to_stderr(quiet=args.quiet)
    try:
        result = service.run_gcs_copy(
            copy,
            EnvironmentClients(),
            project=default_project(),
            progress=None if args.quiet else ProgressReporter(_err, PROGRESS_INTERVAL_SECONDS),
        )
    except (OSError, ValueError) as exc:
        raise CommandFailed(with_remedy(exc)) from exc
    out.write(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    out.flush()
    if service.found_no_dicom(result):
        raise CommandFailed(service.no_dicom_message(copy.source.display, result, copy.uri_prefix))
    try:
        service.check_failures(result, args.max_failed_instances)
    except service.TooManyFailedInstances as exc:
        raise CommandFailed(
            f"{_count(result.failure_count, 'instance')} failed to copy "
            f"(--max-failed-instances={args.max_failed_instances}); "
            f"the {result.instances_copied} good ones were copied to {copy.uri_prefix}"
        ) from exc
    return 0
