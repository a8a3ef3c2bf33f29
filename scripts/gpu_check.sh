#!/usr/bin/env bash
# Runs the GPU tests and the GPU benchmark. On a machine without a usable CUDA
# device both say why and pass (the tests skip with the reason, the benchmark
# prints "no CUDA device: skipped").
#
#   bash scripts/gpu_check.sh            # after scripts/setup.sh
#
# On a GPU machine, first replace the CPU runtime with the CUDA one and add a
# CUDA build of torch (for device-resident inputs):
#   .venv/bin/pip uninstall -y onnxruntime
#   .venv/bin/pip install 'onnxruntime-gpu[cuda,cudnn]' torch
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" - <<'PYEOF'
import fastort, json
info = fastort.runtime_info()
print("onnxruntime", info["version"], "providers", info["providers"])
print(json.dumps(info["provider_status"], indent=1))
PYEOF
"$PY" -m pytest -q -rs tests/core/test_gpu.py
"$PY" bench/bench_gpu.py "$@"
