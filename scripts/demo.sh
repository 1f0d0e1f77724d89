#!/usr/bin/env bash
# The main job on a fresh machine: set up the environment (cached under ~/.cache/kubetrain)
# and train the demo TrainingJob on an embedded local Ray. Extra arguments go to `kubetrain run`.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(scripts/bootstrap.sh)
exec "$venv/bin/kubetrain" run examples/digits-cnn.yaml "$@"
