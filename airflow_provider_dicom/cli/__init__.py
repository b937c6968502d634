"""`airflow-dicom`, the command line: `app` parses and dispatches, `healthcare` and `filter` hold
their subcommands, `common` what they all share."""

from airflow_provider_dicom.cli.app import main

__all__ = ["main"]
