#!/usr/bin/env bash
# The whole test suite on a fresh machine: Python environment, Kubernetes binaries built
# from the Go module proxy (cached by version), lint, then every tier (unit, runtime,
# cluster, e2e). Arguments go to pytest, e.g. `scripts/test.sh -m unit` for the fast subset.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(scripts/bootstrap.sh)
if [ "${KUBETRAIN_SKIP_TOOLS:-0}" != 1 ]; then
  KUBETRAIN_BIN_DIR=$(e2e/build-tools.sh core helm | tail -n 1)
  export KUBETRAIN_BIN_DIR
fi
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
exec "$venv/bin/python" -m pytest "$@"
