#!/usr/bin/env bash
# Installs the local stand-ins that cannot live in the main venv, and the system packages the test
# tiers use. `--demo` installs only what scripts/demo.sh uses (the BigQuery stand-in): the demo
# needs neither Orthanc nor the deployment tier's packages, so it installs nothing system-wide.
# - local-bigquery needs Python >= 3.13 and conflicts with Airflow's fastapi pin, so it gets
#   .standins/bigquery-venv, with its DuckDB extensions imported once under a private HOME so
#   nothing is downloaded at run time. The GCS stand-in is installed in .venv by bootstrap.sh.
# - Orthanc and its DICOMweb plugin (the DICOMweb server of the integration tests) come from
#   Debian's packages, installed with apt-get when missing. Without apt (or root) they are skipped
#   with a message, and the Orthanc tests skip saying why.
# Idempotent and quiet: a second run does nothing. Each install says what it installs, and where,
# before it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
root=.standins
demo_only=no
if [[ "${1:-}" == "--demo" ]]; then
    demo_only=yes
elif [[ $# -gt 0 ]]; then
    echo "usage: scripts/install-standins.sh [--demo]" >&2
    exit 2
fi

install_orthanc() {
    local plugin=/usr/share/orthanc/plugins/libOrthancDicomWeb.so
    if { command -v Orthanc >/dev/null 2>&1 || [[ -x /usr/sbin/Orthanc ]]; } && [[ -e "$plugin" ]]; then
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-standins: apt-get not found: Orthanc is not installed and the DICOMweb tests will be skipped" >&2
        return 0
    fi
    local sudo=""
    if [[ "$(id -u)" != 0 ]]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo="sudo -n"
        else
            echo "install-standins: not root (and no passwordless sudo): Orthanc is not installed and the DICOMweb tests will be skipped" >&2
            return 0
        fi
    fi
    local was_installed=no
    dpkg -s orthanc >/dev/null 2>&1 && was_installed=yes
    echo "==> installing Orthanc and its DICOMweb plugin system-wide for the DICOMweb integration tests (${sudo:+sudo }apt-get install orthanc orthanc-dicomweb)"
    if ! { $sudo apt-get update -qq >/dev/null &&
           $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
               orthanc orthanc-dicomweb >/dev/null; }; then
        echo "install-standins: apt-get could not install orthanc orthanc-dicomweb: the DICOMweb tests will be skipped" >&2
        return 0
    fi
    # The package starts a system-wide Orthanc where an init system runs; the tests start their own
    # on free ports, so a service this script brought up is stopped and disabled again.
    if [[ "$was_installed" == no ]] && command -v systemctl >/dev/null 2>&1 &&
        systemctl is-active --quiet orthanc 2>/dev/null; then
        $sudo systemctl disable --now --quiet orthanc >/dev/null 2>&1 || true
    fi
}

[[ "$demo_only" == yes ]] || install_orthanc

# The deployment tier (tests/deployment): Debian's chromium for the browser test (playwright drives it;
# it never downloads a browser), and PostgreSQL and Redis when this machine has neither (the tier's
# fixtures start them if they are installed but not running, and skip saying why otherwise).
install_deployment_packages() {
    local wanted=()
    [[ -x /usr/bin/chromium ]] || wanted+=(chromium)
    command -v psql >/dev/null 2>&1 || command -v postgres >/dev/null 2>&1 || wanted+=(postgresql)
    command -v redis-server >/dev/null 2>&1 || wanted+=(redis-server)
    [[ ${#wanted[@]} -eq 0 ]] && return 0
    local sudo=""
    if [[ "$(id -u)" != 0 ]]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo="sudo -n"
        else
            echo "install-standins: not root (and no passwordless sudo): ${wanted[*]} not installed; the deployment tier may skip" >&2
            return 0
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-standins: apt-get not found: ${wanted[*]} not installed; the deployment tier may skip" >&2
        return 0
    fi
    echo "==> installing ${wanted[*]} system-wide for the deployment tier (${sudo:+sudo }apt-get install ${wanted[*]})"
    if ! { $sudo apt-get update -qq >/dev/null &&
           $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
               "${wanted[@]}" >/dev/null; }; then
        echo "install-standins: apt-get could not install ${wanted[*]}; the deployment tier may skip" >&2
    fi
}

[[ "$demo_only" == yes ]] || install_deployment_packages

stamp="$root/.bigquery-installed-v2"
if [[ -f "$stamp" ]]; then
    exit 0
fi

find_python313() {
    for candidate in python3.14 python3.13; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 13) else 1)' 2>/dev/null; then
            command -v "$candidate"; return 0
        fi
    done
    if command -v pyenv >/dev/null 2>&1; then
        for dir in "$(pyenv root)"/versions/3.13*; do
            [[ -x "$dir/bin/python" ]] && { echo "$dir/bin/python"; return 0; }
        done
    fi
    echo "install-standins: local-bigquery needs Python >= 3.13 and none was found" >&2
    return 1
}

echo "==> installing the BigQuery stand-in (local-bigquery 0.4.0 and DuckDB, from PyPI) in $root/bigquery-venv, a Python >= 3.13 venv in this checkout"
mkdir -p "$root/bigquery-home"
"$(find_python313)" -m venv "$root/bigquery-venv"
"$root/bigquery-venv/bin/python" -m pip install --quiet --disable-pip-version-check uv
"$root/bigquery-venv/bin/uv" pip install --quiet --python "$root/bigquery-venv/bin/python" "local-bigquery==0.4.0"
"$root/bigquery-venv/bin/uv" pip install --quiet --python "$root/bigquery-venv/bin/python" --no-deps \
    duckdb==1.5.5 duckdb-extensions==1.5.5 duckdb-extension-ducklake==1.5.5 duckdb-extension-icu==1.5.5 \
    duckdb-extension-spatial==1.5.5
# local-bigquery loads its geography functions with INSTALL spatial on first use; offline that
# fails and poisons every later request, so the extension is imported here, once.
HOME="$PWD/$root/bigquery-home" "$root/bigquery-venv/bin/python" -c \
    "from duckdb_extensions import import_extension; [import_extension(e) for e in ('ducklake', 'icu', 'spatial')]"
touch "$stamp"
