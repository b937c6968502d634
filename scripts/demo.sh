#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine with Python 3.11: installs what it needs (the .venv
# and the BigQuery stand-in's venv, once), then exports pydicom's sample DICOM files into a table
# on a local BigQuery stand-in through the example Airflow DAG, and runs the two example queries
# of Google's "Exporting DICOM metadata to BigQuery" guide on it. Everything listens on 127.0.0.1
# and is stopped at the end; work files go to .demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/install-standins.sh
exec .venv/bin/python scripts/demo.py "$@"
