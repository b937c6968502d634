#!/usr/bin/env bash
# Installs the local stand-ins for Google services that cannot live in the main venv:
# local-bigquery needs Python >= 3.13 and conflicts with Airflow's fastapi pin, so it gets
# .standins/bigquery-venv, with its DuckDB extensions imported once under a private HOME so
# nothing is downloaded at run time. The GCS stand-in is installed in .venv by bootstrap.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
root=.standins
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

echo "==> installing the BigQuery stand-in (local-bigquery) in $root/bigquery-venv"
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
