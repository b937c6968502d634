#!/usr/bin/env bash
# Creates .venv (Python >= 3.11) with the provider and its test extras installed, once per
# pyproject.toml change. Uses uv from PyPI because pip's resolver takes minutes on Airflow's tree.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
    for candidate in python3.11 python3.12 python3.13 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            command -v "$candidate"; return 0
        fi
    done
    echo "bootstrap: no Python >= 3.11 found on PATH" >&2; return 1
}

# The stand-ins (dicom_standins/: Healthcare API emulator, BigQuery/GCS/Orthanc starters) are repo
# tooling, not part of the wheel: the dev venv sees them through a .pth entry for the checkout.
link_repo() {
    local site
    site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "$PWD" > "$site/airflow_provider_dicom_repo.pth"
}

stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [[ -f "$stamp" ]]; then
    link_repo
    exit 0
fi
echo "==> creating .venv in this checkout and installing airflow-provider-dicom[test] from PyPI with uv (Airflow 3.3, the Google providers, pytest, playwright; about 1.7 GB)"
if [[ ! -x .venv/bin/python ]]; then
    "$(find_python)" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check uv
.venv/bin/uv pip install --quiet --python .venv/bin/python -e ".[test]"
link_repo
rm -f .venv/.installed-*
touch "$stamp"
