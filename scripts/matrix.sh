#!/usr/bin/env bash
# The version matrix: the provider installed beside older Airflow sets, each in its own venv under
# .matrix/<env>, and the tests run there. The main .venv (scripts/bootstrap.sh) is the newest set.
#
#   scripts/matrix.sh build [ENV...]           create or refresh the envs (once per pyproject.toml
#                                              or matrix change; a second run does nothing)
#   scripts/matrix.sh test [ENV...] [-- ARGS]  run the matrix tier in each env (default: the unit
#                                              tier plus the example DAGs run with dag.test() on the
#                                              stand-ins); ARGS replace the default pytest selection
#
# Envs (all Python 3.11; uv from the main .venv, PyPI only):
# - airflow-3.1.0: Cloud Composer 3's Airflow 3.1.0 image (Airflow 3.1.0, providers-google 18.0.0,
#   common-compat 1.7.4) installed first, then this provider on top with every direct dependency
#   at its declared floor (scripts/matrix/floors.txt). The build checks that Airflow and
#   providers-google stay where they were and that common-compat went up to our floor: that is
#   what `pip install airflow-provider-dicom` must do in a Composer environment.
# - airflow-2.11: the latest Airflow 2.11 with its celery and postgres extras (its dependencies as of
#   its release; the deployment tier runs it on Celery and PostgreSQL), then this provider with the
#   newest providers that still support 2.11.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
uv=.venv/bin/uv
ENVS=(airflow-3.1.0 airflow-2.11)

# The Composer 3 image's versions (Airflow 3.1.0 build), pinned by hand.
COMPOSER_310=scripts/matrix/composer-airflow-3.1.0.txt
COMPOSER_310_DATE=2025-09-27T00:00:00Z  # the day after Airflow 3.1.0's release
AIRFLOW_211=apache-airflow==2.11.2
AIRFLOW_211_DATE=2026-03-16T00:00:00Z  # just after 2.11.2's release; later cryptography breaks it
CELERY_211="apache-airflow-providers-celery<3.17"  # see build_env
# What the tests need beyond the provider (the main env gets these from the `test` extra, whose
# deployment-tier tools would pull a newer Airflow's extras here).
TEST_TOOLS=(pytest pytest-timeout gcp-storage-emulator psutil apache-airflow-providers-openlineage)

python311() {
    local candidate
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null; then
            "$candidate" -c 'import sys; print(sys.executable)'; return 0
        fi
    done
    echo "matrix: no Python 3.11 found on PATH" >&2; return 1
}

version_of() {  # version_of ENV_DIR DIST
    "$uv" pip show --python "$1/bin/python" "$2" 2>/dev/null | sed -n 's/^Version: //p'
}

expect_version() {  # expect_version ENV_DIR DIST VERSION
    local got; got=$(version_of "$1" "$2")
    if [[ "$got" != "$3" ]]; then
        echo "matrix: $(basename "$1"): $2 is ${got:-missing}, expected $3" >&2; return 1
    fi
}

