#!/usr/bin/env bash
# Fetch the runtime libraries of an onnxruntime-gpu wheel (not installed: only
# libonnxruntime.so and its provider libraries, extracted into a git-ignored
# folder) for tests/core/test_gpu.py's fallback test: a CUDA-enabled runtime on a
# machine without the CUDA libraries must fall back to CPU with the loader's
# reason. Nothing else uses this copy; to serve on a GPU, install
# onnxruntime-gpu itself (docs/GPU.md).
#
# Usage: scripts/fetch_ort_gpu.sh [DEST]   (default: .cache/onnxruntime-gpu)
# Env:   FASTORT_ORT_GPU_VERSION  the onnxruntime-gpu release (default: 1.31.1)
#        PYTHON                   the interpreter whose pip downloads (default: .venv/bin/python)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/.cache/onnxruntime-gpu}
version=${FASTORT_ORT_GPU_VERSION:-1.31.1}
py=${PYTHON:-$root/.venv/bin/python}

if ls "$dest"/libonnxruntime.so.* >/dev/null 2>&1 && [ -f "$dest/libonnxruntime_providers_cuda.so" ]; then
  echo "onnxruntime-gpu libraries already in $dest"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching onnxruntime-gpu $version (libraries only, for the CUDA fallback test)"
"$py" -m pip download -q --no-deps "onnxruntime-gpu==$version" -d "$tmp" 2>&1 | grep -v "^WARNING: Location" || true
wheel=$(ls "$tmp"/onnxruntime_gpu-*.whl 2>/dev/null | head -1)
if [ -z "$wheel" ]; then
  echo "warning: could not download onnxruntime-gpu $version; the CUDA fallback test will skip" >&2
  exit 0
fi
mkdir -p "$dest"
"$py" - "$wheel" "$dest" <<'PYEOF'
import os, sys, zipfile
wheel, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("onnxruntime/capi/") and base.startswith("libonnxruntime"):
            with z.open(name) as src, open(os.path.join(dest, base), "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
PYEOF
echo "onnxruntime-gpu $version libraries -> $dest"
