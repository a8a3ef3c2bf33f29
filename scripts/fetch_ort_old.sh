#!/usr/bin/env bash
# Fetch the runtime library of an older onnxruntime wheel (not installed: only
# libonnxruntime.so, extracted into a git-ignored folder) for the API-floor test
# in tests/core/test_plugin_ep.py: fastort built with newer headers must load it
# through FASTORT_ORT_LIBRARY, run on it, and switch plugin EPs off saying why.
#
# Usage: scripts/fetch_ort_old.sh [DEST]   (default: .cache/ort-old-lib)
# Env:   FASTORT_ORT_OLD_VERSION  the onnxruntime release (default: 1.21.1, C API 21: fastort's floor)
#        PYTHON                   the interpreter whose pip downloads (default: .venv/bin/python)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/.cache/ort-old-lib}
version=${FASTORT_ORT_OLD_VERSION:-1.21.1}

if ls "$dest"/libonnxruntime.so.* >/dev/null 2>&1; then
  echo "an older onnxruntime library is already in $dest"
  exit 0
fi
exec bash "$root/scripts/fetch_wheel_libs.sh" "onnxruntime==$version" "$dest" libonnxruntime.so "the API-floor test"
