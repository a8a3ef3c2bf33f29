#!/usr/bin/env bash
# Fetch onnxruntime's C/C++ headers for building fastort on a machine that has none.
#
# Debian 12 has no libonnxruntime-dev, the next release does. This asks apt for
# that package's .deb through a temporary sources list built from this machine's
# own configured Debian mirror (no host name is written here), and extracts only
# the headers into a git-ignored cache folder laid out like onnxruntime's release
# tarball (include/...). CMake looks there on its own, or set ONNXRUNTIME_ROOT.
#
# Usage: scripts/fetch_ort_headers.sh [DEST]   (default: .cache/onnxruntime)
# Env:   FASTORT_ORT_SUITE  Debian suite to take the package from (default: trixie)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/.cache/onnxruntime}
suite=${FASTORT_ORT_SUITE:-trixie}

if [ -f "$dest/include/onnxruntime_cxx_api.h" ]; then
  echo "onnxruntime headers already in $dest"
  exit 0
fi
if [ -f /usr/include/onnxruntime/onnxruntime_cxx_api.h ]; then
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
echo "deb [signed-by=$keyring] $mirror $suite main" >"$work/sources.list"
opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
      -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
      -o "APT::Sandbox::User=root")

echo "fetching libonnxruntime-dev from Debian $suite (headers only)"
apt-get "${opts[@]}" -qq update
(cd "$work/deb" && apt-get "${opts[@]}" -qq download libonnxruntime-dev)
dpkg-deb -x "$work"/deb/libonnxruntime-dev_*.deb "$work/x"

rm -rf "$dest.tmp"
mkdir -p "$dest.tmp/include"
cp -r "$work/x/usr/include/onnxruntime/." "$dest.tmp/include/"
ver=$(dpkg-deb -f "$work"/deb/libonnxruntime-dev_*.deb Version)
echo "$ver" >"$dest.tmp/VERSION"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "onnxruntime headers $ver -> $dest/include"
