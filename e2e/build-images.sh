#!/usr/bin/env bash
# Build kubetrain's operator and runtime images without Docker (debootstrap + chroot + an OCI
# archive for `ctr -n k8s.io images import`); see e2e/images.py. Needs root. The last stdout
# lines are the archive paths; reruns with unchanged inputs take seconds (the cache is
# ${KUBETRAIN_CACHE:-~/.cache/kubetrain}/images).
#
#   e2e/build-images.sh                       # both (runtime: the cuda variant, PyPI's torch)
#   e2e/build-images.sh runtime --variant cpu --torch-index URL
#   e2e/build-images.sh --print-ref runtime   # the image reference only, nothing built
set -euo pipefail
exec python3 "$(dirname "${BASH_SOURCE[0]}")/images.py" "$@"
