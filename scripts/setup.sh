#!/usr/bin/env bash
# One-step set-up on a fresh Debian 12 (or newer) machine: system packages,
# onnxruntime's headers, a virtual environment in .venv, and fastort built into it.
# Idempotent: a second run only rebuilds what changed.
#
# Options (environment variables; README.md lists them too):
#   PYTHON                       the interpreter the venv is made from (default: python3)
#   FASTORT_EXTRAS               extras to install (default: test,torch,sklearn,tf,prepare,prune,serve,ray,tune;
#                                "test" alone skips the frameworks, whose tests then skip)
#   FASTORT_TORCH_VERSION        the CPU torch pinned before the torch extra (default: 2.13.0)
#   FASTORT_FETCH_GPU_RUNTIME=0  don't fetch onnxruntime-gpu's libraries for the CUDA fallback test
#   FASTORT_SKIP_APT=1           never call apt-get (you installed a compiler and Python's headers yourself)
#   ONNXRUNTIME_ROOT             onnxruntime headers to build against (default: found, or fetched
#                                into .cache/onnxruntime by scripts/fetch_ort_headers.sh)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
PYTHON=${PYTHON:-python3}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "error: need root (or sudo) to run: $*" >&2; exit 1; fi
}

# 1. System packages: a C++ compiler, Python's headers and venv, and the apt/dpkg tools.
need=()
command -v g++ >/dev/null || need+=(g++)
command -v "$PYTHON" >/dev/null || need+=(python3)
if command -v "$PYTHON" >/dev/null; then
  "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
  inc=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  [ -f "$inc/Python.h" ] || need+=(python3-dev)
else
  need+=(python3-venv python3-dev)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "${FASTORT_SKIP_APT:-0}" = 1 ]; then
    echo "error: missing ${need[*]} and FASTORT_SKIP_APT=1" >&2; exit 1
  fi
  echo "== installing system packages: ${need[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" ca-certificates
fi

# 2. onnxruntime's C/C++ headers (never committed): from ONNXRUNTIME_ROOT, the
#    system, or fetched from Debian's next release into .cache/onnxruntime.
if [ -z "${ONNXRUNTIME_ROOT:-}" ]; then
  if [ "$(id -u)" = 0 ]; then bash scripts/fetch_ort_headers.sh; else as_root bash scripts/fetch_ort_headers.sh; fi
fi

# 3. The virtual environment with the build tools and the runtime.
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.13" "cmake>=3.21" ninja

# 4. fastort itself (incremental: the CMake build folder is kept in build/), with
#    the test tools and the model-preparation extras (FASTORT_EXTRAS to change
#    them; "test" alone skips torch and scikit-learn). torch is pinned to the CPU
#    build first so that the [torch] extra never pulls a CUDA build.
extras=${FASTORT_EXTRAS:-test,torch,sklearn,tf,prepare,prune,serve,ray,tune}
case ",$extras," in
  *,torch,*) .venv/bin/python -m pip install -q "torch==${FASTORT_TORCH_VERSION:-2.13.0}" ;;
esac
echo "== building fastort [$extras]"
.venv/bin/python -m pip install -q --no-build-isolation ".[$extras]"
.venv/bin/python -c 'import fastort; i = fastort.runtime_info(); print("fastort", fastort.__version__, "on onnxruntime", i["version"], "providers", i["providers"])'

# 5. For the tests: the libraries of an onnxruntime-gpu wheel, unpacked aside
#    (never installed), so that the CUDA fallback is tested on machines without a
#    GPU. FASTORT_FETCH_GPU_RUNTIME=0 skips it (that one test then skips).
if [ "${FASTORT_FETCH_GPU_RUNTIME:-1}" != 0 ]; then
  bash scripts/fetch_ort_gpu.sh
fi

# 6. For the API-floor test: the library of an older onnxruntime wheel (1.21,
#    C API 21), unpacked aside. FASTORT_FETCH_OLD_RUNTIME=0 skips it (that test then skips).
if [ "${FASTORT_FETCH_OLD_RUNTIME:-1}" != 0 ]; then
  bash scripts/fetch_ort_old.sh
fi
