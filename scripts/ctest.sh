#!/usr/bin/env bash
# Builds the native core and its C++ tests as a plain CMake project (no Python
# module, no pybind11) into build/ctest/ and runs them with ctest.
#
#   bash scripts/ctest.sh [ctest args...]
#
# test_batch_policy needs nothing; test_core_engine loads the libonnxruntime
# of the installed onnxruntime wheel and runs a tiny model made here with
# onnx.helper (it skips when python, onnx or onnxruntime are missing).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=build/ctest
py=${PYTHON:-$root/.venv/bin/python}
export PATH="$root/.venv/bin:$PATH"  # the cmake/ctest that scripts/setup.sh installs, if any
[ -x "$py" ] || py=$(command -v python3 || true)

cmake -S . -B "$out" -DCMAKE_BUILD_TYPE=Release -DFASTORT_BUILD_TESTS=ON \
  -DFASTORT_BUILD_PYTHON=OFF -DFASTORT_BUILD_BENCH=OFF > "$out.log" 2>&1 || { cat "$out.log"; exit 1; }
cmake --build "$out" -j "$(nproc)" >> "$out.log" 2>&1 || { cat "$out.log"; exit 1; }

unset FASTORT_TEST_ORT_LIBRARY FASTORT_TEST_MODEL
if [ -n "$py" ]; then
  capi=$("$py" -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))' 2>/dev/null || true)
  lib=$(ls "$capi"/libonnxruntime.so* "$capi"/libonnxruntime*.dylib 2>/dev/null | sort -V | tail -n 1 || true)
  model=$root/$out/relu.onnx
  if [ -n "$lib" ] && "$py" - "$model" <<'PY' 2>/dev/null
import sys
from onnx import TensorProto, helper, save
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), sys.argv[1])
PY
  then
    export FASTORT_TEST_ORT_LIBRARY=$lib FASTORT_TEST_MODEL=$model
  fi
fi
[ -n "${FASTORT_TEST_MODEL:-}" ] || echo "note: no onnxruntime/onnx for $py: test_core_engine will be skipped"
ctest --test-dir "$out" --output-on-failure "$@"
