#!/usr/bin/env bash
# Builds fastort with sanitizers into build/sanitize-KIND/ (the normal .venv and
# its fastort are left as they are) and runs the test suite and the native
# drivers under them. See docs/RELIABILITY.md.
#
#   bash scripts/sanitize.sh [address|thread] [pytest args...]
#
# address: AddressSanitizer + UndefinedBehaviorSanitizer; the whole pytest suite
#          (LeakSanitizer off: CPython's own allocations swamp it), then the
#          native benchmark and batcher drivers and fastort_check_core (no
#          Python; FASTORT_CHECK_ITERS mutants, default 200000) with
#          LeakSanitizer on.
# thread:  ThreadSanitizer on the native batcher driver (pool + batcher under
#          concurrent clients), then the pytest suite without the model-preparation
#          tests (their frameworks' thread pools are uninstrumented); reports inside
#          onnxruntime are suppressed (scripts/sanitizers/tsan.supp), never
#          reports in fastort's own code.
# Any sanitizer report fails the run (exit status != 0).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
kind=${1:-address}
[ $# -gt 0 ] && shift
[ -x .venv/bin/python ] || bash scripts/setup.sh
py=.venv/bin/python
case "$kind" in
  address) flags=address,undefined; runtime=$(g++ -print-file-name=libasan.so) ;;
  thread) flags=thread; runtime=$(g++ -print-file-name=libtsan.so) ;;
  *) echo "usage: $0 [address|thread] [pytest args...]" >&2; exit 2 ;;
esac
[ -f "$runtime" ] || { echo "error: $runtime not found (install the compiler's sanitizer runtime)" >&2; exit 1; }
out=build/sanitize-$kind
site=$out/site

echo "== building fastort with -fsanitize=$flags into $site"
"$py" -m pip install -q --no-build-isolation --no-deps --upgrade --target "$site" \
  -C build-dir="$out/cmake" -C cmake.build-type=RelWithDebInfo \
  -C cmake.define.FASTORT_SANITIZE="$flags" -C cmake.define.FASTORT_INSTALL_NATIVE_PROGRAMS=ON .

ORT_LIB=$("$py" -c 'import fastort; print(fastort.runtime_info()["library_path"])')
supp=$root/scripts/sanitizers
# Reports go to files (pytest captures stderr, and a halted process loses it).
reports=$root/$out/reports
rm -rf "$reports" && mkdir -p "$reports"
export PYTHONPATH=$root/$site
export PYTHONMALLOC=malloc
# OpenVINO's plugin dlopens its TBB with RTLD_DEEPBIND, which the sanitizer
# runtimes refuse (google/sanitizers#611): leave installed plugin EPs unloaded
# (tests/core/test_plugin_ep.py skips, saying so).
export FASTORT_EP_DISCOVERY=0
export ASAN_OPTIONS="log_path=$reports/asan:halt_on_error=1:abort_on_error=0:print_stacktrace=1:detect_leaks=0:detect_stack_use_after_return=0:check_initialization_order=1:strict_init_order=1"
export UBSAN_OPTIONS="log_path=$reports/ubsan:halt_on_error=1:print_stacktrace=1:suppressions=$supp/ubsan.supp"
export TSAN_OPTIONS="log_path=$reports/tsan:halt_on_error=1:second_deadlock_stack=1:suppressions=$supp/tsan.supp:report_signal_unsafe=0"
export LSAN_OPTIONS="log_path=$reports/lsan:suppressions=$supp/lsan.supp:print_suppressions=0"
# The sanitizer runtime must come first; libstdc++ too, or ASan cannot intercept
# C++ throws from libraries loaded later (python itself does not link it).
runtime="$runtime $(g++ -print-file-name=libstdc++.so)"
show_reports() {
  local rc=$?
  if compgen -G "$reports/*" > /dev/null; then
    echo "== sanitizer reports:"; cat "$reports"/*; rc=1
  fi
  rm -rf "$models"
  exit $rc
}
if ! LD_PRELOAD=$runtime "$py" -c 'import fastort, sys; assert "sanitize" in fastort.__file__, fastort.__file__; print("fastort from", fastort.__file__)'; then
  echo "error: .venv imports another fastort before $site (an editable install's import hook wins over" >&2
  echo "PYTHONPATH): reinstall it as scripts/setup.sh does (pip install --no-build-isolation '.[test]')" >&2
  exit 1
fi

models=$(mktemp -d)
trap show_reports EXIT
"$py" - "$models" <<'PY'
import sys
sys.path.insert(0, "tests")
import onnx
from onnx import TensorProto
import models
onnx.save(models.mlp((64, 128, 16)), sys.argv[1] + "/mlp.onnx")
onnx.save(models.scalar_plus_matrix(), sys.argv[1] + "/scalar.onnx")
onnx.save(models.identity(TensorProto.STRING, ["n"]), sys.argv[1] + "/strings.onnx")
PY
bin=$site/fastort/_bin

if [ "$kind" = address ]; then
  echo "== pytest under ASan + UBSan"
  LD_PRELOAD=$runtime "$py" -m pytest -q -p no:cacheprovider tests "$@"
  echo "== native drivers under ASan + UBSan + LeakSanitizer"
  ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=1" "$bin/fastort_bench_native" "$models/mlp.onnx" --lib "$ORT_LIB" \
    --iters 2000 --warmup 200 --rounds 2 --threads 2 > /dev/null
  ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=1" "$bin/fastort_bench_batcher" "$ORT_LIB" "$models/mlp.onnx" \
    --clients 1,8 --seconds 2 --warmup 0.2 > /dev/null
  ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=1" "$bin/fastort_check_core" "$ORT_LIB" "$models"/mlp.onnx \
    "$models/scalar.onnx" "$models/strings.onnx" --iters "${FASTORT_CHECK_ITERS:-200000}"
else
  echo "== native batcher driver under TSan"
  "$bin/fastort_bench_batcher" "$ORT_LIB" "$models/mlp.onnx" --clients 1,8,32 --seconds 2 --warmup 0.2 > /dev/null
  "$bin/fastort_check_core" "$ORT_LIB" "$models/mlp.onnx" --iters 2000
  # The model-preparation tests run torch, TensorFlow and scikit-learn, whose
  # OpenMP / thread pools are uninstrumented and report races TSan cannot rule
  # out; they exercise no fastort threading that the rest of the suite does not.
  echo "== pytest under TSan (tests/core: without the model-preparation and CLI tests)"
  LD_PRELOAD=$runtime "$py" -m pytest -q -p no:cacheprovider tests/core "$@"
fi
echo "== sanitize ($kind): no reports"