build_env() {
    local name=$1 dir=.matrix/$1
    local stamp; stamp="$dir/.installed-$(cat pyproject.toml scripts/matrix.sh scripts/matrix/*.txt | sha256sum | cut -c1-16)"
    if [[ -f "$stamp" ]]; then return 0; fi
    echo "==> matrix: building $dir"
    local python; python=$(python311)
    rm -rf "$dir"
    "$uv" venv --quiet --python "$python" "$dir"
    local py=$dir/bin/python
    case "$name" in
        airflow-3.1.0)
            # 1. The Composer image as users find it.
            "$uv" pip install --quiet --python "$py" --exclude-newer "$COMPOSER_310_DATE" -r "$COMPOSER_310"
            # 2. This provider on top, with the image's Airflow and providers-google held and our
            #    direct dependencies at their floors (floors.txt pins them, common-compat included).
            "$uv" pip install --quiet --python "$py" -e . "${TEST_TOOLS[@]}" -c scripts/matrix/floors.txt \
                -c <(grep -v '^apache-airflow-providers-common-compat==' "$COMPOSER_310")
            expect_version "$dir" apache-airflow 3.1.0
            expect_version "$dir" apache-airflow-providers-google 18.0.0
            # Our floor moved common-compat up from the image's 1.7.4 (which has no compat.sdk).
            expect_version "$dir" apache-airflow-providers-common-compat \
                "$(sed -n 's/^apache-airflow-providers-common-compat==//p' scripts/matrix/floors.txt)"
            ;;
        airflow-2.11)
            # 1. Airflow 2.11 as its release's constraints had it (resolved as of that day), with
            #    the celery and postgres extras the deployment tier's 2.11 Airflow runs on
            #    (providers-celery, celery, redis, providers-postgres, psycopg2-binary).
            #    providers-celery 3.17.0 and 3.17.1 break Celery workers on Airflow 2.11 (upstream
            #    issues 63043, 63729: the worker registers no `execute_command`, every task is
            #    discarded as unregistered): the newest before them (3.15.2 as of that day).
            "$uv" pip install --quiet --python "$py" --exclude-newer "$AIRFLOW_211_DATE" \
                "apache-airflow[celery,postgres]==${AIRFLOW_211#*==}" "$CELERY_211"
            # 2. This provider on top: the newest providers that still support 2.11.
            "$uv" pip install --quiet --python "$py" -e . "${TEST_TOOLS[@]}" -c <(echo "$AIRFLOW_211"; echo "$CELERY_211")
            expect_version "$dir" apache-airflow "${AIRFLOW_211#*==}"
            ;;
        *) echo "matrix: unknown env $name (known: ${ENVS[*]})" >&2; return 2 ;;
    esac
    # dicom_standins/ (emulator, stand-in starters) is repo tooling: on the path as in .venv.
    echo "$root" > "$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/airflow_provider_dicom_repo.pth"
    rm -f "$dir"/.installed-*
    touch "$stamp"
}

describe_env() {
    local dir=.matrix/$1 dist line=""
    for dist in apache-airflow apache-airflow-providers-google apache-airflow-providers-common-compat \
        google-api-python-client google-cloud-bigquery google-cloud-storage pydicom; do
        line+=" ${dist#apache-airflow-providers-}=$(version_of "$dir" "$dist")"
    done
    echo "Python $("$dir/bin/python" -c 'import platform; print(platform.python_version())')$line"
}

# The matrix tier: the unit tier, and the example DAGs run with dag.test() on the stand-ins.
# Typing is checked once, in the main env against the newest Airflow (tests/unit/test_typing.py).
DEFAULT_SELECTION=(-m "not integration or matrix" --ignore=tests/unit/test_typing.py)

test_env() {
    local name=$1; shift
    local dir=.matrix/$name
    echo "==> matrix: $name: $(describe_env "$name")"
    local start=$SECONDS rc=0
    PYTHONPATH=$root "$dir/bin/python" -m pytest -p no:cacheprovider -q "$@" || rc=$?
    echo "==> matrix: $name: pytest exit $rc in $((SECONDS - start)) s"
    return $rc
}

main() {
    local command=${1:-}; shift || true
    local names=() args=()
    while (($#)); do
        if [[ "$1" == "--" ]]; then shift; args=("$@"); break; fi
        names+=("$1"); shift
    done
    ((${#names[@]})) || names=("${ENVS[@]}")
    ((${#args[@]})) || args=("${DEFAULT_SELECTION[@]}")
    case "$command" in
        build)
            for name in "${names[@]}"; do build_env "$name"; done ;;
        test)
            # The envs' tests run side by side (MATRIX_JOBS=1: one after the other): by then the
            # main suite is done, and each pytest is one process, so two use both cores. Each
            # env's output goes to .matrix/<env>.log and is printed whole when it ends.
            local failed=() pids=() codes=() name i
            for name in "${names[@]}"; do build_env "$name"; done
            for i in "${!names[@]}"; do
                test_env "${names[$i]}" "${args[@]}" > ".matrix/${names[$i]}.log" 2>&1 &
                pids[i]=$!
                if [[ "${MATRIX_JOBS:-2}" == 1 ]]; then
                    codes[i]=0; wait "${pids[$i]}" || codes[i]=$?
                fi
            done
            for i in "${!names[@]}"; do
                if [[ -z "${codes[$i]:-}" ]]; then
                    codes[i]=0; wait "${pids[$i]}" || codes[i]=$?
                fi
                cat ".matrix/${names[$i]}.log"
                ((codes[i] == 0)) || failed+=("${names[$i]}")
            done
            if ((${#failed[@]})); then
                echo "==> matrix: FAILED in: ${failed[*]}" >&2; return 1
            fi
            echo "==> matrix: passed in: ${names[*]}" ;;
        *) sed -n '2,18p' "$0" >&2; return 2 ;;
    esac
}

main "$@"
