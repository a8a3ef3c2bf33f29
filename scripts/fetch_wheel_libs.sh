#!/usr/bin/env bash
# Download one onnxruntime wheel with pip (never installed) and extract the
# libraries of its onnxruntime/capi/ folder whose names start with PREFIX into
# DEST. The shared step of fetch_ort_gpu.sh and fetch_ort_old.sh; a failed
# download only warns (the test that needs the libraries then skips, saying why).
#
# Usage: scripts/fetch_wheel_libs.sh REQUIREMENT DEST PREFIX PURPOSE
#   e.g. scripts/fetch_wheel_libs.sh onnxruntime==1.21.1 .cache/ort-old-lib libonnxruntime.so "the API-floor test"
# Env:   PYTHON  the interpreter whose pip downloads (default: .venv/bin/python)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
requirement=$1 dest=$2 prefix=$3 purpose=$4
py=${PYTHON:-$root/.venv/bin/python}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching $requirement (libraries only, for $purpose)"
"$py" -m pip download -q --no-deps --only-binary=:all: "$requirement" -d "$tmp" 2>&1 | grep -v "^WARNING: Location" || true
wheel=$(ls "$tmp"/*.whl 2>/dev/null | head -1)
if [ -z "$wheel" ]; then
  echo "warning: could not download $requirement; $purpose will skip" >&2
  exit 0
fi
mkdir -p "$dest"
"$py" - "$wheel" "$dest" "$prefix" <<'PYEOF'
import os, sys, zipfile
wheel, dest, prefix = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("onnxruntime/capi/") and base.startswith(prefix):
            with z.open(name) as src, open(os.path.join(dest, base), "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
PYEOF
echo "$requirement libraries -> $dest"
