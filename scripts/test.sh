#!/usr/bin/env bash
# The whole test suite: unit tests (no servers) and integration tests against local stand-ins,
# which the pytest fixtures start on 127.0.0.1 and stop at the end. Extra arguments go to pytest,
# e.g. `scripts/test.sh -m "not integration"` for the fast tier only.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/install-standins.sh
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
# pytest exits 5 when nothing was collected; that is a broken suite, not a pass.
exit $rc
