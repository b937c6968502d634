#!/usr/bin/env bash
# The whole test suite: unit tests (no servers) and integration tests against local stand-ins,
# which the pytest fixtures start on 127.0.0.1 and stop at the end; then the version matrix
# (scripts/matrix.sh): the unit tier and the example DAGs again on Airflow 3.1.0 (Cloud Composer's
# image, our dependency floors) and on Airflow 2.11, each in its own venv under .matrix/.
# Extra arguments go to pytest for the main run only, and skip the matrix, e.g.
# `scripts/test.sh -m "not integration"` for the fast tier only; `scripts/matrix.sh test` runs
# the matrix alone.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/install-standins.sh
matrix=$(( $# == 0 ))
if ((matrix)); then
    scripts/matrix.sh build
fi
set +e
.venv/bin/python -m pytest "$@"
rc=$?
matrix_rc=0
if ((matrix)); then
    start=$SECONDS
    scripts/matrix.sh test
    matrix_rc=$?
    echo "==> matrix: $((SECONDS - start)) s; main suite: pytest exit $rc"
fi
set -e
# pytest exits 5 when nothing was collected; that is a broken suite, not a pass.
if ((rc == 0 && matrix_rc != 0)); then
    rc=$matrix_rc
fi
exit $rc
