#!/usr/bin/env bash
# Create (or reuse) the project's Python environment outside the clone, so reruns are fast.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${KUBETRAIN_CACHE:-$HOME/.cache/kubetrain}
venv=$cache/venv
mkdir -p "$cache"
if [ ! -x "$cache/uv/bin/uv" ]; then
  python3 -m venv "$cache/uv"
  "$cache/uv/bin/pip" install -q "uv==0.13.9"
fi
uv=$cache/uv/bin/uv
export UV_CACHE_DIR=$cache/uv-cache
# Bytecode at install time: where PYTHONDONTWRITEBYTECODE is set (as on this project's CI
# machines) every process otherwise recompiles torch, Ray and pandas from source, which
# doubled `kubetrain run` (and every Ray worker's start) on two cores. uv then compiles all
# of site-packages, not only what it installed.
export UV_COMPILE_BYTECODE=1
[ -x "$venv/bin/python" ] || "$uv" venv -q --python python3 "$venv"
extras=${KUBETRAIN_EXTRAS:-all}
stamp=$venv/.kubetrain-stamp
# The editable install points at one checkout: another clone (CI's) must reinstall.
want=$(sha256sum < "$here/pyproject.toml" | cut -c1-16)-$extras-pyc-$here
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$uv" pip install -q --python "$venv/bin/python" -e "$here[$extras]" >&2
  echo "$want" > "$stamp"
fi
echo "$venv"
