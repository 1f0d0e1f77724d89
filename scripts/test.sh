#!/usr/bin/env bash
# The whole test suite on a fresh machine: Python environment, Kubernetes binaries built
# from the Go module proxy (cached by version), the container images for the e2e tier (cached
# by the hash of their inputs), lint, then every tier (unit, runtime, cluster, e2e).
# Arguments go to one pytest run instead, e.g. `scripts/test.sh -m unit` for the fast subset.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(scripts/bootstrap.sh)
if [ "${KUBETRAIN_SKIP_TOOLS:-0}" != 1 ]; then
  images_log=$(mktemp)
  images=""
  if [ "$(id -u)" = 0 ]; then
    # The images need no Go binaries, and building them is mostly downloads and disk:
    # they are made while Go compiles. (The real node, and so the e2e tier, needs root.)
    e2e/build-images.sh operator runtime >"$images_log" 2>&1 &
    images=$!
  fi
  KUBETRAIN_BIN_DIR=$(e2e/build-tools.sh core node helm versitygw | tail -n 1)
  export KUBETRAIN_BIN_DIR
  if [ -n "$images" ] && ! wait "$images"; then
    cat "$images_log" >&2
    echo "e2e/build-images.sh failed" >&2
    exit 1
  fi
  grep -E '^\[images\]' "$images_log" | tail -n 5 >&2 || true
  rm -f "$images_log"
fi
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
if [ "$#" -gt 0 ]; then
  exec "$venv/bin/python" -m pytest "$@"
fi
# The whole suite, every tier, split by folder so that each test file is in exactly one of
# the two runs: tests/unit (pure and single-threaded, half of it hypothesis) in two
# processes; then everything else (runtime, cluster, e2e: one local cluster and one Ray
# for the session) in one.
rc=0
"$venv/bin/python" -m pytest tests/unit -n 2 || rc=$?
"$venv/bin/python" -m pytest --ignore=tests/unit --durations=20 || rc=$?
exit "$rc"
