#!/usr/bin/env bash
# Fetch the runtime library of an older onnxruntime wheel (not installed: only
# libonnxruntime.so, extracted into a git-ignored folder) for the API-floor test
# in tests/test_plugin_ep.py: fastort built with newer headers must load it
# through FASTORT_ORT_LIBRARY, run on it, and switch plugin EPs off saying why.
#
# Usage: scripts/fetch_ort_old.sh [DEST]   (default: .cache/ort-old-lib)
# Env:   FASTORT_ORT_OLD_VERSION  the onnxruntime release (default: 1.21.1, C API 21: fastort's floor)
#        PYTHON                   the interpreter whose pip downloads (default: .venv/bin/python)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/.cache/ort-old-lib}
version=${FASTORT_ORT_OLD_VERSION:-1.21.1}
py=${PYTHON:-$root/.venv/bin/python}

if ls "$dest"/libonnxruntime.so.* >/dev/null 2>&1; then
  echo "an older onnxruntime library is already in $dest"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching onnxruntime $version (library only, for the API-floor test)"
"$py" -m pip download -q --no-deps --only-binary=:all: "onnxruntime==$version" -d "$tmp" 2>&1 | grep -v "^WARNING: Location" || true
wheel=$(ls "$tmp"/onnxruntime-*.whl 2>/dev/null | head -1)
if [ -z "$wheel" ]; then
  echo "warning: could not download onnxruntime $version; the API-floor test will skip" >&2
  exit 0
fi
mkdir -p "$dest"
"$py" - "$wheel" "$dest" <<'PYEOF'
import os, sys, zipfile
wheel, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("onnxruntime/capi/") and base.startswith("libonnxruntime.so"):
            with z.open(name) as src, open(os.path.join(dest, base), "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
PYEOF
echo "onnxruntime $version library -> $dest"
