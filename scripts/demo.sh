#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine with Python 3.11: installs what it needs once (the
# .venv and the BigQuery stand-in's venv, both inside the checkout; nothing system-wide), then
# starts the Cloud Healthcare API emulator and the BigQuery and GCS stand-ins, loads pydicom's
# sample DICOM into the emulated store (STOW-RS), runs the cohort example DAG (export -> cohort
# filter file -> re-export metadata and files) and the two analyses of Google's guide with
# dag.test(), prints the results and stops everything. It uses no Orthanc, PostgreSQL, Redis or
# browser. Everything listens on 127.0.0.1; work files go to .demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/install-standins.sh --demo   # the BigQuery stand-in only: nothing system-wide
exec .venv/bin/python scripts/demo.py "$@"
