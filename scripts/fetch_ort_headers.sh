#!/usr/bin/env bash
# Fetch onnxruntime's C/C++ headers for building fastort on a machine that has none.
#
# Debian 12 has no libonnxruntime-dev, the next release does. This asks apt for
# that package's .deb through a temporary sources list built from this machine's
# own configured Debian mirror (no host name is written here), and extracts only
# the headers into a git-ignored cache folder laid out like onnxruntime's release
# tarball (include/...). CMake looks there on its own, or set ONNXRUNTIME_ROOT.
#
# fastort wants the headers of onnxruntime 1.23 (C API 23) or newer: the
# plugin execution-provider API (RegisterExecutionProviderLibrary, GetEpDevices,
# SessionOptionsAppendExecutionProvider_V2) is not in older ones. Debian forky
# (and sid) carry 1.23; trixie carries 1.21, which still builds, without plugin EPs.
#
# Usage: scripts/fetch_ort_headers.sh [DEST]   (default: .cache/onnxruntime)
# Env:   FASTORT_ORT_SUITE  Debian suites to try, in order (default: "forky sid")
#        FASTORT_ORT_MIN_API  a cached copy older than this API is replaced (default: 23)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/.cache/onnxruntime}
suites=${FASTORT_ORT_SUITE:-forky sid}
min_api=${FASTORT_ORT_MIN_API:-23}

api_of() {  # ORT_API_VERSION declared by the onnxruntime_c_api.h in folder $1 (0 if none)
  awk '/^#define ORT_API_VERSION/ {print $3; found=1; exit} END {if (!found) print 0}' "$1/onnxruntime_c_api.h" 2>/dev/null || echo 0
}
if [ -f "$dest/include/onnxruntime_cxx_api.h" ]; then
  have=$(api_of "$dest/include")
  if [ "$have" -ge "$min_api" ]; then
    echo "onnxruntime headers (API $have) already in $dest"
    exit 0
  fi
  echo "onnxruntime headers in $dest declare API $have < $min_api: replacing them"
fi
if [ -f /usr/include/onnxruntime/onnxruntime_cxx_api.h ] && [ "$(api_of /usr/include/onnxruntime)" -ge "$min_api" ]; then
  echo "onnxruntime headers found in /usr/include/onnxruntime (libonnxruntime-dev); nothing to fetch"
  exit 0
fi

# The machine's own Debian mirror: from deb822 .sources files or the one-line format.
mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  mirror=$(awk '/^URIs:/ {print $2; exit}' "$f")
  if [ -n "$mirror" ] && ! grep -q -- '-security' <<<"$mirror"; then break; fi
  mirror=""
done
if [ -z "$mirror" ]; then
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
    | awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
    | grep -v -- '-security' | head -n 1 || true)
fi
if [ -z "$mirror" ]; then
  echo "error: no Debian mirror found in /etc/apt; set ONNXRUNTIME_ROOT to an onnxruntime SDK instead" >&2
  exit 1
fi

keyring=/usr/share/keyrings/debian-archive-keyring.gpg
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/deb"
opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
      -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
      -o "APT::Sandbox::User=root")

got=""
for suite in $suites; do
  echo "fetching libonnxruntime-dev from Debian $suite (headers only)"
  echo "deb [signed-by=$keyring] $mirror $suite main" >"$work/sources.list"
  rm -rf "$work/lists" && mkdir -p "$work/lists/partial"
  if apt-get "${opts[@]}" -qq update && (cd "$work/deb" && apt-get "${opts[@]}" -qq download libonnxruntime-dev); then
    got=$suite
    break
  fi
  echo "warning: Debian $suite has no libonnxruntime-dev here; trying the next suite" >&2
done
if [ -z "$got" ]; then
  echo "error: none of the suites ($suites) has libonnxruntime-dev; set ONNXRUNTIME_ROOT to an onnxruntime SDK instead" >&2
  exit 1
fi
dpkg-deb -x "$work"/deb/libonnxruntime-dev_*.deb "$work/x"

rm -rf "$dest.tmp"
mkdir -p "$dest.tmp/include"
cp -r "$work/x/usr/include/onnxruntime/." "$dest.tmp/include/"
ver=$(dpkg-deb -f "$work"/deb/libonnxruntime-dev_*.deb Version)
echo "$ver" >"$dest.tmp/VERSION"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "onnxruntime headers $ver -> $dest/include"
