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

if ls "$dest"/libonnxruntime.so.* >/dev/null 2>&1 && [ -f "$dest/libonnxruntime_providers_cuda.so" ]; then
  echo "onnxruntime-gpu libraries already in $dest"
  exit 0
fi
exec bash "$root/scripts/fetch_wheel_libs.sh" "onnxruntime-gpu==$version" "$dest" libonnxruntime "the CUDA fallback test"
