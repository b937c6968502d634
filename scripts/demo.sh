#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine with Python 3.11: installs what it needs (the .venv
# and the BigQuery stand-in's venv, once), then starts the Cloud Healthcare API emulator and the
# BigQuery and GCS stand-ins, loads pydicom's sample DICOM into the emulated store (STOW-RS), runs
# the cohort example DAG (export -> cohort filter file -> re-export metadata and files) and the
# two analyses of Google's guide with dag.test(), prints the results and stops everything.
# Everything listens on 127.0.0.1; work files go to .demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/install-standins.sh
exec .venv/bin/python scripts/demo.py "$@"
